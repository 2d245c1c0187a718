//! Recursive-doubling all-reduce, for small messages: `⌈log2 p⌉` exchanges of the whole
//! vector (plus one before and one after when `p` is not a power of two), against the ring's
//! `2(p-1)` steps, so two ranks need one round trip instead of two.
//!
//! With `q` the largest power of two not above `n` and `r = n - q`, the first `2r` ranks fold
//! in pairs: each even one sends its vector to the odd one above it and waits. The `q` ranks
//! left (renumbered `0..q`) then exchange with the partner whose new number differs in bit
//! `k` at round `k`, and combine. Finally the odd ranks of the folded pairs send the result
//! down. Each round's received vector lands in scratch and is combined into `Output` in a
//! local step after the round, once the round's send of `Output` has completed, so no
//! buffer is read and written at once. Both partners of a round combine the same two values in either
//! order, which (every [`ReduceOp`](crate::types::ReduceOp) being commutative) gives
//! bit-identical results on every rank.
//!
//! Source: R. Thakur, R. Rabenseifner and W. Gropp, "Optimization of collective
//! communication operations in MPICH", IJHPCA 19(1), 2005, section 4.4 (MPICH's
//! `MPIR_Allreduce_intra_recursive_doubling`).

use super::fold::Fold;
use super::timeline::Timeline;
use crate::schedule::{Action, BufId, Schedule, Slice};
use crate::types::Rank;

/// Rank `rank`'s recursive-doubling all-reduce of `count` elements over `n >= 2` ranks.
pub(crate) fn plan(rank: Rank, n: usize, count: usize, avg: bool) -> Schedule {
    let fold = Fold::of(n);
    let rounds = fold.q.trailing_zeros() as usize;
    let whole = |buf| Slice {
        buf,
        offset: 0,
        len: count,
    };
    let (input, out, scratch) = (
        whole(BufId::Input),
        whole(BufId::Output),
        whole(BufId::Scratch),
    );
    let mut t = Timeline::default();
    // Time 0: fold (or, for ranks that do not fold, bring the input into Output).
    let new_rank = fold.place(&mut t, rank, count);
    if !fold.folds(rank) {
        // In place this copies a slice onto itself, which moves nothing.
        t.at(
            0,
            Action::Copy {
                src: input,
                dst: out,
            },
        );
    }
    let old = |nr: usize| fold.old(nr);
    // Round k exchanges at time 1 + 2k and combines at time 2 + 2k (a step of its own, so
    // Output is never written while a send reads it); then the division, then the unfold.
    let (scale_at, unfold_at) = (1 + 2 * rounds, 2 + 2 * rounds);
    match new_rank {
        Some(nr) => {
            for k in 0..rounds {
                let partner = old(nr ^ (1 << k));
                t.at(
                    1 + 2 * k,
                    Action::Send {
                        peer: partner,
                        src: out,
                    },
                );
                t.at(
                    1 + 2 * k,
                    Action::Recv {
                        peer: partner,
                        dst: scratch,
                    },
                );
                t.at(
                    2 + 2 * k,
                    Action::Reduce {
                        src: scratch,
                        dst: out,
                    },
                );
            }
            if avg {
                t.at(scale_at, Action::Scale { dst: out });
            }
            if fold.folds(rank) {
                t.at(
                    unfold_at,
                    Action::Send {
                        peer: rank - 1,
                        src: out,
                    },
                );
            }
        }
        None => t.at(
            unfold_at,
            Action::Recv {
                peer: rank + 1,
                dst: out,
            },
        ),
    }
    t.into_schedule(count)
}
