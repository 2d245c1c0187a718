//! Hierarchical reduce-scatter: within each host, across hosts among the ranks of equal
//! local index, then one hand-off within each host.
//!
//! `Input` holds `N` blocks of `count` elements; block `b` is reduced to rank `b`. With `m`
//! ranks on the smallest host, block `b` is *carried* by local index `c(b) = local(b) mod
//! m`. Phase 1: on every host, a ring reduce-scatter leaves the host's sum of every block
//! carried by `j` at the rank of local index `j` (`j < m`; larger local indices own nothing).
//! Phase 2: for each `j < m`, the ranks of local index `j` (one per host) run a ring
//! reduce-scatter in which host `k`'s part is the blocks of host `k` carried by `j`. Phase 3:
//! the carrier of block `b` (on `b`'s host) copies it to its `Output` when it is its own
//! block, and sends it to `b` otherwise. `Avg` divides the result at the end. Each block is
//! reduced at one rank, so the result is deterministic.
//!
//! Cost with `N` ranks, `H` hosts of up to `s` ranks: phase 1 takes `s-1` steps of `N/m`
//! blocks, phase 2 `H-1` steps of about `s/m` blocks per group (`s` per host link), phase 3
//! one step. The inter-host traffic per host is `(H-1)/H` of a host's share of the data
//! instead of the flat ring's `(N-1)/N` of it over every ring edge; the two-level
//! decomposition of Thakur, Rabenseifner and Gropp, IJHPCA 19(1), 2005, and Jia et al.,
//! arXiv:1807.11205, 2018.
//!
//! Buffers: out of place, partial sums live in `Scratch` laid out like `Input` (`N·count`
//! elements), so `Input` is never written; in place they overwrite the input blocks as the
//! flat ring does.

use super::group_ring::reduce_scatter;
use super::hosts::Hosts;
use super::Slice2;
use crate::schedule::{Action, BufId, Schedule, Slice};
use crate::types::Rank;

/// Rank `rank`'s hierarchical reduce-scatter of blocks of `count > 0` elements on `hosts`.
pub(crate) fn plan(rank: Rank, hosts: &Hosts, count: usize, inplace: bool, avg: bool) -> Schedule {
    let n = hosts.nranks();
    let (h, li) = (hosts.host_of(rank), hosts.local_index(rank));
    let members = hosts.members(h);
    let m = hosts.min_size();
    let carrier = |b: Rank| hosts.local_index(b) % m;
    let blk = |b: Rank| -> Slice2 { (b * count, count) };
    let acc = if inplace {
        BufId::Input
    } else {
        BufId::Scratch
    };
    let mut s = Schedule::default();
    let parts1 = |i: usize| -> Vec<Slice2> {
        if i < m {
            (0..n).filter(|&b| carrier(b) == i).map(blk).collect()
        } else {
            Vec::new()
        }
    };
    reduce_scatter(&mut s, members, li, &parts1, BufId::Input, acc);
    if li < m {
        let group: Vec<Rank> = (0..hosts.nhosts()).map(|k| hosts.members(k)[li]).collect();
        let parts2 = |k: usize| -> Vec<Slice2> {
            hosts
                .members(k)
                .iter()
                .filter(|&&b| carrier(b) == li)
                .map(|&b| blk(b))
                .collect()
        };
        reduce_scatter(&mut s, &group, h, &parts2, acc, acc);
    }
    let out = Slice::new(BufId::Output, 0, count);
    let mut last = Vec::new();
    if li < m {
        for &b in members.iter().filter(|&&b| carrier(b) == li) {
            let src = Slice::new(acc, b * count, count);
            if b != rank {
                last.push(Action::Send { peer: b, src });
            } else if !inplace {
                last.push(Action::Copy { src, dst: out });
            }
        }
    } else {
        last.push(Action::Recv {
            peer: members[li % m],
            dst: out,
        });
    }
    last.sort_by_key(|a| !a.is_local());
    s.push(last);
    if avg {
        s.push(vec![Action::Scale { dst: out }]);
    }
    if !inplace {
        s.scratch_elems = n * count;
    }
    s
}
