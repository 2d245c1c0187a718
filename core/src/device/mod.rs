//! What touches payload bytes: copies, reductions, the average's division and checksums.
//!
//! The engine ([`crate::engine`]) and the spray receiver ([`crate::spray`]) never read or
//! write payload bytes themselves; they ask a [`Device`]. [`HostDevice`] runs dmsc's CPU
//! kernels ([`crate::reduce`], CRC32C from the `crc32c` crate) on host memory. A device for
//! GPU memory implements the same trait with kernels of its own, so supporting it changes no
//! engine code (NCCL keeps the same split between its transports and its reduction kernels).
//! Staging and scratch buffers come from the device too ([`Device::alloc`]), so a device can
//! hand out memory its transports can reach (pinned, registered, on the GPU).
//!
//! All operations take raw addresses because the engine works on caller memory described by
//! [`Region`]s; each method's `# Safety` says what the caller guarantees.

mod host;
pub mod recording;

pub use host::HostDevice;

use crate::engine::memory::MemKind;
use crate::error::Result;
use crate::types::{DataType, ReduceOp};

/// Memory a device allocated for staging or scratch; freed when dropped.
pub struct DeviceBuffer {
    ptr: *mut u8,
    len: usize,
    kind: MemKind,
    /// What keeps the memory alive (for the host device, the allocation itself).
    _owner: Box<dyn Send>,
}

// SAFETY: the buffer owns its memory (through `_owner`, which is Send); the pointer is only
// used by whoever holds the buffer.
unsafe impl Send for DeviceBuffer {}

impl DeviceBuffer {
    /// A buffer of `len` bytes at `ptr`, of `kind`, kept alive by `owner`.
    ///
    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` bytes, aligned to 8, for as long as
    /// `owner` lives, and not be used by anyone else.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize, kind: MemKind, owner: Box<dyn Send>) -> Self {
        DeviceBuffer {
            ptr,
            len,
            kind,
            _owner: owner,
        }
    }

    /// The first byte.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-byte buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the memory lives.
    pub fn kind(&self) -> MemKind {
        self.kind
    }
}

/// The operations on payload bytes.
pub trait Device: Send {
    /// A short name for logs (`"host"`, `"cuda:0"`).
    fn name(&self) -> &'static str;

    /// The kind of memory this device works on.
    fn kind(&self) -> MemKind;

    /// Allocate `len` bytes (8-byte aligned) of staging or scratch memory.
    fn alloc(&mut self, len: usize) -> Result<DeviceBuffer>;

    /// Copy `n` bytes from `src` to `dst`; the ranges may overlap.
    ///
    /// # Safety
    /// `src` valid for reads and `dst` for writes of `n` bytes, in this device's memory.
    unsafe fn copy(&mut self, dst: *mut u8, src: *const u8, n: usize) -> Result<()>;

    /// `dst[i] = a[i] ⊕ b[i]` over `n` bytes of `dtype` elements. `dst` may be `a` (in
    /// place); otherwise no two ranges overlap.
    ///
    /// # Safety
    /// `a` and `b` valid for reads and `dst` for writes of `n` bytes, in this device's
    /// memory, aligned for `dtype`.
    unsafe fn reduce_into(
        &mut self,
        dtype: DataType,
        op: ReduceOp,
        dst: *mut u8,
        a: *const u8,
        b: *const u8,
        n: usize,
    ) -> Result<()>;

    /// Divide each of the `n` bytes' `dtype` elements at `dst` by `divisor` (the last step
    /// of an average).
    ///
    /// # Safety
    /// `dst` valid for reads and writes of `n` bytes, aligned for `dtype`.
    unsafe fn scale_div(
        &mut self,
        dtype: DataType,
        dst: *mut u8,
        n: usize,
        divisor: usize,
    ) -> Result<()>;

    /// `dst[i] = src[i] * factor` over `n` bytes of `dtype` elements (the premultiplication
    /// of [`ReduceOp::PreMulSum`]); `dst` may be `src`, otherwise the ranges do not overlap.
    ///
    /// # Safety
    /// `src` valid for reads and `dst` for writes of `n` bytes, in this device's memory,
    /// aligned for `dtype`.
    unsafe fn scale_mul(
        &mut self,
        dtype: DataType,
        dst: *mut u8,
        src: *const u8,
        n: usize,
        factor: f64,
    ) -> Result<()>;

    /// The CRC32C (Castagnoli) of `n` bytes at `src`.
    ///
    /// # Safety
    /// `src` valid for reads of `n` bytes.
    unsafe fn crc32c(&mut self, src: *const u8, n: usize) -> Result<u32>;
}
