//! A FAKE device for tests: it performs every operation with the host kernels and records
//! each call, so a test can check that the engine handed it every copy, reduction, division
//! and checksum (and touched no payload byte itself). It may claim another kind of memory
//! than the host's (host memory passed off as a GPU's): the engine's tests run a second
//! device with it, and `dmsc_transports::cuda::fake_device` gives it to the engine as the
//! FAKE kernels of its FAKE GPU.

use super::{Device, DeviceBuffer, HostDevice};
use crate::engine::memory::MemKind;
use crate::error::Result;
use crate::types::{DataType, ReduceOp};
use std::sync::{Arc, Mutex};

/// One recorded call: what it was and how many bytes it covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// An allocation of this many bytes.
    Alloc(usize),
    /// A copy.
    Copy(usize),
    /// A reduction.
    Reduce(usize),
    /// A division or a multiplication.
    Scale(usize),
    /// A checksum.
    Crc(usize),
}

/// The FAKE device; `log` is shared with the test. It claims memory of `kind`.
pub struct RecordingDevice {
    /// Every call, in order.
    pub log: Arc<Mutex<Vec<Call>>>,
    /// The memory it claims to work on.
    pub kind: MemKind,
}

impl RecordingDevice {
    /// A recording device of host memory.
    pub fn host(log: Arc<Mutex<Vec<Call>>>) -> RecordingDevice {
        RecordingDevice {
            log,
            kind: MemKind::Host,
        }
    }

    fn note(&self, c: Call) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }
}

impl Device for RecordingDevice {
    fn name(&self) -> &'static str {
        "recording fake"
    }

    fn kind(&self) -> MemKind {
        self.kind
    }

    fn alloc(&mut self, len: usize) -> Result<DeviceBuffer> {
        self.note(Call::Alloc(len));
        let b = HostDevice.alloc(len)?;
        let (ptr, len) = (b.ptr(), b.len());
        // SAFETY: `b`'s memory, valid for `len` bytes and aligned to 8 while `b` (the owner)
        // lives, used by nobody else.
        Ok(unsafe { DeviceBuffer::from_raw(ptr, len, self.kind, Box::new(b)) })
    }

    unsafe fn copy(&mut self, dst: *mut u8, src: *const u8, n: usize) -> Result<()> {
        self.note(Call::Copy(n));
        // SAFETY: forwarded contract.
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
        self.note(Call::Reduce(n));
        // SAFETY: forwarded contract.
        unsafe { HostDevice.reduce_into(dtype, op, dst, a, b, n) }
    }

    unsafe fn scale_div(
        &mut self,
        dtype: DataType,
        dst: *mut u8,
        n: usize,
        divisor: usize,
    ) -> Result<()> {
        self.note(Call::Scale(n));
        // SAFETY: forwarded contract.
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
        self.note(Call::Scale(n));
        // SAFETY: forwarded contract.
        unsafe { HostDevice.scale_mul(dtype, dst, src, n, factor) }
    }

    unsafe fn crc32c(&mut self, src: *const u8, n: usize) -> Result<u32> {
        self.note(Call::Crc(n));
        // SAFETY: forwarded contract.
        unsafe { HostDevice.crc32c(src, n) }
    }
}
