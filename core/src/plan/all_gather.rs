//! Ring all-gather: `Input[count]` of rank `r` lands in `Output[r*count..]` of every rank.
//!
//! Step `s` (of `n-1`): rank `r` sends block `r-s` to `r+1` and receives block `r-1-s`
//! from `r-1`. Step 0 sends straight from `Input` while the local copy of `Input` to
//! `Output[r*count..]` runs (the copy is left out in place, where the two are the same
//! memory). This is the second phase of the ring all-reduce (Patarasuk and Yuan 2009).

use super::sub;
use super::timeline::Timeline;
use crate::schedule::{Action, BufId, Schedule, Slice};
use crate::types::Rank;

/// Rank `rank`'s ring all-gather of blocks of `count` elements over `n >= 2` ranks.
pub(crate) fn plan(rank: Rank, n: usize, count: usize, inplace: bool) -> Schedule {
    let (next, prev) = ((rank + 1) % n, sub(rank, 1, n));
    let out = |b: usize| Slice::new(BufId::Output, b * count, count);
    let mut t = Timeline::default();
    if !inplace {
        t.at(
            0,
            Action::Copy {
                src: Slice::new(BufId::Input, 0, count),
                dst: out(rank),
            },
        );
    }
    for s in 0..n - 1 {
        let src = if s == 0 {
            Slice::new(BufId::Input, 0, count)
        } else {
            out(sub(rank, s, n))
        };
        t.at(s, Action::Send { peer: next, src });
        t.at(
            s,
            Action::Recv {
                peer: prev,
                dst: out(sub(rank, s + 1, n)),
            },
        );
    }
    t.into_schedule(0)
}
