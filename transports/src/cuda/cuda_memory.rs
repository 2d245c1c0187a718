//! [`DeviceMemory`] on the CUDA driver: the primary context of one GPU, streams created
//! non-blocking, pinned host memory from `cuMemHostAlloc`, and copies queued with
//! `cuMemcpyDtoHAsync` / `cuMemcpyHtoDAsync`; the stream and event operations are
//! [`CudaStreams`]'. Source: CUDA Driver API reference, "Memory Management", "Stream
//! Management", "Primary Context Management".
//!
//! Not yet run on a GPU (none was available while it was written); compile-checked only.
//! The communicator's staging that drives it is tested against the fake
//! ([`super::fake_device::FakeDeviceMemory`]).

use super::cuda_streams::{CudaEvent, CudaGate, CudaStreams, StreamHandle};
use super::device::CudaDevice;
use super::device_memory::{DeviceMemory, PinnedBuffer};
use super::driver;
use super::stream_kernels::StreamKernels;
use super::stream_order::StreamOps;
use cudarc::driver::{result, sys};
use dmsc_core::device::Device;
use dmsc_core::error::{Error, Result};
use dmsc_core::{DataType, ReduceOp};
use std::ffi::c_void;

/// One GPU's memory operations in its primary context (retained while this lives).
#[derive(Debug)]
pub struct CudaMemory {
    ordinal: u32,
    dev: sys::CUdevice,
    ctx: sys::CUcontext,
    streams: CudaStreams,
    kernels: StreamKernels,
}

// SAFETY: the handles are the driver's, usable from any thread once the context is current
// there (`bind`, which every thread calls first).
unsafe impl Send for CudaMemory {}

impl CudaMemory {
    /// How many GPUs the driver sees. Errors (never panics) without a driver.
    pub fn count() -> Result<u32> {
        let what = "counting CUDA devices";
        if !driver::driver_present() {
            return Err(driver::no_driver(what));
        }
        result::init().map_err(|e| driver::error(format!("{what}: cuInit"), e))?;
        let count = result::device::get_count()
            .map_err(|e| driver::error(format!("{what}: cuDeviceGetCount"), e))?;
        Ok(count.max(0) as u32)
    }

    /// GPU `ordinal`'s memory operations. Errors (never panics) without a driver or GPU.
    pub fn open(ordinal: u32) -> Result<CudaMemory> {
        let what = format!("opening CUDA device {ordinal} for staging");
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
        // SAFETY: `dev` came from cuDeviceGet; released in Drop.
        let ctx = unsafe { result::primary_ctx::retain(dev) }
            .map_err(|e| driver::error(format!("{what}: cuDevicePrimaryCtxRetain"), e))?;
        Ok(CudaMemory {
            ordinal,
            dev,
            ctx,
            streams: CudaStreams,
            kernels: StreamKernels::default(),
        })
    }
}

impl Drop for CudaMemory {
    fn drop(&mut self) {
        // SAFETY: retained once in `open`, released once here.
        let _ = unsafe { result::primary_ctx::release(self.dev) };
    }
}

/// Pinned host memory from `cuMemHostAlloc`, freed with `cuMemFreeHost`.
#[derive(Debug)]
pub struct CudaPinned(*mut u8);

// SAFETY: page-locked host memory owned by this value alone.
unsafe impl Send for CudaPinned {}

impl PinnedBuffer for CudaPinned {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0
    }
}

impl Drop for CudaPinned {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: allocated by cuMemHostAlloc, freed once, here; the staging keeps the
            // buffer until the copies queued on it have run.
            let _ = unsafe { result::free_host(self.0 as *mut c_void) };
        }
    }
}

impl StreamOps for CudaMemory {
    type Stream = StreamHandle;
    type Event = CudaEvent;
    type Gate = CudaGate;

    fn create_event(&mut self) -> Result<CudaEvent> {
        self.streams.create_event()
    }
    fn create_gate(&mut self, value: u32) -> Result<CudaGate> {
        self.streams.create_gate(value)
    }
    fn record(&mut self, event: &CudaEvent, stream: StreamHandle) -> Result<()> {
        self.streams.record(event, stream)
    }
    fn query(&mut self, event: &CudaEvent) -> Result<bool> {
        self.streams.query(event)
    }
    fn wait_event(&mut self, stream: StreamHandle, event: &CudaEvent) -> Result<()> {
        self.streams.wait_event(stream, event)
    }
    fn wait_gate(&mut self, stream: StreamHandle, gate: &CudaGate, value: u32) -> Result<()> {
        self.streams.wait_gate(stream, gate, value)
    }
    fn open_gate(&mut self, stream: StreamHandle, gate: &CudaGate, value: u32) -> Result<()> {
        self.streams.open_gate(stream, gate, value)
    }
}

impl DeviceMemory for CudaMemory {
    type Pinned = CudaPinned;

    fn bind(&mut self) -> Result<()> {
        // SAFETY: a context retained by `open` and not yet released.
        unsafe { result::ctx::set_current(self.ctx) }
            .map_err(|e| driver::error(format!("cuCtxSetCurrent(device {})", self.ordinal), e))
    }

    fn create_stream(&mut self) -> Result<StreamHandle> {
        let s = result::stream::create(result::stream::StreamKind::NonBlocking)
            .map_err(|e| driver::error("cuStreamCreate(staging)", e))?;
        // SAFETY: just created in the current context; never destroyed while the
        // communicator lives (the stream is leaked at its end, as its work may still run).
        Ok(unsafe { StreamHandle::from_raw(s) })
    }

    unsafe fn caller_stream(&mut self, raw: usize) -> StreamHandle {
        // SAFETY: the caller's contract: 0 or a live stream of this device.
        unsafe { StreamHandle::from_raw(raw as sys::CUstream) }
    }

    fn kernels(&mut self, ordinal: u32) -> Result<Box<dyn Device>> {
        Ok(Box::new(CudaDevice::open(ordinal)?))
    }

    fn alloc_pinned(&mut self, len: usize) -> Result<CudaPinned> {
        if len == 0 {
            return Ok(CudaPinned(std::ptr::null_mut()));
        }
        // SAFETY: an allocation in the current context; freed by CudaPinned's Drop.
        unsafe { result::malloc_host(len, 0) }
            .map(|p| CudaPinned(p as *mut u8))
            .map_err(|e| driver::error(format!("cuMemHostAlloc({len} B)"), e))
    }

    unsafe fn copy_to_host(
        &mut self,
        stream: StreamHandle,
        dst: *mut u8,
        src: usize,
        len: usize,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the caller's contract: `dst..dst+len` is host memory and `src..src+len`
        // device memory, both valid until the copy has run on `stream`.
        unsafe {
            let dst = std::slice::from_raw_parts_mut(dst, len);
            result::memcpy_dtoh_async(dst, src as sys::CUdeviceptr, stream.as_raw())
        }
        .map_err(|e| driver::error(format!("cuMemcpyDtoHAsync({len} B from {src:#x})"), e))
    }

    unsafe fn copy_to_device(
        &mut self,
        stream: StreamHandle,
        dst: usize,
        src: *const u8,
        len: usize,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        // SAFETY: as in copy_to_host, the other way round.
        unsafe {
            let src = std::slice::from_raw_parts(src, len);
            result::memcpy_htod_async(dst as sys::CUdeviceptr, src, stream.as_raw())
        }
        .map_err(|e| driver::error(format!("cuMemcpyHtoDAsync({len} B to {dst:#x})"), e))
    }
}

impl super::ipc_memory::MappedPeer for super::ipc_handle::ImportedBuffer {
    fn addr(&self) -> usize {
        self.ptr as usize
    }
    fn len(&self) -> usize {
        self.len as usize
    }
}

/// CUDA IPC on the driver: `cuIpcGetMemHandle` / `cuIpcOpenMemHandle` (through
/// [`super::ipc_handle`]) and `cuMemcpyDtoDAsync` on a copy engine. Compile-checked only.
impl super::ipc_memory::IpcMemory for CudaMemory {
    type Mapped = super::ipc_handle::ImportedBuffer;

    fn export(&mut self, ptr: usize, len: usize) -> Result<super::ipc_handle::IpcExport> {
        self.bind()?;
        super::ipc_handle::export(ptr as u64, len as u64, self.dev)
    }

    fn open_peer(
        &mut self,
        export: &super::ipc_handle::IpcExport,
    ) -> Result<super::ipc_handle::ImportedBuffer> {
        self.bind()?;
        super::ipc_handle::ImportedBuffer::open(export, self.dev)
    }

    unsafe fn copy_device_to_device(
        &mut self,
        stream: StreamHandle,
        dst: usize,
        src: usize,
        len: usize,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the caller's contract: both ranges are device memory of this process
        // (mapped peer buffers included), valid until the copy has run on `stream`.
        unsafe {
            result::memcpy_dtod_async(
                dst as sys::CUdeviceptr,
                src as sys::CUdeviceptr,
                len,
                stream.as_raw(),
            )
        }
        .map_err(|e| driver::error(format!("cuMemcpyDtoDAsync({len} B)"), e))
    }

    fn device_uuid(&mut self) -> Result<[u8; 16]> {
        let uuid =
            result::device::get_uuid(self.dev).map_err(|e| driver::error("cuDeviceGetUuid", e))?;
        Ok(uuid.bytes.map(|c| c as u8))
    }

    fn reduces_on_stream(&self) -> bool {
        true
    }

    unsafe fn reduce_on_stream(
        &mut self,
        stream: StreamHandle,
        dtype: DataType,
        op: ReduceOp,
        dst: usize,
        a: usize,
        b: usize,
        len: usize,
    ) -> Result<()> {
        op.check_dtype(dtype)?;
        // SAFETY: the caller's contract (ranges valid until the kernel has run; the context
        // is current on this thread, `bind`).
        unsafe {
            self.kernels
                .reduce(self.dev, stream.as_raw(), dtype, op, dst, a, b, len)
        }
    }

    unsafe fn divide_on_stream(
        &mut self,
        stream: StreamHandle,
        dtype: DataType,
        dst: usize,
        len: usize,
        n: usize,
    ) -> Result<()> {
        // SAFETY: as in reduce_on_stream.
        unsafe {
            self.kernels
                .divide(self.dev, stream.as_raw(), dtype, dst, len, n)
        }
    }
}
