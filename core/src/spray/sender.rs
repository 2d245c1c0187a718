//! The sending half: which path carries each segment, acknowledgements, failover, tail
//! duplication. See the module docs of [`super`].

use super::path::{Flight, PathMetrics, PathState, PathTx};
use super::wire::Ack;
use super::{segmentation, Mode, SprayConfig};
use crate::engine::Token;
use crate::wire::FrameHeader;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Rate assumed for a path not measured yet (bytes per second).
const UNMEASURED_RATE: f64 = 1e9;
/// A segment carries about this long of the paths' combined rate.
const SEGMENT_TIME: Duration = Duration::from_millis(1);
/// Largest automatic segment.
const MAX_SEGMENT: usize = 1 << 20;

/// A segment copy to put on a path now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The path.
    pub path: usize,
    /// The path's incarnation.
    pub epoch: u32,
    /// The transfer's id.
    pub transfer: u64,
    /// Segment index.
    pub seg: u32,
    /// Segments of the transfer.
    pub nsegs: u32,
    /// Byte offset in the transfer.
    pub offset: u64,
    /// Segment length.
    pub len: u64,
    /// The transfer's length.
    pub total: u64,
    /// Address of the segment's first byte (the transfer's data plus `offset`).
    pub data: usize,
    /// The transfer's engine header.
    pub header: FrameHeader,
    /// A duplicate of a copy still in flight on another path (tail).
    pub duplicate: bool,
}

#[derive(Debug)]
struct TxTransfer {
    token: Token,
    header: FrameHeader,
    data: usize,
    total: u64,
    seg_len: u64,
    nsegs: u32,
    acked: u64,
    queued: u64,
    /// Live copies per segment.
    copies: Vec<u8>,
    done: bool,
}

impl TxTransfer {
    fn all(&self) -> u64 {
        if self.nsegs == 64 {
            u64::MAX
        } else {
            (1u64 << self.nsegs) - 1
        }
    }

    fn seg_range(&self, s: u32) -> (u64, u64) {
        let off = s as u64 * self.seg_len;
        (off, self.seg_len.min(self.total - off))
    }
}

/// The sending half of one peer's paths.
#[derive(Debug)]
pub struct Sender {
    cfg: SprayConfig,
    base: u64,
    transfers: VecDeque<TxTransfer>,
    queue: VecDeque<(u64, u32)>,
    paths: Vec<PathTx>,
    rr: usize,
    bytes_total: u64,
    bytes_dup: u64,
    completed: VecDeque<(Token, u64)>,
    /// Paths newly suspected, to tell the peer.
    suspected: Vec<usize>,
}

impl Sender {
    /// A sender over `npaths` paths, all up, created at `now`.
    pub fn new(cfg: SprayConfig, npaths: usize, now: Instant) -> Sender {
        Sender {
            cfg,
            base: 0,
            transfers: VecDeque::new(),
            queue: VecDeque::new(),
            paths: (0..npaths).map(|p| PathTx::new(p, now, now)).collect(),
            rr: 0,
            bytes_total: 0,
            bytes_dup: 0,
            completed: VecDeque::new(),
            suspected: Vec::new(),
        }
    }

    /// Number of paths.
    pub fn npaths(&self) -> usize {
        self.paths.len()
    }

    /// Segment size for new transfers: about [`SEGMENT_TIME`] of the live paths' combined
    /// measured rate, at least the configured size and at most [`MAX_SEGMENT`]. Fast paths
    /// (loopback, 100G) take few large segments, whose per-segment costs then vanish; slow
    /// ones small segments, which balance finely and fail over little at a time.
    fn segment_bytes(&self) -> usize {
        let sum: f64 = self
            .paths
            .iter()
            .filter(|p| p.state == PathState::Up)
            .map(|p| {
                if p.rate_measured {
                    p.rate
                } else {
                    UNMEASURED_RATE
                }
            })
            .sum();
        let auto = (sum * SEGMENT_TIME.as_secs_f64()) as usize;
        auto.clamp(
            self.cfg.segment_bytes,
            MAX_SEGMENT.max(self.cfg.segment_bytes),
        )
    }

    /// A new transfer of `header.len` bytes at address `data`; returns its id.
    pub fn push(&mut self, token: Token, header: FrameHeader, data: usize) -> u64 {
        let total = header.len as u64;
        let (seg_len, nsegs) = segmentation(total, self.segment_bytes());
        let id = self.base + self.transfers.len() as u64;
        let mut t = TxTransfer {
            token,
            header,
            data,
            total,
            seg_len,
            nsegs,
            acked: 0,
            queued: 0,
            copies: vec![0; nsegs as usize],
            done: false,
        };
        t.queued = t.all();
        self.transfers.push_back(t);
        self.queue.extend((0..nsegs).map(|s| (id, s)));
        id
    }

    fn transfer(&self, id: u64) -> Option<&TxTransfer> {
        id.checked_sub(self.base)
            .and_then(|i| self.transfers.get(i as usize))
    }

    fn transfer_mut(&mut self, id: u64) -> Option<&mut TxTransfer> {
        id.checked_sub(self.base)
            .and_then(|i| self.transfers.get_mut(i as usize))
    }

    /// Whether segment `s` of transfer `id` still needs delivering.
    fn wanted(&self, id: u64, s: u32) -> bool {
        self.transfer(id)
            .is_some_and(|t| !t.done && t.acked & (1 << s) == 0)
    }

    fn default_rate(&self) -> f64 {
        let measured: Vec<f64> = self
            .paths
            .iter()
            .filter(|p| p.state == PathState::Up && p.rate_measured)
            .map(|p| p.rate)
            .collect();
        if measured.is_empty() {
            UNMEASURED_RATE
        } else {
            measured.iter().sum::<f64>() / measured.len() as f64
        }
    }

    /// The path for a segment of `len` bytes, or None to wait.
    fn choose(&mut self, len: u64, now: Instant) -> Option<usize> {
        let seg = self.cfg.segment_bytes as u64;
        match self.cfg.mode {
            Mode::Single => {
                let p = self.paths.iter().position(|p| p.usable(now))?;
                self.paths[p].has_room(len, seg, now).then_some(p)
            }
            Mode::RoundRobin => {
                // Strict rotation over the live paths, as static striping does: the next
                // path takes the next segment, and when it has no room the sender waits.
                let n = self.paths.len();
                let p = (0..n)
                    .map(|i| (self.rr + i) % n)
                    .find(|&p| self.paths[p].usable(now))?;
                if !self.paths[p].has_room(len, seg, now) {
                    return None;
                }
                self.rr = (p + 1) % n;
                Some(p)
            }
            Mode::Adaptive => {
                let dr = self.default_rate();
                let (best, _) = self
                    .paths
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.usable(now))
                    .map(|(i, p)| (i, p.completion_estimate(len, dr, now)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))?;
                if self.paths[best].has_room(len, seg, now) {
                    return Some(best);
                }
                // The data waits for room on the best path: an idle path not tried for a
                // while takes it instead, so that its rate is measured again.
                self.paths.iter().position(|p| p.probe_due(now))
            }
        }
    }

    /// The next segment copy to put on a path, if any path has room for it.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        while let Some(&(id, s)) = self.queue.front() {
            if !self.wanted(id, s) {
                self.queue.pop_front();
                if let Some(t) = self.transfer_mut(id) {
                    t.queued &= !(1 << s);
                }
                continue;
            }
            let t = self.transfer(id).expect("wanted");
            let (_, len) = t.seg_range(s);
            let path = self.choose(len, now)?;
            self.queue.pop_front();
            return Some(self.launch(path, id, s, now, false));
        }
        self.poll_duplicate(now)
    }

    fn launch(&mut self, path: usize, id: u64, s: u32, now: Instant, dup: bool) -> Transmit {
        let seg = self.cfg.segment_bytes as u64;
        let epoch = self.paths[path].epoch;
        let t = self
            .transfer_mut(id)
            .expect("launching a segment of a live transfer");
        let (offset, len) = t.seg_range(s);
        t.queued &= !(1 << s);
        t.copies[s as usize] = t.copies[s as usize].saturating_add(1);
        let tx = Transmit {
            path,
            epoch,
            transfer: id,
            seg: s,
            nsegs: t.nsegs,
            offset,
            len,
            total: t.total,
            data: t.data + offset as usize,
            header: t.header,
            duplicate: dup,
        };
        let p = &mut self.paths[path];
        p.stream_pos += len;
        let f = Flight {
            transfer: id,
            seg: s,
            len,
            end: p.stream_pos,
            sent_at: now,
        };
        p.on_send(f, seg, dup);
        self.bytes_total += len;
        if dup {
            self.bytes_dup += len;
        }
        tx
    }

    /// With nothing left to send: a copy of a slow segment on an idle faster path.
    fn poll_duplicate(&mut self, now: Instant) -> Option<Transmit> {
        if self.cfg.max_duplicate_fraction <= 0.0
            || self.paths.len() < 2
            || self.cfg.mode != Mode::Adaptive
        {
            return None;
        }
        let dr = self.default_rate();
        let rate = |p: &PathTx| if p.rate_measured { p.rate } else { dr };
        let q = self
            .paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.usable(now) && p.flights.is_empty())
            .max_by(|a, b| rate(a.1).total_cmp(&rate(b.1)))
            .map(|(i, _)| i)?;
        let rq = rate(&self.paths[q]);
        // The flight whose expected remaining time is longest, if q would beat it clearly.
        let mut pick: Option<(f64, u64, u32)> = None;
        for (i, p) in self.paths.iter().enumerate() {
            if i == q || p.state != PathState::Up {
                continue;
            }
            let rp = rate(p);
            for f in &p.flights {
                let Some(t) = self.transfer(f.transfer) else {
                    continue;
                };
                if t.done || t.acked & (1 << f.seg) != 0 || t.copies[f.seg as usize] > 1 {
                    continue;
                }
                let left = (f.end - p.delivered.min(f.end)) as f64 / rp.max(1.0);
                let mine = f.len as f64 / rq.max(1.0);
                if left > 1.5 * mine && pick.is_none_or(|(l, _, _)| left > l) {
                    pick = Some((left, f.transfer, f.seg));
                }
            }
        }
        let (_, id, s) = pick?;
        let len = self.transfer(id)?.seg_range(s).1;
        let budget = self.cfg.max_duplicate_fraction * (self.bytes_total + len) as f64;
        if (self.bytes_dup + len) as f64 > budget {
            return None;
        }
        Some(self.launch(q, id, s, now, true))
    }

    /// An acknowledgement arrived.
    pub fn on_ack(&mut self, ack: &Ack, now: Instant) {
        for (i, &(epoch, delivered)) in ack.delivered.iter().enumerate() {
            let Some(p) = self.paths.get_mut(i) else {
                break;
            };
            if p.state != PathState::Up || p.epoch != epoch {
                continue;
            }
            for f in p.on_delivered(delivered, now) {
                if let Some(t) = self.transfer_mut(f.transfer) {
                    let c = &mut t.copies[f.seg as usize];
                    *c = c.saturating_sub(1);
                    t.acked |= 1 << f.seg;
                }
            }
        }
        let upto = ack.cumulative.min(self.base + self.transfers.len() as u64);
        for id in self.base..upto {
            if let Some(t) = self.transfer_mut(id) {
                t.acked = t.all();
            }
        }
        for &(id, map) in &ack.selective {
            if let Some(t) = self.transfer_mut(id) {
                t.acked |= map & t.all();
            }
        }
        self.retire();
    }

    fn retire(&mut self) {
        for (i, t) in self.transfers.iter_mut().enumerate() {
            if !t.done && t.acked == t.all() {
                t.done = true;
                self.completed.push_back((t.token, self.base + i as u64));
            }
        }
        while self.transfers.front().is_some_and(|t| t.done) {
            self.transfers.pop_front();
            self.base += 1;
        }
    }

    /// A transfer whose every segment was acknowledged: (token, transfer id). Unsent copies
    /// of its segments still queued on paths may be dropped.
    pub fn poll_completed(&mut self) -> Option<(Token, u64)> {
        self.completed.pop_front()
    }

    /// A copy of segment `seg` of transfer `id` queued on `path` was dropped before any of
    /// it was written (the transfer completed through other copies): the path's stream no
    /// longer carries it.
    pub fn forget(&mut self, path: usize, id: u64, seg: u32) {
        if let Some(p) = self.paths.get_mut(path) {
            p.forget(id, seg);
        }
    }

    /// Whether transfer `id` is complete (or long gone).
    pub fn is_complete(&self, id: u64) -> bool {
        id < self.base || self.transfer(id).is_none_or(|t| t.done)
    }

    /// Path `path` failed (a socket error, its stream ended, or the transport killed it):
    /// its unacknowledged segments go back to the front of the queue.
    pub fn on_path_down(&mut self, path: usize, why: &str, now: Instant) {
        let Some(p) = self.paths.get_mut(path) else {
            return;
        };
        let taken = p.fail(now, why);
        for f in taken.into_iter().rev() {
            let Some(t) = self.transfer_mut(f.transfer) else {
                continue;
            };
            let c = &mut t.copies[f.seg as usize];
            *c = c.saturating_sub(1);
            if t.done || t.acked & (1 << f.seg) != 0 || t.queued & (1 << f.seg) != 0 {
                continue;
            }
            t.queued |= 1 << f.seg;
            self.queue.push_front((f.transfer, f.seg));
        }
    }

    /// Path `path` is connected again (incarnation `epoch`).
    pub fn on_path_up(&mut self, path: usize, epoch: u32, now: Instant) {
        let seg = self.cfg.segment_bytes as u64;
        if let Some(p) = self.paths.get_mut(path) {
            p.readmit(now, epoch, seg);
        }
    }

    /// Something arrived from the peer on `path` (any unit): the peer is alive and that
    /// path carries.
    pub fn on_heard(&mut self, path: usize, now: Instant) {
        if let Some(p) = self.paths.get_mut(path) {
            if p.state == PathState::Up {
                p.last_heard = Some(now);
            }
        }
    }

    /// Whether the peer was heard on a live path other than `i` after `since`.
    fn heard_elsewhere(&self, i: usize, since: Instant) -> bool {
        self.paths.iter().enumerate().any(|(j, q)| {
            j != i && q.state == PathState::Up && q.last_heard.is_some_and(|h| h > since)
        })
    }

    /// Whether path `i` is stalled and may be suspected: it has data outstanding and no
    /// delivery for its bound, and the peer was heard on another path since the path last
    /// made progress. When nothing is heard on any path, the peer itself is slow, idle or
    /// gone, which is for the heartbeats to decide.
    fn suspectable(&self, i: usize, now: Instant) -> bool {
        let p = &self.paths[i];
        p.suspect_at().is_some_and(|t| t <= now) && self.heard_elsewhere(i, p.last_progress)
    }

    /// Whether suspected path `i` has delivered nothing for [`super::path::HARD_FAIL`]
    /// while the peer was heard elsewhere.
    fn hard_due(&self, i: usize, now: Instant) -> bool {
        let p = &self.paths[i];
        p.hard_fail_at().is_some_and(|t| t <= now) && self.heard_elsewhere(i, p.last_progress)
    }

    /// Suspect stalled paths (see `suspectable`): their unacknowledged segments are queued
    /// again for the other paths at once, and they take no new segments; a suspected path
    /// that delivers again is used again as it was (a retransmission stall of TCP costs no
    /// reconnection). One that stays silent for [`super::path::HARD_FAIL`] is marked down
    /// and returned: the transport must close it and connect it again.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for i in 0..self.paths.len() {
            if self.suspectable(i, now) {
                self.suspect(i, now);
            }
        }
        while let Some(i) = (0..self.paths.len()).find(|&i| self.hard_due(i, now)) {
            let p = &self.paths[i];
            let why = format!(
                "no delivery for {} ms with {} bytes outstanding (suspected after {} ms)",
                now.saturating_duration_since(p.last_progress).as_millis(),
                p.inflight,
                p.suspect_after().as_millis()
            );
            self.on_path_down(i, &why, now);
            out.push((i, why));
        }
        out
    }

    /// Queue the unacknowledged segments of path `i` again and stop giving it new ones.
    fn suspect(&mut self, i: usize, now: Instant) {
        self.suspected.push(i);
        let p = &mut self.paths[i];
        p.suspect(now);
        p.metrics.last_failure = format!(
            "suspected: no delivery for {} ms with {} bytes outstanding",
            now.saturating_duration_since(p.last_progress).as_millis(),
            p.inflight
        );
        let flights: Vec<(u64, u32, u64)> = p
            .flights
            .iter()
            .map(|f| (f.transfer, f.seg, f.len))
            .collect();
        let mut moved = 0;
        for (id, s, len) in flights.into_iter().rev() {
            let Some(t) = self.transfer_mut(id) else {
                continue;
            };
            if t.done || t.acked & (1 << s) != 0 || t.queued & (1 << s) != 0 {
                continue;
            }
            t.queued |= 1 << s;
            self.queue.push_front((id, s));
            moved += len;
        }
        self.paths[i].metrics.bytes_requeued += moved;
    }

    /// A path suspected since the last call: the peer should be told (a `Suspect` unit on
    /// another path), so that it does not wait for a segment that path is still writing.
    pub fn poll_suspected(&mut self) -> Option<usize> {
        self.suspected.pop()
    }

    /// The next instant [`Sender::handle_timeout`] may have something to do (a past
    /// instant: at once). Paths already stalled wait for news from the peer instead.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        (0..self.paths.len())
            .flat_map(|i| {
                let p = &self.paths[i];
                let soft = p
                    .suspect_at()
                    .filter(|&t| t > now || self.suspectable(i, now));
                let hard = p
                    .hard_fail_at()
                    .filter(|&t| t > now || self.hard_due(i, now));
                [soft, hard]
            })
            .flatten()
            .min()
    }

    /// Delay before connecting path `path` again, for its `attempt`-th attempt.
    pub fn redial_delay(&self, path: usize, attempt: u32) -> Duration {
        self.paths
            .get(path)
            .map(|p| p.redial_delay(attempt))
            .unwrap_or(super::path::REDIAL_MAX)
    }

    /// Paths that are up, best first (lowest round trip; stalled ones last).
    pub fn healthy_paths(&self, now: Instant) -> Vec<usize> {
        let mut v: Vec<(bool, Duration, usize)> = self
            .paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state == PathState::Up)
            .map(|(i, p)| {
                let stalled = p
                    .suspect_at()
                    .is_some_and(|t| t.saturating_duration_since(now) < p.suspect_after() / 2);
                (stalled, p.srtt.unwrap_or_default(), i)
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, _, i)| i).collect()
    }

    /// The live path a small unit (an ack) would cross soonest: least queued for its speed.
    pub fn quickest_path(&self, now: Instant) -> Option<usize> {
        let dr = self.default_rate();
        self.paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.usable(now))
            .map(|(i, p)| (i, p.completion_estimate(0, dr, now)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }

    /// State of path `path`.
    pub fn path_state(&self, path: usize) -> Option<PathState> {
        self.paths.get(path).map(|p| p.state)
    }

    /// Metrics of every path.
    pub fn metrics(&self) -> Vec<PathMetrics> {
        self.paths.iter().map(|p| p.metrics.clone()).collect()
    }

    /// Bytes sent as tail duplicates, and bytes sent in all.
    pub fn duplicate_bytes(&self) -> (u64, u64) {
        (self.bytes_dup, self.bytes_total)
    }

    /// Transfers not yet complete.
    pub fn pending(&self) -> usize {
        self.transfers.iter().filter(|t| !t.done).count()
    }

    /// Drop every transfer (the engine withdrew its buffers).
    pub fn clear(&mut self) {
        self.base += self.transfers.len() as u64;
        self.transfers.clear();
        self.queue.clear();
        self.completed.clear();
    }
}
