//! Ring all-reduce in host order: the ring visits the ranks host by host, so that it enters
//! and leaves every host once.
//!
//! The flat ring ([`super::ring_all_reduce`]) runs in rank order `r -> r+1`; when a host's
//! ranks are not numbered consecutively, many of its ring edges cross the network and share
//! the host's link. Ordering the ring by [`Hosts::host_order`] gives each host one outgoing
//! and one incoming inter-host edge (NCCL builds its rings the same way from the topology).
//! The schedule is otherwise the ring all-reduce of Patarasuk and Yuan, JPDC 69(2), 2009:
//! `N` blocks, a reduce-scatter of `N-1` steps, `Avg` divided at each block's owner, and an
//! all-gather of `N-1` steps; partial sums live in `Output`, no scratch.

use super::group_ring::{all_gather, reduce_scatter};
use super::hosts::Hosts;
use super::{block, sl, Slice2};
use crate::schedule::{Action, BufId, Schedule};
use crate::types::Rank;

/// Rank `rank`'s all-reduce of `count > 0` elements over the ring in host order of `hosts`
/// (at least two ranks); `avg` divides each block once at its owner.
pub(crate) fn plan(rank: Rank, hosts: &Hosts, count: usize, inplace: bool, avg: bool) -> Schedule {
    let order = hosts.host_order();
    let n = order.len();
    let pos = order.iter().position(|&r| r == rank).unwrap_or(0);
    let parts = |i: usize| -> Vec<Slice2> { vec![block(count, n, i)] };
    let src = if inplace { BufId::Output } else { BufId::Input };
    let mut s = Schedule::default();
    reduce_scatter(&mut s, &order, pos, &parts, src, BufId::Output);
    let own = block(count, n, pos);
    if avg && own.1 > 0 {
        s.push(vec![Action::Scale {
            dst: sl(BufId::Output, own),
        }]);
    }
    all_gather(&mut s, &order, pos, &parts, BufId::Output);
    s
}
