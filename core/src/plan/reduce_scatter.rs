//! Ring reduce-scatter: `Input[count*n]` on every rank, reduced block `r` to rank `r`'s
//! `Output[count]`.
//!
//! Step `s` (of `n-1`): rank `r` sends its partial sum of block `r-1-s` to `r+1` and
//! receives block `r-2-s` from `r-1`, combining it with its own input block. After the last
//! step rank `r` holds block `r`. This is the first phase of the ring all-reduce (Patarasuk
//! and Yuan 2009; NCCL's ring reduce-scatter).
//!
//! Buffers: in place (`Output` is `Input[r*count..]`) partial sums overwrite the input
//! blocks they belong to, as NCCL does. Out of place `Input` is never written: each step's
//! partial sum goes alternately to `Output` and to a scratch block (`count` elements, when
//! `n >= 3`), arranged so that the last step lands in `Output`.
//!
//! Steps: `n-1`, plus one local step dividing the result for `Avg`.

use super::sub;
use super::timeline::Timeline;
use crate::schedule::{Action, BufId, Schedule, Slice};
use crate::types::Rank;

/// Rank `rank`'s ring reduce-scatter of blocks of `count` elements over `n >= 2` ranks;
/// `avg` divides the result in a final local step.
pub(crate) fn plan(rank: Rank, n: usize, count: usize, inplace: bool, avg: bool) -> Schedule {
    let (next, prev) = ((rank + 1) % n, sub(rank, 1, n));
    let input = |b: usize| Slice::new(BufId::Input, b * count, count);
    // Where the partial sum received at step s lives.
    let slot = |s: usize, b: usize| {
        if s == n - 2 {
            Slice::new(BufId::Output, 0, count)
        } else if inplace {
            input(b)
        } else if (n - 2 - s).is_multiple_of(2) {
            Slice::new(BufId::Output, 0, count)
        } else {
            Slice::new(BufId::Scratch, 0, count)
        }
    };
    let mut t = Timeline::default();
    for s in 0..n - 1 {
        let send_b = sub(rank, 1 + s, n);
        let recv_b = sub(rank, 2 + s, n);
        let src = if s == 0 {
            input(send_b)
        } else {
            slot(s - 1, send_b)
        };
        t.at(s, Action::Send { peer: next, src });
        t.at(
            s,
            Action::RecvReduce {
                peer: prev,
                local: input(recv_b),
                dst: slot(s, recv_b),
            },
        );
    }
    if avg {
        t.at(
            n - 1,
            Action::Scale {
                dst: Slice::new(BufId::Output, 0, count),
            },
        );
    }
    let scratch = if inplace || n < 3 { 0 } else { count };
    t.into_schedule(scratch)
}
