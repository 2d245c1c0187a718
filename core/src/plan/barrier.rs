//! Dissemination barrier.
//!
//! In round `k` (of `ceil(log2 n)`), rank `r` sends an empty message to `r + 2^k` and waits
//! for one from `r - 2^k`. After the last round every rank has heard, directly or through
//! others, from every other rank, so no rank leaves before all have arrived. Unlike a
//! tree-based barrier it needs no root and every round is a permutation (D. Hensgen,
//! R. Finkel and U. Manber, "Two algorithms for barrier synchronization", International
//! Journal of Parallel Programming 17(1), 1988).
//!
//! The messages are empty slices of `Scratch` (the schedule declares no scratch memory):
//! empty messages are the one place where planners emit zero-length transfers on purpose.

use super::binomial::rounds;
use super::{add, sub};
use crate::schedule::{Action, BufId, Schedule, Slice};
use crate::types::Rank;

/// Rank `rank`'s dissemination barrier over `n` ranks (empty for one rank).
pub(crate) fn plan(rank: Rank, n: usize) -> Schedule {
    let empty = Slice::new(BufId::Scratch, 0, 0);
    let mut s = Schedule::default();
    for k in 0..rounds(n) {
        let d = 1usize << k;
        s.push(vec![
            Action::Send {
                peer: add(rank, d, n),
                src: empty,
            },
            Action::Recv {
                peer: sub(rank, d, n),
                dst: empty,
            },
        ]);
    }
    s
}
