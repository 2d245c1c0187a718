//! A pool of 8-byte-aligned staging buffers for received chunks that are reduced on arrival.

/// Reusable staging slots of one size (the chunk size).
pub(crate) struct StagingPool {
    slot_bytes: usize,
    slots: Vec<Box<[u64]>>,
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
    pub(crate) fn take(&mut self, len: usize) -> Option<usize> {
        if len > self.slot_bytes {
            self.slot_bytes = len;
            // Old slots are too small: drop the free ones so they get reallocated.
            let free = std::mem::take(&mut self.free);
            for i in free {
                self.slots[i] = vec![0u64; len.div_ceil(8)].into_boxed_slice();
                self.free.push(i);
            }
        }
        if let Some(i) = self.free.pop() {
            if self.slots[i].len() * 8 < len {
                self.slots[i] = vec![0u64; self.slot_bytes.div_ceil(8)].into_boxed_slice();
            }
            return Some(i);
        }
        if self.slots.len() < self.max_slots {
            self.slots
                .push(vec![0u64; self.slot_bytes.div_ceil(8)].into_boxed_slice());
            return Some(self.slots.len() - 1);
        }
        None
    }

    /// The start of slot `i`.
    pub(crate) fn ptr(&mut self, i: usize) -> *mut u8 {
        self.slots[i].as_mut_ptr() as *mut u8
    }

    /// Return slot `i`.
    pub(crate) fn give(&mut self, i: usize) {
        debug_assert!(!self.free.contains(&i));
        self.free.push(i);
    }
}
