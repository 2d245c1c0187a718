//! Calls on CUDA device buffers, staged through pinned host memory and ordered on the
//! caller's stream (issue 12, the TCP staging path).
//!
//! A call whose buffers are device memory runs so ([`stager`]):
//! 1. on the calling thread: its buffers get pinned host twins and the call is rewritten onto
//!    them ([`staged`]); the operation is ordered on the caller's stream
//!    (`dmsc_transports::cuda::stream_order::StreamOrder::submit`: a start event, and a wait
//!    on the communicator's gate for the caller's later work); the thread returns;
//! 2. on the communicator's staging thread, in call order: dmsc's own stream waits for the
//!    start event; the device buffers are copied device-to-host in chunks (driven by
//!    `dmsc_transports::cuda::staging::Staging`, a few chunks in flight); the host collective
//!    runs on the twins through the engine as any host call; the written buffers are copied
//!    back host-to-device in chunks; the gate opens on dmsc's stream, releasing the caller's
//!    stream; the request completes once the device has run the copies.
//!
//! A failure opens the gate too (the caller's stream never hangs), and goes to the request
//! and to the communicator's asynchronous error (`ncclCommGetAsyncError`).
//!
//! The device operations are `dmsc_transports::cuda::device_memory::DeviceMemory`: the CUDA
//! driver with the `cuda` feature, or the FAKE device the tests attach
//! ([`Communicator::use_device_memory`](crate::Communicator::use_device_memory)).
//!
//! Not done yet: the copies of one chunk do not overlap the network transfer of the previous
//! one (the whole buffer is staged before the host collective starts); CUDA IPC between
//! ranks of one host. Sources: NCCL's stream semantics (ncclGroupEnd, enqueue) and its
//! network proxy's staging through host buffers, read for design only.

mod on_stream;
pub(crate) mod staged;
pub(crate) mod stager;
