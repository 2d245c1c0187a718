//! Entry points of the hierarchical (host-aware) algorithms.
//!
//! [`plan_hierarchical`] plans a collective for a world whose ranks are spread over hosts
//! ([`Hosts`]): the inter-host phases run among one rank per host (or per local index), the
//! intra-host phases among the ranks of one host; see [`super::hier_all_reduce`],
//! [`super::hier_reduce_scatter`], [`super::hier_all_gather`], [`super::hier_broadcast`]
//! and [`super::hier_reduce`]. [`plan_host_ring_all_reduce`] plans the flat ring all-reduce
//! over a ring ordered host by host ([`super::host_ring`]). Both take the arguments of
//! [`super::plan`] with the host layout in place of the world size, validate them the same
//! way, and follow the same buffer conventions; [`super::plan`] itself is unchanged.

use super::hosts::Hosts;
use super::{
    hier_all_gather, hier_all_reduce, hier_broadcast, hier_reduce, hier_reduce_scatter, host_ring,
    plan, single_rank, validate, PlanConfig,
};
use crate::error::{Error, Result};
use crate::schedule::Schedule;
use crate::types::{CollDesc, CollKind, Rank, ReduceOp};

/// The hierarchical schedule rank `rank` runs for `desc` on the host layout `hosts` (the
/// world is `hosts.nranks()` ranks).
///
/// All-reduce, reduce-scatter, all-gather, broadcast and reduce get their two-level
/// algorithms; barrier and all-to-all have none and get [`super::plan`]'s schedule. Like
/// [`super::plan`], `count == 0` gives an empty schedule and a single rank copies (and
/// divides for `Avg`).
///
/// # Errors
///
/// [`Error::InvalidArgument`] for everything [`super::plan`] rejects (rank or root out of
/// range, overflowing sizes, zero `segment_bytes`, all-to-all-v or send/recv).
pub fn plan_hierarchical(
    desc: &CollDesc,
    rank: Rank,
    hosts: &Hosts,
    inplace: bool,
    cfg: &PlanConfig,
) -> Result<Schedule> {
    let n = hosts.nranks();
    validate(desc, rank, n, cfg)?;
    let count = desc.count;
    let easy = matches!(desc.kind, CollKind::Barrier | CollKind::AllToAll);
    if easy || count == 0 || n == 1 {
        return plan(desc, rank, n, inplace, cfg);
    }
    let avg = desc.op == ReduceOp::Avg;
    Ok(match desc.kind {
        CollKind::AllReduce => hier_all_reduce::plan_all_reduce(desc, rank, hosts, inplace, cfg)?,
        CollKind::ReduceScatter => hier_reduce_scatter::plan(rank, hosts, count, inplace, avg),
        CollKind::AllGather => hier_all_gather::plan(rank, hosts, count, inplace),
        CollKind::Broadcast => hier_broadcast::plan_broadcast(desc, rank, hosts, inplace, cfg)?,
        CollKind::Reduce => hier_reduce::plan_reduce(desc, rank, hosts, cfg)?,
        CollKind::Barrier | CollKind::AllToAll | CollKind::AllToAllV | CollKind::SendRecv => {
            return Err(Error::internal(format!(
                "{} reached plan_hierarchical",
                desc.kind
            )))
        }
    })
}

/// The ring all-reduce over the ranks in host order ([`Hosts::host_order`]) that rank `rank`
/// runs for `desc` on `hosts`.
///
/// # Errors
///
/// [`Error::InvalidArgument`] when `desc` is not an all-reduce, and for everything
/// [`super::plan`] rejects.
pub fn plan_host_ring_all_reduce(
    desc: &CollDesc,
    rank: Rank,
    hosts: &Hosts,
    inplace: bool,
    cfg: &PlanConfig,
) -> Result<Schedule> {
    let n = hosts.nranks();
    validate(desc, rank, n, cfg)?;
    if desc.kind != CollKind::AllReduce {
        return Err(Error::invalid(format!(
            "the host-ordered ring is an all_reduce, not a {}",
            desc.kind
        )));
    }
    if desc.count == 0 {
        return Ok(Schedule::default());
    }
    if n == 1 {
        return Ok(single_rank(desc, inplace));
    }
    Ok(host_ring::plan(
        rank,
        hosts,
        desc.count,
        inplace,
        desc.op == ReduceOp::Avg,
    ))
}
