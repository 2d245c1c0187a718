//! GPU memory as a dma-buf, for the RDMA transport's `ibv_reg_dmabuf_mr`: the CUDA driver's
//! `cuMemGetHandleForAddressRange` with `CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD` (CUDA Driver
//! API, "Memory Management"; CUDA 11.7 and later, on devices whose
//! `CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED` is set: the open kernel modules on Turing and
//! later), as NCCL's `net_ib` registers GPU buffers where the platform allows it (read for
//! the design, never copied).
//!
//! The driver exports whole host pages only, so the range is widened to page boundaries and
//! the caller's offset into it is returned with the descriptor. Where the driver or device
//! cannot do it, every call says why ([`CudaDmabuf::probe`]), and the communicator stages
//! GPU memory through host buffers instead. Its user is the RDMA transport
//! (`crate::rdma::connect`).

use crate::cuda::driver;
use crate::rdma::dmabuf_export::{DmabufExporter, DmabufRange};
use cudarc::driver::{result, sys};
use dmsc_core::error::{Error, Result};
use std::os::fd::{FromRawFd, OwnedFd};

/// The CUDA driver as a dma-buf exporter.
#[derive(Debug)]
pub struct CudaDmabuf {
    _probed: (),
}

/// Whether device `device` exports dma-bufs; `Err` says why not.
fn device_supports(device: u32) -> Result<()> {
    let dev = result::device::get(device as i32)
        .map_err(|e| driver::error(format!("cuDeviceGet({device})"), e))?;
    // SAFETY: `dev` is a device handle the driver just gave; the attribute is an int. A
    // driver older than the attribute answers CUDA_ERROR_INVALID_VALUE: unsupported.
    let v = unsafe {
        result::device::get_attribute(
            dev,
            sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED,
        )
    };
    match v {
        Ok(1) => Ok(()),
        Ok(_) => Err(Error::usage(format!(
            "CUDA device {device} does not export dma-bufs \
             (CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED is 0: the proprietary kernel module, or a \
             GPU older than Turing)"
        ))),
        Err(e) => Err(driver::error(
            format!(
                "CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED of CUDA device {device} (a driver older \
                 than CUDA 11.7 has no dma-buf export)"
            ),
            e,
        )),
    }
}

/// The page-aligned range the driver exports for `len` bytes at `ptr`, and `ptr`'s offset in
/// it: (base, size, offset).
pub fn aligned_range(ptr: u64, len: usize, page: u64) -> (u64, u64, u64) {
    let base = ptr & !(page - 1);
    let end = (ptr + len as u64).div_ceil(page) * page;
    (base, end - base, ptr - base)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no pointer arguments.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

impl CudaDmabuf {
    /// The exporter, if the driver loads, initialises and device 0 exports dma-bufs
    /// (each export checks its own device again); `Err` says why not.
    pub fn probe() -> Result<CudaDmabuf> {
        if !driver::driver_present() {
            return Err(driver::no_driver("registering GPU memory as a dma-buf"));
        }
        result::init().map_err(|e| driver::error("cuInit", e))?;
        device_supports(0)?;
        Ok(CudaDmabuf { _probed: () })
    }
}

impl DmabufExporter for CudaDmabuf {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn export(&self, ptr: u64, len: usize, device: u32) -> Result<DmabufRange> {
        if len == 0 {
            return Err(Error::invalid("a dma-buf of 0 bytes was asked for"));
        }
        device_supports(device)?;
        let (base, size, offset) = aligned_range(ptr, len, page_size());
        let mut fd: libc::c_int = -1;
        // SAFETY: the driver writes one int (the descriptor) to `fd`; it checks that
        // [base, base + size) is device memory it allocated and fails otherwise.
        unsafe {
            sys::cuMemGetHandleForAddressRange(
                (&mut fd as *mut libc::c_int).cast(),
                base,
                size as usize,
                sys::CUmemRangeHandleType::CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD,
                0,
            )
        }
        .result()
        .map_err(|e| {
            driver::error(
                format!(
                    "cuMemGetHandleForAddressRange(DMA_BUF_FD) of {size} bytes at {base:#x} \
                     (for {len} bytes at {ptr:#x}) on CUDA device {device}"
                ),
                e,
            )
        })?;
        if fd < 0 {
            return Err(Error::internal(format!(
                "cuMemGetHandleForAddressRange gave descriptor {fd}"
            )));
        }
        // SAFETY: a descriptor the driver just opened for us and nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(DmabufRange { fd, offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_widen_to_pages_and_keep_the_offset() {
        assert_eq!(aligned_range(0x10000, 4096, 4096), (0x10000, 4096, 0));
        assert_eq!(aligned_range(0x10010, 4096, 4096), (0x10000, 8192, 0x10));
        assert_eq!(aligned_range(0x10fff, 1, 4096), (0x10000, 4096, 0xfff));
    }

    #[test]
    fn without_a_driver_the_probe_says_so_and_with_a_capable_gpu_a_buffer_exports() {
        if !driver::driver_present() {
            let e = CudaDmabuf::probe().unwrap_err().to_string();
            assert!(e.contains("libcuda.so cannot be loaded"), "{e}");
            return;
        }
        // A machine with a driver: where device 0 exports dma-bufs, a buffer of it (at an
        // offset inside a page) exports with that offset; otherwise the probe says why.
        match CudaDmabuf::probe() {
            Err(e) => {
                let s = e.to_string();
                assert!(s.contains("CUDA") || s.contains("cuInit"), "{s}");
            }
            Ok(x) => {
                let mut mem = crate::cuda::cuda_memory::CudaMemory::open(0).unwrap();
                let buf =
                    crate::cuda::device_buffer::DeviceBuffer::alloc(&mut mem, 1 << 20).unwrap();
                let r = x.export(buf.addr() as u64 + 100, 4096, 0).unwrap();
                assert_eq!(
                    r.offset % page_size(),
                    (buf.addr() as u64 + 100) % page_size()
                );
                assert!(std::os::fd::AsRawFd::as_raw_fd(&r.fd) >= 0);
            }
        }
    }
}
