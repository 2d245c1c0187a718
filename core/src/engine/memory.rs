//! The memory an operation works on: descriptors that carry where the memory lives and,
//! once a transport registered it, its registration handle; and the translation of schedule
//! [`Slice`]s to addresses with bounds checks.

use crate::error::{Error, Result};
use crate::schedule::{BufId, Slice};

/// Where a buffer lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemKind {
    /// Ordinary host memory.
    Host,
    /// Memory of CUDA device `device` (the CUDA device of a later release; no transport
    /// accepts it yet).
    Cuda {
        /// The device index.
        device: u32,
    },
}

impl std::fmt::Display for MemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemKind::Host => write!(f, "host memory"),
            MemKind::Cuda { device } => write!(f, "CUDA device {device} memory"),
        }
    }
}

/// A transport's handle for memory it registered (an RDMA memory region and its keys, a
/// CUDA IPC handle): opaque to the engine, meaningful to the transport that issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegHandle {
    /// The transport's own value (an index into its table of registrations).
    pub key: u64,
}

/// One buffer: a base address, its size in bytes, where it lives, and its registration.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    /// First byte.
    pub ptr: *mut u8,
    /// Size in bytes.
    pub len: usize,
    /// Where the memory lives.
    pub kind: MemKind,
    /// The transport's registration of (a range containing) this buffer, if it has one. The
    /// engine fills it from its registration cache for transports that register memory
    /// (replacing what the caller put there) and posts frames from the region with it.
    pub reg: Option<RegHandle>,
}

impl Region {
    /// An empty region.
    pub const EMPTY: Region =
        Region::host(std::ptr::NonNull::<u64>::dangling().as_ptr() as *mut u8, 0);

    /// `len` bytes of host memory at `ptr`, not registered.
    pub const fn host(ptr: *mut u8, len: usize) -> Region {
        Region {
            ptr,
            len,
            kind: MemKind::Host,
            reg: None,
        }
    }
}

/// The buffers of one operation. The engine only ever writes through `output`, `scratch`
/// and `group` regions (and `input` when the call is in place, where it is the same memory).
#[derive(Clone, Debug)]
pub struct OpMemory {
    /// The caller's input.
    pub input: Region,
    /// The caller's output.
    pub output: Region,
    /// Buffers of a grouped send/recv, indexed by `BufId::Group(i)`.
    pub group: Vec<Region>,
}

// SAFETY: the regions are plain addresses; the caller of the engine guarantees they stay valid
// and unaliased for the duration of the operation (the engine's `unsafe` entry points say so).
unsafe impl Send for OpMemory {}

impl OpMemory {
    /// The region a schedule's buffer id names.
    pub(crate) fn region(&self, buf: BufId, scratch: Region) -> Result<Region> {
        Ok(match buf {
            BufId::Input => self.input,
            BufId::Output => self.output,
            BufId::Scratch => scratch,
            BufId::Group(i) => *self.group.get(i as usize).ok_or_else(|| {
                Error::internal(format!(
                    "schedule names group buffer {i} of {}",
                    self.group.len()
                ))
            })?,
        })
    }

    /// Resolve `s` (in elements of `elem` bytes) to an address and byte length.
    pub(crate) fn resolve(
        &self,
        s: Slice,
        elem: usize,
        scratch: Region,
    ) -> Result<(*mut u8, usize)> {
        let region = self.region(s.buf, scratch)?;
        let off = s.offset.checked_mul(elem);
        let len = s.len.checked_mul(elem);
        match (off, len) {
            (Some(off), Some(len)) if off.checked_add(len).is_some_and(|e| e <= region.len) => {
                // SAFETY: off + len <= region.len, so the pointer stays inside the region.
                Ok((unsafe { region.ptr.add(off) }, len))
            }
            _ => Err(Error::internal(format!(
                "schedule slice {s:?} exceeds its buffer of {} bytes",
                region.len
            ))),
        }
    }
}
