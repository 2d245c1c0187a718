//! Pieces shared by the tests that start rank processes and read their output
//! (`peer_loss.rs`, `spray_netns.rs`).

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in nanoseconds since 1970, comparable between processes.
pub fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// A pseudo-random number generator (xorshift64*), seeded from the clock.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        Rng((unix_ns() as u64) ^ (u64::from(std::process::id()) << 32) | 1)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) % n
    }
}

/// One line a rank printed: (rank, text).
pub type Line = (usize, String);

/// Send every line `out` yields, tagged with `rank`, to `tx` (from a thread of its own).
pub fn forward(rank: usize, out: impl Read + Send + 'static, tx: mpsc::Sender<Line>) {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send((rank, line)).is_err() {
                return;
            }
        }
    });
}

/// Median and max of `v` (sorted in place); NaN for an empty `v`.
pub fn summary(v: &mut [f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}
