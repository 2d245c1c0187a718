//! Hierarchical all-gather: within each host, across hosts among the ranks of equal local
//! index, then within each host again.
//!
//! Rank `r`'s `Input[count]` lands at `Output[r*count..]` everywhere. With `m` ranks on the
//! smallest host, block `b` is carried across hosts by local index `local(b) mod m`.
//! Phase 1: a ring all-gather on every host gives every rank its host's blocks. Phase 2:
//! for each `j < m`, the ranks of local index `j` (one per host) ring-all-gather the blocks
//! carried by `j`. Phase 3: a ring all-gather on every host in which local index `j < m`
//! contributes the other hosts' blocks carried by `j` (larger local indices contribute
//! nothing). Every message is one block (`count` elements).
//!
//! Cost with `H` hosts of up to `s` ranks and `N` ranks: phases 1 and 3 take `s-1` steps
//! (phase 3's of about `(N-s)/m` blocks), phase 2 `H-1` steps of about `s/m` blocks per
//! group: each host's link carries the other hosts' data once, as in the flat ring, but in
//! `H-1` rather than `N-1` latency-bound steps (Thakur, Rabenseifner and Gropp, IJHPCA
//! 19(1), 2005; Jia et al., arXiv:1807.11205, 2018).
//!
//! Buffers: out of place, a first local step copies `Input` to `Output[r*count..]`; all
//! phases then work in `Output`. No scratch.

use super::group_ring::all_gather;
use super::hosts::Hosts;
use super::Slice2;
use crate::schedule::{Action, BufId, Schedule, Slice};
use crate::types::Rank;

/// Rank `rank`'s hierarchical all-gather of blocks of `count > 0` elements on `hosts`.
pub(crate) fn plan(rank: Rank, hosts: &Hosts, count: usize, inplace: bool) -> Schedule {
    let (h, li) = (hosts.host_of(rank), hosts.local_index(rank));
    let members = hosts.members(h);
    let m = hosts.min_size();
    let carrier = |b: Rank| hosts.local_index(b) % m;
    let blk = |b: Rank| -> Slice2 { (b * count, count) };
    let mut s = Schedule::default();
    if !inplace {
        s.push(vec![Action::Copy {
            src: Slice::new(BufId::Input, 0, count),
            dst: Slice::new(BufId::Output, rank * count, count),
        }]);
    }
    let parts1 = |i: usize| vec![blk(members[i])];
    all_gather(&mut s, members, li, &parts1, BufId::Output);
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
        all_gather(&mut s, &group, h, &parts2, BufId::Output);
    }
    let parts3 = |i: usize| -> Vec<Slice2> {
        if i >= m {
            return Vec::new();
        }
        (0..hosts.nranks())
            .filter(|&b| hosts.host_of(b) != h && carrier(b) == i)
            .map(blk)
            .collect()
    };
    all_gather(&mut s, members, li, &parts3, BufId::Output);
    s
}
