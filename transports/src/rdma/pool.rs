//! Registered memory the RDMA transport owns: an arena of equal slots, registered once, with
//! a free list. It backs the message slots of every queue pair, the mailboxes that receive
//! completion trailers, the trailers' sources, and the staging slots used when user memory
//! cannot be registered (`RLIMIT_MEMLOCK`).

use super::verbs::{Access, Mr, VerbsContext};
use dmsc_core::error::{Error, Result};

/// `count` slots of `slot` bytes in one registered region.
pub struct SlotPool {
    /// The memory, in `u64`s so that every slot is 8-byte aligned. Never resized: the
    /// registration names its address.
    mem: Box<[u64]>,
    mr: Mr,
    slot: usize,
    count: usize,
    free: Vec<u32>,
}

impl SlotPool {
    /// Allocate and register `count` slots of `slot` bytes (rounded up to 8) for `what`.
    pub fn new(
        ctx: &mut dyn VerbsContext,
        what: &str,
        slot: usize,
        count: usize,
        access: Access,
    ) -> Result<SlotPool> {
        let slot = slot.div_ceil(8) * 8;
        let bytes = slot.checked_mul(count).ok_or_else(|| {
            Error::invalid(format!("{what}: {count} slots of {slot} bytes overflow"))
        })?;
        let mem = vec![0u64; bytes / 8].into_boxed_slice();
        let mr = ctx
            .reg_mr(mem.as_ptr() as u64, bytes, access)
            .map_err(|e| {
                if matches!(
                    e,
                    Error::System {
                        errno: Some(libc::ENOMEM),
                        ..
                    }
                ) {
                    Error::usage(format!(
                        "registering the RDMA transport's {what} ({bytes} bytes) failed: the \
                     pinned-memory limit (RLIMIT_MEMLOCK, `ulimit -l`) is too low; raise it \
                     (e.g. `ulimit -l unlimited`, or LimitMEMLOCK= in systemd) ({e})"
                    ))
                } else {
                    e
                }
            })?;
        Ok(SlotPool {
            mem,
            mr,
            slot,
            count,
            free: (0..count as u32).rev().collect(),
        })
    }

    /// Bytes per slot.
    pub fn slot_bytes(&self) -> usize {
        self.slot
    }

    /// The registration.
    pub fn mr(&self) -> &Mr {
        &self.mr
    }

    /// Take a free slot.
    pub fn alloc(&mut self) -> Option<u32> {
        self.free.pop()
    }

    /// Give slot `i` back.
    pub fn release(&mut self, i: u32) {
        debug_assert!(!self.free.contains(&i), "slot {i} released twice");
        self.free.push(i);
    }

    /// Free slots.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Address of slot `i`.
    pub fn addr(&self, i: u32) -> u64 {
        assert!((i as usize) < self.count, "slot {i} of {}", self.count);
        self.mr.addr + (i as usize * self.slot) as u64
    }

    /// Slot `i`'s bytes.
    pub fn bytes(&self, i: u32) -> &[u8] {
        let off = (self.addr(i) - self.mr.addr) as usize;
        // SAFETY: slot `i` lies inside `mem` (checked by `addr`), which lives as long as
        // `self`; the transport reads a slot only after the completion that filled it.
        unsafe { std::slice::from_raw_parts((self.mem.as_ptr() as *const u8).add(off), self.slot) }
    }

    /// Slot `i`'s bytes, to fill before posting.
    pub fn bytes_mut(&mut self, i: u32) -> &mut [u8] {
        let off = (self.addr(i) - self.mr.addr) as usize;
        // SAFETY: as in `bytes`; the transport writes a slot only while no posted work
        // request uses it, and `&mut self` excludes other borrows.
        unsafe {
            std::slice::from_raw_parts_mut((self.mem.as_mut_ptr() as *mut u8).add(off), self.slot)
        }
    }

    /// Deregister (the memory goes with `self`).
    pub fn close(&mut self, ctx: &mut dyn VerbsContext) {
        ctx.dereg_mr(self.mr);
        let _ = &self.mem;
    }
}
