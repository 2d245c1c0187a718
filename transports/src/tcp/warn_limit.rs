//! Rate limiting of repeated warnings about one thing (a path that keeps being suspected),
//! so that a flapping path cannot flood the log: the first warning of a burst is written at
//! WARN, the repeats within [`QUIET`] at INFO, and the next WARN says how many there were.

use std::time::{Duration, Instant};

/// Repeats within this long of a WARN are demoted to INFO.
pub(crate) const QUIET: Duration = Duration::from_secs(10);

/// The rate limit of one kind of warning about one thing.
#[derive(Clone, Debug, Default)]
pub(crate) struct WarnLimit {
    last: Option<Instant>,
    demoted: u32,
}

/// How to write one occurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// At WARN; this many repeats were demoted since the previous WARN.
    Warn { demoted: u32 },
    /// At INFO: a WARN about the same thing went out less than [`QUIET`] ago.
    Demote,
}

impl WarnLimit {
    /// How the occurrence at `now` is written.
    fn check(&mut self, now: Instant) -> Verdict {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < QUIET => {
                self.demoted += 1;
                Verdict::Demote
            }
            _ => {
                self.last = Some(now);
                Verdict::Warn {
                    demoted: std::mem::take(&mut self.demoted),
                }
            }
        }
    }

    /// Log `what` under `target`: at WARN, with the count of repeats demoted since the last
    /// WARN, or at INFO when it is a repeat.
    pub(crate) fn log(&mut self, now: Instant, target: &str, what: &str) {
        match self.check(now) {
            Verdict::Warn { demoted } => {
                log::warn!(target: target, "{what}{}", repeats_note(demoted))
            }
            Verdict::Demote => log::info!(target: target, "{what}"),
        }
    }
}

/// What a WARN appends after `demoted` repeats (empty for none).
fn repeats_note(demoted: u32) -> String {
    match demoted {
        0 => String::new(),
        1 => " (1 more since the last warning, logged at INFO)".to_string(),
        n => format!(" ({n} more since the last warning, logged at INFO)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_quiet_time_are_demoted_and_counted() {
        let t0 = Instant::now();
        let mut w = WarnLimit::default();
        assert_eq!(w.check(t0), Verdict::Warn { demoted: 0 });
        assert_eq!(w.check(t0 + Duration::from_secs(1)), Verdict::Demote);
        assert_eq!(w.check(t0 + Duration::from_secs(9)), Verdict::Demote);
        assert_eq!(w.check(t0 + QUIET), Verdict::Warn { demoted: 2 });
        assert_eq!(w.check(t0 + QUIET * 3), Verdict::Warn { demoted: 0 });
        assert_eq!(repeats_note(0), "");
        assert!(repeats_note(2).contains("2 more"));
    }
}
