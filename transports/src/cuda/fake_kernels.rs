//! FAKE kernels of a fake GPU for the engine: dmsc-core's host kernels
//! ([`HostDevice`]) on the "device memory" of
//! [`FakeDeviceMemory`](super::fake_device::FakeDeviceMemory), which is host memory, under the
//! memory kind of CUDA device `ordinal`. With a transport that carries that kind, the engine
//! then runs a call on the fake device's buffers as it would on a GPU's with
//! [`CudaDevice`](super::device::CudaDevice) (with the `cuda` feature), so the communicator's
//! unstaged path is tested on machines without a GPU. It counts the operations it was
//! given, so a test can see that the engine used it.

use dmsc_core::device::{Device, DeviceBuffer, HostDevice};
use dmsc_core::engine::MemKind;
use dmsc_core::error::Result;
use dmsc_core::{DataType, ReduceOp};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The FAKE kernel device of one fake GPU.
pub struct FakeKernels {
    ordinal: u32,
    ops: Arc<AtomicUsize>,
}

impl FakeKernels {
    /// Kernels on fake CUDA device `ordinal`'s memory, counting their operations in `ops`.
    pub fn new(ordinal: u32, ops: Arc<AtomicUsize>) -> FakeKernels {
        FakeKernels { ordinal, ops }
    }

    fn count(&self) {
        self.ops.fetch_add(1, Ordering::Relaxed);
    }
}

impl Device for FakeKernels {
    fn name(&self) -> &'static str {
        "fake cuda kernels"
    }

    fn kind(&self) -> MemKind {
        MemKind::Cuda {
            device: self.ordinal,
        }
    }

    fn alloc(&mut self, len: usize) -> Result<DeviceBuffer> {
        self.count();
        let b = HostDevice.alloc(len)?;
        let (ptr, len) = (b.ptr(), b.len());
        // SAFETY: `b`'s memory, valid for `len` bytes and aligned to 8 while `b` (the owner)
        // lives, used by nobody else.
        Ok(unsafe { DeviceBuffer::from_raw(ptr, len, self.kind(), Box::new(b)) })
    }

    unsafe fn copy(&mut self, dst: *mut u8, src: *const u8, n: usize) -> Result<()> {
        self.count();
        // SAFETY: forwarded contract; the fake's device memory is host memory.
        unsafe { HostDevice.copy(dst, src, n) }
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
        self.count();
        // SAFETY: forwarded contract; the fake's device memory is host memory.
        unsafe { HostDevice.reduce_into(dtype, op, dst, a, b, n) }
    }

    unsafe fn scale_div(
        &mut self,
        dtype: DataType,
        dst: *mut u8,
        n: usize,
        divisor: usize,
    ) -> Result<()> {
        self.count();
        // SAFETY: forwarded contract; the fake's device memory is host memory.
        unsafe { HostDevice.scale_div(dtype, dst, n, divisor) }
    }

    unsafe fn scale_mul(
        &mut self,
        dtype: DataType,
        dst: *mut u8,
        src: *const u8,
        n: usize,
        factor: f64,
    ) -> Result<()> {
        self.count();
        // SAFETY: forwarded contract; the fake's device memory is host memory.
        unsafe { HostDevice.scale_mul(dtype, dst, src, n, factor) }
    }

    unsafe fn crc32c(&mut self, src: *const u8, n: usize) -> Result<u32> {
        self.count();
        // SAFETY: forwarded contract; the fake's device memory is host memory.
        unsafe { HostDevice.crc32c(src, n) }
    }
}
