//! A FAKE dma-buf exporter for the FAKE verbs ([`super::fake`]): a memfd stands for the GPU
//! driver's dma-buf, and the FAKE verbs register the range at its address, where tests put host
//! memory in for a GPU's (as [`crate::cuda::fake_device::FakeDeviceMemory`] does).

use super::dmabuf_export::{DmabufExporter, DmabufRange};
use dmsc_core::error::{Error, Result};

/// The FAKE exporter.
pub struct FakeDmabuf {
    /// Refuse every export, naming the device.
    pub refuse: bool,
}

impl DmabufExporter for FakeDmabuf {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn export(&self, ptr: u64, _len: usize, device: u32) -> Result<DmabufRange> {
        if self.refuse {
            return Err(Error::usage(format!(
                "FAKE exporter: CUDA device {device} does not export dma-bufs"
            )));
        }
        // SAFETY: a NUL-terminated name and no flags; the result is checked below.
        let fd = unsafe { libc::memfd_create(c"fake-dmabuf".as_ptr(), 0) };
        if fd < 0 {
            return Err(Error::io(
                "FAKE exporter: memfd_create",
                &std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: a descriptor just opened that nothing else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(DmabufRange {
            fd,
            offset: ptr & 0xfff,
        })
    }
}
