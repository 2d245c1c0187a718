//! [`DeviceMemory`]: the few operations on device memory that staging a collective through
//! host memory needs, on top of the stream and event operations of
//! [`StreamOps`](super::stream_order::StreamOps): pinned host buffers, and copies between
//! device and host memory queued on a stream.
//!
//! Implemented over the CUDA driver (`cuda_memory`, with the `cuda` feature:
//! `cuMemHostAlloc`, `cuMemcpyDtoHAsync`, `cuMemcpyHtoDAsync`) and by a fake
//! ([`super::fake_device::FakeDeviceMemory`]) whose "device memory" is host memory, so the
//! communicator's stream-ordered path is tested on machines without a GPU. Source: CUDA
//! Driver API reference, "Memory Management".

use super::stream_order::StreamOps;
use dmsc_core::device::Device;
use dmsc_core::error::Result;

/// A pinned (page-locked) host buffer, freed when dropped.
pub trait PinnedBuffer: Send {
    /// The first byte; the buffer holds the length it was allocated with.
    fn as_mut_ptr(&mut self) -> *mut u8;
}

/// Device memory, streams and events of one device, as the communicator's staging uses them.
/// Every method only queues work or looks at state; none waits for the device.
pub trait DeviceMemory: StreamOps + Send {
    /// A pinned host buffer.
    type Pinned: PinnedBuffer;

    /// Make this device's context current on the calling thread (each thread that calls the
    /// other methods calls this first).
    fn bind(&mut self) -> Result<()>;
    /// A new stream for dmsc's own copies.
    fn create_stream(&mut self) -> Result<Self::Stream>;
    /// The caller's stream from its raw handle (`cudaStream_t` as an address; 0 is the
    /// default stream).
    ///
    /// # Safety
    /// `raw` is 0 or a live stream of this device, live while work ordered on it runs.
    unsafe fn caller_stream(&mut self, raw: usize) -> Self::Stream;
    /// `len` bytes of pinned host memory.
    fn alloc_pinned(&mut self, len: usize) -> Result<Self::Pinned>;
    /// This device's kernels as an engine [`Device`] for the memory of CUDA device
    /// `ordinal`, for calls the engine runs on the device buffers themselves (where the
    /// transport carries device memory): the driver's [`CudaDevice`](super::device::CudaDevice)
    /// with the `cuda` feature, FAKE kernels on the fake.
    fn kernels(&mut self, ordinal: u32) -> Result<Box<dyn Device>>;
    /// Queue on `stream` a copy of `len` bytes from device address `src` to host `dst`.
    ///
    /// # Safety
    /// Both ranges are valid (device memory of this device, host memory) until the copy
    /// has run on `stream`.
    unsafe fn copy_to_host(
        &mut self,
        stream: Self::Stream,
        dst: *mut u8,
        src: usize,
        len: usize,
    ) -> Result<()>;
    /// Queue on `stream` a copy of `len` bytes from host `src` to device address `dst`.
    ///
    /// # Safety
    /// As [`DeviceMemory::copy_to_host`].
    unsafe fn copy_to_device(
        &mut self,
        stream: Self::Stream,
        dst: usize,
        src: *const u8,
        len: usize,
    ) -> Result<()>;
}
