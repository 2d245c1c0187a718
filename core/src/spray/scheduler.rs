//! Path choice for transports whose paths deliver whole messages and report each one's
//! completion themselves, such as RDMA queue pairs: the same per-path state, metrics,
//! suspicion, backoff and readmission as [`super::Sender`] (`path::PathTx`), and
//! the same [`Mode`]s, without the segment and acknowledgement protocol.
//!
//! Why not the [`super::Sender`] itself: it cuts a transfer into segments that carry their
//! own [`super::wire::UnitHeader`], learns of delivery from the receiver's cumulative and
//! selective acks, and moves, duplicates or withdraws segments on its own. A reliable-
//! connected queue pair already tells the sender, per work request and in order, that the
//! peer's adapter has placed the bytes (the completion of an RDMA write, IBA vol. 1 §9.7),
//! and a work request once posted cannot be withdrawn. So here one posted message is one
//! `path::Flight`, its completion is the delivery report (bytes delivered on the
//! path up to that message's end), and a path's failure hands back every message not yet
//! completed for the transport to post again elsewhere. Speed (BBR-style delivery rate),
//! round trip (RFC 6298), windows, suspicion, flap hold-down and readmission with a probation
//! window are [`super::path`]'s, unchanged. A suspected path takes no new messages until one
//! of its messages completes; what it holds stays on it (it cannot be withdrawn), and the
//! transport's own retry timeouts turn a dead path into a failure.
//!
//! Choice per message ([`PathScheduler::choose`]), after the earliest-completion-first
//! scheduler of Lim et al., "ECF: An MPTCP Path Scheduler to Manage Heterogeneous Paths"
//! (CoNEXT 2017), as [`super::Sender`] does:
//! * [`Mode::Adaptive`]: among the paths that are usable, have room in their window and
//!   have the transport's resources (`fits`), the one whose expected completion (bytes in
//!   flight on it plus the message, over its measured rate) is earliest; with none, an idle
//!   path due for a probe (`path::PROBE_IDLE`).
//! * [`Mode::RoundRobin`]: strict rotation over the usable paths; when the next one has no
//!   room the message waits.
//! * [`Mode::Single`]: the lowest-numbered usable path only.

use super::path::{Flight, PathMetrics, PathState, PathTx};
use super::Mode;
use std::time::{Duration, Instant};

/// Rate assumed for a path not measured yet (bytes per second), as [`super::Sender`]'s.
const UNMEASURED_RATE: f64 = 1e9;

/// Sans-IO path scheduler over paths with per-message completions. Time comes in as an
/// argument.
#[derive(Debug)]
pub struct PathScheduler {
    mode: Mode,
    /// Typical message length in bytes (the window unit).
    seg: u64,
    paths: Vec<PathTx>,
    rr: usize,
}

impl PathScheduler {
    /// `n` paths, all up; messages are at most about `seg` bytes.
    pub fn new(n: usize, mode: Mode, seg: u64, now: Instant) -> PathScheduler {
        PathScheduler {
            mode,
            seg: seg.max(1),
            paths: (0..n).map(|i| PathTx::new(i, now, now)).collect(),
            rr: 0,
        }
    }

    /// The mode it schedules by.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Number of paths.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether there are no paths.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    fn default_rate(&self) -> f64 {
        let m: Vec<f64> = self
            .paths
            .iter()
            .filter(|p| p.state == PathState::Up && p.rate_measured)
            .map(|p| p.rate)
            .collect();
        if m.is_empty() {
            UNMEASURED_RATE
        } else {
            m.iter().sum::<f64>() / m.len() as f64
        }
    }

    /// Suspect each busy path silent past its bound while another path was heard from
    /// since; returns the paths newly suspected.
    pub fn check_suspicion(&mut self, now: Instant) -> Vec<usize> {
        let mut out = Vec::new();
        for i in 0..self.paths.len() {
            let Some(at) = self.paths[i].suspect_at() else {
                continue;
            };
            if now < at {
                continue;
            }
            let since = self.paths[i].last_progress;
            let others_heard = self
                .paths
                .iter()
                .enumerate()
                .any(|(j, p)| j != i && p.last_heard.is_some_and(|t| t > since));
            if others_heard {
                self.paths[i].suspect(now);
                out.push(i);
            }
        }
        out
    }

    /// The path for a message of `len` bytes, or `None` to wait. `fits(i)`: path `i` has
    /// the transport's resources for it (credits, send slots).
    pub fn choose(
        &mut self,
        len: u64,
        now: Instant,
        fits: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        self.check_suspicion(now);
        let seg = self.seg;
        let ok = |p: &PathTx, i: usize| p.has_room(len, seg, now) && fits(i);
        match self.mode {
            Mode::Single => {
                let i = self.paths.iter().position(|p| p.usable(now))?;
                ok(&self.paths[i], i).then_some(i)
            }
            Mode::RoundRobin => {
                let n = self.paths.len();
                let i = (0..n)
                    .map(|k| (self.rr + k) % n)
                    .find(|&i| self.paths[i].usable(now))?;
                if !ok(&self.paths[i], i) {
                    return None;
                }
                self.rr = (i + 1) % n;
                Some(i)
            }
            Mode::Adaptive => {
                let dr = self.default_rate();
                let n = self.paths.len();
                // Ties (equal estimates, e.g. before any measurement) rotate, so that
                // messages one at a time still use every path.
                let best = (0..n)
                    .map(|k| (self.rr + k) % n)
                    .filter(|&i| ok(&self.paths[i], i))
                    .map(|i| (i, self.paths[i].completion_estimate(len, dr, now)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(i, _)| i)
                    .or_else(|| (0..n).find(|&i| self.paths[i].probe_due(now) && fits(i)))?;
                self.rr = (best + 1) % n;
                Some(best)
            }
        }
    }

    /// Message `id` of `len` bytes was posted on `path`.
    pub fn on_post(&mut self, path: usize, id: u64, len: u64, now: Instant) {
        let seg = self.seg;
        let p = &mut self.paths[path];
        p.stream_pos += len;
        let f = Flight {
            transfer: id,
            seg: 0,
            len,
            end: p.stream_pos,
            sent_at: now,
        };
        p.on_send(f, seg, false);
    }

    /// Message `id` on `path` completed (and, completions being in order per path, every
    /// message posted on it before). False if it was not in flight there.
    pub fn on_complete(&mut self, path: usize, id: u64, now: Instant) -> bool {
        let p = &mut self.paths[path];
        let Some(end) = p.flights.iter().find(|f| f.transfer == id).map(|f| f.end) else {
            return false;
        };
        p.on_delivered(end, now);
        true
    }

    /// `path` failed (`why` for the metrics): the ids of its messages not completed, in
    /// the order they were posted, for the transport to post again elsewhere.
    pub fn on_failed(&mut self, path: usize, now: Instant, why: &str) -> Vec<u64> {
        self.paths[path]
            .fail(now, why)
            .into_iter()
            .map(|f| f.transfer)
            .collect()
    }

    /// Whether `path` is up (not failed; it may be suspected).
    pub fn is_up(&self, path: usize) -> bool {
        self.paths[path].state == PathState::Up
    }

    /// How long after a failure to wait before the `attempt`-th (from 0) reconnection of
    /// `path`: the spraying core's backoff, held down longer for a path that flaps.
    pub fn redial_delay(&self, path: usize, attempt: u32) -> Duration {
        self.paths[path].redial_delay(attempt)
    }

    /// `path` is connected again, incarnation `epoch` (from 1): back in service with a
    /// probation window that grows with its completions.
    pub fn readmit(&mut self, path: usize, now: Instant, epoch: u32) {
        let seg = self.seg;
        self.paths[path].readmit(now, epoch, seg);
    }

    /// The metrics of `path`.
    pub fn metrics(&self, path: usize) -> &PathMetrics {
        &self.paths[path].metrics
    }

    /// Bytes in flight on `path`.
    pub fn inflight(&self, path: usize) -> u64 {
        self.paths[path].inflight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1000;

    /// Drive two paths, path 1 `slow` times slower, for `ms` milliseconds of fake time;
    /// returns the bytes each carried.
    fn drive(mode: Mode, slow: u64, ms: u64) -> [u64; 2] {
        let t0 = Instant::now();
        let mut s = PathScheduler::new(2, mode, SEG, t0);
        // Each path serves one message at a time: path 0 in 1 ms, path 1 in `slow` ms.
        let mut busy: [Vec<(u64, Instant)>; 2] = [Vec::new(), Vec::new()];
        let mut carried = [0u64; 2];
        let mut id = 0;
        for tick in 0..ms * 10 {
            let now = t0 + Duration::from_micros(100 * tick);
            for (p, q) in busy.iter_mut().enumerate() {
                while q.first().is_some_and(|&(_, at)| at <= now) {
                    let (m, _) = q.remove(0);
                    assert!(s.on_complete(p, m, now));
                }
            }
            while let Some(p) = s.choose(SEG, now, |_| true) {
                let per = Duration::from_millis(if p == 0 { 1 } else { slow });
                let start = busy[p].last().map_or(now, |&(_, at)| at.max(now));
                busy[p].push((id, start + per));
                s.on_post(p, id, SEG, now);
                carried[p] += SEG;
                id += 1;
            }
        }
        carried
    }

    #[test]
    fn adaptive_gives_a_slow_path_proportionally_fewer_bytes() {
        let [fast, slow] = drive(Mode::Adaptive, 4, 2000);
        let share = slow as f64 / (fast + slow) as f64;
        // Its fair share is 1/5 of the bytes; round-robin would give it half.
        assert!(share > 0.1 && share < 0.3, "fast {fast} slow {slow}");
    }

    #[test]
    fn roundrobin_alternates_and_single_keeps_one_path() {
        let [a, b] = drive(Mode::RoundRobin, 4, 500);
        assert!(a.abs_diff(b) <= SEG, "{a} {b}");
        let [a, b] = drive(Mode::Single, 4, 500);
        assert!(a > 0 && b == 0, "{a} {b}");
        let t0 = Instant::now();
        let mut s = PathScheduler::new(3, Mode::RoundRobin, SEG, t0);
        let order: Vec<usize> = (0..6)
            .map(|i| {
                let p = s.choose(1, t0, |_| true).unwrap();
                s.on_post(p, i, 1, t0);
                p
            })
            .collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn a_failed_path_hands_back_its_messages_and_is_readmitted_after_a_backoff() {
        let t0 = Instant::now();
        let mut s = PathScheduler::new(2, Mode::Single, SEG, t0);
        for id in 0..3 {
            assert_eq!(s.choose(SEG, t0, |_| true), Some(0));
            s.on_post(0, id, SEG, t0);
        }
        assert!(s.on_complete(0, 0, t0 + Duration::from_millis(1)));
        let t1 = t0 + Duration::from_millis(2);
        assert_eq!(s.on_failed(0, t1, "IBV_WC_RETRY_EXC_ERR"), [1, 2]);
        assert!(!s.is_up(0));
        assert_eq!(s.metrics(0).bytes_requeued, 2 * SEG);
        assert_eq!(s.metrics(0).last_failure, "IBV_WC_RETRY_EXC_ERR");
        // Single moves to the next live path.
        assert_eq!(s.choose(SEG, t1, |_| true), Some(1));
        assert!(s.redial_delay(0, 0) >= Duration::from_millis(100));
        s.readmit(0, t1 + Duration::from_millis(200), 2);
        assert!(s.is_up(0));
        assert_eq!(s.metrics(0).epoch, 2);
        assert_eq!(
            s.choose(SEG, t1 + Duration::from_millis(200), |_| true),
            Some(0)
        );
        // A path without the transport's resources is skipped, and with none the message
        // waits.
        let mut a = PathScheduler::new(2, Mode::Adaptive, SEG, t0);
        assert_eq!(a.choose(SEG, t0, |i| i == 1), Some(1));
        assert_eq!(a.choose(SEG, t0, |_| false), None);
    }

    #[test]
    fn a_silent_path_is_suspected_while_another_delivers_and_taken_back_when_it_does() {
        let t0 = Instant::now();
        let mut s = PathScheduler::new(2, Mode::RoundRobin, SEG, t0);
        s.on_post(0, 0, SEG, t0);
        s.on_post(1, 1, SEG, t0);
        let t1 = t0 + Duration::from_millis(50);
        assert!(s.on_complete(1, 1, t1));
        assert_eq!(s.check_suspicion(t1), Vec::<usize>::new());
        let t2 = t0 + Duration::from_millis(500);
        assert_eq!(s.check_suspicion(t2), [0]);
        assert_eq!(s.metrics(0).suspicions, 1);
        // Round-robin skips the suspected path.
        assert_eq!(s.choose(SEG, t2, |_| true), Some(1));
        assert!(s.on_complete(0, 0, t2));
        assert_eq!(s.choose(SEG, t2, |_| true), Some(0));
    }
}
