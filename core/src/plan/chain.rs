//! Pipelined chain broadcast and reduce, for large messages.
//!
//! The ranks form a chain starting at the root, `root, root+1, ..., root-1`, and the data is
//! cut into segments of [`super::PlanConfig::segment_bytes`]. Broadcast: the rank at position
//! `p` receives segment `k` from position `p-1` at time `p-1+k` and forwards it at time
//! `p+k`, so it forwards one segment while receiving the next. Reduce runs the chain
//! backwards: the last rank sends its input, every other rank combines the segment it receives
//! with its own input and forwards the partial sum, and the root combines the last one into
//! `Output`. With `K` segments both take `n-2+K` steps, close to the bandwidth optimum of one
//! message's worth of time for large `K` (the pipelined "linear" broadcast of MPICH and Open
//! MPI's `coll_tuned` component; Thakur, Rabenseifner and Gropp, "Optimization of collective
//! communication operations in MPICH", IJHPCA 19(1), 2005).
//!
//! Buffers: the broadcast root sends from `Input` and copies it to `Output` (no copy in
//! place); other ranks receive into `Output` and forward from there. In the reduce, non-root
//! ranks keep partial sums in two scratch segments used alternately (the one forwarded and
//! the one being received), so their `Input` and `Output` are never written.

use super::timeline::Timeline;
use super::{add, segment, sl, sub};
use crate::schedule::{Action, BufId, Schedule, Slice};
use crate::types::Rank;

/// Rank `rank`'s chain broadcast of `count` elements from `root` over `n >= 2` ranks.
pub(crate) fn broadcast(
    rank: Rank,
    n: usize,
    root: Rank,
    count: usize,
    seg: usize,
    inplace: bool,
) -> Schedule {
    let pos = sub(rank, root, n);
    let (prev, next) = (sub(rank, 1, n), add(rank, 1, n));
    let mut t = Timeline::default();
    if pos == 0 && !inplace {
        t.at(
            0,
            Action::Copy {
                src: Slice::new(BufId::Input, 0, count),
                dst: Slice::new(BufId::Output, 0, count),
            },
        );
    }
    for k in 0..count.div_ceil(seg) {
        let s = segment(0, count, seg, k);
        if pos == 0 {
            t.at(
                k,
                Action::Send {
                    peer: next,
                    src: sl(BufId::Input, s),
                },
            );
            continue;
        }
        t.at(
            pos - 1 + k,
            Action::Recv {
                peer: prev,
                dst: sl(BufId::Output, s),
            },
        );
        if pos + 1 < n {
            t.at(
                pos + k,
                Action::Send {
                    peer: next,
                    src: sl(BufId::Output, s),
                },
            );
        }
    }
    t.into_schedule(0)
}

/// Rank `rank`'s chain reduce of `count` elements to `root` over `n >= 2` ranks; `avg`
/// divides the result at the root.
pub(crate) fn reduce(
    rank: Rank,
    n: usize,
    root: Rank,
    count: usize,
    seg: usize,
    avg: bool,
) -> Schedule {
    let pos = sub(rank, root, n);
    let (toward_root, from) = (sub(rank, 1, n), add(rank, 1, n));
    let last = pos + 1 == n;
    let mut t = Timeline::default();
    for k in 0..count.div_ceil(seg) {
        let s = segment(0, count, seg, k);
        let input = sl(BufId::Input, s);
        if last {
            t.at(
                k,
                Action::Send {
                    peer: toward_root,
                    src: input,
                },
            );
            continue;
        }
        // Partial sum of this segment: Output at the root, a scratch slot elsewhere.
        let acc = if pos == 0 {
            sl(BufId::Output, s)
        } else {
            Slice::new(BufId::Scratch, (k % 2) * seg, s.1)
        };
        let arrive = n - 2 - pos + k;
        t.at(
            arrive,
            Action::RecvReduce {
                peer: from,
                local: input,
                dst: acc,
            },
        );
        if pos > 0 {
            t.at(
                arrive + 1,
                Action::Send {
                    peer: toward_root,
                    src: acc,
                },
            );
        } else if avg {
            t.at(arrive + 1, Action::Scale { dst: acc });
        }
    }
    let scratch = if pos == 0 || last {
        0
    } else {
        count.min(2 * seg)
    };
    t.into_schedule(scratch)
}
