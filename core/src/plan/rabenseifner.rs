//! Rabenseifner's all-reduce: a reduce-scatter by recursive halving, then an all-gather by
//! recursive doubling. Each rank sends and receives `2(q-1)/q` of the vector, as in the
//! ring, but in `2·log2 q` steps instead of `2(p-1)`: at four ranks four steps against six,
//! at eight six against fourteen. (`q` is the largest power of two not above `p`.)
//!
//! Ranks beyond `q` fold first, as in recursive doubling ([`super::recursive_doubling`]):
//! with `r = p - q`, the first `2r` ranks pair up, each even one sending its whole vector to
//! the odd one above it, which combines it on arrival; the `q` ranks left are renumbered
//! `0..q`. The vector is cut into `q` blocks. At reduce-scatter round `j` (mask
//! `m = q / 2^(j+1)`), a rank holds a range of `2m` blocks, sends the half its partner
//! (new number `nr ^ m`) keeps and combines the other half with what the partner sends; after
//! `log2 q` rounds new rank `nr` holds block `nr`, reduced. The all-gather rounds run the
//! masks upwards, each doubling the range held, and the odd ranks of the folded pairs finally
//! send the result down.
//!
//! Buffers: combining happens on arrival (`dst = local ⊕ received`), from `Input` in the
//! first round of a rank that did not fold and from `Output` afterwards, so no copy of the
//! input and no scratch are needed; in place the slices alias and nothing changes. Each block
//! is reduced at exactly one rank (and divided there for `Avg`) and then copied everywhere,
//! so the result is bit-identical on every rank. Empty blocks (`count < q`) send nothing.
//!
//! Source: R. Rabenseifner, "Optimization of collective reduction operations", ICCS 2004;
//! R. Thakur, R. Rabenseifner and W. Gropp, "Optimization of collective communication
//! operations in MPICH", IJHPCA 19(1), 2005, section 4.4 (MPICH's
//! `MPIR_Allreduce_intra_reduce_scatter_allgather`).

use super::fold::Fold;
use super::timeline::Timeline;
use super::{block, sl};
use crate::schedule::{Action, BufId, Schedule};
use crate::types::Rank;

/// Rank `rank`'s Rabenseifner all-reduce of `count` elements over `n >= 2` ranks.
pub(crate) fn plan(rank: Rank, n: usize, count: usize, avg: bool) -> Schedule {
    let fold = Fold::of(n);
    let q = fold.q;
    let rounds = q.trailing_zeros() as usize;
    let whole = (0, count);
    // Blocks [lo, hi) of the q blocks, as one span of elements.
    let span = |lo: usize, hi: usize| {
        let start = block(count, q, lo).0;
        let end = if hi == q {
            count
        } else {
            block(count, q, hi).0
        };
        (start, end - start)
    };
    let mut t = Timeline::default();
    // Time 0: the fold.
    let new_rank = fold.place(&mut t, rank, count);
    let old = |nr: usize| fold.old(nr);
    // Times: reduce-scatter round j at 1 + j, the division at 1 + rounds, all-gather round j
    // at 2 + rounds + j, the unfold at 2 + 2·rounds.
    let unfold_at = 2 + 2 * rounds;
    let Some(nr) = new_rank else {
        t.at(
            unfold_at,
            Action::Recv {
                peer: rank + 1,
                dst: sl(BufId::Output, whole),
            },
        );
        return t.into_schedule(0);
    };
    // Where this rank's partial sums are: its input until it first combines, unless it folded.
    let mut cur = if fold.folds(rank) {
        BufId::Output
    } else {
        BufId::Input
    };
    let (mut lo, mut hi) = (0, q);
    for j in 0..rounds {
        let m = q >> (j + 1);
        let mid = lo + m;
        let ((klo, khi), (slo, shi)) = if nr & m == 0 {
            ((lo, mid), (mid, hi))
        } else {
            ((mid, hi), (lo, mid))
        };
        let peer = old(nr ^ m);
        let (send, keep) = (span(slo, shi), span(klo, khi));
        if send.1 > 0 {
            t.at(
                1 + j,
                Action::Send {
                    peer,
                    src: sl(cur, send),
                },
            );
        }
        if keep.1 > 0 {
            t.at(
                1 + j,
                Action::RecvReduce {
                    peer,
                    local: sl(cur, keep),
                    dst: sl(BufId::Output, keep),
                },
            );
        }
        cur = BufId::Output;
        (lo, hi) = (klo, khi);
    }
    let own = span(nr, nr + 1);
    if avg && own.1 > 0 {
        t.at(
            1 + rounds,
            Action::Scale {
                dst: sl(BufId::Output, own),
            },
        );
    }
    for j in 0..rounds {
        let m = 1usize << j;
        let mine = nr & !(m - 1);
        let theirs = (nr ^ m) & !(m - 1);
        let peer = old(nr ^ m);
        let (send, recv) = (span(mine, mine + m), span(theirs, theirs + m));
        if send.1 > 0 {
            t.at(
                2 + rounds + j,
                Action::Send {
                    peer,
                    src: sl(BufId::Output, send),
                },
            );
        }
        if recv.1 > 0 {
            t.at(
                2 + rounds + j,
                Action::Recv {
                    peer,
                    dst: sl(BufId::Output, recv),
                },
            );
        }
    }
    if fold.folds(rank) {
        t.at(
            unfold_at,
            Action::Send {
                peer: rank - 1,
                src: sl(BufId::Output, whole),
            },
        );
    }
    t.into_schedule(0)
}
