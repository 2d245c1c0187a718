//! Calls on CUDA device buffers, ordered on the caller's stream: staged through pinned host
//! memory, device to device over CUDA IPC, or run by the engine on the buffers themselves
//! where the transport carries device memory (the three paths are below).
//!
//! A staged call (the default path) runs so ([`stager`]):
//! 1. on the calling thread: its buffers get pinned host twins and the call is rewritten onto
//!    them ([`staged`]); the operation is ordered on the caller's stream
//!    (`dmsc_transports::cuda::stream_order::StreamOrder::submit`: a start event, and a wait
//!    on the communicator's gate for the caller's later work); the thread returns;
//! 2. on the communicator's staging thread, in call order: dmsc's own stream waits for the
//!    start event; the call runs as a pipeline of pieces ([`pieces`]: all-reduce, broadcast and
//!    reduce are cut along their elements into pieces of the staging chunk; other kinds are
//!    one piece), driven by `dmsc_transports::cuda::staging::Staging` with a few pieces in
//!    flight: piece `k` is copied device-to-host, its host collective runs on its part of the
//!    twins through the engine as any host call, and its written bytes are copied back, so
//!    the copy of piece `k + 1` overlaps the network transfer of piece `k`; the gate opens on
//!    dmsc's stream, releasing the caller's stream; the request completes once the device
//!    has run the copies back.
//!
//! A failure opens the gate too (the caller's stream never hangs), and goes to the request
//! and to the communicator's asynchronous error (`ncclCommGetAsyncError`).
//!
//! The device operations are `dmsc_transports::cuda::device_memory::DeviceMemory`: the CUDA
//! driver with the `cuda` feature, or the FAKE device the tests attach
//! ([`Communicator::use_device_memory`](crate::Communicator::use_device_memory)).
//!
//! When every rank is on this host (every peer served by shared memory) and `DMSC_CUDA_IPC`
//! is not `0`, all-gather and broadcast (and, on a device that reduces on a stream, the
//! reductions) run device to device over CUDA IPC instead ([`ipc_call`], on the same
//! staging thread and with the same stream ordering). When every rank's transport carries
//! the device's memory (RDMA with dma-bufs) and its engine has the device's kernels, and
//! `DMSC_CUDA_DIRECT` is not `0`, a call is one engine job on the device buffers themselves
//! (`stager`'s direct path). The ranks agree on the path once, when the device is attached
//! (`agreement`).
//!
//! Every rank of a call passes device buffers (as in NCCL), and every rank's staging chunk is
//! the same, so all ranks cut a call into the same pieces. Not done yet: pipelining the kinds
//! with one block per rank (all-gather, reduce-scatter, all-to-all(-v), gather, scatter,
//! send/receive groups are staged whole before their collective runs); caching CUDA IPC
//! exports and mappings across calls. Sources: NCCL's stream semantics (ncclGroupEnd, enqueue) and its
//! network proxy's staging through host buffers, read for design only.

mod agreement;
pub(crate) mod ipc_call;
mod on_stream;
pub(crate) mod pieces;
pub mod pointer;
pub(crate) mod staged;
pub(crate) mod stager;
