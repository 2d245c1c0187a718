//! The simulator: runs the schedules of N ranks in memory. It is the oracle of every
//! algorithm test.
//!
//! Each rank has its own memory ([`RankMem`]); in place, `Input` and `Output` are views of one
//! allocation, so a schedule that overwrites data it still needs produces wrong results here
//! exactly as it would on a real machine. Messages between each ordered pair of ranks are
//! matched first-in first-out by their sequence number, steps run with the semantics of
//! [`crate::schedule`] (local actions first, in order, then all transfers of the step
//! concurrently), and reductions go through the real kernels of [`crate::reduce`].
//!
//! Two send semantics are available ([`SendMode`]): with [`SendMode::Rendezvous`] (the
//! default, and the strict one) a send completes only when its receiver is in the step that
//! receives it, as with synchronous sends over a transport that never buffers; with
//! [`SendMode::Eager`] sends are buffered without limit and complete at once. A schedule
//! set that completes under rendezvous completes under any amount of buffering.
//!
//! The simulator reports, as a [`SimError`] naming rank, step and action: slices out of
//! bounds, transfers to peers outside the world, malformed actions, conflicting actions within
//! one step (a write overlapping another action's read or write), messages whose two ends
//! disagree on the length, deadlock (with what every stuck rank waits for), and messages left
//! unreceived at the end.
//!
//! Shaped after quinn-proto's test harness: deterministic, single-threaded, no clock.

mod collective;
mod error;
mod memory;

#[cfg(test)]
mod tests;

pub use collective::{run_collective, run_collective_with, CollectiveRun, OUTPUT_FILL};
pub use error::SimError;
pub use memory::RankMem;

use crate::reduce::{reduce_in_place, scale_div};
use crate::schedule::{Action, Schedule, Slice};
use crate::types::{DataType, Rank, ReduceOp};
pub(crate) use memory::Aligned;
use memory::Loc;
use std::collections::{BTreeMap, HashMap};

/// Byte pattern of fresh scratch memory: reading scratch before writing it gives garbage.
const SCRATCH_FILL: u8 = 0xA5;

/// Largest scratch allocation the simulator makes for one rank (1 GiB).
const MAX_SCRATCH_BYTES: usize = 1 << 30;

/// When a send completes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SendMode {
    /// A send completes when the receiver is in the step holding the matching receive.
    #[default]
    Rendezvous,
    /// A send deposits its message in the receiver's mailbox and completes at once.
    Eager,
}

/// One rank of a simulation: its schedule and its memory.
#[derive(Clone, Debug)]
pub struct SimRank {
    /// What the rank runs.
    pub schedule: Schedule,
    /// Its buffers (scratch is allocated by [`Sim::run`] from the schedule).
    pub mem: RankMem,
}

/// Counts of a completed simulation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Messages sent, in all.
    pub messages: usize,
    /// Bytes sent, in all.
    pub bytes: usize,
    /// Steps of each rank's schedule.
    pub steps: Vec<usize>,
}

/// A simulation's parameters; the world size is the number of ranks passed to [`Sim::run`].
#[derive(Clone, Copy, Debug)]
pub struct Sim {
    /// Element type of every buffer.
    pub dtype: DataType,
    /// The collective's operator (reductions combine with [`ReduceOp::combiner`]).
    pub op: ReduceOp,
    /// Send semantics.
    pub mode: SendMode,
}

impl Sim {
    /// A rendezvous-mode simulation of `dtype` data reduced with `op`.
    pub fn new(dtype: DataType, op: ReduceOp) -> Sim {
        Sim {
            dtype,
            op,
            mode: SendMode::Rendezvous,
        }
    }

    /// Run every rank's schedule to completion, updating their memories.
    ///
    /// # Errors
    ///
    /// The first defect found, as a [`SimError`].
    pub fn run(&self, ranks: &mut [SimRank]) -> Result<SimReport, SimError> {
        let mut run = Run::new(self, ranks)?;
        loop {
            let mut progress = false;
            for r in 0..run.ranks.len() {
                progress |= run.advance(r)?;
            }
            if run.finished() {
                break;
            }
            if !progress {
                return Err(run.deadlock());
            }
        }
        if !run.mailbox.is_empty() {
            let messages = run
                .mailbox
                .iter()
                .map(|(&(from, to, seq), m)| (from, to, seq, m.elems))
                .collect();
            return Err(SimError::Unreceived { messages });
        }
        run.report.steps = run.ranks.iter().map(|r| r.schedule.steps.len()).collect();
        Ok(run.report)
    }
}

/// Memory an action touches, resolved to locations.
#[derive(Clone, Debug, Default)]
struct Touch {
    reads: Vec<Loc>,
    /// `None` for sends, and for a copy onto itself (in place), which does nothing.
    write: Option<Loc>,
}

/// Where a rank is.
#[derive(Clone, Debug, Default)]
struct Cursor {
    step: usize,
    started: bool,
    /// Indices of the current step's transfers that have not completed.
    pending: Vec<usize>,
    /// The current step's resolved actions.
    touch: Vec<Touch>,
}

/// A buffered message (eager mode).
#[derive(Debug)]
struct Msg {
    data: Aligned,
    elems: usize,
    step: usize,
}

struct Run<'a> {
    sim: Sim,
    ranks: &'a mut [SimRank],
    cur: Vec<Cursor>,
    /// Sequence number of every transfer action: `seq[rank][step][action]`.
    seq: Vec<Vec<Vec<usize>>>,
    mailbox: BTreeMap<(Rank, Rank, usize), Msg>,
    report: SimReport,
}

impl<'a> Run<'a> {
    fn new(sim: &Sim, ranks: &'a mut [SimRank]) -> Result<Run<'a>, SimError> {
        let n = ranks.len();
        let mut seq = Vec::with_capacity(n);
        for (rank, r) in ranks.iter_mut().enumerate() {
            let elems = r.schedule.scratch_elems;
            let bytes = elems
                .checked_mul(sim.dtype.size())
                .filter(|&b| b <= MAX_SCRATCH_BYTES)
                .ok_or(SimError::ScratchTooLarge { rank, elems })?;
            r.mem.scratch = Aligned::filled(bytes, SCRATCH_FILL);
            let mut counters: HashMap<(bool, Rank), usize> = HashMap::new();
            let mut per_step = Vec::with_capacity(r.schedule.steps.len());
            for (s, step) in r.schedule.steps.iter().enumerate() {
                let mut v = Vec::with_capacity(step.actions.len());
                for (i, a) in step.actions.iter().enumerate() {
                    let Some(peer) = a.peer() else {
                        v.push(0);
                        continue;
                    };
                    if peer >= n {
                        return Err(SimError::BadPeer {
                            rank,
                            step: s,
                            action: i,
                            peer,
                            nranks: n,
                        });
                    }
                    let is_send = matches!(a, Action::Send { .. });
                    let c = counters.entry((is_send, peer)).or_default();
                    v.push(*c);
                    *c += 1;
                }
                per_step.push(v);
            }
            seq.push(per_step);
        }
        Ok(Run {
            sim: *sim,
            cur: vec![Cursor::default(); n],
            ranks,
            seq,
            mailbox: BTreeMap::new(),
            report: SimReport::default(),
        })
    }

    fn finished(&self) -> bool {
        self.cur
            .iter()
            .zip(self.ranks.iter())
            .all(|(c, r)| c.step >= r.schedule.steps.len())
    }

    /// Move rank `r` as far as it can go; true if anything happened.
    fn advance(&mut self, r: Rank) -> Result<bool, SimError> {
        let mut progressed = false;
        while self.cur[r].step < self.ranks[r].schedule.steps.len() {
            if !self.cur[r].started {
                self.start_step(r)?;
                progressed = true;
            }
            // Each completion removes both ends from their pending lists.
            for a in self.cur[r].pending.clone() {
                if self.cur[r].pending.contains(&a) && self.try_complete(r, a)? {
                    progressed = true;
                }
            }
            if !self.cur[r].pending.is_empty() {
                break;
            }
            let c = &mut self.cur[r];
            c.step += 1;
            c.started = false;
            c.touch.clear();
            progressed = true;
        }
        Ok(progressed)
    }

    /// Check the step's actions, run its local actions, post its transfers.
    fn start_step(&mut self, r: Rank) -> Result<(), SimError> {
        let s = self.cur[r].step;
        let step = self.ranks[r].schedule.steps[s].clone();
        let esize = self.sim.dtype.size();
        let mut touch = Vec::with_capacity(step.actions.len());
        for (i, a) in step.actions.iter().enumerate() {
            touch.push(self.resolve(r, s, i, a, esize)?);
        }
        check_conflicts(r, s, &step.actions, &touch)?;
        let (dtype, op, n) = (self.sim.dtype, self.sim.op, self.ranks.len());
        let fail = |e: crate::Error| SimError::Reduce {
            rank: r,
            step: s,
            detail: e.to_string(),
        };
        let mem = &mut self.ranks[r].mem;
        for (a, t) in step.actions.iter().zip(&touch) {
            match (a, t.write) {
                (_, None) => {} // a transfer's send, or a copy onto itself
                (Action::Copy { .. }, Some(dst)) => {
                    let data = mem.read(t.reads[0]);
                    mem.write(dst, data.bytes());
                }
                (Action::Reduce { .. }, Some(dst)) => {
                    let src = mem.read(t.reads[0]);
                    let mut acc = mem.read(dst);
                    reduce_in_place(dtype, op, acc.bytes_mut(), src.bytes()).map_err(fail)?;
                    mem.write(dst, acc.bytes());
                }
                (Action::Scale { .. }, Some(dst)) => {
                    let mut acc = mem.read(dst);
                    scale_div(dtype, acc.bytes_mut(), n).map_err(fail)?;
                    mem.write(dst, acc.bytes());
                }
                _ => {} // receives run when their message arrives
            }
        }
        let mut pending = Vec::new();
        for (i, a) in step.actions.iter().enumerate() {
            match a {
                Action::Send { peer, src } if self.sim.mode == SendMode::Eager => {
                    let data = self.ranks[r].mem.read(touch[i].reads[0]);
                    self.count(data.bytes().len());
                    let key = (r, *peer, self.seq[r][s][i]);
                    let msg = Msg {
                        data,
                        elems: src.len,
                        step: s,
                    };
                    self.mailbox.insert(key, msg);
                }
                a if !a.is_local() => pending.push(i),
                _ => {}
            }
        }
        let c = &mut self.cur[r];
        c.started = true;
        c.pending = pending;
        c.touch = touch;
        Ok(())
    }

    fn count(&mut self, bytes: usize) {
        self.report.messages += 1;
        self.report.bytes += bytes;
    }

    /// Bounds-check an action and resolve its slices.
    fn resolve(
        &self,
        r: Rank,
        s: usize,
        i: usize,
        a: &Action,
        esize: usize,
    ) -> Result<Touch, SimError> {
        let mem = &self.ranks[r].mem;
        let loc = |slice: Slice| {
            let available = mem.len_of(slice.buf);
            let range = slice
                .offset
                .checked_add(slice.len)
                .and_then(|end| Some((slice.offset.checked_mul(esize)?, end.checked_mul(esize)?)));
            match (available, range) {
                (Some(have), Some((start, end))) if end <= have => {
                    Ok(mem.loc(slice.buf, start, end))
                }
                _ => Err(SimError::OutOfBounds {
                    rank: r,
                    step: s,
                    action: i,
                    slice,
                    available: available.map(|b| b / esize),
                }),
            }
        };
        let malformed = |detail: &str| SimError::Malformed {
            rank: r,
            step: s,
            action: *a,
            detail: detail.into(),
        };
        let reads: Vec<Loc> = a.reads().map(loc).collect::<Result<_, _>>()?;
        let write = a.writes().map(loc).transpose()?;
        let mut t = Touch { reads, write };
        match *a {
            Action::Copy { src, dst } => {
                if src.len != dst.len {
                    return Err(malformed("source and destination lengths differ"));
                }
                let (from, to) = (t.reads[0], t.write.unwrap_or(t.reads[0]));
                if from == to {
                    t.reads.clear();
                    t.write = None;
                } else if from.overlaps(&to) {
                    return Err(malformed("source partly overlaps destination"));
                }
            }
            Action::Reduce { src, dst } => {
                if src.len != dst.len {
                    return Err(malformed("source and destination lengths differ"));
                }
                if t.reads[0].overlaps(&t.reads[1]) {
                    return Err(malformed("source overlaps destination"));
                }
            }
            Action::RecvReduce { local, dst, .. } => {
                if local.len != dst.len {
                    return Err(malformed("local operand and destination lengths differ"));
                }
                let (l, d) = (t.reads[0], t.write.unwrap_or(t.reads[0]));
                if l != d && l.overlaps(&d) {
                    return Err(malformed("local operand partly overlaps destination"));
                }
            }
            _ => {}
        }
        Ok(t)
    }

    /// Try to complete transfer `a` of rank `r`'s current step.
    fn try_complete(&mut self, r: Rank, a: usize) -> Result<bool, SimError> {
        let s = self.cur[r].step;
        let action = self.ranks[r].schedule.steps[s].actions[a];
        let peer = action.peer().unwrap_or(r);
        let seq = self.seq[r][s][a];
        let is_send = matches!(action, Action::Send { .. });
        if self.sim.mode == SendMode::Eager {
            // Only receives are pending in eager mode.
            let Some(msg) = self.mailbox.remove(&(peer, r, seq)) else {
                return Ok(false);
            };
            self.deliver(r, a, peer, seq, &msg.data, msg.elems, msg.step)?;
            self.cur[r].pending.retain(|&x| x != a);
            return Ok(true);
        }
        // Rendezvous: the peer must be in the step holding the other end.
        let other = &self.cur[peer];
        if !other.started {
            return Ok(false);
        }
        let ps = other.step;
        let peer_actions = &self.ranks[peer].schedule.steps[ps].actions;
        let found = other.pending.iter().copied().find(|&b| {
            let pa = &peer_actions[b];
            pa.peer() == Some(r)
                && matches!(pa, Action::Send { .. }) != is_send
                && self.seq[peer][ps][b] == seq
        });
        let Some(b) = found else {
            return Ok(false);
        };
        let (sender, sa, sstep, receiver, ra) = if is_send {
            (r, a, s, peer, b)
        } else {
            (peer, b, ps, r, a)
        };
        let Action::Send { src, .. } = self.ranks[sender].schedule.steps[sstep].actions[sa] else {
            return Ok(false);
        };
        let data = self.ranks[sender]
            .mem
            .read(self.cur[sender].touch[sa].reads[0]);
        self.deliver(receiver, ra, sender, seq, &data, src.len, sstep)?;
        self.cur[r].pending.retain(|&x| x != a);
        self.cur[peer].pending.retain(|&x| x != b);
        Ok(true)
    }

    /// Apply message `data` (`elems` elements, `seq`-th from `from`) to receive action `a`
    /// of rank `r`'s current step.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        r: Rank,
        a: usize,
        from: Rank,
        seq: usize,
        data: &Aligned,
        elems: usize,
        send_step: usize,
    ) -> Result<(), SimError> {
        let s = self.cur[r].step;
        let action = self.ranks[r].schedule.steps[s].actions[a];
        let expected = match action {
            Action::Recv { dst, .. } | Action::RecvReduce { dst, .. } => dst.len,
            _ => 0,
        };
        if elems != expected {
            return Err(SimError::LengthMismatch {
                from,
                to: r,
                seq,
                sent: elems,
                expected,
                send_step,
                recv_step: s,
            });
        }
        if self.sim.mode == SendMode::Rendezvous {
            self.count(data.bytes().len());
        }
        let t = &self.cur[r].touch[a];
        let (reads, write) = (t.reads.clone(), t.write);
        let mem = &mut self.ranks[r].mem;
        let Some(dst) = write else { return Ok(()) };
        match action {
            Action::Recv { .. } => mem.write(dst, data.bytes()),
            Action::RecvReduce { .. } => {
                let mut acc = mem.read(reads[0]);
                reduce_in_place(self.sim.dtype, self.sim.op, acc.bytes_mut(), data.bytes())
                    .map_err(|e| SimError::Reduce {
                        rank: r,
                        step: s,
                        detail: e.to_string(),
                    })?;
                mem.write(dst, acc.bytes());
            }
            _ => {}
        }
        Ok(())
    }

    fn deadlock(&self) -> SimError {
        let mut ranks = Vec::new();
        let mut lines = Vec::new();
        for (r, c) in self.cur.iter().enumerate() {
            let steps = &self.ranks[r].schedule.steps;
            if c.step >= steps.len() {
                continue;
            }
            ranks.push(r);
            let waits: Vec<String> = c
                .pending
                .iter()
                .map(|&a| {
                    let action = &steps[c.step].actions[a];
                    let peer = action.peer().unwrap_or(r);
                    let what = if matches!(action, Action::Send { .. }) {
                        format!("send #{} to", self.seq[r][c.step][a])
                    } else {
                        format!("receive #{} from", self.seq[r][c.step][a])
                    };
                    let pc = &self.cur[peer];
                    let where_ = if pc.step >= self.ranks[peer].schedule.steps.len() {
                        "finished".to_string()
                    } else {
                        format!("at step {}", pc.step)
                    };
                    format!("{what} rank {peer} ({where_})")
                })
                .collect();
            lines.push(format!(
                "rank {r} at step {} waits for {}",
                c.step,
                waits.join(", ")
            ));
        }
        SimError::Deadlock {
            ranks,
            detail: lines.join("; "),
        }
    }
}

/// Within one step, no action may write memory another action reads or writes.
fn check_conflicts(r: Rank, s: usize, actions: &[Action], touch: &[Touch]) -> Result<(), SimError> {
    let hits = |w: &Option<Loc>, t: &Touch| {
        w.is_some_and(|w| t.reads.iter().chain(&t.write).any(|l| w.overlaps(l)))
    };
    for i in 0..touch.len() {
        for j in i + 1..touch.len() {
            if hits(&touch[i].write, &touch[j]) || hits(&touch[j].write, &touch[i]) {
                return Err(SimError::Conflict {
                    rank: r,
                    step: s,
                    first: Box::new(actions[i]),
                    second: Box::new(actions[j]),
                });
            }
        }
    }
    Ok(())
}
