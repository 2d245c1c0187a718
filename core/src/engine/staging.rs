//! A pool of staging buffers for received chunks that are reduced on arrival, allocated
//! through the engine's [`Device`] (so a device can hand out memory its transports reach).

use crate::device::{Device, DeviceBuffer};
use crate::error::Result;

/// Reusable staging slots of one size (the chunk size).
pub(crate) struct StagingPool {
    slot_bytes: usize,
    slots: Vec<DeviceBuffer>,
    free: Vec<usize>,
    max_slots: usize,
}

impl StagingPool {
    /// A pool whose slots hold `slot_bytes`, growing to at most `max_slots`.
    pub(crate) fn new(slot_bytes: usize, max_slots: usize) -> StagingPool {
        StagingPool {
            slot_bytes: slot_bytes.max(8),
            slots: Vec::new(),
            free: Vec::new(),
            max_slots: max_slots.max(1),
        }
    }

    /// A free slot able to hold `len` bytes, or `None` when all are in use.
    pub(crate) fn take(&mut self, len: usize, device: &mut dyn Device) -> Result<Option<usize>> {
        if len > self.slot_bytes {
            self.slot_bytes = len;
            // Old slots are too small: reallocate the free ones.
            for &i in &self.free {
                self.slots[i] = device.alloc(len)?;
            }
        }
        if let Some(i) = self.free.pop() {
            if self.slots[i].len() < len {
                self.slots[i] = device.alloc(self.slot_bytes)?;
            }
            return Ok(Some(i));
        }
        if self.slots.len() < self.max_slots {
            self.slots.push(device.alloc(self.slot_bytes)?);
            return Ok(Some(self.slots.len() - 1));
        }
        Ok(None)
    }

    /// The start of slot `i`.
    pub(crate) fn ptr(&mut self, i: usize) -> *mut u8 {
        self.slots[i].ptr()
    }

    /// Return slot `i`.
    pub(crate) fn give(&mut self, i: usize) {
        debug_assert!(!self.free.contains(&i));
        self.free.push(i);
    }
}
