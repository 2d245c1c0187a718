//! Where the RDMA transport gets a dma-buf for device memory: the narrow interface it
//! registers GPU memory through (`ibv_reg_dmabuf_mr`), implemented over the CUDA driver with
//! the `cuda` feature (`crate::cuda::dmabuf`) and by a FAKE in
//! the tests.
//!
//! A dma-buf (Linux's `Documentation/driver-api/dma-buf.rst`) is a file descriptor through
//! which one driver's buffer (the GPU's memory) is shared with another (the RDMA adapter's),
//! so the adapter reads and writes the GPU's memory directly, without the memory being
//! mapped into the process or pinned through it. Exporters hand out page-aligned ranges,
//! hence the offset of the caller's first byte in [`DmabufRange`].

use dmsc_core::error::Result;
use std::os::fd::OwnedFd;

/// A dma-buf covering a device range.
#[derive(Debug)]
pub struct DmabufRange {
    /// The descriptor; it may be closed once the memory is registered.
    pub fd: OwnedFd,
    /// Byte offset of the requested address within the dma-buf.
    pub offset: u64,
}

/// Exports device memory as dma-bufs.
pub trait DmabufExporter: Send {
    /// A short name for logs (`"cuda"`, `"fake"`).
    fn name(&self) -> &'static str;

    /// A dma-buf covering `len` bytes at device address `ptr` of device `device`.
    fn export(&self, ptr: u64, len: usize, device: u32) -> Result<DmabufRange>;
}
