//! [`StreamOps`] on the CUDA driver: events without timing, `cuStreamWaitEvent`, and the gate
//! as a 32-bit word of device memory that streams wait on and write with the driver's stream
//! memory operations (`cuStreamWaitValue32` with `CU_STREAM_WAIT_VALUE_GEQ`,
//! `cuStreamWriteValue32`). Source: CUDA Driver API, "Stream Memory Operations" and "Event
//! Management".
//!
//! Not yet run on a GPU (none was available while it was written); compile-checked only.
//! The state machine it serves is tested against the fake GPU (`fake_gpu.rs`).

use super::driver;
use super::stream_order::StreamOps;
use cudarc::driver::{result, sys};
use dmsc_core::error::Result;

/// A CUDA stream handle (the caller's `cudaStream_t`, or dmsc's own), checked valid by
/// whoever made it ([`StreamHandle::from_raw`]).
#[derive(Clone, Copy, Debug)]
pub struct StreamHandle(sys::CUstream);

// SAFETY: a driver handle, usable from any thread in whose current context the stream lives.
unsafe impl Send for StreamHandle {}

impl StreamHandle {
    /// Wrap a raw stream.
    ///
    /// # Safety
    /// `stream` is NULL (the legacy default stream) or a live stream of the context that will
    /// be current when it is used, and stays live while any operation ordered on it runs.
    pub unsafe fn from_raw(stream: sys::CUstream) -> StreamHandle {
        StreamHandle(stream)
    }

    /// The raw handle.
    pub fn as_raw(self) -> sys::CUstream {
        self.0
    }
}

/// The CUDA driver's streams and events, in the context current on the calling thread.
#[derive(Debug, Default)]
pub struct CudaStreams;

/// An event (`CU_EVENT_DISABLE_TIMING`), destroyed when dropped. The driver keeps a
/// recorded event alive until the device has completed it, so dropping one that a stream
/// still waits on is safe (cuEventDestroy).
#[derive(Debug)]
pub struct CudaEvent(sys::CUevent);

// SAFETY: a driver handle, usable from any thread with its context current; owned by this
// value alone.
unsafe impl Send for CudaEvent {}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        // SAFETY: the event was created by cuEventCreate and is destroyed once, here.
        let _ = unsafe { result::event::destroy(self.0) };
    }
}

/// The gate: 4 bytes of device memory, freed when dropped.
#[derive(Debug)]
pub struct CudaGate(sys::CUdeviceptr);

impl Drop for CudaGate {
    fn drop(&mut self) {
        // SAFETY: allocated by cuMemAlloc in create_gate, freed once, here.
        let _ = unsafe { result::free_sync(self.0) };
    }
}

impl StreamOps for CudaStreams {
    type Stream = StreamHandle;
    type Event = CudaEvent;
    type Gate = CudaGate;

    fn create_event(&mut self) -> Result<CudaEvent> {
        result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
            .map(CudaEvent)
            .map_err(|e| driver::error("cuEventCreate", e))
    }

    fn create_gate(&mut self, value: u32) -> Result<CudaGate> {
        // SAFETY: a 4-byte allocation in the current context, then a synchronous store to it.
        unsafe {
            let p = result::malloc_sync(4).map_err(|e| driver::error("cuMemAlloc(gate)", e))?;
            let gate = CudaGate(p);
            sys::cuMemsetD32_v2(p, value, 1)
                .result()
                .map_err(|e| driver::error("cuMemsetD32(gate)", e))?;
            Ok(gate)
        }
    }

    fn record(&mut self, event: &CudaEvent, stream: StreamHandle) -> Result<()> {
        // SAFETY: a live event; `stream` is live in the current context (StreamHandle::from_raw).
        unsafe { result::event::record(event.0, stream.0) }
            .map_err(|e| driver::error("cuEventRecord", e))
    }

    fn query(&mut self, event: &CudaEvent) -> Result<bool> {
        // SAFETY: a live event.
        match unsafe { result::event::query(event.0) } {
            Ok(()) => Ok(true),
            Err(e) if e.0 == sys::cudaError_enum::CUDA_ERROR_NOT_READY => Ok(false),
            Err(e) => Err(driver::error("cuEventQuery", e)),
        }
    }

    fn wait_event(&mut self, stream: StreamHandle, event: &CudaEvent) -> Result<()> {
        // SAFETY: a live event and stream (StreamHandle::from_raw).
        unsafe {
            result::stream::wait_event(
                stream.0,
                event.0,
                sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
            )
        }
        .map_err(|e| driver::error("cuStreamWaitEvent", e))
    }

    fn wait_gate(&mut self, stream: StreamHandle, gate: &CudaGate, value: u32) -> Result<()> {
        let geq = sys::CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ as u32;
        // SAFETY: the gate's 4 bytes stay allocated while this communicator lives, which
        // outlasts every wait queued on it (the communicator synchronizes on close).
        unsafe { sys::cuStreamWaitValue32_v2(stream.0, gate.0, value, geq) }
            .result()
            .map_err(|e| driver::error("cuStreamWaitValue32", e))
    }

    fn open_gate(&mut self, stream: StreamHandle, gate: &CudaGate, value: u32) -> Result<()> {
        let flags = sys::CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT as u32;
        // SAFETY: as in wait_gate.
        unsafe { sys::cuStreamWriteValue32_v2(stream.0, gate.0, value, flags) }
            .result()
            .map_err(|e| driver::error("cuStreamWriteValue32", e))
    }
}
