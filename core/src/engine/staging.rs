//! A pool of staging buffers for received chunks that are reduced on arrival, allocated
//! through the engine's [`Device`] (so a device can hand out memory its transports reach).
//!
//! With a transport that registers memory, each slot is registered once, the first time a
//! receive from a peer that needs registration lands in it, and stays pinned (its lease is
//! held) for the slot's life. A slot replaced by a larger one is kept alive until
//! [`StagingPool::retire`] has invalidated its registration: a freed slot's address may be
//! handed out again, and must not hit a stale registration.

use super::memory::RegHandle;
use super::regcache::{RegCache, RegLease, Registrar};
use crate::device::{Device, DeviceBuffer};
use crate::error::Result;

/// One staging buffer and, once registered, its lease.
struct Slot {
    buf: DeviceBuffer,
    reg: Option<RegLease>,
}

/// Reusable staging slots of one size (the chunk size).
pub(crate) struct StagingPool {
    slot_bytes: usize,
    slots: Vec<Slot>,
    free: Vec<usize>,
    max_slots: usize,
    /// Slots replaced by larger ones: alive until `retire` forgets their registrations.
    retired: Vec<Slot>,
}

impl StagingPool {
    /// A pool whose slots hold `slot_bytes`, growing to at most `max_slots`.
    pub(crate) fn new(slot_bytes: usize, max_slots: usize) -> StagingPool {
        StagingPool {
            slot_bytes: slot_bytes.max(8),
            slots: Vec::new(),
            free: Vec::new(),
            max_slots: max_slots.max(1),
            retired: Vec::new(),
        }
    }

    /// A free slot able to hold `len` bytes, or `None` when all are in use.
    pub(crate) fn take(&mut self, len: usize, device: &mut dyn Device) -> Result<Option<usize>> {
        if len > self.slot_bytes {
            self.slot_bytes = len;
            // Old slots are too small: reallocate the free ones.
            for k in 0..self.free.len() {
                let i = self.free[k];
                self.replace(i, device.alloc(len)?);
            }
        }
        if let Some(i) = self.free.pop() {
            if self.slots[i].buf.len() < len {
                self.replace(i, device.alloc(self.slot_bytes)?);
            }
            return Ok(Some(i));
        }
        if self.slots.len() < self.max_slots {
            self.slots.push(Slot {
                buf: device.alloc(self.slot_bytes)?,
                reg: None,
            });
            return Ok(Some(self.slots.len() - 1));
        }
        Ok(None)
    }

    fn replace(&mut self, i: usize, buf: DeviceBuffer) {
        let old = std::mem::replace(&mut self.slots[i], Slot { buf, reg: None });
        self.retired.push(old);
    }

    /// The start of slot `i`.
    pub(crate) fn ptr(&mut self, i: usize) -> *mut u8 {
        self.slots[i].buf.ptr()
    }

    /// The registration of slot `i`'s whole buffer, made the first time it is asked for and
    /// held for the slot's life.
    pub(crate) fn registration(
        &mut self,
        i: usize,
        cache: &mut RegCache,
        r: &mut dyn Registrar,
    ) -> Result<RegHandle> {
        let slot = &mut self.slots[i];
        if let Some(l) = &slot.reg {
            return Ok(l.handle());
        }
        let b = &slot.buf;
        let lease = cache.acquire(r, b.ptr(), b.len(), b.kind())?;
        let h = lease.handle();
        slot.reg = Some(lease);
        Ok(h)
    }

    /// Hand back the retired slots' buffers, their leases given back and their ranges
    /// invalidated (the caller frees them, or keeps device memory until it may).
    pub(crate) fn retire(
        &mut self,
        cache: &mut RegCache,
        r: &mut dyn Registrar,
    ) -> Vec<DeviceBuffer> {
        let mut bufs = Vec::new();
        for slot in self.retired.drain(..) {
            if let Some(l) = slot.reg {
                cache.release(r, l);
            }
            cache.invalidate(r, slot.buf.ptr(), slot.buf.len());
            bufs.push(slot.buf);
        }
        bufs
    }

    /// Return slot `i`.
    pub(crate) fn give(&mut self, i: usize) {
        debug_assert!(!self.free.contains(&i));
        self.free.push(i);
    }
}
