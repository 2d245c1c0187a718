//! [`StreamKernels`]: dmsc's reduction and division kernels (`kernels::SOURCE`, compiled by
//! NVRTC for the GPU's architecture) launched on a stream the caller chooses, without
//! waiting: what `cuda_memory::CudaMemory` needs to reduce over CUDA IPC on dmsc's stream
//! (`device::CudaDevice` launches the same kernels on its own stream and waits for each).
//!
//! The module is loaded on first use into the current context (the GPU's primary context,
//! made current by the caller) and stays loaded while the context lives (the driver unloads
//! it with the context). Not yet run on a GPU (none was available); compile-checked only.
//! Sources: CUDA Driver API reference, "Module Management" and "Execution Control"
//! (`cuModuleLoadData`, `cuModuleGetFunction`, `cuLaunchKernel`).

use super::driver;
use super::kernels;
use super::nvrtc::{self, Output};
use cudarc::driver::{result, sys};
use dmsc_core::error::{Error, Result};
use dmsc_core::{DataType, ReduceOp};
use std::collections::HashMap;
use std::ffi::{c_void, CString};

/// Threads per block of every launch (the kernels are grid-stride loops).
const BLOCK: u32 = 256;
/// Most blocks of a launch.
const MAX_GRID: u64 = 4096;

/// The kernels of one GPU, loaded on first use.
#[derive(Debug, Default)]
pub struct StreamKernels {
    module: Option<sys::CUmodule>,
    functions: HashMap<String, sys::CUfunction>,
}

// SAFETY: driver handles, usable from any thread in whose current context they live.
unsafe impl Send for StreamKernels {}

impl StreamKernels {
    fn function(&mut self, dev: sys::CUdevice, name: &str) -> Result<sys::CUfunction> {
        if let Some(f) = self.functions.get(name) {
            return Ok(*f);
        }
        let module = match self.module {
            Some(m) => m,
            None => {
                let attr = |a| {
                    // SAFETY: `dev` came from cuDeviceGet.
                    unsafe { result::device::get_attribute(dev, a) }
                        .map_err(|e| driver::error("cuDeviceGetAttribute", e))
                };
                use sys::CUdevice_attribute::*;
                let arch = (attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)? * 10
                    + attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?)
                    as u32;
                let image = nvrtc::compile(arch, Output::Cubin)?;
                // SAFETY: a CUBIN image, alive (in the NVRTC cache) for the call; the caller
                // made the GPU's context current.
                let m = unsafe { result::module::load_data(image.bytes.as_ptr() as *const c_void) }
                    .map_err(|e| driver::error(format!("cuModuleLoadData(sm_{arch})"), e))?;
                self.module = Some(m);
                m
            }
        };
        let c = CString::new(name).map_err(|_| Error::internal("kernel name with a NUL"))?;
        // SAFETY: the module is loaded in the current context.
        let f = unsafe { result::module::get_function(module, c) }
            .map_err(|e| driver::error(format!("cuModuleGetFunction({name})"), e))?;
        self.functions.insert(name.to_string(), f);
        Ok(f)
    }

    /// Queue `name` over `elems` elements with `params` on `stream`.
    ///
    /// # Safety
    /// The arguments match the kernel's signature and the memory they name is valid until
    /// the kernel has run on `stream`.
    unsafe fn launch(
        &mut self,
        dev: sys::CUdevice,
        stream: sys::CUstream,
        name: &str,
        elems: u64,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        let f = self.function(dev, name)?;
        let grid = elems.div_ceil(BLOCK as u64).clamp(1, MAX_GRID) as u32;
        // SAFETY: the caller guarantees the arguments; the function is from our module.
        unsafe { result::launch_kernel(f, (grid, 1, 1), (BLOCK, 1, 1), 0, stream, params) }
            .map_err(|e| driver::error(format!("cuLaunchKernel({name})"), e))
    }

    /// Queue `dst = a ⊕ b` over `len` bytes of `dtype` on `stream` (`⊕`: `op`'s combiner).
    ///
    /// # Safety
    /// The three ranges are device memory valid until the kernel has run on `stream`; the
    /// GPU's context is current.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn reduce(
        &mut self,
        dev: sys::CUdevice,
        stream: sys::CUstream,
        dtype: DataType,
        op: ReduceOp,
        dst: usize,
        a: usize,
        b: usize,
        len: usize,
    ) -> Result<()> {
        let elems = kernels::elements(dtype, len)?;
        if elems == 0 {
            return Ok(());
        }
        let name = kernels::reduce_kernel(dtype, op)
            .ok_or_else(|| Error::invalid(format!("no {op} reduction of {dtype}")))?;
        let (mut d, mut x, mut y, mut e) = (dst as u64, a as u64, b as u64, elems);
        let mut params = [
            &mut d as *mut u64 as *mut c_void,
            &mut x as *mut u64 as *mut c_void,
            &mut y as *mut u64 as *mut c_void,
            &mut e as *mut u64 as *mut c_void,
        ];
        // SAFETY: (dst, a, b, n) is the signature of every reduce kernel; the caller
        // guarantees the ranges.
        unsafe { self.launch(dev, stream, &name, elems, &mut params) }
    }

    /// Queue the division of every `dtype` element of `len` bytes at `dst` by `n`.
    ///
    /// # Safety
    /// As [`StreamKernels::reduce`].
    pub unsafe fn divide(
        &mut self,
        dev: sys::CUdevice,
        stream: sys::CUstream,
        dtype: DataType,
        dst: usize,
        len: usize,
        n: usize,
    ) -> Result<()> {
        if n == 0 {
            return Err(kernels::zero_divisor());
        }
        let elems = kernels::elements(dtype, len)?;
        if elems == 0 {
            return Ok(());
        }
        let (mut d, mut e, mut q) = (dst as u64, elems, n as u64);
        let mut params = [
            &mut d as *mut u64 as *mut c_void,
            &mut e as *mut u64 as *mut c_void,
            &mut q as *mut u64 as *mut c_void,
        ];
        // SAFETY: (dst, n, divisor) is the scale_div signature; the caller guarantees dst.
        unsafe {
            self.launch(
                dev,
                stream,
                &kernels::scale_div_kernel(dtype),
                elems,
                &mut params,
            )
        }
    }
}
