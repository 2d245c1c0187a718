//! Planning on a host layout: the algorithm for ranks spread over hosts, chosen by the
//! two-class cost model ([`HierCostModel`]) among the flat algorithms and the host-aware ones
//! ([`Algo::Hierarchical`], [`Algo::HostRing`]), and the schedule of that choice.
//!
//! The candidates per collective are those [`super::choose_algo`] weighs on one host plus the
//! host-aware variants that exist for it: all-reduce weighs ring, double binary tree,
//! recursive doubling, Rabenseifner's halving-doubling (whose few rounds pay off across hosts
//! at mid sizes), the host-ordered ring and hierarchical; broadcast and reduce weigh
//! chain, binomial tree and hierarchical; all-gather and reduce-scatter weigh ring and
//! hierarchical. The within-host model is [`PlanConfig::model`], the network's
//! [`PlanConfig::inter`] (both measured by the topology probe at init). A forced
//! [`PlanConfig::algo`] wins where it applies. Ties go to the earlier candidate, so a flat
//! algorithm wins where a host-aware one brings nothing (one rank per host, or a host-ordered
//! ring on hosts already numbered in order). This is how NCCL picks among its rings and trees
//! from the detected topology, with the model of Thakur, Rabenseifner and Gropp (IJHPCA
//! 19(1), 2005) priced per link class.

use super::hierarchical::{plan_hierarchical, plan_host_ring_all_reduce};
use super::hosts::Hosts;
use super::{choose_algo, plan, plan_flat, validate, PlanConfig};
use crate::error::Result;
use crate::model::HierCostModel;
use crate::schedule::Schedule;
use crate::types::{Algo, CollDesc, CollKind, Rank};

/// The algorithms weighed for `kind` on several hosts, in order of preference on ties.
fn candidates(kind: CollKind) -> &'static [Algo] {
    match kind {
        CollKind::AllReduce => &[
            Algo::Ring,
            Algo::Tree,
            Algo::RecursiveDoubling,
            Algo::Rabenseifner,
            Algo::HostRing,
            Algo::Hierarchical,
        ],
        CollKind::Broadcast | CollKind::Reduce => &[Algo::Ring, Algo::Tree, Algo::Hierarchical],
        CollKind::AllGather | CollKind::ReduceScatter => &[Algo::Ring, Algo::Hierarchical],
        _ => &[Algo::Ring],
    }
}

/// The forced `algo` as it applies to `kind`, or `None` when `kind` has no such variant.
fn forced(kind: CollKind, algo: Algo) -> Option<Algo> {
    match (kind, algo) {
        (CollKind::AllReduce, a) => Some(a),
        (CollKind::Broadcast | CollKind::Reduce, Algo::HostRing) => Some(Algo::Ring),
        (CollKind::Broadcast | CollKind::Reduce, Algo::RecursiveDoubling | Algo::Rabenseifner) => {
            Some(Algo::Tree)
        }
        (CollKind::Broadcast | CollKind::Reduce, a) => Some(a),
        (CollKind::AllGather | CollKind::ReduceScatter, Algo::Hierarchical) => {
            Some(Algo::Hierarchical)
        }
        _ => None,
    }
}

/// The model [`choose_algo_on`] prices with: `cfg.model` within hosts, `cfg.inter` between.
pub(crate) fn model_of(cfg: &PlanConfig) -> HierCostModel {
    HierCostModel {
        intra: cfg.model,
        inter: cfg.inter,
    }
}

/// The algorithm [`plan_on`] uses for `desc` on `hosts`.
///
/// On one host this is [`choose_algo`]. On several, a forced [`PlanConfig::algo`] wins where
/// the collective has that variant (as in [`choose_algo`]; a forced host-ordered ring is the
/// chain for broadcast and reduce, and the flat ring elsewhere); otherwise the candidate
/// (module docs) with the lowest [`HierCostModel::predict`] does.
pub fn choose_algo_on(desc: &CollDesc, hosts: &Hosts, cfg: &PlanConfig) -> Algo {
    let n = hosts.nranks();
    if hosts.nhosts() <= 1 || n <= 1 {
        return choose_algo(desc, n, cfg);
    }
    let list = candidates(desc.kind);
    if list.len() == 1 {
        return Algo::Ring;
    }
    if let Some(a) = cfg.algo.and_then(|a| forced(desc.kind, a)) {
        return a;
    }
    let model = model_of(cfg);
    let seg = cfg.segment_elems(desc.dtype, desc.count) * desc.dtype.size();
    let mut best = (list[0], f64::INFINITY);
    for &a in list {
        let t = model.predict(desc, hosts, a, seg);
        if t < best.1 {
            best = (a, t);
        }
    }
    best.0
}

/// The schedule rank `rank` runs for `desc` on the host layout `hosts` (the world is
/// `hosts.nranks()` ranks): the algorithm of [`choose_algo_on`], planned by
/// [`plan_hierarchical`], [`plan_host_ring_all_reduce`] or the flat planner. On one host this
/// is exactly [`plan`]'s schedule.
///
/// # Errors
///
/// [`crate::Error::InvalidArgument`] for everything [`plan`] rejects.
pub fn plan_on(
    desc: &CollDesc,
    rank: Rank,
    hosts: &Hosts,
    inplace: bool,
    cfg: &PlanConfig,
) -> Result<Schedule> {
    let n = hosts.nranks();
    if hosts.nhosts() <= 1 {
        return plan(desc, rank, n, inplace, cfg);
    }
    validate(desc, rank, n, cfg)?;
    match choose_algo_on(desc, hosts, cfg) {
        Algo::Hierarchical => plan_hierarchical(desc, rank, hosts, inplace, cfg),
        Algo::HostRing => plan_host_ring_all_reduce(desc, rank, hosts, inplace, cfg),
        flat => plan_flat(desc, rank, n, inplace, cfg, Some(flat)),
    }
}

#[cfg(test)]
mod tests;
