//! Ring reduce-scatter and all-gather over an ordered group of ranks, with arbitrary parts.
//!
//! The flat ring plans ([`super::ring_all_reduce`], [`super::reduce_scatter`],
//! [`super::all_gather`]) run over all ranks in rank order with equal blocks. The
//! hierarchical algorithms need the same rings over a subset of the ranks in a given order,
//! where the part owned by each position is any list of disjoint slices, possibly empty (a
//! host with more ranks than the smallest host has positions that own nothing). The steps
//! are those of Patarasuk and Yuan, "Bandwidth optimal all-reduce algorithms for clusters of
//! workstations", JPDC 69(2), 2009: at step `s` position `p` sends part `p-1-s` (reduce-scatter)
//! or `p-s` (all-gather) to `p+1` and receives part `p-2-s` (resp. `p-1-s`) from `p-1`.
//! Each slice of a part is one message; empty slices send nothing.
//!
//! Both are laid out on a clock (see `timeline.rs`): [`reduce_scatter`] and [`all_gather`]
//! on one of their own, appended as one phase (see `group.rs`); [`reduce_scatter_at`] and
//! [`all_gather_at`] from a given time of a caller's clock, so that the pipelined
//! hierarchical all-reduce can run rings of several segments at once (step `s` of a ring at
//! time `base + s` on every member).

use super::timeline::Timeline;
use super::{sl, sub, Slice2};
use crate::schedule::{Action, BufId, Schedule};
use crate::types::Rank;

/// The part owned by each position of a ring: `(offset, len)` slices, disjoint across
/// positions.
pub(crate) type Parts<'a> = &'a dyn Fn(usize) -> Vec<Slice2>;

/// Append to `out` the ring reduce-scatter by `members` (this rank at position `pos`) after
/// which position `p` holds in `acc` the reduction over the group of part `p`. Contributions
/// are read from `src` at the parts' offsets; partial sums go to `acc` (which may be `src`:
/// each slice is reduced into at most once, after its contribution was last read). With a
/// single member, the own part is copied from `src` to `acc` (nothing when they are equal).
pub(crate) fn reduce_scatter(
    out: &mut Schedule,
    members: &[Rank],
    pos: usize,
    parts: Parts,
    src: BufId,
    acc: BufId,
) {
    let mut t = Timeline::default();
    reduce_scatter_at(&mut t, 0, members, pos, parts, src, acc);
    out.steps.extend(t.into_schedule(0).steps);
}

/// [`reduce_scatter`] placed on `t`: step `s` at time `base + s` (`members.len() - 1`
/// steps; the single member's copy at `base`).
pub(crate) fn reduce_scatter_at(
    t: &mut Timeline,
    base: usize,
    members: &[Rank],
    pos: usize,
    parts: Parts,
    src: BufId,
    acc: BufId,
) {
    let n = members.len();
    if n == 1 {
        if src != acc {
            for p in parts(pos).into_iter().filter(|p| p.1 > 0) {
                t.at(
                    base,
                    Action::Copy {
                        src: sl(src, p),
                        dst: sl(acc, p),
                    },
                );
            }
        }
        return;
    }
    let (next, prev) = (members[(pos + 1) % n], members[sub(pos, 1, n)]);
    for s in 0..n - 1 {
        let from = if s == 0 { src } else { acc };
        for p in parts(sub(pos, 1 + s, n)).into_iter().filter(|p| p.1 > 0) {
            t.at(
                base + s,
                Action::Send {
                    peer: next,
                    src: sl(from, p),
                },
            );
        }
        for p in parts(sub(pos, 2 + s, n)).into_iter().filter(|p| p.1 > 0) {
            t.at(
                base + s,
                Action::RecvReduce {
                    peer: prev,
                    local: sl(src, p),
                    dst: sl(acc, p),
                },
            );
        }
    }
}

/// Append to `out` the ring all-gather by `members` (this rank at position `pos`) after which
/// every position holds in `buf` every position's part (each part starts in `buf` at its
/// owner).
pub(crate) fn all_gather(
    out: &mut Schedule,
    members: &[Rank],
    pos: usize,
    parts: Parts,
    buf: BufId,
) {
    let mut t = Timeline::default();
    all_gather_at(&mut t, 0, members, pos, parts, buf);
    out.steps.extend(t.into_schedule(0).steps);
}

/// [`all_gather`] placed on `t`: step `s` at time `base + s` (`members.len() - 1` steps).
pub(crate) fn all_gather_at(
    t: &mut Timeline,
    base: usize,
    members: &[Rank],
    pos: usize,
    parts: Parts,
    buf: BufId,
) {
    let n = members.len();
    if n < 2 {
        return;
    }
    let (next, prev) = (members[(pos + 1) % n], members[sub(pos, 1, n)]);
    for s in 0..n - 1 {
        for p in parts(sub(pos, s, n)).into_iter().filter(|p| p.1 > 0) {
            t.at(
                base + s,
                Action::Send {
                    peer: next,
                    src: sl(buf, p),
                },
            );
        }
        for p in parts(sub(pos, 1 + s, n)).into_iter().filter(|p| p.1 > 0) {
            t.at(
                base + s,
                Action::Recv {
                    peer: prev,
                    dst: sl(buf, p),
                },
            );
        }
    }
}
