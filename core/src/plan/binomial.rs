//! Binomial-tree broadcast and reduce, for small messages.
//!
//! With ranks renumbered relative to the root (`v = rank - root mod n`), broadcast round `j`
//! (of `ceil(log2 n)`) has every `v < 2^j` send the whole message to `v + 2^j`. Reduce runs
//! the rounds backwards: in round `j`, every `v` whose lowest set bit is `2^j` sends its
//! partial result to `v - 2^j`, which combines it. Both take `ceil(log2 n)` steps of one whole
//! message, which beats the chain when latency dominates (MPICH's binomial broadcast and
//! reduce; Thakur, Rabenseifner and Gropp, IJHPCA 19(1), 2005).
//!
//! Buffers: the broadcast root sends from `Input` and copies it to `Output` (no copy in
//! place); others receive into `Output` and forward from there. In the reduce the root
//! accumulates in `Output`, inner non-root ranks in `Scratch` (`count` elements), so no
//! non-root `Input` or `Output` is written.

use super::timeline::Timeline;
use super::{add, sub};
use crate::schedule::{Action, BufId, Schedule, Slice};
use crate::types::Rank;

/// Number of rounds for `n` ranks: `ceil(log2 n)`.
pub(crate) fn rounds(n: usize) -> usize {
    n.next_power_of_two().trailing_zeros() as usize
}

/// Rank `rank`'s binomial broadcast of `count` elements from `root` over `n >= 2` ranks.
pub(crate) fn broadcast(rank: Rank, n: usize, root: Rank, count: usize, inplace: bool) -> Schedule {
    let v = sub(rank, root, n);
    let all = |buf| Slice::new(buf, 0, count);
    let mut t = Timeline::default();
    if v == 0 && !inplace {
        t.at(
            0,
            Action::Copy {
                src: all(BufId::Input),
                dst: all(BufId::Output),
            },
        );
    }
    // The round in which v receives: that of its highest set bit.
    let first_send = if v == 0 {
        0
    } else {
        let j = v.ilog2() as usize;
        t.at(
            j,
            Action::Recv {
                peer: sub(rank, 1 << j, n),
                dst: all(BufId::Output),
            },
        );
        j + 1
    };
    let src = if v == 0 { BufId::Input } else { BufId::Output };
    for j in first_send..rounds(n) {
        if v + (1 << j) < n {
            t.at(
                j,
                Action::Send {
                    peer: add(rank, 1 << j, n),
                    src: all(src),
                },
            );
        }
    }
    t.into_schedule(0)
}

/// Rank `rank`'s binomial reduce of `count` elements to `root` over `n >= 2` ranks; `avg`
/// divides the result at the root.
pub(crate) fn reduce(rank: Rank, n: usize, root: Rank, count: usize, avg: bool) -> Schedule {
    let v = sub(rank, root, n);
    let all = |buf| Slice::new(buf, 0, count);
    let acc = if v == 0 {
        BufId::Output
    } else {
        BufId::Scratch
    };
    // v receives in rounds below its lowest set bit (all rounds for the root), then sends.
    let last_round = if v == 0 {
        rounds(n)
    } else {
        v.trailing_zeros() as usize
    };
    let mut t = Timeline::default();
    let mut have = BufId::Input;
    for j in 0..last_round {
        if v + (1 << j) < n {
            t.at(
                j,
                Action::RecvReduce {
                    peer: add(rank, 1 << j, n),
                    local: all(have),
                    dst: all(acc),
                },
            );
            have = acc;
        }
    }
    if v == 0 {
        if avg {
            t.at(last_round, Action::Scale { dst: all(acc) });
        }
    } else {
        t.at(
            last_round,
            Action::Send {
                peer: sub(rank, 1 << last_round, n),
                src: all(have),
            },
        );
    }
    let scratch = if v != 0 && have == BufId::Scratch {
        count
    } else {
        0
    };
    t.into_schedule(scratch)
}
