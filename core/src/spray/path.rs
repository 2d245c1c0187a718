//! One path as the sender sees it: its state, its measured speed and round trip, its window,
//! its metrics, and the policy that brings it back after a failure.
//!
//! Speed is a delivery rate in the manner of BBR's (Cardwell et al., "BBR: Congestion-Based
//! Congestion Control", ACM Queue 14(5), 2016): payload bytes the receiver reports having
//! taken off the path, divided by the time they took, sampled only over intervals in which
//! the path had data outstanding throughout. Round trips are smoothed as in RFC 6298
//! (`srtt`, `rttvar`). A path is suspected when it has data outstanding and no delivery for
//! `max(floor, srtt + 2·rttvar)`: a busy path delivers a segment every few milliseconds, so
//! a silence that long is news; a suspected path that delivers again is taken back, so a
//! transport's own retransmission stall costs little.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Where a path stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathState {
    /// Carrying data.
    Up,
    /// Failed or suspected; its chunks went to the other paths. It is connected again after
    /// a backoff.
    Down,
}

impl PathState {
    /// Lower-case name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            PathState::Up => "up",
            PathState::Down => "down",
        }
    }
}

/// Counters and estimates of one path, as reported to users.
#[derive(Clone, Debug, PartialEq)]
pub struct PathMetrics {
    /// Path index.
    pub path: usize,
    /// Current state.
    pub state: PathState,
    /// Incarnation (how many times the path was connected, from 1).
    pub epoch: u32,
    /// Smoothed delivery rate in bytes per second (0 before the first measurement).
    pub rate_bps: f64,
    /// Smoothed round trip (zero before the first measurement).
    pub srtt: Duration,
    /// Payload bytes sent but not yet acknowledged.
    pub inflight: u64,
    /// Payload bytes handed to the path.
    pub bytes_sent: u64,
    /// Payload bytes the receiver reported taken off the path.
    pub bytes_acked: u64,
    /// Payload bytes moved from this path to others when it failed.
    pub bytes_requeued: u64,
    /// Payload bytes this path carried as duplicates of slow tail chunks.
    pub bytes_duplicated: u64,
    /// Failures so far (the path was closed and connected again).
    pub failures: u32,
    /// Times the path was suspected (its chunks moved to other paths) so far.
    pub suspicions: u32,
    /// Why it last failed (empty if never).
    pub last_failure: String,
    /// State changes, oldest first (at most the last 32): time since the path set was
    /// created, and the new state.
    pub changes: Vec<(Duration, PathState)>,
}

/// A chunk copy travelling on a path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Flight {
    pub(crate) transfer: u64,
    pub(crate) seg: u32,
    pub(crate) len: u64,
    /// The path's stream position after this copy's last byte (payload bytes only).
    pub(crate) end: u64,
    pub(crate) sent_at: Instant,
}

/// Sender-side state of one path.
#[derive(Debug)]
pub(crate) struct PathTx {
    pub(crate) state: PathState,
    pub(crate) epoch: u32,
    /// Copies in flight, in stream order.
    pub(crate) flights: VecDeque<Flight>,
    /// Payload bytes handed to the path in this incarnation.
    pub(crate) stream_pos: u64,
    /// Payload bytes the receiver reported in this incarnation.
    pub(crate) delivered: u64,
    pub(crate) inflight: u64,
    pub(crate) rate: f64,
    pub(crate) rate_measured: bool,
    pub(crate) srtt: Option<Duration>,
    pub(crate) rttvar: Duration,
    /// Last time a delivery was reported, or the path started being busy.
    pub(crate) last_progress: Instant,
    /// Last time anything arrived from the peer on this path (a delivery report for it, or
    /// any unit read from it).
    pub(crate) last_heard: Option<Instant>,
    /// Start of the current rate interval while busy: (time, delivered, when the first
    /// copy not yet delivered then was handed to the path).
    anchor: Option<(Instant, u64, Instant)>,
    /// Suspected since (no delivery for its bound while the peer was heard on another
    /// path): its copies were queued again elsewhere and it takes no new ones until it
    /// delivers again, or fails for good after [`HARD_FAIL`].
    pub(crate) suspected: Option<Instant>,
    /// Whether the path was window-limited (saturated) when the interval started.
    anchor_full: bool,
    /// Re-admitted: the window is capped at `probation` bytes until acks grow it.
    pub(crate) probation: Option<u64>,
    pub(crate) up_since: Instant,
    /// Recent failures shortly after coming back (flaps), which lengthen the hold-down.
    pub(crate) flaps: u32,
    /// Suspicions shortly after recovering from the previous one.
    soft_flaps: u32,
    /// When the path last recovered from a suspicion.
    recovered_at: Option<Instant>,
    /// A path that keeps being suspected takes no new data until then.
    pub(crate) quarantine_until: Option<Instant>,
    /// When the path last took a copy (its creation, before the first).
    last_send: Instant,
    pub(crate) metrics: PathMetrics,
    created: Instant,
}

/// Smallest suspicion bound: no path is suspected faster than this.
pub const SUSPECT_FLOOR: Duration = Duration::from_millis(100);
/// A suspected path that delivers nothing for this long is closed and connected again.
pub const HARD_FAIL: Duration = Duration::from_secs(1);
/// Shortest interval a delivery-rate sample is taken over.
const RATE_INTERVAL: Duration = Duration::from_millis(10);
/// Target queueing on a path: its window is its rate times this.
pub(crate) const TARGET_DELAY: Duration = Duration::from_millis(50);
/// A usable path idle this long while data waits for room elsewhere is sent a copy
/// whatever its estimate says (see [`PathTx::probe_due`]).
pub(crate) const PROBE_IDLE: Duration = Duration::from_millis(200);
/// A path that fails within this long of coming back has flapped.
pub(crate) const FLAP_WINDOW: Duration = Duration::from_secs(2);
/// Stable this long, a path's flap count is forgotten.
pub(crate) const FLAP_FORGET: Duration = Duration::from_secs(20);
/// First delay before connecting a failed path again.
pub(crate) const REDIAL_FIRST: Duration = Duration::from_millis(100);
/// Longest delay between attempts to connect a path that never flapped.
pub(crate) const REDIAL_MAX: Duration = Duration::from_millis(500);
/// Longest hold-down of a flapping path.
pub(crate) const HOLD_MAX: Duration = Duration::from_secs(8);

impl PathTx {
    pub(crate) fn new(path: usize, now: Instant, created: Instant) -> PathTx {
        let mut p = PathTx {
            state: PathState::Up,
            epoch: 1,
            flights: VecDeque::new(),
            stream_pos: 0,
            delivered: 0,
            inflight: 0,
            rate: 0.0,
            rate_measured: false,
            srtt: None,
            rttvar: Duration::ZERO,
            last_progress: now,
            last_heard: None,
            anchor: None,
            anchor_full: false,
            suspected: None,
            probation: None,
            up_since: now,
            flaps: 0,
            soft_flaps: 0,
            recovered_at: None,
            quarantine_until: None,
            last_send: now,
            metrics: PathMetrics {
                path,
                state: PathState::Up,
                epoch: 1,
                rate_bps: 0.0,
                srtt: Duration::ZERO,
                inflight: 0,
                bytes_sent: 0,
                bytes_acked: 0,
                bytes_requeued: 0,
                bytes_duplicated: 0,
                failures: 0,
                suspicions: 0,
                last_failure: String::new(),
                changes: Vec::new(),
            },
            created,
        };
        p.record(now, PathState::Up);
        p
    }

    fn record(&mut self, now: Instant, s: PathState) {
        self.metrics.state = s;
        if self.metrics.changes.len() == 32 {
            self.metrics.changes.remove(0);
        }
        self.metrics
            .changes
            .push((now.saturating_duration_since(self.created), s));
    }

    /// The window in payload bytes.
    pub(crate) fn window(&self, seg: u64) -> u64 {
        let w = self.window_unprobed(seg);
        match self.probation {
            Some(cap) => w.min(cap.max(seg)),
            None => w,
        }
    }

    /// Whether the path takes new data at `now`: up, not suspected, not held back.
    pub(crate) fn usable(&self, now: Instant) -> bool {
        self.state == PathState::Up
            && self.suspected.is_none()
            && self.quarantine_until.is_none_or(|t| now >= t)
    }

    /// Whether a copy of `len` bytes fits the window now.
    pub(crate) fn has_room(&self, len: u64, seg: u64, now: Instant) -> bool {
        self.usable(now) && (self.inflight == 0 || self.inflight + len <= self.window(seg))
    }

    /// Whether the path should be sent a copy to measure it again: usable, nothing in
    /// flight, and nothing sent for [`PROBE_IDLE`]. A rate is only revised by sending, so
    /// without probes a path measured slow once (a stall, a neighbour's burst, a slow
    /// start) would lose every earliest-completion choice and never carry data again.
    pub(crate) fn probe_due(&self, now: Instant) -> bool {
        self.usable(now)
            && self.flights.is_empty()
            && now.saturating_duration_since(self.last_send) >= PROBE_IDLE
    }

    /// Expected time until a copy of `len` bytes handed over now is delivered (infinite for
    /// a path that takes no data now).
    pub(crate) fn completion_estimate(&self, len: u64, default_rate: f64, now: Instant) -> f64 {
        if !self.usable(now) {
            return f64::INFINITY;
        }
        let rate = if self.rate_measured {
            self.rate
        } else {
            default_rate
        };
        (self.inflight + len) as f64 / rate.max(1.0)
    }

    /// The path takes a copy.
    pub(crate) fn on_send(&mut self, f: Flight, seg: u64, dup: bool) {
        if self.flights.is_empty() {
            self.last_progress = f.sent_at;
            self.anchor = Some((f.sent_at, self.delivered, f.sent_at));
            self.anchor_full = false;
        }
        if self.inflight + f.len >= self.window(seg) {
            self.anchor_full = true;
        }
        self.inflight += f.len;
        self.last_send = f.sent_at;
        self.metrics.bytes_sent += f.len;
        if dup {
            self.metrics.bytes_duplicated += f.len;
        }
        self.flights.push_back(f);
    }

    /// A copy not yet written was withdrawn: later copies move up in the stream.
    pub(crate) fn forget(&mut self, transfer: u64, seg: u32) {
        let Some(k) = self
            .flights
            .iter()
            .position(|f| f.transfer == transfer && f.seg == seg)
        else {
            return;
        };
        let f = self.flights.remove(k).expect("found");
        for g in self.flights.iter_mut().skip(k) {
            g.end -= f.len;
        }
        self.stream_pos -= f.len;
        self.inflight -= f.len;
        self.metrics.bytes_sent -= f.len;
        if self.flights.is_empty() {
            self.anchor = None;
        }
        self.refresh();
    }

    /// The receiver reports `delivered` payload bytes taken off this incarnation. Returns the
    /// copies that arrived.
    pub(crate) fn on_delivered(&mut self, delivered: u64, now: Instant) -> Vec<Flight> {
        let mut done = Vec::new();
        if delivered <= self.delivered {
            return done;
        }
        let delta = delivered.min(self.stream_pos) - self.delivered.min(self.stream_pos);
        self.delivered = delivered.min(self.stream_pos);
        self.metrics.bytes_acked += delta;
        self.last_progress = now;
        self.last_heard = Some(now);
        while let Some(f) = self.flights.front() {
            if f.end > self.delivered {
                break;
            }
            let f = self.flights.pop_front().expect("front exists");
            self.inflight -= f.len;
            done.push(f);
        }
        if let Some(last) = done.last() {
            self.rtt_sample(now.saturating_duration_since(last.sent_at));
        }
        if let Some(cap) = self.probation {
            // Slow start out of probation: the window doubles with each window delivered.
            let cap = cap + delta;
            if cap >= self.window_unprobed(4 * delta.max(1)) {
                self.probation = None;
            } else {
                self.probation = Some(cap);
            }
        }
        if self.suspected.take().is_some() {
            // Back from a suspicion. One that keeps coming back and being suspected is held
            // back a while, longer each time, rather than swinging traffic to and fro.
            self.recovered_at = Some(now);
            if self.soft_flaps > 0 {
                let hold = (Duration::from_secs(1)
                    * 2u32.saturating_pow(self.soft_flaps.min(10) - 1))
                .min(HOLD_MAX);
                self.quarantine_until = Some(now + hold);
                self.probation = Some(self.probation.unwrap_or(delta).min(delta.max(1)));
            }
        }
        if let (Some((t0, d0, s0)), Some(last)) = (self.anchor, done.last()) {
            // Over the longer of the time the bytes took to be sent and to be acknowledged,
            // so that acks bunched together do not inflate the rate (BBR's rule).
            let interval = now
                .saturating_duration_since(t0)
                .max(last.sent_at.saturating_duration_since(s0));
            let bytes = self.delivered - d0;
            if interval >= RATE_INTERVAL && bytes > 0 {
                let sample = bytes as f64 / interval.as_secs_f64();
                // Samples from intervals that started below the window are app-limited and
                // may only raise the estimate.
                if !self.rate_measured {
                    self.rate = sample;
                    self.rate_measured = true;
                } else if sample > self.rate || self.anchor_full {
                    self.rate += 0.25 * (sample - self.rate);
                }
                let next = self.flights.front().map_or(now, |f| f.sent_at);
                self.anchor = Some((now, self.delivered, next));
                self.anchor_full = self.inflight > 0;
            }
        }
        if self.flights.is_empty() {
            self.anchor = None;
        }
        self.refresh();
        done
    }

    /// The window by rate alone: [`TARGET_DELAY`] of the measured rate (four segments before
    /// the first measurement), at least two segments.
    fn window_unprobed(&self, seg: u64) -> u64 {
        if self.rate_measured {
            ((self.rate * TARGET_DELAY.as_secs_f64()) as u64).max(2 * seg)
        } else {
            4 * seg
        }
    }

    fn rtt_sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + r) / 8);
            }
        }
    }

    /// How long without delivery before this path is suspected.
    pub(crate) fn suspect_after(&self) -> Duration {
        match self.srtt {
            Some(s) => (s + self.rttvar * 2).max(SUSPECT_FLOOR),
            None => SUSPECT_FLOOR * 2,
        }
    }

    /// When the path will be suspected if nothing arrives (None: nothing outstanding).
    pub(crate) fn suspect_at(&self) -> Option<Instant> {
        (self.state == PathState::Up && self.suspected.is_none() && !self.flights.is_empty())
            .then(|| self.last_progress + self.suspect_after())
    }

    /// Mark the path suspected at `now`.
    pub(crate) fn suspect(&mut self, now: Instant) {
        match self.recovered_at {
            Some(t) if now.saturating_duration_since(t) < FLAP_WINDOW => self.soft_flaps += 1,
            Some(t) if now.saturating_duration_since(t) > FLAP_FORGET => self.soft_flaps = 0,
            _ => {}
        }
        self.suspected = Some(now);
        self.metrics.suspicions += 1;
    }

    /// When a suspected path fails for good if nothing arrives on it.
    pub(crate) fn hard_fail_at(&self) -> Option<Instant> {
        self.suspected.map(|t| t + HARD_FAIL)
    }

    /// The path failed: take its copies in flight away. Returns them.
    pub(crate) fn fail(&mut self, now: Instant, why: &str) -> Vec<Flight> {
        if self.state == PathState::Down {
            return Vec::new();
        }
        if now.saturating_duration_since(self.up_since) < FLAP_WINDOW && self.metrics.failures > 0 {
            self.flaps += 1;
        } else if now.saturating_duration_since(self.up_since) > FLAP_FORGET {
            self.flaps = 0;
        }
        self.state = PathState::Down;
        self.suspected = None;
        self.metrics.failures += 1;
        self.metrics.last_failure = why.to_string();
        self.record(now, PathState::Down);
        let taken: Vec<Flight> = self.flights.drain(..).collect();
        let bytes: u64 = taken.iter().map(|f| f.len).sum();
        self.metrics.bytes_requeued += bytes;
        self.inflight = 0;
        self.anchor = None;
        self.refresh();
        taken
    }

    /// How long to wait before the `attempt`-th (from 0) connection attempt after a failure:
    /// exponential from [`REDIAL_FIRST`], capped at [`REDIAL_MAX`], and held down longer the
    /// more the path has flapped (so a flapping path is kept out rather than oscillating).
    pub(crate) fn redial_delay(&self, attempt: u32) -> Duration {
        let backoff = (REDIAL_FIRST * 2u32.saturating_pow(attempt.min(10))).min(REDIAL_MAX);
        let hold = if self.flaps == 0 {
            Duration::ZERO
        } else {
            (Duration::from_secs(1) * 2u32.saturating_pow(self.flaps.min(10) - 1)).min(HOLD_MAX)
        };
        backoff.max(hold)
    }

    /// The path is connected again: a new incarnation with a small window that grows.
    pub(crate) fn readmit(&mut self, now: Instant, epoch: u32, seg: u64) {
        self.state = PathState::Up;
        self.epoch = epoch;
        self.flights.clear();
        self.stream_pos = 0;
        self.delivered = 0;
        self.inflight = 0;
        self.anchor = None;
        self.last_progress = now;
        self.last_heard = None;
        self.suspected = None;
        self.up_since = now;
        self.probation = Some(seg);
        // Keep the old rate as a hint, discounted: the path must prove itself again.
        self.rate *= 0.5;
        self.srtt = None;
        self.metrics.epoch = epoch;
        self.record(now, PathState::Up);
        self.refresh();
    }

    fn refresh(&mut self) {
        self.metrics.rate_bps = if self.rate_measured { self.rate } else { 0.0 };
        self.metrics.srtt = self.srtt.unwrap_or_default();
        self.metrics.inflight = self.inflight;
        self.metrics.epoch = self.epoch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_rtt_and_suspicion_follow_deliveries() {
        let t0 = Instant::now();
        let mut p = PathTx::new(0, t0, t0);
        let seg = 1000;
        for i in 0..4u64 {
            p.stream_pos += seg;
            p.on_send(
                Flight {
                    transfer: i,
                    seg: 0,
                    len: seg,
                    end: p.stream_pos,
                    sent_at: t0,
                },
                seg,
                false,
            );
        }
        assert_eq!(p.inflight, 4000);
        let done = p.on_delivered(2000, t0 + Duration::from_millis(10));
        assert_eq!(done.len(), 2);
        assert_eq!(p.inflight, 2000);
        assert!((p.rate - 200_000.0).abs() < 1.0, "{}", p.rate);
        assert_eq!(p.srtt, Some(Duration::from_millis(10)));
        assert_eq!(p.suspect_after(), SUSPECT_FLOOR);
        assert!(p.suspect_at().is_some());
        let taken = p.fail(t0 + Duration::from_millis(20), "test");
        assert_eq!(taken.len(), 2);
        assert_eq!(p.metrics.bytes_requeued, 2000);
        assert_eq!(p.suspect_at(), None);
        assert_eq!(p.redial_delay(0), REDIAL_FIRST);
        assert_eq!(p.redial_delay(20), REDIAL_MAX);
    }

    #[test]
    fn flapping_paths_are_held_down_longer() {
        let t0 = Instant::now();
        let mut p = PathTx::new(0, t0, t0);
        let mut t = t0 + Duration::from_secs(30);
        p.fail(t, "first");
        assert_eq!(p.flaps, 0);
        for k in 1..5u32 {
            t += Duration::from_millis(500);
            p.readmit(t, k + 1, 1000);
            assert_eq!(p.probation, Some(1000));
            t += Duration::from_millis(500);
            p.fail(t, "flap");
            assert_eq!(p.flaps, k);
        }
        assert!(p.redial_delay(0) >= Duration::from_secs(8));
    }
}
