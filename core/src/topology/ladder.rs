//! The bandwidth measurement of one probe meeting: a ladder of exchanges of doubling size,
//! read by the difference of its last two rungs.
//!
//! A single timed transfer misjudges a link in two ways. Its fixed costs (latency, the
//! start of the transfer) make it look slower than it is; a token-bucket shaper (Linux
//! `tbf`, a cloud NIC's rate limit) lets its first `burst` bytes through at line rate and
//! makes it look faster. Sizing the transfer from a first, small one fails the same way:
//! the small one runs inside the burst, looks fast, and asks for a long transfer.
//!
//! The ladder exchanges [`START`] bytes, then twice as many, and so on. Once the bucket has
//! been emptied by the earlier rungs, a rung of `S` bytes costs `c + S/r` for the link's
//! rate `r` and a fixed cost `c`, so two such rungs give `r = (S₂ - S₁)/(t₂ - t₁)` with both
//! the fixed cost and the burst cancelled: the packet-pair / two-size idea of Jacobson's
//! pathchar and of Downey, "Using pathchar to estimate Internet link characteristics",
//! SIGCOMM 1999. The ladder stops when the last two rungs ran at the same apparent rate
//! (`S/t` within [`AGREE`]; rungs still inside the burst look faster than the ones after)
//! and the last one lasted at least [`MIN_RUNG_S`], or when it reaches [`MAX`] bytes, or
//! when the next rung (twice the last one's time) would take it past [`BUDGET_S`]. On a
//! 1 Gbit/s link with a 125 KB burst that is four rungs, about 1 MB and 8 ms; a meeting
//! never takes much more than [`BUDGET_S`], so a probe of `k` rounds stays near
//! `(k + 1)·BUDGET_S`.
//!
//! A burst longer than about a third of the budget (a third of 12 ms) is not emptied in
//! time, and the link is judged by rungs that ran partly inside it; a link so slow that
//! one rung fills the budget is judged by that rung's apparent rate, fixed cost included.
//!
//! The initiator runs the ladder and tells the responder each rung's size; the responder
//! refuses a size outside [`START`]`..=`[`MAX`].

/// Bytes of the first rung.
pub const START: usize = 64 << 10;
/// Largest rung, in bytes.
pub const MAX: usize = 8 << 20;
/// Shortest last rung, in seconds, before the ladder may stop.
pub const MIN_RUNG_S: f64 = 1e-3;
/// Time the rungs of one ladder may take together, in seconds.
pub const BUDGET_S: f64 = 12e-3;
/// Largest relative difference of the last two rungs' apparent rates for them to agree.
pub const AGREE: f64 = 0.15;

/// The rungs climbed so far: `(bytes, seconds)` of each exchange.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ladder {
    rungs: Vec<(usize, f64)>,
}

impl Ladder {
    /// A ladder with no rung climbed.
    pub fn new() -> Ladder {
        Ladder::default()
    }

    /// The size of the next rung, or `None` when the ladder is done.
    pub fn next(&self) -> Option<usize> {
        let Some(&(bytes, secs)) = self.rungs.last() else {
            return Some(START);
        };
        let spent: f64 = self.rungs.iter().map(|r| r.1).sum();
        if bytes >= MAX || spent + 2.0 * secs > BUDGET_S {
            return None;
        }
        if secs >= MIN_RUNG_S && self.agree() {
            return None;
        }
        Some((bytes * 2).min(MAX))
    }

    /// Whether the last two rungs ran at apparent rates within [`AGREE`] of each other.
    fn agree(&self) -> bool {
        let [.., (b1, t1), (b2, t2)] = self.rungs[..] else {
            return false;
        };
        let (r1, r2) = (b1 as f64 / t1.max(1e-12), b2 as f64 / t2.max(1e-12));
        (r1 - r2).abs() <= AGREE * r1.max(r2)
    }

    /// Record that the rung of `bytes` took `secs` seconds.
    pub fn record(&mut self, bytes: usize, secs: f64) {
        self.rungs.push((bytes, secs));
    }

    /// The link's rate in bytes per second: when the last two rungs agree, their
    /// difference, kept within a factor two of the last rung's apparent rate (a timing
    /// hiccup on the shorter rung could otherwise make it any number); otherwise (the
    /// budget stopped the climb while a rung still ran inside a burst, or there is one
    /// rung, or the difference is not positive) the last rung's apparent rate. `None`
    /// before any rung.
    pub fn rate(&self) -> Option<f64> {
        let &(b2, t2) = self.rungs.last()?;
        let apparent = b2 as f64 / t2.max(1e-12);
        if !self.agree() {
            return Some(apparent);
        }
        let (b1, t1) = self.rungs[self.rungs.len() - 2];
        if b2 <= b1 || t2 <= t1 {
            return Some(apparent);
        }
        let diff = (b2 - b1) as f64 / (t2 - t1);
        Some(diff.clamp(apparent / 2.0, apparent * 2.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link of `rate` bytes/s behind a token bucket of `burst` bytes (full at the start,
    /// refilled at `rate` during the `gap` between rungs), with fixed cost `fixed` per rung.
    struct Shaped {
        rate: f64,
        burst: f64,
        fixed: f64,
        gap: f64,
        tokens: f64,
    }

    impl Shaped {
        fn new(rate: f64, burst: f64, fixed: f64) -> Shaped {
            Shaped {
                rate,
                burst,
                fixed,
                gap: 100e-6,
                tokens: burst,
            }
        }

        /// Seconds to move `bytes` (bytes within the bucket go at 100 times the rate).
        fn transfer(&mut self, bytes: usize) -> f64 {
            let b = bytes as f64;
            let fast = b.min(self.tokens);
            self.tokens -= fast;
            let t = self.fixed + fast / (100.0 * self.rate) + (b - fast) / self.rate;
            self.tokens = (self.tokens + self.gap * self.rate).min(self.burst);
            t
        }
    }

    fn climb(link: &mut Shaped) -> (Ladder, f64) {
        let mut l = Ladder::new();
        let mut total = 0.0;
        while let Some(b) = l.next() {
            assert!((START..=MAX).contains(&b), "rung of {b} bytes");
            let t = link.transfer(b);
            total += t;
            l.record(b, t);
        }
        (l, total)
    }

    #[test]
    fn measures_shaped_and_unshaped_links_within_five_percent() {
        for (rate, burst, fixed) in [
            (125e6, 125e3, 50e-6), // the bed: 1 Gbit/s, tbf burst of 1 ms
            (125e6, 0.0, 50e-6),
            (125e6, 250e3, 50e-6), // a burst of 2 ms
            (1.25e9, 1.25e6, 20e-6),
            (12.5e9, 0.0, 5e-6),
            (3e9, 0.0, 2e-6), // shared memory
            (12.5e6, 64e3, 200e-6),
        ] {
            let mut link = Shaped::new(rate, burst, fixed);
            let (l, total) = climb(&mut link);
            let got = l.rate().unwrap();
            assert!(
                (got - rate).abs() <= 0.05 * rate,
                "rate {rate} burst {burst}: measured {got} with {l:?}"
            );
            assert!(total <= BUDGET_S * (1.0 + 1e-9), "{total} s");
        }
        // The bed's link is measured in about 8 ms, not the 64 ms of an 8 MiB transfer.
        let (l, total) = climb(&mut Shaped::new(125e6, 125e3, 50e-6));
        assert!(total < 12e-3, "{total} s, {l:?}");
    }

    #[test]
    fn slow_links_stop_at_the_budget_and_odd_timings_stay_bounded() {
        // 10 MB/s: the first rung takes 7.5 ms and the budget stops the climb there; its
        // apparent rate includes the fixed cost (1 ms of 7.5).
        let (l, total) = climb(&mut Shaped::new(10e6, 0.0, 1e-3));
        assert!(total <= BUDGET_S, "{total}");
        assert!((l.rate().unwrap() - 10e6).abs() < 2e6, "{l:?}");
        // 1 MB/s: the first rung alone exceeds the budget; it is all there is.
        let (l, _) = climb(&mut Shaped::new(1e6, 0.0, 1e-3));
        assert_eq!(l.rungs.len(), 1);
        assert_eq!(Ladder::new().rate(), None);
        let mut one = Ladder::new();
        one.record(START, 1e-3);
        assert_eq!(one.rate(), Some(START as f64 / 1e-3));
        // A second rung faster than the first: its apparent rate, not a negative one.
        one.record(2 * START, 0.5e-3);
        assert_eq!(one.rate(), Some(2.0 * START as f64 / 0.5e-3));
        // A hiccup on the shorter rung: within a factor two of the last rung's rate.
        let mut h = Ladder::new();
        h.record(START, 2.0e-3);
        h.record(2 * START, 2.01e-3);
        let r = h.rate().unwrap();
        assert!(r <= 2.0 * (2 * START) as f64 / 2.01e-3 * (1.0 + 1e-12));
    }
}
