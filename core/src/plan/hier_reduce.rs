//! Hierarchical reduce: within each host to a leader, then across hosts among the leaders.
//!
//! Leaders as in [`super::hier_broadcast::leaders`] (the root on its host, local index 0
//! elsewhere). Phase 1: every host reduces to its leader with the flat algorithm
//! [`super::plan`] picks for the host's size (pipelined chain or binomial tree). Phase 2:
//! the leaders (in host order) reduce to the root with a binomial tree. `Avg` divides at the
//! root at the end. The network carries one message per host instead of one per rank
//! (Thakur, Rabenseifner and Gropp, IJHPCA 19(1), 2005; MPICH's SMP-aware reduce).
//!
//! Buffers: the root accumulates in `Output`; every other rank writes only `Scratch`
//! (`count` elements): a non-root leader's host sum lives in `Scratch`, and its phase-2
//! tree combines received partials into that same slice, which is why phase 2 is always the
//! binomial tree (whose inner ranks accumulate into the slice they read, unlike the chain's
//! two alternating segments).

use super::binomial;
use super::group::append;
use super::hier_broadcast::leaders;
use super::hosts::Hosts;
use super::{plan, PlanConfig};
use crate::error::Result;
use crate::schedule::{Action, BufId, Schedule, Slice};
use crate::types::{CollDesc, Rank, ReduceOp};

/// Rank `rank`'s hierarchical reduce of `desc` (count > 0) on `hosts`.
///
/// # Errors
///
/// Only those of planning a phase, which the caller's validation excludes.
pub(crate) fn plan_reduce(
    desc: &CollDesc,
    rank: Rank,
    hosts: &Hosts,
    cfg: &PlanConfig,
) -> Result<Schedule> {
    let (h, li) = (hosts.host_of(rank), hosts.local_index(rank));
    let members = hosts.members(h);
    let lead = leaders(hosts, desc.root);
    let is_root = rank == desc.root;
    // The sub-plans must not divide: the result is divided once, at the end.
    let op = if desc.op == ReduceOp::Avg {
        ReduceOp::Sum
    } else {
        desc.op
    };
    let mut s = Schedule::default();
    // Where this rank's host sum is after phase 1 (leaders only).
    let mut have = BufId::Input;
    if members.len() > 1 {
        let sub_desc = CollDesc {
            root: hosts.local_index(lead[h]),
            op,
            ..*desc
        };
        let sub = plan(
            &sub_desc,
            li,
            members.len(),
            false,
            &cfg.for_phase(cfg.model),
        )?;
        let acc = if is_root {
            BufId::Output
        } else {
            BufId::Scratch
        };
        append(&mut s, sub, members, &|b| match b {
            BufId::Output => (acc, 0),
            b => (b, 0),
        });
        if rank == lead[h] {
            have = acc;
        }
    }
    if rank == lead[h] && lead.len() > 1 {
        let sub = binomial::reduce(h, lead.len(), hosts.host_of(desc.root), desc.count, false);
        append(&mut s, sub, &lead, &|b| match b {
            BufId::Input => (have, 0),
            b => (b, 0),
        });
    }
    if is_root && desc.op == ReduceOp::Avg {
        s.push(vec![Action::Scale {
            dst: Slice::new(BufId::Output, 0, desc.count),
        }]);
    }
    Ok(s)
}
