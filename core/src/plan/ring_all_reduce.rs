//! Ring all-reduce: a ring reduce-scatter followed by a ring all-gather.
//!
//! The data is cut into `n` blocks (as equal as possible). In step `s` of the
//! reduce-scatter phase, rank `r` sends its partial sum of block `r-1-s` to `r+1` and
//! receives block `r-2-s` from `r-1`, combining it with its own input; after `n-1` steps rank
//! `r` holds block `r` fully reduced. The all-gather phase then circulates the reduced
//! blocks for another `n-1` steps. Every rank sends and receives `2(n-1)/n` of the data,
//! which is bandwidth-optimal.
//!
//! Source: P. Patarasuk and X. Yuan, "Bandwidth optimal all-reduce algorithms for clusters
//! of workstations", J. Parallel Distrib. Comput. 69(2), 2009; Gloo's `allreduce_ring.h`.
//!
//! Buffers: partial sums are accumulated in `Output` (`dst = Input ⊕ received`), so
//! `Input` is only read and no scratch is needed; in place the same slices alias and the
//! schedule is unchanged. Each block is reduced at exactly one rank (and divided there for
//! `Avg`, in a local step between the phases) and then copied everywhere, so the result is
//! bit-identical on every rank.
//!
//! Steps: `2(n-1)` (plus one local step for `Avg`). Blocks that are empty because
//! `count < n` produce no messages.

use super::timeline::Timeline;
use super::{block, sl, sub};
use crate::schedule::{Action, BufId, Schedule};
use crate::types::Rank;

/// Rank `rank`'s ring all-reduce of `count` elements over `n >= 2` ranks.
pub(crate) fn plan(rank: Rank, n: usize, count: usize, avg: bool) -> Schedule {
    let (next, prev) = ((rank + 1) % n, sub(rank, 1, n));
    let blk = |i: usize| block(count, n, i);
    let mut t = Timeline::default();
    // Reduce-scatter: step s sends block r-1-s, receives block r-2-s.
    for s in 0..n - 1 {
        let send = blk(sub(rank, 1 + s, n));
        let recv = blk(sub(rank, 2 + s, n));
        if send.1 > 0 {
            // At s = 0 the block is still our own input; later it is the partial we made.
            let buf = if s == 0 { BufId::Input } else { BufId::Output };
            t.at(
                s,
                Action::Send {
                    peer: next,
                    src: sl(buf, send),
                },
            );
        }
        if recv.1 > 0 {
            t.at(
                s,
                Action::RecvReduce {
                    peer: prev,
                    local: sl(BufId::Input, recv),
                    dst: sl(BufId::Output, recv),
                },
            );
        }
    }
    let mut base = n - 1;
    let own = blk(rank);
    if avg {
        if own.1 > 0 {
            t.at(
                base,
                Action::Scale {
                    dst: sl(BufId::Output, own),
                },
            );
        }
        base += 1;
    }
    // All-gather: step s sends block r-s, receives block r-1-s.
    for s in 0..n - 1 {
        let send = blk(sub(rank, s, n));
        let recv = blk(sub(rank, s + 1, n));
        if send.1 > 0 {
            t.at(
                base + s,
                Action::Send {
                    peer: next,
                    src: sl(BufId::Output, send),
                },
            );
        }
        if recv.1 > 0 {
            t.at(
                base + s,
                Action::Recv {
                    peer: prev,
                    dst: sl(BufId::Output, recv),
                },
            );
        }
    }
    t.into_schedule(0)
}
