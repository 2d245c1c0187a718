//! The CUDA device: dmsc-core's [`Device`] on the memory of one GPU, with the kernels of
//! `kernels.cu` compiled by NVRTC for the GPU's architecture and loaded once per device.
//!
//! Opening a device first checks that the driver library can be loaded
//! ([`driver::driver_present`]), so a machine without one gets an error, never cudarc's
//! panic. Every method makes the device's (primary) context current on the calling thread
//! first, so the device may move to the progress thread. Copies and kernels go to the
//! device's own non-blocking stream; because [`Device`]'s methods return when their work is
//! done, each waits for that stream (`cuStreamSynchronize`) before returning: the progress
//! thread waits, never the caller's thread, whose stream ordering is `stream_order.rs`'s.
//! CRC32C runs as one thread per 4 KiB chunk; the host combines the chunks' CRCs
//! (`crc32c_combine`).
//!
//! Not yet run on a GPU (none was available while it was written): compile-checked, and
//! without a driver tested to refuse cleanly. The kernels themselves are checked on the host
//! (`host_check.rs`) and their NVRTC build in `nvrtc.rs`. Sources: CUDA Driver API
//! (primary context, `cuModuleLoadData`, `cuLaunchKernel`, `cuMemcpyDtoDAsync`).

use super::driver;
use super::kernels;
use super::nvrtc::{self, Output};
use cudarc::driver::{result, sys};
use dmsc_core::device::{Device, DeviceBuffer};
use dmsc_core::engine::MemKind;
use dmsc_core::error::{Error, Result};
use dmsc_core::reduce::factor_as_int;
use dmsc_core::{DataType, ReduceOp};
use std::collections::HashMap;
use std::ffi::{c_void, CString};

/// Threads per block of every launch.
const BLOCK: u32 = 256;
/// The most blocks of one launch (the kernels' grid-stride loops cover any count).
const MAX_GRID: u64 = 4096;
/// Bytes of one CRC32C chunk (one device thread each).
const CRC_CHUNK: usize = 4096;

/// One GPU: its primary context, a stream of dmsc's, and the loaded kernels.
pub struct CudaDevice {
    ordinal: u32,
    dev: sys::CUdevice,
    ctx: sys::CUcontext,
    stream: sys::CUstream,
    module: sys::CUmodule,
    functions: HashMap<String, sys::CUfunction>,
    arch: u32,
}

// SAFETY: CUDA handles may be used from any thread once their context is current there;
// every method of CudaDevice makes it current first (`bind`), and the device is used by one
// thread at a time (`&mut self`).
unsafe impl Send for CudaDevice {}

/// What keeps a [`Device::alloc`] allocation: freed in its context when dropped.
struct DeviceAlloc {
    ptr: sys::CUdeviceptr,
    ctx: sys::CUcontext,
}

// SAFETY: as for CudaDevice: the free binds the context on whichever thread drops it.
unsafe impl Send for DeviceAlloc {}

impl Drop for DeviceAlloc {
    fn drop(&mut self) {
        // SAFETY: the context is retained for as long as the device lives, which the engine
        // keeps longer than its buffers; the pointer was allocated in it and is freed once.
        unsafe {
            let _ = result::ctx::set_current(self.ctx);
            let _ = result::free_sync(self.ptr);
        }
    }
}

impl CudaDevice {
    /// Open GPU `ordinal`: retain its primary context, create a stream, and load the
    /// kernels compiled for its architecture. Errors (never panics) when there is no driver,
    /// no such GPU, or no NVRTC.
    pub fn open(ordinal: u32) -> Result<CudaDevice> {
        let what = format!("opening CUDA device {ordinal}");
        if !driver::driver_present() {
            return Err(driver::no_driver(&what));
        }
        result::init().map_err(|e| driver::error(format!("{what}: cuInit"), e))?;
        let count = result::device::get_count()
            .map_err(|e| driver::error(format!("{what}: cuDeviceGetCount"), e))?;
        if ordinal as i64 >= count as i64 {
            return Err(Error::invalid(format!(
                "{what}: this machine has {count} CUDA device(s)"
            )));
        }
        let dev = result::device::get(ordinal as i32)
            .map_err(|e| driver::error(format!("{what}: cuDeviceGet"), e))?;
        let attr = |a| {
            // SAFETY: `dev` came from cuDeviceGet.
            unsafe { result::device::get_attribute(dev, a) }
                .map_err(|e| driver::error(format!("{what}: cuDeviceGetAttribute"), e))
        };
        use sys::CUdevice_attribute::*;
        let major = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let arch = (major * 10 + minor) as u32;
        let image = nvrtc::compile(arch, Output::Cubin)?;
        // SAFETY: `dev` is valid; the retained context is released in Drop.
        let ctx = unsafe { result::primary_ctx::retain(dev) }
            .map_err(|e| driver::error(format!("{what}: cuDevicePrimaryCtxRetain"), e))?;
        let mut device = CudaDevice {
            ordinal,
            dev,
            ctx,
            stream: std::ptr::null_mut(),
            module: std::ptr::null_mut(),
            functions: HashMap::new(),
            arch,
        };
        device.bind()?;
        device.stream = result::stream::create(result::stream::StreamKind::NonBlocking)
            .map_err(|e| driver::error(format!("{what}: cuStreamCreate"), e))?;
        // SAFETY: a CUBIN image, kept alive (in the NVRTC cache) for the call.
        device.module = unsafe { result::module::load_data(image.bytes.as_ptr() as *const c_void) }
            .map_err(|e| driver::error(format!("{what}: cuModuleLoadData(sm_{arch})"), e))?;
        Ok(device)
    }

    /// The GPU's compute capability as `major * 10 + minor`.
    pub fn arch(&self) -> u32 {
        self.arch
    }

    /// Copy `src` from host memory to `dst` in this device's memory, and wait.
    ///
    /// # Safety
    /// `dst` is valid for writes of `src.len()` bytes of this device's memory.
    pub unsafe fn upload(&mut self, dst: *mut u8, src: &[u8]) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees `dst`; `src` is a live slice.
        unsafe { result::memcpy_htod_sync(dst as u64, src) }
            .map_err(|e| driver::error(format!("cuMemcpyHtoD({} bytes)", src.len()), e))
    }

    /// Copy `dst.len()` bytes at `src` in this device's memory to host memory, and wait.
    ///
    /// # Safety
    /// `src` is valid for reads of `dst.len()` bytes of this device's memory.
    pub unsafe fn download(&mut self, dst: &mut [u8], src: *const u8) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees `src`; `dst` is a live slice.
        unsafe { result::memcpy_dtoh_sync(dst, src as u64) }
            .map_err(|e| driver::error(format!("cuMemcpyDtoH({} bytes)", dst.len()), e))
    }

    /// Make the device's context current on this thread.
    fn bind(&self) -> Result<()> {
        // SAFETY: the context is retained until Drop.
        unsafe { result::ctx::set_current(self.ctx) }
            .map_err(|e| driver::error(format!("cuda:{}: cuCtxSetCurrent", self.ordinal), e))
    }

    fn function(&mut self, name: &str) -> Result<sys::CUfunction> {
        if let Some(f) = self.functions.get(name) {
            return Ok(*f);
        }
        let c = CString::new(name).map_err(|_| Error::internal("kernel name with a NUL"))?;
        // SAFETY: the module is loaded until Drop.
        let f = unsafe { result::module::get_function(self.module, c) }
            .map_err(|e| driver::error(format!("cuModuleGetFunction({name})"), e))?;
        self.functions.insert(name.to_string(), f);
        Ok(f)
    }

    /// Launch `name` over `elems` elements with `params` (pointers to each argument), and
    /// wait for it.
    ///
    /// # Safety
    /// The arguments match the kernel's signature and the memory they name is valid for it.
    unsafe fn launch(&mut self, name: &str, elems: u64, params: &mut [*mut c_void]) -> Result<()> {
        self.bind()?;
        let f = self.function(name)?;
        let grid = elems.div_ceil(BLOCK as u64).clamp(1, MAX_GRID) as u32;
        // SAFETY: the caller guarantees the arguments; the function is from our module.
        unsafe { result::launch_kernel(f, (grid, 1, 1), (BLOCK, 1, 1), 0, self.stream, params) }
            .map_err(|e| driver::error(format!("cuLaunchKernel({name})"), e))?;
        self.sync(name)
    }

    fn sync(&self, what: &str) -> Result<()> {
        // SAFETY: our own live stream.
        unsafe { result::stream::synchronize(self.stream) }
            .map_err(|e| driver::error(format!("cuStreamSynchronize after {what}"), e))
    }
}

/// The operands of an element-wise reduction over `n` bytes, as the host device allows them:
/// `dst` is `a` (in place) or overlaps neither operand.
fn check_operands(dst: *const u8, a: *const u8, b: *const u8, n: usize) -> Result<()> {
    let overlap = |p: *const u8, q: *const u8| {
        let (p, q) = (p as usize, q as usize);
        n > 0 && p < q.saturating_add(n) && q < p.saturating_add(n)
    };
    if overlap(dst, b) || (!std::ptr::eq(dst, a) && overlap(dst, a)) {
        return Err(Error::internal("reduction operands overlap"));
    }
    Ok(())
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        // SAFETY: handles created in `open`, each released once, in their context.
        unsafe {
            let _ = result::ctx::set_current(self.ctx);
            if !self.module.is_null() {
                let _ = result::module::unload(self.module);
            }
            if !self.stream.is_null() {
                let _ = result::stream::destroy(self.stream);
            }
            let _ = result::primary_ctx::release(self.dev);
        }
    }
}

/// Names for [`Device::name`], which is `'static`.
const NAMES: [&str; 16] = [
    "cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:4", "cuda:5", "cuda:6", "cuda:7", "cuda:8",
    "cuda:9", "cuda:10", "cuda:11", "cuda:12", "cuda:13", "cuda:14", "cuda:15",
];

impl Device for CudaDevice {
    fn name(&self) -> &'static str {
        NAMES.get(self.ordinal as usize).copied().unwrap_or("cuda")
    }

    fn kind(&self) -> MemKind {
        MemKind::Cuda {
            device: self.ordinal,
        }
    }

    fn alloc(&mut self, len: usize) -> Result<DeviceBuffer> {
        self.bind()?;
        // SAFETY: an allocation in the current context (cuMemAlloc aligns to 256 bytes).
        let ptr = unsafe { result::malloc_sync(len.max(1)) }
            .map_err(|e| driver::error(format!("cuMemAlloc({len} bytes) on {}", self.name()), e))?;
        let owner = DeviceAlloc { ptr, ctx: self.ctx };
        // SAFETY: `len` bytes of device memory, 256-byte aligned, owned by `owner`.
        Ok(unsafe { DeviceBuffer::from_raw(ptr as *mut u8, len, self.kind(), Box::new(owner)) })
    }

    unsafe fn copy(&mut self, dst: *mut u8, src: *const u8, n: usize) -> Result<()> {
        if n == 0 || std::ptr::eq(dst, src) {
            return Ok(());
        }
        self.bind()?;
        let (d, s) = (dst as u64, src as u64);
        if d < s + n as u64 && s < d + n as u64 {
            // cuMemcpy requires disjoint ranges: go through a scratch buffer.
            let tmp = self.alloc(n)?;
            // SAFETY: the caller guarantees both ranges; `tmp` holds n bytes.
            unsafe {
                self.copy(tmp.ptr(), src, n)?;
                return self.copy(dst, tmp.ptr(), n);
            }
        }
        // SAFETY: the caller guarantees both ranges, disjoint here, in this device's memory.
        unsafe { result::memcpy_dtod_async(d, s, n, self.stream) }
            .map_err(|e| driver::error(format!("cuMemcpyDtoDAsync({n} bytes)"), e))?;
        self.sync("a copy")
    }

    unsafe fn reduce_into(
        &mut self,
        dtype: DataType,
        op: ReduceOp,
        dst: *mut u8,
        a: *const u8,
        b: *const u8,
        n: usize,
    ) -> Result<()> {
        op.check_dtype(dtype)?;
        check_operands(dst, a, b, n)?;
        let elems = kernels::elements(dtype, n)?;
        if elems == 0 {
            return Ok(());
        }
        let name = kernels::reduce_kernel(dtype, op)
            .ok_or_else(|| Error::internal(format!("no kernel for {op} on {dtype}")))?;
        let (mut d, mut x, mut y, mut e) = (dst as u64, a as u64, b as u64, elems);
        let mut params = [
            &mut d as *mut u64 as *mut c_void,
            &mut x as *mut u64 as *mut c_void,
            &mut y as *mut u64 as *mut c_void,
            &mut e as *mut u64 as *mut c_void,
        ];
        // SAFETY: (dst, a, b, n) is the signature of every reduce kernel; the caller
        // guarantees the ranges.
        unsafe { self.launch(&name, elems, &mut params) }
    }

    unsafe fn scale_div(
        &mut self,
        dtype: DataType,
        dst: *mut u8,
        n: usize,
        divisor: usize,
    ) -> Result<()> {
        if divisor == 0 {
            return Err(kernels::zero_divisor());
        }
        let elems = kernels::elements(dtype, n)?;
        if elems == 0 {
            return Ok(());
        }
        let (mut d, mut e, mut q) = (dst as u64, elems, divisor as u64);
        let mut params = [
            &mut d as *mut u64 as *mut c_void,
            &mut e as *mut u64 as *mut c_void,
            &mut q as *mut u64 as *mut c_void,
        ];
        // SAFETY: (dst, n, divisor) is the scale_div signature; the caller guarantees dst.
        unsafe { self.launch(&kernels::scale_div_kernel(dtype), elems, &mut params) }
    }

    unsafe fn scale_mul(
        &mut self,
        dtype: DataType,
        dst: *mut u8,
        src: *const u8,
        n: usize,
        factor: f64,
    ) -> Result<()> {
        let mut whole = factor_as_int(dtype, factor)?;
        let elems = kernels::elements(dtype, n)?;
        if elems == 0 {
            return Ok(());
        }
        let (mut d, mut s, mut e, mut f) = (dst as u64, src as u64, elems, factor);
        let mut params = [
            &mut d as *mut u64 as *mut c_void,
            &mut s as *mut u64 as *mut c_void,
            &mut e as *mut u64 as *mut c_void,
            &mut f as *mut f64 as *mut c_void,
            &mut whole as *mut i64 as *mut c_void,
        ];
        // SAFETY: (dst, src, n, factor, whole) is the scale_mul signature; the caller
        // guarantees the ranges.
        unsafe { self.launch(&kernels::scale_mul_kernel(dtype), elems, &mut params) }
    }

    unsafe fn crc32c(&mut self, src: *const u8, n: usize) -> Result<u32> {
        if n == 0 {
            return Ok(0);
        }
        let chunks = n.div_ceil(CRC_CHUNK);
        let out = self.alloc(chunks * 4)?;
        let (mut s, mut len, mut chunk, mut o) =
            (src as u64, n as u64, CRC_CHUNK as u64, out.ptr() as u64);
        let mut params = [
            &mut s as *mut u64 as *mut c_void,
            &mut len as *mut u64 as *mut c_void,
            &mut chunk as *mut u64 as *mut c_void,
            &mut o as *mut u64 as *mut c_void,
        ];
        // SAFETY: (src, n, chunk, out) is the CRC kernel's signature; `out` holds a CRC per
        // chunk and the caller guarantees `src`.
        unsafe { self.launch(kernels::CRC32C_CHUNKS, chunks as u64, &mut params)? };
        let mut parts = vec![0u32; chunks];
        // SAFETY: `out` holds `chunks` CRCs, written by the finished kernel.
        unsafe { result::memcpy_dtoh_sync(&mut parts, out.ptr() as u64) }
            .map_err(|e| driver::error("cuMemcpyDtoH(CRC32C chunks)", e))?;
        let mut crc = 0;
        for (i, part) in parts.iter().enumerate() {
            crc = crc32c::crc32c_combine(crc, *part, CRC_CHUNK.min(n - i * CRC_CHUNK));
        }
        Ok(crc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands_are_checked_as_on_the_host() {
        let p = |a: usize| a as *const u8;
        assert!(check_operands(p(0x1000), p(0x1000), p(0x2000), 64).is_ok());
        assert!(check_operands(p(0x3000), p(0x1000), p(0x2000), 64).is_ok());
        assert!(check_operands(p(0x1000), p(0x1000), p(0x1000), 64).is_err());
        assert!(check_operands(p(0x1010), p(0x1000), p(0x2000), 64).is_err());
        assert!(check_operands(p(0x2010), p(0x1000), p(0x2000), 64).is_err());
        assert_eq!(kernels::elements(DataType::Float16, 6).unwrap(), 3);
        let e = kernels::elements(DataType::Float32, 6)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("6 bytes is not a whole number of float elements"),
            "{e}"
        );
    }

    /// With no driver, opening a device is an error that says so; with one, the tests that
    /// need a GPU run in scripts/gpu-check.sh.
    #[test]
    fn opening_a_device_without_a_driver_is_an_error_not_a_panic() {
        if driver::driver_present() {
            eprintln!(
                "SKIPPED: this machine has a CUDA driver; the no-driver path is not testable here"
            );
            return;
        }
        let e = CudaDevice::open(0)
            .err()
            .expect("no device without a driver");
        let msg = e.to_string();
        assert!(
            msg.contains("CUDA device 0") && msg.contains("libcuda.so"),
            "{msg}"
        );
    }
}
