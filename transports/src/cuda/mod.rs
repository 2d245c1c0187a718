//! CUDA: dmsc's device kernels, the ordering of collectives on the caller's CUDA stream, and
//! (with the `cuda` feature) the CUDA device that runs the kernels on GPU memory.
//!
//! What is here without the feature, and tested on any machine:
//! - [`kernels`]: the CUDA C source of every reduction, scaling and CRC32C kernel, and their
//!   names per data type and operator. The tests compile the same source as host C++ and
//!   compare it with dmsc-core's host kernels.
//! - [`ipc_handle`]: the CUDA IPC export one rank sends a peer on its host, and its encoding
//!   (exporting and opening with the feature);
//! - [`staging`]: device data through host buffers in pipelined chunks (for TCP), as a
//!   state machine without I/O;
//! - [`ipc_memory`]: CUDA IPC between ranks of one host (export, open, device-to-device
//!   copies) as a trait over the device, and the opening and gathering of the peers'
//!   buffers of one exchange;
//! - [`device_memory`]: the narrow trait of device-memory operations the communicator's
//!   staging of device buffers uses, and [`fake_device`], its FAKE over host memory with
//!   streams run by a worker thread (for tests of the communicator without a GPU);
//! - [`stream_order`]: NCCL's stream semantics as a state machine over a small trait of
//!   stream and event operations ([`stream_order::StreamOps`]), tested against a fake GPU.
//!
//! With the `cuda` feature (cudarc, loading `libcuda` and `libnvrtc` at run time, so a build
//! runs on machines without CUDA):
//! - `driver`: finding the driver and NVRTC libraries before anything calls into them (cudarc
//!   panics on a missing library), and the driver's errors as dmsc errors;
//! - `device`: `CudaDevice`, dmsc-core's `Device` on one GPU's memory;
//! - `cuda_streams`: [`stream_order::StreamOps`] on the driver (events, stream memory ops);
//! - `cuda_memory`: [`device_memory::DeviceMemory`] on the driver (pinned host memory,
//!   asynchronous copies); `device_buffer`: device memory of dmsc's own (tools, tests);
//! - `stream_kernels`: the reduction kernels launched on a chosen stream without waiting
//!   (reductions over CUDA IPC);
//! - `pointer`: whether a raw pointer is host or device memory (the driver's attributes);
//! - `nvrtc`: compiling [`kernels::SOURCE`] to PTX for an architecture, cached per device
//!   and architecture.
//!
//! Sources: CUDA Driver API reference (stream management, event management, stream memory
//! operations `cuStreamWaitValue32`/`cuStreamWriteValue32`, `cuPointerGetAttribute`); NVRTC
//! user guide; NCCL's design of stream-ordered collectives (ncclGroupEnd and its enqueue
//! path), read for design only.

pub mod device_memory;
pub mod fake_device;
pub mod ipc_handle;
pub mod ipc_memory;
pub mod kernels;
pub mod staging;
pub mod stream_order;

#[cfg(test)]
mod fake_gpu;
#[cfg(test)]
mod host_check;

#[cfg(feature = "cuda")]
pub mod cuda_memory;
#[cfg(feature = "cuda")]
pub mod cuda_streams;
#[cfg(feature = "cuda")]
pub mod device;
#[cfg(feature = "cuda")]
pub mod device_buffer;
#[cfg(feature = "cuda")]
pub mod dmabuf;
#[cfg(feature = "cuda")]
pub mod driver;
#[cfg(feature = "cuda")]
pub mod nvrtc;
#[cfg(feature = "cuda")]
pub mod pointer;
#[cfg(feature = "cuda")]
pub mod stream_kernels;

/// A test that cannot run here says why on stderr and returns; with
/// `DMSC_CUDA_CHECKS_REQUIRED=1` (set by scripts/cuda-check.sh in CI) it fails instead.
#[cfg(test)]
pub(crate) fn skip(why: &str) {
    if std::env::var_os("DMSC_CUDA_CHECKS_REQUIRED").is_some_and(|v| v == "1") {
        panic!("{why} (and DMSC_CUDA_CHECKS_REQUIRED=1 forbids skipping)");
    }
    eprintln!("SKIPPED: {why}");
}
