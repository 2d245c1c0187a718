//! Registered memory the RDMA transport owns: an arena of equal slots, registered once, with
//! a free list. It backs the message slots of every queue pair, the mailboxes that receive
//! completion trailers, the trailers' sources, and the staging slots used when user memory
//! cannot be registered (`RLIMIT_MEMLOCK`). Each pool is registered on every port the
//! transport uses, so that any queue pair can name it.

use super::verbs::{Access, Mr, VerbsContext};
use super::wire::{Keys, MAX_NICS};
use dmsc_core::error::{Error, Result};

/// `count` slots of `slot` bytes in one registered region.
pub struct SlotPool {
    /// The memory, in `u64`s so that every slot is 8-byte aligned. Never resized: the
    /// registration names its address.
    mem: Box<[u64]>,
    /// One registration per port.
    mrs: Vec<Mr>,
    slot: usize,
    count: usize,
    free: Vec<u32>,
}

impl SlotPool {
    /// Allocate `count` slots of `slot` bytes (rounded up to 8) for `what` and register
    /// them on every context of `ctxs` (one per port).
    pub fn new(
        ctxs: &mut [Box<dyn VerbsContext>],
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
        let mut mrs = Vec::with_capacity(ctxs.len());
        for ctx in ctxs.iter_mut() {
            let mr = ctx.reg_mr(mem.as_ptr() as u64, bytes, access).map_err(|e| {
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
            });
            match mr {
                Ok(mr) => mrs.push(mr),
                Err(e) => {
                    for (c, m) in ctxs.iter_mut().zip(mrs) {
                        c.dereg_mr(m);
                    }
                    return Err(e);
                }
            }
        }
        Ok(SlotPool {
            mem,
            mrs,
            slot,
            count,
            free: (0..count as u32).rev().collect(),
        })
    }

    /// Bytes per slot.
    pub fn slot_bytes(&self) -> usize {
        self.slot
    }

    /// The local key on port `nic`.
    pub fn lkey(&self, nic: usize) -> u32 {
        self.mrs[nic].lkey
    }

    /// The remote keys, per port.
    pub fn rkeys(&self) -> Keys {
        let mut k = [0; MAX_NICS];
        for (k, m) in k.iter_mut().zip(&self.mrs) {
            *k = m.rkey;
        }
        k
    }

    fn base(&self) -> u64 {
        self.mem.as_ptr() as u64
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
        self.base() + (i as usize * self.slot) as u64
    }

    /// Slot `i`'s bytes.
    pub fn bytes(&self, i: u32) -> &[u8] {
        let off = (self.addr(i) - self.base()) as usize;
        // SAFETY: slot `i` lies inside `mem` (checked by `addr`), which lives as long as
        // `self`; the transport reads a slot only after the completion that filled it.
        unsafe { std::slice::from_raw_parts((self.mem.as_ptr() as *const u8).add(off), self.slot) }
    }

    /// Slot `i`'s bytes, to fill before posting.
    pub fn bytes_mut(&mut self, i: u32) -> &mut [u8] {
        let off = (self.addr(i) - self.base()) as usize;
        // SAFETY: as in `bytes`; the transport writes a slot only while no posted work
        // request uses it, and `&mut self` excludes other borrows.
        unsafe {
            std::slice::from_raw_parts_mut((self.mem.as_mut_ptr() as *mut u8).add(off), self.slot)
        }
    }

    /// Deregister (the memory goes with `self`).
    pub fn close(&mut self, ctxs: &mut [Box<dyn VerbsContext>]) {
        for (c, m) in ctxs.iter_mut().zip(self.mrs.drain(..)) {
            c.dereg_mr(m);
        }
        let _ = &self.mem;
    }
}
