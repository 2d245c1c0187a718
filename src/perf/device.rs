//! Where dmsc-perf's measured buffers live with `--device cuda`: [`PerfDevice`], device memory
//! the measured calls run on, and [`PerfDeviceBuf`], one buffer of it, filled from and read
//! back into the host buffers that [`super::check`] fills and checks. The timed loops pass
//! only device buffers to the communicator, so the figures are those of calls on device
//! memory, staged by the communicator as any device call (see `crate::device_call`).
//!
//! With the `cuda` feature the device is the CUDA driver's ([`open_cuda`]: one GPU's memory
//! from `cuMemAlloc`, through `dmsc_transports::cuda::device_buffer`); without a driver or a
//! GPU, or without the feature, opening it is an error that says why. Source: nccl-tests,
//! which allocates its buffers with `cudaMalloc` and checks them after a copy to the host.

use crate::call::Span;
use crate::Result;

/// Where the measured buffers live (`--device`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PerfDeviceKind {
    /// Host memory (the default).
    #[default]
    Host,
    /// CUDA device memory.
    Cuda,
}

impl PerfDeviceKind {
    /// The `--device` value.
    pub fn name(self) -> &'static str {
        match self {
            PerfDeviceKind::Host => "host",
            PerfDeviceKind::Cuda => "cuda",
        }
    }
}

/// One device buffer of a measurement.
pub trait PerfDeviceBuf {
    /// The buffer, as a span of device memory.
    fn span(&self) -> Span;
    /// Copy `src` (the buffer's length) into the buffer, after the device's earlier work.
    fn upload(&mut self, src: &[u8]) -> Result<()>;
    /// Copy the buffer into `dst` (its length), after the device's earlier work.
    fn download(&self, dst: &mut [u8]) -> Result<()>;
}

/// Device memory for the measured buffers.
pub trait PerfDevice {
    /// What the device is, for the lines above the table (e.g. `cuda device 0`).
    fn describe(&self) -> String;
    /// `len` bytes of device memory.
    fn alloc(&mut self, len: usize) -> Result<Box<dyn PerfDeviceBuf>>;
}

/// The CUDA device the rank with local rank `local_rank` measures on (`local_rank` modulo
/// the number of GPUs, so ranks of one host share GPUs when there are fewer).
#[cfg(feature = "cuda")]
pub fn open_cuda(local_rank: usize) -> Result<Box<dyn PerfDevice>> {
    use dmsc_transports::cuda::cuda_memory::CudaMemory;
    let count = CudaMemory::count()?;
    if count == 0 {
        return Err(crate::Error::usage(
            "--device cuda: the CUDA driver sees no GPU on this machine",
        ));
    }
    let ordinal = (local_rank % count as usize) as u32;
    Ok(Box::new(cuda::CudaPerfDevice {
        mem: CudaMemory::open(ordinal)?,
        ordinal,
    }))
}

/// Without the `cuda` feature: the error that says so.
#[cfg(not(feature = "cuda"))]
pub fn open_cuda(_local_rank: usize) -> Result<Box<dyn PerfDevice>> {
    Err(crate::Error::usage(
        "--device cuda: dmsc-perf was built without dmsc's `cuda` feature \
         (rebuild with `cargo build --features cuda`)",
    ))
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::{PerfDevice, PerfDeviceBuf};
    use crate::call::Span;
    use crate::Result;
    use dmsc_core::engine::MemKind;
    use dmsc_transports::cuda::cuda_memory::CudaMemory;
    use dmsc_transports::cuda::device_buffer::DeviceBuffer;

    /// One GPU's memory through the driver.
    pub(super) struct CudaPerfDevice {
        pub(super) mem: CudaMemory,
        pub(super) ordinal: u32,
    }

    struct Buf {
        buf: DeviceBuffer,
        ordinal: u32,
    }

    impl PerfDevice for CudaPerfDevice {
        fn describe(&self) -> String {
            format!("cuda device {}", self.ordinal)
        }
        fn alloc(&mut self, len: usize) -> Result<Box<dyn PerfDeviceBuf>> {
            let buf = DeviceBuffer::alloc(&mut self.mem, len)?;
            Ok(Box::new(Buf {
                buf,
                ordinal: self.ordinal,
            }))
        }
    }

    impl PerfDeviceBuf for Buf {
        fn span(&self) -> Span {
            Span::in_memory(
                self.buf.addr() as *const u8,
                self.buf.len(),
                MemKind::Cuda {
                    device: self.ordinal,
                },
            )
        }
        // The context is current on the measuring thread: DeviceBuffer::alloc made it so,
        // and the rank's thread that allocated is the one that uploads and downloads.
        fn upload(&mut self, src: &[u8]) -> Result<()> {
            self.buf.upload(src)
        }
        fn download(&self, dst: &mut [u8]) -> Result<()> {
            self.buf.download(dst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_cuda_without_a_driver_or_the_feature_is_an_error_that_says_why() {
        match open_cuda(0) {
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("--device cuda")
                        || e.contains("CUDA driver")
                        || e.contains("CUDA device"),
                    "{e}"
                );
                eprintln!("SKIPPED the device buffers of dmsc-perf here: {e}");
            }
            Ok(d) => assert!(d.describe().starts_with("cuda device")),
        }
    }
}
