//! The receiving half: where each arriving segment goes, when a receive is complete, and
//! what to acknowledge. See the module docs of [`super`].
//!
//! A segment is written straight to its offset in the posted destination. Two cases take a
//! side buffer instead: the receive is not posted yet (it is copied in when it is), or
//! another path is writing the same segment right now (a copy re-sent after that path was
//! suspected, or a tail duplicate). In the second case the side buffer is dropped when the
//! slower path finishes; a path still writing [`STUCK_WRITER`] later is closed, and the side
//! buffer is only copied in once that path can no longer write, so a late byte never lands
//! in memory the engine has taken back. Segments already complete are read and dropped.

use super::wire::{Ack, UnitHeader, MAX_ACK_ENTRIES, MAX_PATHS};
use crate::device::{Device, HostDevice};
use crate::engine::Token;
use crate::error::{Error, Result};
use crate::wire::FrameHeader;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A path that keeps writing a segment this long after a copy of it arrived on another path
/// is closed (it is cut or stalled), so the copy can be used.
pub const STUCK_WRITER: Duration = Duration::from_millis(200);

/// How far beyond the oldest incomplete transfer a segment may be.
const MAX_AHEAD: u64 = 1 << 16;
/// Most bytes held in side buffers for receives not posted yet.
const MAX_STASH: u64 = 1 << 30;

/// Where the payload of an arriving segment goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    /// Straight into the destination, at this address.
    Direct(usize),
    /// Into a side buffer of the receiver's, at this address.
    Stash(usize),
    /// Read and dropped (a copy of a segment already held).
    Discard,
    /// The segment belongs to a receive whose header differs (a mismatched call): report
    /// it, with the header that arrived. The payload is read and dropped.
    Mismatch {
        /// The receive's token.
        token: Token,
        /// The header that arrived.
        got: FrameHeader,
    },
}

#[derive(Debug)]
enum Seg {
    Free,
    /// Being written in place by this path.
    Claimed(usize),
    /// Held in a side buffer.
    Stashed(Box<[u8]>),
    /// Being written in place by a path, and also held in a side buffer since an instant.
    ClaimedStashed(usize, Box<[u8]>, Instant),
    Done,
}

#[derive(Debug)]
struct Posted {
    expect: FrameHeader,
    dst: usize,
    token: Token,
}

#[derive(Debug, Default)]
struct RxTransfer {
    posted: Option<Posted>,
    shape: Option<(u64, u32, u64)>,
    got: Option<FrameHeader>,
    segs: Vec<Seg>,
    done: u32,
    complete: bool,
    failed: bool,
}

impl RxTransfer {
    fn held(&self) -> u64 {
        let mut m = 0;
        for (i, s) in self.segs.iter().enumerate() {
            if matches!(s, Seg::Done | Seg::Stashed(_) | Seg::ClaimedStashed(..)) {
                m |= 1 << i;
            }
        }
        m
    }
}

#[derive(Debug)]
enum Target {
    Direct,
    Stash(Box<[u8]>),
    Discard,
}

#[derive(Debug)]
struct Reading {
    id: u64,
    seg: u32,
    len: u64,
    target: Target,
}

/// The receiving half of one peer's paths.
pub struct Receiver {
    /// Copies stashed segments to their destination (the receiver touches payload bytes
    /// only through it).
    device: Box<dyn Device>,
    /// A copy the device failed: the transfers are void and the peer's link must fail.
    fault: Option<Error>,
    base: u64,
    next_post: u64,
    slots: VecDeque<RxTransfer>,
    reading: Vec<Option<Reading>>,
    delivered: Vec<(u32, u64)>,
    stash_bytes: u64,
    completed: VecDeque<(Token, Option<u32>)>,
    mismatches: VecDeque<(Token, FrameHeader)>,
    kill: Vec<usize>,
    ack_due: bool,
    /// Paths the peer suspects: a segment one of them is still writing is not waited for.
    suspects: Vec<bool>,
    control_low: u64,
    control_seen: std::collections::BTreeSet<u64>,
}

impl Receiver {
    /// A receiver over `npaths` paths (incarnation 1 each).
    pub fn new(npaths: usize) -> Receiver {
        Receiver::with_device(npaths, Box::new(HostDevice))
    }

    /// A receiver whose stashed segments are copied by `device`.
    pub fn with_device(npaths: usize, device: Box<dyn Device>) -> Receiver {
        Receiver {
            device,
            fault: None,
            base: 0,
            next_post: 0,
            slots: VecDeque::new(),
            reading: (0..npaths).map(|_| None).collect(),
            delivered: vec![(1, 0); npaths.min(MAX_PATHS)],
            stash_bytes: 0,
            completed: VecDeque::new(),
            mismatches: VecDeque::new(),
            kill: Vec::new(),
            ack_due: false,
            suspects: vec![false; npaths],
            control_low: 0,
            control_seen: Default::default(),
        }
    }

    fn slot(&mut self, id: u64) -> Result<&mut RxTransfer> {
        let i = id - self.base;
        if i >= MAX_AHEAD {
            return Err(Error::protocol(format!(
                "segment of transfer {id}, more than {MAX_AHEAD} beyond the oldest incomplete \
                 one ({})",
                self.base
            )));
        }
        while self.slots.len() as u64 <= i {
            self.slots.push_back(RxTransfer::default());
        }
        Ok(&mut self.slots[i as usize])
    }

    /// The engine posts its next receive from this peer: `expect.len` bytes into `dst`.
    pub fn post(&mut self, expect: FrameHeader, dst: usize, token: Token) -> Result<()> {
        let id = self.next_post;
        self.next_post += 1;
        self.slot(id)?;
        let t = &mut self.slots[(id - self.base) as usize];
        t.posted = Some(Posted { expect, dst, token });
        if let Some(got) = t.got {
            let total = t.shape.map(|s| s.0).unwrap_or(0);
            if !got.matches(&expect) || total != expect.len as u64 {
                t.failed = true;
                self.mismatches.push_back((token, got));
                return Ok(());
            }
        }
        let seg_len = t.shape.map(|s| s.2).unwrap_or(0);
        let mut freed = 0;
        for (i, s) in t.segs.iter_mut().enumerate() {
            if let Seg::Stashed(buf) = s {
                // SAFETY: dst is valid for expect.len bytes (Transport::post_recv contract);
                // the segment lies inside (checked against the shape when it arrived).
                unsafe {
                    self.device.copy(
                        (dst as *mut u8).add(i * seg_len as usize),
                        buf.as_ptr(),
                        buf.len(),
                    )?
                };
                freed += buf.len() as u64;
                *s = Seg::Done;
                t.done += 1;
            }
        }
        self.stash_bytes -= freed;
        self.check(id);
        Ok(())
    }

    /// A segment's header (and the engine header it carries) arrived on `path`: where its
    /// payload goes. An error means the peer broke the protocol.
    pub fn place(
        &mut self,
        path: usize,
        unit: &UnitHeader,
        engine: &FrameHeader,
    ) -> Result<Placement> {
        if path >= self.reading.len() {
            return Err(Error::internal(format!("segment on unknown path {path}")));
        }
        if self.reading[path].is_some() {
            return Err(Error::internal(format!(
                "path {path} placed two segments at once"
            )));
        }
        let id = unit.transfer;
        let len = unit.len as u64;
        let mut reading = Reading {
            id,
            seg: unit.seg,
            len,
            target: Target::Discard,
        };
        let placement = self.decide(path, unit, engine, &mut reading)?;
        self.reading[path] = Some(reading);
        Ok(placement)
    }

    fn decide(
        &mut self,
        path: usize,
        unit: &UnitHeader,
        engine: &FrameHeader,
        reading: &mut Reading,
    ) -> Result<Placement> {
        let id = unit.transfer;
        if id < self.base {
            return Ok(Placement::Discard);
        }
        let stash_room = MAX_STASH.saturating_sub(self.stash_bytes);
        let t = self.slot(id)?;
        if t.complete || t.failed {
            return Ok(Placement::Discard);
        }
        // The segment length of the transfer, from this segment alone: every segment but the
        // last is full, so segment 0 of several has it as its length, segment k at k·len.
        let seg_len = match (unit.seg, unit.nsegs) {
            (_, 1) => unit.total,
            (0, _) => unit.len as u64,
            (k, _) => unit.offset / k as u64,
        };
        // Every segment of a transfer agrees on its shape and engine header.
        let shape = match t.shape {
            None => {
                let consistent = if seg_len == 0 {
                    unit.nsegs == 1
                } else {
                    unit.total.div_ceil(seg_len).max(1) == unit.nsegs as u64
                };
                if !consistent {
                    return Err(Error::protocol(format!(
                        "transfer {id} of {} bytes cannot have {} segments of {seg_len}",
                        unit.total, unit.nsegs
                    )));
                }
                let s = (unit.total, unit.nsegs, seg_len);
                t.shape = Some(s);
                t.segs = (0..unit.nsegs).map(|_| Seg::Free).collect();
                s
            }
            Some(s) => s,
        };
        let expect_off = unit.seg as u64 * shape.2;
        let expect_len = shape.2.min(shape.0.saturating_sub(expect_off));
        if shape.0 != unit.total
            || shape.1 != unit.nsegs
            || unit.offset != expect_off
            || unit.len as u64 != expect_len
        {
            return Err(Error::protocol(format!(
                "segment {} of transfer {id} ({} bytes at {}) disagrees with the transfer's \
                 shape ({} bytes in {} segments of {})",
                unit.seg, unit.len, unit.offset, shape.0, shape.1, shape.2
            )));
        }
        match t.got {
            None => t.got = Some(*engine),
            Some(g) if g != *engine => {
                return Err(Error::protocol(format!(
                    "segments of transfer {id} carry different engine headers"
                )))
            }
            Some(_) => {}
        }
        if let Some(p) = &t.posted {
            if !engine.matches(&p.expect) || p.expect.len as u64 != unit.total {
                t.failed = true;
                let token = p.token;
                self.mismatches.push_back((token, *engine));
                return Ok(Placement::Mismatch {
                    token,
                    got: *engine,
                });
            }
        }
        let s = unit.seg as usize;
        let direct = t.posted.as_ref().map(|p| p.dst + unit.offset as usize);
        match (&t.segs[s], direct) {
            (Seg::Done | Seg::Stashed(_) | Seg::ClaimedStashed(..), _) => Ok(Placement::Discard),
            (Seg::Free, Some(addr)) => {
                t.segs[s] = Seg::Claimed(path);
                reading.target = Target::Direct;
                Ok(Placement::Direct(addr))
            }
            (Seg::Free | Seg::Claimed(_), _) => {
                if reading.len > stash_room {
                    return Err(Error::protocol(format!(
                        "the peer sent more than {MAX_STASH} bytes ahead of the posted receives"
                    )));
                }
                let mut buf = vec![0u8; reading.len as usize].into_boxed_slice();
                let addr = buf.as_mut_ptr() as usize;
                self.stash_bytes += reading.len;
                reading.target = Target::Stash(buf);
                Ok(Placement::Stash(addr))
            }
        }
    }

    /// The payload of the segment placed last on `path` has been read in full.
    pub fn seg_done(&mut self, path: usize, now: Instant) {
        let Some(r) = self.reading.get_mut(path).and_then(Option::take) else {
            return;
        };
        if let Some(d) = self.delivered.get_mut(path) {
            d.1 += r.len;
        }
        if let Some(s) = self.suspects.get_mut(path) {
            *s = false;
        }
        self.ack_due = true;
        if r.id < self.base {
            if let Target::Stash(b) = r.target {
                self.stash_bytes -= b.len() as u64;
            }
            return;
        }
        let i = (r.id - self.base) as usize;
        let Some(t) = self.slots.get_mut(i) else {
            return;
        };
        let s = r.seg as usize;
        let seg_len = t.shape.map(|s| s.2).unwrap_or(0) as usize;
        match r.target {
            Target::Discard => {}
            Target::Direct => match t.segs.get(s) {
                Some(Seg::Claimed(p)) if *p == path => {
                    t.segs[s] = Seg::Done;
                    t.done += 1;
                }
                Some(Seg::ClaimedStashed(p, buf, _)) if *p == path => {
                    self.stash_bytes -= buf.len() as u64;
                    t.segs[s] = Seg::Done;
                    t.done += 1;
                }
                _ => {}
            },
            Target::Stash(buf) => {
                let cur = std::mem::replace(&mut t.segs[s], Seg::Free);
                t.segs[s] = match (cur, &t.posted) {
                    (Seg::Free, Some(p)) if !t.failed => {
                        // SAFETY: the destination is valid for the transfer's length and the
                        // segment lies inside it (its shape was checked on arrival).
                        let r = unsafe {
                            self.device.copy(
                                (p.dst as *mut u8).add(s * seg_len),
                                buf.as_ptr(),
                                buf.len(),
                            )
                        };
                        if let Err(e) = r {
                            self.fault.get_or_insert(e);
                        }
                        self.stash_bytes -= buf.len() as u64;
                        t.done += 1;
                        Seg::Done
                    }
                    (Seg::Free, _) => Seg::Stashed(buf),
                    // Another path is still writing this segment in place: keep ours until it
                    // finishes, or is closed for being stuck (`handle_timeout`).
                    (Seg::Claimed(q), _) => Seg::ClaimedStashed(q, buf, now),
                    (other, _) => {
                        self.stash_bytes -= buf.len() as u64;
                        other
                    }
                };
            }
        }
        self.check(r.id);
    }

    /// Path `path` is gone and can no longer write anywhere (its last read has returned):
    /// release what it was writing.
    pub fn on_path_down(&mut self, path: usize) {
        if let Some(r) = self.reading.get_mut(path).and_then(Option::take) {
            if let Target::Stash(b) = r.target {
                self.stash_bytes -= b.len() as u64;
            }
        }
        let mut touched = Vec::new();
        for (i, t) in self.slots.iter_mut().enumerate() {
            let seg_len = t.shape.map(|s| s.2).unwrap_or(0) as usize;
            for s in 0..t.segs.len() {
                let cur = std::mem::replace(&mut t.segs[s], Seg::Free);
                t.segs[s] = match cur {
                    Seg::Claimed(p) if p == path => Seg::Free,
                    Seg::ClaimedStashed(p, buf, _) if p == path => match &t.posted {
                        Some(dst) if !t.failed => {
                            // SAFETY: as in `seg_done`.
                            let r = unsafe {
                                self.device.copy(
                                    (dst.dst as *mut u8).add(s * seg_len),
                                    buf.as_ptr(),
                                    buf.len(),
                                )
                            };
                            if let Err(e) = r {
                                self.fault.get_or_insert(e);
                            }
                            self.stash_bytes -= buf.len() as u64;
                            t.done += 1;
                            touched.push(self.base + i as u64);
                            Seg::Done
                        }
                        _ => Seg::Stashed(buf),
                    },
                    other => other,
                };
            }
        }
        for id in touched {
            self.check(id);
        }
    }

    /// Path `path` is connected again, incarnation `epoch`.
    pub fn on_path_up(&mut self, path: usize, epoch: u32) {
        if let Some(d) = self.delivered.get_mut(path) {
            *d = (epoch, 0);
        }
        if let Some(s) = self.suspects.get_mut(path) {
            *s = false;
        }
    }

    fn check(&mut self, id: u64) {
        let Some(i) = id.checked_sub(self.base) else {
            return;
        };
        let Some(t) = self.slots.get_mut(i as usize) else {
            return;
        };
        if t.complete || t.failed {
            return;
        }
        let (Some(p), Some(shape)) = (&t.posted, t.shape) else {
            return;
        };
        if t.done == shape.1 {
            t.complete = true;
            self.completed
                .push_back((p.token, t.got.and_then(|g| g.crc)));
        }
        while self.slots.front().is_some_and(|t| t.complete) {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    /// A receive that completed: (token, the CRC its header carried).
    pub fn poll_completed(&mut self) -> Option<(Token, Option<u32>)> {
        self.completed.pop_front()
    }

    /// A copy the device failed, once: the link to the peer must then fail.
    pub fn poll_fault(&mut self) -> Option<Error> {
        self.fault.take()
    }

    /// A receive whose segments carry a different header.
    pub fn poll_mismatch(&mut self) -> Option<(Token, FrameHeader)> {
        self.mismatches.pop_front()
    }

    /// The peer suspects its path `path` (a `Suspect` unit): a segment that path is still
    /// writing is not waited for once a copy arrived elsewhere.
    pub fn on_peer_suspects(&mut self, path: usize) {
        if let Some(s) = self.suspects.get_mut(path) {
            *s = true;
        }
    }

    /// Find paths stuck writing a segment whose copy arrived elsewhere [`STUCK_WRITER`]
    /// ago, or at once when the peer suspects them; [`Receiver::poll_kill`] returns them.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in &self.slots {
            for s in &t.segs {
                if let Seg::ClaimedStashed(p, _, since) = s {
                    let suspected = self.suspects.get(*p).copied().unwrap_or(false);
                    if (suspected || now.saturating_duration_since(*since) >= STUCK_WRITER)
                        && !self.kill.contains(p)
                    {
                        self.kill.push(*p);
                    }
                }
            }
        }
    }

    /// The next instant [`Receiver::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flat_map(|t| t.segs.iter())
            .filter_map(|s| match s {
                Seg::ClaimedStashed(p, _, since) => {
                    if self.suspects.get(*p).copied().unwrap_or(false) {
                        Some(*since)
                    } else {
                        Some(*since + STUCK_WRITER)
                    }
                }
                _ => None,
            })
            .min()
    }

    /// A path the transport must close: it is stuck writing a segment that another path
    /// delivered. Call [`Receiver::on_path_down`] once it can no longer write.
    pub fn poll_kill(&mut self) -> Option<usize> {
        self.kill.pop()
    }

    /// Whether something arrived since the last [`Receiver::ack`].
    pub fn ack_due(&self) -> bool {
        self.ack_due
    }

    /// The acknowledgement to send now.
    pub fn ack(&mut self) -> Ack {
        self.ack_due = false;
        let mut selective = Vec::new();
        for (i, t) in self.slots.iter().enumerate() {
            let m = if t.complete {
                u64::MAX >> (64 - t.shape.map(|s| s.1).unwrap_or(1))
            } else {
                t.held()
            };
            if m != 0 {
                selective.push((self.base + i as u64, m));
                if selective.len() == MAX_ACK_ENTRIES {
                    break;
                }
            }
        }
        Ack {
            cumulative: self.base,
            selective,
            delivered: self.delivered.clone(),
        }
    }

    /// A control message numbered `n` arrived: true the first time, false for a copy.
    pub fn control_is_new(&mut self, n: u64) -> bool {
        if n < self.control_low || !self.control_seen.insert(n) {
            return false;
        }
        while self.control_seen.len() > 4096 {
            let low = *self.control_seen.iter().next().expect("not empty");
            self.control_seen.remove(&low);
            self.control_low = low + 1;
        }
        true
    }

    /// Receives posted and not complete.
    pub fn pending(&self) -> usize {
        self.slots
            .iter()
            .filter(|t| t.posted.is_some() && !t.complete)
            .count()
    }

    /// Drop every posted receive (the engine withdrew its buffers). Paths still reading
    /// into a destination must be closed first.
    pub fn clear(&mut self) {
        for t in self.slots.iter_mut() {
            t.posted = None;
            t.failed = true;
        }
    }
}
