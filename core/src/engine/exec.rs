//! Execution of one operation's [`Schedule`] over a [`Transport`].
//!
//! Each transfer action of the current step is cut into chunks of at most `chunk_bytes`.
//! Up to `window` chunks per peer and direction are posted at a time; a received chunk of a
//! `RecvReduce` lands in a staging buffer and is reduced into its destination as soon as it
//! completes, while the following chunks are still in flight. Plain receives land directly
//! at their destination. The step ends when every chunk is done; local actions of the next
//! step then run and its transfers start.
//!
//! With checksums on (`EngineConfig::checksum`), a send's header carries the CRC32C of its
//! payload, computed when it is posted, and a received chunk is checked before it is reduced
//! or counted as done, whatever transport carried it: a mismatch fails the operation with an
//! error naming the peer and the chunk, never wrong data.
//!
//! Every copy, reduction, division and checksum goes through the [`Device`]: this file never
//! reads or writes a payload byte itself.
//!
//! Frames of at least one byte to and from a peer whose transport needs registered memory
//! are posted with the handle of the region they lie in (a staging slot's own, for receives
//! reduced on arrival); see `registration.rs`.

use super::memory::{OpMemory, RegHandle, Region};
use super::regcache::RegCache;
use super::registration::TransportRegistrar;
use super::staging::StagingPool;
use super::transport::{Completion, Token, Transport};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::schedule::{Action, Schedule};
use crate::types::{CollDesc, CollKind, Rank, ReduceOp};
use crate::wire::{FrameHeader, FrameKind};
use std::collections::VecDeque;
use std::sync::Arc;

/// How frames of this operation are labelled on the wire.
#[derive(Clone, Debug)]
pub(crate) enum Labels {
    /// A collective: every frame carries the sequence number and the call.
    Collective { seq: u64, desc: CollDesc },
    /// Point-to-point messages, one per action of the single step: (sequence number between
    /// the pair, tag) for each action in order.
    P2p { per_action: Vec<(u64, u32)> },
}

impl Labels {
    /// The collective's sequence number (0 for point-to-point groups).
    pub(crate) fn seq(&self) -> u64 {
        match self {
            Labels::Collective { seq, .. } => *seq,
            Labels::P2p { .. } => 0,
        }
    }

    /// The operation, as error messages name it: `all_reduce(...) #3`, `send/recv group`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Labels::Collective { seq, desc } => format!("{desc} #{seq}"),
            Labels::P2p { .. } => "send/recv group".into(),
        }
    }

    /// The operation, as log lines name it: `all_reduce #3`, `send/recv group`.
    pub(crate) fn short(&self) -> String {
        match self {
            Labels::Collective { seq, desc } => format!("{} #{seq}", desc.kind),
            Labels::P2p { .. } => "send/recv group".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Send,
    Recv,
    RecvReduce,
}

#[derive(Debug)]
struct Chunk {
    peer: Rank,
    dir: Dir,
    header: FrameHeader,
    /// Source (send) or destination (receive).
    ptr: *mut u8,
    /// The local operand of a `RecvReduce`.
    local: *const u8,
    /// The registration of the region `ptr` lies in, when the engine registered it.
    reg: Option<RegHandle>,
    staging: Option<usize>,
    posted: bool,
    done: bool,
}

/// The per-rank and per-chunk vectors of an [`Exec`], which the engine keeps between
/// operations so that a call allocates none of them (small calls are dominated by such
/// fixed costs).
#[derive(Default)]
pub(crate) struct ExecBufs {
    chunks: Vec<Chunk>,
    to_post_send: Vec<VecDeque<usize>>,
    to_post_recv: Vec<VecDeque<usize>>,
    inflight_send: Vec<usize>,
    inflight_recv: Vec<usize>,
    msg_send: Vec<u32>,
    msg_recv: Vec<u32>,
    reg_peers: Vec<bool>,
}

// SAFETY: between operations, where the engine keeps it, `chunks` is empty (`into_bufs`
// clears it), so no pointer into caller memory is held; the other vectors hold numbers.
unsafe impl Send for ExecBufs {}

impl ExecBufs {
    /// Emptied, and sized for `nranks`, with the peers whose frames are posted registered.
    fn reset(mut self, nranks: usize, reg_peers: &[bool]) -> ExecBufs {
        self.chunks.clear();
        self.reg_peers.clear();
        self.reg_peers.extend_from_slice(reg_peers);
        for q in [&mut self.to_post_send, &mut self.to_post_recv] {
            q.iter_mut().for_each(VecDeque::clear);
            q.resize_with(nranks, VecDeque::new);
        }
        for v in [&mut self.inflight_send, &mut self.inflight_recv] {
            v.clear();
            v.resize(nranks, 0);
        }
        for v in [&mut self.msg_send, &mut self.msg_recv] {
            v.clear();
            v.resize(nranks, 0);
        }
        self
    }
}

/// The state of one operation in progress.
pub(crate) struct Exec {
    pub(crate) labels: Labels,
    desc: CollDesc,
    nranks: usize,
    sched: Arc<Schedule>,
    mem: OpMemory,
    scratch: Region,
    elem: usize,
    /// Index of the current step (== steps.len() when finished).
    step: usize,
    /// Sequence of the current step's chunks; tokens are `epoch << 32 | index`.
    epoch: u32,
    chunks: Vec<Chunk>,
    remaining: usize,
    to_post_send: Vec<VecDeque<usize>>,
    to_post_recv: Vec<VecDeque<usize>>,
    inflight_send: Vec<usize>,
    inflight_recv: Vec<usize>,
    msg_send: Vec<u32>,
    msg_recv: Vec<u32>,
    chunk_bytes: usize,
    window: usize,
    checksum: bool,
    /// Per rank: frames to and from it are posted registered (empty: none is).
    reg_peers: Vec<bool>,
}

impl Exec {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        labels: Labels,
        desc: CollDesc,
        nranks: usize,
        sched: Arc<Schedule>,
        mem: OpMemory,
        scratch: Region,
        chunk_bytes: usize,
        window: usize,
        checksum: bool,
        epoch: u32,
        reg_peers: &[bool],
        bufs: ExecBufs,
    ) -> Exec {
        let b = bufs.reset(nranks, reg_peers);
        Exec {
            labels,
            desc,
            nranks,
            sched,
            mem,
            scratch,
            elem: desc.dtype.size(),
            step: 0,
            epoch,
            chunks: b.chunks,
            remaining: 0,
            to_post_send: b.to_post_send,
            to_post_recv: b.to_post_recv,
            inflight_send: b.inflight_send,
            inflight_recv: b.inflight_recv,
            msg_send: b.msg_send,
            msg_recv: b.msg_recv,
            chunk_bytes: chunk_bytes.max(1),
            window: window.max(1),
            checksum,
            reg_peers: b.reg_peers,
        }
    }

    /// The vectors, for the next operation (call once nothing is posted any more).
    pub(crate) fn into_bufs(mut self) -> ExecBufs {
        self.chunks.clear();
        ExecBufs {
            chunks: self.chunks,
            to_post_send: self.to_post_send,
            to_post_recv: self.to_post_recv,
            inflight_send: self.inflight_send,
            inflight_recv: self.inflight_recv,
            msg_send: self.msg_send,
            msg_recv: self.msg_recv,
            reg_peers: self.reg_peers,
        }
    }

    /// True when frames of `len` bytes to and from `peer` are posted registered.
    fn registered(&self, peer: Rank, len: u32) -> bool {
        len > 0 && self.reg_peers.get(peer).copied().unwrap_or(false)
    }

    /// The epoch counter after this operation (tokens stay unique across operations).
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }

    /// True when every step is done.
    pub(crate) fn finished(&self) -> bool {
        self.step >= self.sched.steps.len()
    }

    /// Peers this rank still waits for in the current step (for timeout reports).
    pub(crate) fn waiting_on(&self) -> Vec<Rank> {
        let mut v: Vec<Rank> = self
            .chunks
            .iter()
            .filter(|c| !c.done)
            .map(|c| c.peer)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Progress description for timeout reports.
    pub(crate) fn where_am_i(&self) -> String {
        format!("step {} of {}", self.step + 1, self.sched.steps.len())
    }

    /// Start the first step (runs local actions; may finish operations without transfers).
    pub(crate) fn start<T: Transport + ?Sized>(
        &mut self,
        t: &mut T,
        pool: &mut StagingPool,
        dev: &mut dyn Device,
        regs: &mut RegCache,
    ) -> Result<()> {
        self.step = 0;
        self.begin_step(dev)?;
        self.pump(t, pool, dev, regs)
    }

    fn header(
        &self,
        action_index: usize,
        msg: u32,
        chunk: u32,
        offset: u64,
        len: u32,
    ) -> FrameHeader {
        match &self.labels {
            Labels::Collective { seq, desc } => FrameHeader {
                kind: FrameKind::Data,
                seq: *seq,
                desc: *desc,
                msg,
                chunk,
                offset,
                len,
                aux: 0,
                crc: self.checksum.then_some(0),
            },
            Labels::P2p { per_action } => {
                let (seq, tag) = per_action.get(action_index).copied().unwrap_or((0, 0));
                FrameHeader {
                    kind: FrameKind::Data,
                    seq,
                    desc: CollDesc {
                        kind: CollKind::SendRecv,
                        count: 0,
                        dtype: self.desc.dtype,
                        op: ReduceOp::Sum,
                        root: 0,
                    },
                    msg: 0,
                    chunk,
                    offset,
                    len,
                    aux: tag,
                    crc: self.checksum.then_some(0),
                }
            }
        }
    }

    /// Run the local actions of the current step and cut its transfers into chunks; skips
    /// steps that have no transfers.
    fn begin_step(&mut self, dev: &mut dyn Device) -> Result<()> {
        loop {
            if self.finished() {
                return Ok(());
            }
            self.chunks.clear();
            self.epoch = self.epoch.wrapping_add(1);
            self.setup_actions(dev)?;
            self.remaining = self.chunks.len();
            if self.remaining > 0 {
                return Ok(());
            }
            self.step += 1;
        }
    }

    /// The current step's local actions, run now, and its transfers, cut into queued chunks.
    /// Actions are read by index (they are `Copy`), not through a clone of the schedule's
    /// `Arc`: an atomic increment per step is a measurable share of a small call.
    fn setup_actions(&mut self, dev: &mut dyn Device) -> Result<()> {
        let elem = self.elem;
        let step = self.step;
        let count = self.sched.steps[step].actions.len();
        for k in 0..count {
            let a = self.sched.steps[step].actions[k];
            if a.is_local() {
                self.run_local(&a, dev)?;
            }
        }
        for i in 0..count {
            let a = self.sched.steps[step].actions[i];
            let (peer, dir, main, local) = match a {
                Action::Send { peer, src } => (peer, Dir::Send, src, None),
                Action::Recv { peer, dst } => (peer, Dir::Recv, dst, None),
                Action::RecvReduce { peer, local, dst } => {
                    (peer, Dir::RecvReduce, dst, Some(local))
                }
                _ => continue,
            };
            if peer >= self.nranks {
                return Err(Error::internal(format!(
                    "schedule names peer {peer} of {}",
                    self.nranks
                )));
            }
            let (ptr, len) = self.mem.resolve(main, elem, self.scratch)?;
            let reg = self.mem.region(main.buf, self.scratch)?.reg;
            let local_ptr = match local {
                Some(l) => {
                    let (p, n) = self.mem.resolve(l, elem, self.scratch)?;
                    if n != len {
                        return Err(Error::internal("RecvReduce operand lengths differ"));
                    }
                    p as *const u8
                }
                None => std::ptr::null(),
            };
            let msg = if dir == Dir::Send {
                let m = self.msg_send[peer];
                self.msg_send[peer] += 1;
                m
            } else {
                let m = self.msg_recv[peer];
                self.msg_recv[peer] += 1;
                m
            };
            // Chunk size in whole elements.
            let cb = (self.chunk_bytes / elem).max(1) * elem;
            let n = len.div_ceil(cb).max(1);
            for c in 0..n {
                let off = c * cb;
                let clen = cb.min(len - off.min(len));
                let header = self.header(i, msg, c as u32, off as u64, clen as u32);
                let idx = self.chunks.len();
                // SAFETY (pointer arithmetic): off <= len, inside the resolved region.
                let (p, lp) = unsafe {
                    (
                        ptr.add(off),
                        if local_ptr.is_null() {
                            local_ptr
                        } else {
                            local_ptr.add(off)
                        },
                    )
                };
                self.chunks.push(Chunk {
                    peer,
                    dir,
                    header,
                    ptr: p,
                    local: lp,
                    reg,
                    staging: None,
                    posted: false,
                    done: false,
                });
                match dir {
                    Dir::Send => self.to_post_send[peer].push_back(idx),
                    _ => self.to_post_recv[peer].push_back(idx),
                }
            }
        }
        Ok(())
    }

    fn run_local(&mut self, a: &Action, dev: &mut dyn Device) -> Result<()> {
        let (elem, dtype, op) = (self.elem, self.desc.dtype, self.desc.op.combiner());
        match *a {
            Action::Copy { src, dst } => {
                let (s, n) = self.mem.resolve(src, elem, self.scratch)?;
                let (d, m) = self.mem.resolve(dst, elem, self.scratch)?;
                if n != m {
                    return Err(Error::internal("Copy lengths differ"));
                }
                // SAFETY: both ranges were bounds-checked against live regions; the device's
                // copy tolerates overlap.
                unsafe { dev.copy(d, s, n)? };
            }
            Action::Reduce { src, dst } => {
                let (s, n) = self.mem.resolve(src, elem, self.scratch)?;
                let (d, m) = self.mem.resolve(dst, elem, self.scratch)?;
                if n != m || overlaps(s, d, n) {
                    return Err(Error::internal(
                        "Reduce operands differ in length or overlap",
                    ));
                }
                // SAFETY: bounds-checked, non-overlapping, valid for the operation; in place.
                unsafe { dev.reduce_into(dtype, op, d, d, s, n)? };
            }
            Action::Scale { dst } => {
                let (d, n) = self.mem.resolve(dst, elem, self.scratch)?;
                // SAFETY: bounds-checked, valid for the operation.
                unsafe { dev.scale_div(dtype, d, n, self.nranks)? };
            }
            _ => {}
        }
        Ok(())
    }

    /// Post as many chunks as the windows allow.
    pub(crate) fn pump<T: Transport + ?Sized>(
        &mut self,
        t: &mut T,
        pool: &mut StagingPool,
        dev: &mut dyn Device,
        regs: &mut RegCache,
    ) -> Result<()> {
        loop {
            if self.finished() {
                return Ok(());
            }
            for peer in 0..self.nranks {
                while self.inflight_send[peer] < self.window {
                    let Some(idx) = self.to_post_send[peer].pop_front() else {
                        break;
                    };
                    let token = self.token(idx);
                    let checksum = self.checksum;
                    let registered = self.registered(peer, self.chunks[idx].header.len);
                    let c = &mut self.chunks[idx];
                    if checksum {
                        // SAFETY: `c.ptr` is a bounds-checked range of `len` bytes of a live
                        // region (see `setup_actions`); this step's sends only read it.
                        c.header.crc = Some(unsafe { dev.crc32c(c.ptr, c.header.len as usize)? });
                    }
                    if registered {
                        let reg = c.reg.ok_or_else(unleased)?;
                        // SAFETY: as below; `reg` is the lease the engine holds for the whole
                        // operation on a range containing the region `c.ptr` lies in.
                        unsafe { t.post_send_registered(peer, &c.header, c.ptr, reg, token)? };
                    } else {
                        // SAFETY: `c.ptr` points into a region the caller keeps alive and
                        // unmodified for the whole operation; the engine cancels posted work
                        // before an operation ends early.
                        unsafe { t.post_send(peer, &c.header, c.ptr, token)? };
                    }
                    c.posted = true;
                    self.inflight_send[peer] += 1;
                }
                while self.inflight_recv[peer] < self.window {
                    let Some(&idx) = self.to_post_recv[peer].front() else {
                        break;
                    };
                    let token = self.token(idx);
                    let len = self.chunks[idx].header.len as usize;
                    let registered = self.registered(peer, self.chunks[idx].header.len);
                    let (dst, reg) = if self.chunks[idx].dir == Dir::RecvReduce {
                        let Some(slot) = pool.take(len, dev)? else {
                            break;
                        };
                        self.chunks[idx].staging = Some(slot);
                        let reg = if registered {
                            Some(pool.registration(slot, regs, &mut TransportRegistrar(&mut *t))?)
                        } else {
                            None
                        };
                        (pool.ptr(slot), reg)
                    } else {
                        (self.chunks[idx].ptr, self.chunks[idx].reg)
                    };
                    self.to_post_recv[peer].pop_front();
                    let c = &mut self.chunks[idx];
                    if registered {
                        let reg = reg.ok_or_else(unleased)?;
                        // SAFETY: as below; `reg` is held for the whole operation (caller
                        // memory) or the slot's life (staging) on a range containing `dst`.
                        unsafe { t.post_recv_registered(peer, &c.header, dst, reg, token)? };
                    } else {
                        // SAFETY: `dst` is either caller memory reserved for this chunk or a
                        // staging slot taken from the pool for it; both outlive the receive.
                        unsafe { t.post_recv(peer, &c.header, dst, token)? };
                    }
                    c.posted = true;
                    self.inflight_recv[peer] += 1;
                }
            }
            if self.remaining > 0 {
                return Ok(());
            }
            // Step done: next one.
            self.step += 1;
            self.begin_step(dev)?;
        }
    }

    fn token(&self, idx: usize) -> Token {
        ((self.epoch as u64) << 32) | idx as u64
    }

    /// Apply one completion. Returns Ok(false) when the completion was not for this operation.
    pub(crate) fn complete(
        &mut self,
        c: &Completion,
        pool: &mut StagingPool,
        dev: &mut dyn Device,
    ) -> Result<bool> {
        let (token, sent, crc) = match c {
            Completion::Sent { token } => (*token, true, None),
            Completion::Received { token, crc } => (*token, false, *crc),
            _ => return Ok(false),
        };
        if (token >> 32) as u32 != self.epoch {
            return Ok(false);
        }
        let idx = (token & 0xffff_ffff) as usize;
        let Some(ch) = self.chunks.get_mut(idx) else {
            return Err(Error::internal(format!(
                "completion for unknown chunk {idx}"
            )));
        };
        if ch.done || !ch.posted || (ch.dir == Dir::Send) != sent {
            return Err(Error::internal(format!(
                "unexpected completion for chunk {idx}: {c:?}"
            )));
        }
        ch.done = true;
        self.remaining -= 1;
        match ch.dir {
            Dir::Send => self.inflight_send[ch.peer] -= 1,
            Dir::Recv => {
                self.inflight_recv[ch.peer] -= 1;
                if self.checksum {
                    // SAFETY: the receive wrote `len` bytes at `ptr`, a bounds-checked range.
                    let got = unsafe { dev.crc32c(ch.ptr, ch.header.len as usize)? };
                    verify(&self.labels, ch, crc, got)?;
                }
            }
            Dir::RecvReduce => {
                self.inflight_recv[ch.peer] -= 1;
                let n = ch.header.len as usize;
                let slot = ch
                    .staging
                    .take()
                    .ok_or_else(|| Error::internal("no staging slot"))?;
                let staged = pool.ptr(slot) as *const u8;
                let r = (|| {
                    if self.checksum {
                        // SAFETY: the staging slot holds the `n` bytes just received.
                        let got = unsafe { dev.crc32c(staged, n)? };
                        verify(&self.labels, ch, crc, got)?;
                    }
                    if !std::ptr::eq(ch.local, ch.ptr) && overlaps(ch.local, ch.ptr, n) {
                        return Err(Error::internal("RecvReduce operands overlap partially"));
                    }
                    let (dtype, op) = (self.desc.dtype, self.desc.op.combiner());
                    // SAFETY: `ptr`/`local` are bounds-checked ranges of live regions of n
                    // bytes, equal or disjoint; the staging slot holds n received bytes and is
                    // distinct from both.
                    unsafe { dev.reduce_into(dtype, op, ch.ptr, ch.local, staged, n) }
                })();
                pool.give(slot);
                r?;
            }
        }
        Ok(true)
    }

    /// Release staging slots held by posted receives (after the transport was cancelled).
    pub(crate) fn release(&mut self, pool: &mut StagingPool) {
        for c in &mut self.chunks {
            if let Some(s) = c.staging.take() {
                pool.give(s);
            }
        }
    }
}

/// Check a received chunk's CRC32C (`got`, computed by the device) against the one its
/// sender put in the frame header.
fn verify(labels: &Labels, ch: &Chunk, crc: Option<u32>, got: u32) -> Result<()> {
    let Some(expected) = crc else {
        return Err(Error::internal(format!(
            "the transport delivered chunk {} of message {} from rank {} without the CRC its header carried",
            ch.header.chunk, ch.header.msg, ch.peer
        )));
    };
    if got == expected {
        return Ok(());
    }
    let op = match labels {
        Labels::Collective { .. } => labels.describe(),
        Labels::P2p { .. } => format!("point-to-point message #{}", ch.header.seq),
    };
    Err(Error::protocol(format!(
        "chunk {} of message {} from rank {} ({} bytes at offset {}) failed its CRC32C check during {op} (got {got:#010x}, expected {expected:#010x}): the data was corrupted in flight and was not used",
        ch.header.chunk, ch.header.msg, ch.peer, ch.header.len, ch.header.offset
    )))
}

/// A frame to a peer that needs registered memory lies in a region the engine did not lease.
fn unleased() -> Error {
    Error::internal("a frame to a peer that needs registered memory has no registration")
}

fn overlaps(a: *const u8, b: *const u8, n: usize) -> bool {
    let (a, b) = (a as usize, b as usize);
    n > 0 && a < b + n && b < a + n
}
