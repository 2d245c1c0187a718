//! Staging device data through a few host buffers in pipelined chunks: the state machine,
//! without I/O.
//!
//! Over TCP a GPU buffer goes out through pinned host buffers ("slots"): chunk `i` is copied
//! device-to-host into a free slot (stage A), then sent from it (stage B); the slot is free
//! again when the send completes. With two slots or more, the copy of chunk `i + 1` overlaps
//! the send of chunk `i`. Receiving is the same machine with the stages the other way round:
//! receive into a slot (A), copy host-to-device from it (B). This is the scheme of NCCL's
//! network proxy, which stages device buffers through host FIFOs when the NIC cannot reach
//! GPU memory (NCCL's design docs; read, not copied).
//!
//! [`Staging::poll`] says what to start next; the progress thread starts it (a
//! `cuMemcpyAsync` and an event, a socket send, ...) and reports completions with
//! [`Staging::a_done`] and [`Staging::b_done`]. Each stage runs in chunk order: stage B of
//! chunk `i` only after stage A of chunk `i` completed and stage B of chunk `i - 1` started,
//! so the bytes reach the wire (or the device) in order. Driven by the communicator's
//! staging of device calls (the root crate's `src/device_call/stager.rs`) with one "byte" per
//! piece of a call: stage A copies a piece of every buffer device-to-host, stage B runs the
//! piece's host collective over TCP and then queues its copy back, so the copy of piece
//! `i + 1` overlaps the network transfer of piece `i`.

use dmsc_core::error::{Error, Result};
use std::collections::VecDeque;
use std::ops::Range;

/// What the progress thread should start next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Start stage A for bytes `range` of the buffer with slot `slot`.
    A {
        /// The bytes of the buffer.
        range: Range<usize>,
        /// The slot they pass through.
        slot: usize,
    },
    /// Start stage B for bytes `range` of the buffer with slot `slot`.
    B {
        /// The bytes of the buffer.
        range: Range<usize>,
        /// The slot they pass through.
        slot: usize,
    },
}

/// The pipeline of one buffer's transfer.
#[derive(Debug)]
pub struct Staging {
    len: usize,
    chunk: usize,
    /// Free slots, lowest first.
    free: Vec<usize>,
    /// The next chunk whose stage A has not started.
    next_a: usize,
    /// Chunks whose stage A is running, in chunk order: (chunk, slot, completed).
    in_a: VecDeque<(usize, usize, bool)>,
    /// Per slot: whether its stage B is running.
    in_b: Vec<bool>,
    /// Chunks whose stage B has completed.
    finished: usize,
}

impl Staging {
    /// A transfer of `len` bytes in chunks of `chunk` bytes through `slots` slots.
    pub fn new(len: usize, chunk: usize, slots: usize) -> Result<Staging> {
        if chunk == 0 || slots == 0 {
            return Err(Error::invalid(format!(
                "staging needs a chunk size and slots above 0 (chunk {chunk}, slots {slots})"
            )));
        }
        Ok(Staging {
            len,
            chunk,
            free: (0..slots).rev().collect(),
            next_a: 0,
            in_a: VecDeque::new(),
            in_b: vec![false; slots],
            finished: 0,
        })
    }

    fn chunks(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }

    fn range(&self, c: usize) -> Range<usize> {
        c * self.chunk..((c + 1) * self.chunk).min(self.len)
    }

    /// The next step to start, if one can start now. Call until `None`, then wait for a
    /// completion.
    pub fn poll(&mut self) -> Option<Step> {
        // Stage B first: the oldest chunk whose stage A completed moves on.
        if let Some(&(c, slot, true)) = self.in_a.front() {
            self.in_a.pop_front();
            self.in_b[slot] = true;
            return Some(Step::B {
                range: self.range(c),
                slot,
            });
        }
        if self.next_a < self.chunks() {
            if let Some(slot) = self.free.pop() {
                let c = self.next_a;
                self.next_a += 1;
                self.in_a.push_back((c, slot, false));
                return Some(Step::A {
                    range: self.range(c),
                    slot,
                });
            }
        }
        None
    }

    /// Stage A through `slot` completed.
    pub fn a_done(&mut self, slot: usize) -> Result<()> {
        match self
            .in_a
            .iter_mut()
            .find(|(_, s, done)| *s == slot && !*done)
        {
            Some(entry) => {
                entry.2 = true;
                Ok(())
            }
            None => Err(Error::internal(format!(
                "staging: stage A completed on slot {slot}, which runs no stage A"
            ))),
        }
    }

    /// Stage B through `slot` completed: the slot is free again.
    pub fn b_done(&mut self, slot: usize) -> Result<()> {
        if !self.in_b.get(slot).copied().unwrap_or(false) {
            return Err(Error::internal(format!(
                "staging: stage B completed on slot {slot}, which runs no stage B"
            )));
        }
        self.in_b[slot] = false;
        self.free.push(slot);
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        self.finished += 1;
        Ok(())
    }

    /// Whether every chunk has passed both stages.
    pub fn is_done(&self) -> bool {
        self.finished == self.chunks()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive a transfer where each stage is one serial resource (a copy stream, a socket):
    /// stage A of a chunk takes `ta` ticks and stage B `tb`, one at a time per stage, in the
    /// order started. Returns the steps in start order, and whether an A and a B ever ran at
    /// the same time.
    fn simulate(len: usize, chunk: usize, slots: usize, ta: u32, tb: u32) -> (Vec<Step>, bool) {
        let mut s = Staging::new(len, chunk, slots).unwrap();
        // Per stage: the queue of started steps; the head runs, since the tick given.
        let mut queues: [VecDeque<Step>; 2] = [VecDeque::new(), VecDeque::new()];
        let mut since = [0u32; 2];
        let mut log = Vec::new();
        let mut overlapped = false;
        let mut tick = 0;
        while !s.is_done() {
            while let Some(step) = s.poll() {
                let q = usize::from(matches!(step, Step::B { .. }));
                if queues[q].is_empty() {
                    since[q] = tick;
                }
                log.push(step.clone());
                queues[q].push_back(step);
            }
            overlapped |= !queues[0].is_empty() && !queues[1].is_empty();
            tick += 1;
            for (q, dur) in [(0, ta), (1, tb)] {
                if !queues[q].is_empty() && tick - since[q] >= dur {
                    match queues[q].pop_front().unwrap() {
                        Step::A { slot, .. } => s.a_done(slot).unwrap(),
                        Step::B { slot, .. } => s.b_done(slot).unwrap(),
                    }
                    since[q] = tick;
                }
            }
            assert!(tick < 10_000, "the pipeline stalled");
        }
        (log, overlapped)
    }

    #[test]
    fn every_byte_passes_both_stages_in_order_once() {
        for (len, chunk, slots) in [
            (0, 4, 1),
            (1, 4, 1),
            (10, 4, 2),
            (4096, 1000, 3),
            (64, 8, 8),
        ] {
            let (log, _) = simulate(len, chunk, slots, 2, 3);
            for kind in [true, false] {
                let ranges: Vec<Range<usize>> = log
                    .iter()
                    .filter_map(|s| match s {
                        Step::A { range, .. } if kind => Some(range.clone()),
                        Step::B { range, .. } if !kind => Some(range.clone()),
                        _ => None,
                    })
                    .collect();
                let mut next = 0;
                for r in &ranges {
                    assert_eq!(
                        r.start, next,
                        "a gap or reorder at {r:?} ({len}/{chunk}/{slots})"
                    );
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn with_two_slots_the_copy_of_one_chunk_overlaps_the_send_of_the_previous() {
        let (_, overlapped) = simulate(8 << 20, 1 << 20, 2, 2, 2);
        assert!(overlapped);
        // One slot cannot overlap: each chunk waits for the previous one's send.
        let (log, overlapped) = simulate(4 << 20, 1 << 20, 1, 2, 2);
        assert!(!overlapped);
        assert!(log
            .iter()
            .all(|s| matches!(s, Step::A { slot: 0, .. } | Step::B { slot: 0, .. })));
    }

    #[test]
    fn a_slot_is_not_reused_before_its_stage_b_completes() {
        let mut s = Staging::new(100, 10, 2).unwrap();
        assert_eq!(
            s.poll(),
            Some(Step::A {
                range: 0..10,
                slot: 0
            })
        );
        assert_eq!(
            s.poll(),
            Some(Step::A {
                range: 10..20,
                slot: 1
            })
        );
        assert_eq!(s.poll(), None, "no free slot");
        s.a_done(0).unwrap();
        assert_eq!(
            s.poll(),
            Some(Step::B {
                range: 0..10,
                slot: 0
            })
        );
        assert_eq!(s.poll(), None, "slot 0 still sends");
        s.b_done(0).unwrap();
        assert_eq!(
            s.poll(),
            Some(Step::A {
                range: 20..30,
                slot: 0
            })
        );
        // Stage B keeps chunk order: chunk 2's copy finishing first does not let it pass
        // chunk 1.
        s.a_done(0).unwrap();
        assert_eq!(s.poll(), None, "chunk 2 must not be sent before chunk 1");
        s.a_done(1).unwrap();
        assert_eq!(
            s.poll(),
            Some(Step::B {
                range: 10..20,
                slot: 1
            })
        );
        assert_eq!(
            s.poll(),
            Some(Step::B {
                range: 20..30,
                slot: 0
            })
        );
        // Completions for slots that run nothing are bugs, reported.
        assert!(s.a_done(1).is_err());
        s.b_done(1).unwrap();
        assert!(s.b_done(1).is_err());
        assert!(Staging::new(1, 0, 1).is_err());
    }
}
