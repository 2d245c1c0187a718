//! The fold that brings a world of `n` ranks down to a power of two `q` for the
//! recursive-doubling and Rabenseifner all-reduces, and the renumbering of the ranks left.
//!
//! With `r = n - q`, the first `2r` ranks pair up: each even one sends its whole input to the
//! odd one above it, which combines it into `Output` on arrival, at time 0. The even ranks
//! then wait for the result (the unfold, placed by the caller); the others take new numbers
//! `0..q`. Source: Thakur, Rabenseifner and Gropp 2005, section 4.4.

use super::timeline::Timeline;
use crate::schedule::{Action, BufId, Slice};
use crate::types::Rank;

/// The fold of a world of `n` ranks (`q` the largest power of two not above it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fold {
    /// The largest power of two not above the world size.
    pub q: usize,
    /// Ranks beyond `q`: the first `2r` ranks fold in pairs.
    pub r: usize,
}

impl Fold {
    /// The fold of a world of `n >= 1` ranks.
    pub(crate) fn of(n: usize) -> Fold {
        let q = 1usize << (usize::BITS - 1 - n.leading_zeros());
        Fold { q, r: n - q }
    }

    /// Whether `rank` is one of a folded pair.
    pub(crate) fn folds(&self, rank: Rank) -> bool {
        rank < 2 * self.r
    }

    /// Place `rank`'s part of the fold at time 0 on `t`, for vectors of `count` elements.
    /// Returns its new number, or None for an even rank of a folded pair (which sat out).
    pub(crate) fn place(&self, t: &mut Timeline, rank: Rank, count: usize) -> Option<usize> {
        let whole = |buf| Slice {
            buf,
            offset: 0,
            len: count,
        };
        if !self.folds(rank) {
            return Some(rank - self.r);
        }
        if rank.is_multiple_of(2) {
            t.at(
                0,
                Action::Send {
                    peer: rank + 1,
                    src: whole(BufId::Input),
                },
            );
            None
        } else {
            t.at(
                0,
                Action::RecvReduce {
                    peer: rank - 1,
                    local: whole(BufId::Input),
                    dst: whole(BufId::Output),
                },
            );
            Some(rank / 2)
        }
    }

    /// The rank of new number `nr`.
    pub(crate) fn old(&self, nr: usize) -> Rank {
        if nr < self.r {
            nr * 2 + 1
        } else {
            nr + self.r
        }
    }
}
