//! [`DeviceBuffer`]: device memory owned by dmsc (`cuMemAlloc`, freed with `cuMemFree`),
//! with synchronous uploads and downloads, for the tools and tests that need device buffers
//! of their own (`dmsc-perf --device cuda`, the GPU tests). Source: CUDA Driver API
//! reference, "Memory Management".
//!
//! Not yet run on a GPU (none was available while it was written); compile-checked only.

use super::cuda_memory::CudaMemory;
use super::device_memory::DeviceMemory;
use super::driver;
use cudarc::driver::{result, sys};
use dmsc_core::error::{Error, Result};

/// `len` bytes of device memory of one GPU.
#[derive(Debug)]
pub struct DeviceBuffer {
    ptr: sys::CUdeviceptr,
    len: usize,
}

// SAFETY: a device address owned by this value alone; usable from any thread with the
// device's context current.
unsafe impl Send for DeviceBuffer {}

impl DeviceBuffer {
    /// Allocate `len` bytes (at least one) on `mem`'s device, making its context current on
    /// this thread.
    pub fn alloc(mem: &mut CudaMemory, len: usize) -> Result<DeviceBuffer> {
        mem.bind()?;
        // SAFETY: an allocation in the current context, freed in Drop.
        let ptr = unsafe { result::malloc_sync(len.max(1)) }
            .map_err(|e| driver::error(format!("cuMemAlloc({len} B)"), e))?;
        Ok(DeviceBuffer { ptr, len })
    }

    /// The device address.
    pub fn addr(&self) -> usize {
        self.ptr as usize
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, what: &str, n: usize) -> Result<()> {
        if n != self.len {
            return Err(Error::invalid(format!(
                "{what} of {n} bytes into a device buffer of {} bytes",
                self.len
            )));
        }
        Ok(())
    }

    /// Copy `src` (exactly [`DeviceBuffer::len`] bytes) into the buffer, after the work of
    /// the default stream (a synchronous `cuMemcpyHtoD`). The context must be current.
    pub fn upload(&self, src: &[u8]) -> Result<()> {
        self.check("an upload", src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: `len` bytes of device memory owned by self, and a host slice of that size.
        unsafe { result::memcpy_htod_sync(self.ptr, src) }
            .map_err(|e| driver::error("cuMemcpyHtoD", e))
    }

    /// Copy the buffer into `dst` (exactly [`DeviceBuffer::len`] bytes), after the work of
    /// the default stream (a synchronous `cuMemcpyDtoH`). The context must be current.
    pub fn download(&self, dst: &mut [u8]) -> Result<()> {
        self.check("a download", dst.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        // SAFETY: as in upload, the other way round.
        unsafe { result::memcpy_dtoh_sync(dst, self.ptr) }
            .map_err(|e| driver::error("cuMemcpyDtoH", e))
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated by cuMemAlloc, freed once, here.
        let _ = unsafe { result::free_sync(self.ptr) };
    }
}
