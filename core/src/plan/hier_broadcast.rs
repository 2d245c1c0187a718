//! Hierarchical broadcast: across hosts among one leader per host, then within each host.
//!
//! The leader of the root's host is the root; every other host's leader is its rank of
//! local index 0. Phase 1: the leaders (in host order) broadcast with the flat algorithm
//! [`super::plan`] picks for `H` ranks (pipelined chain or binomial tree). Phase 2: every
//! leader broadcasts to its host with the flat algorithm picked for the host's size. The
//! message crosses each host's network link once (in the chain) instead of once per rank of
//! the host, and the latency-bound part grows with `H + s` rather than `N` (Thakur,
//! Rabenseifner and Gropp, IJHPCA 19(1), 2005; NCCL's and MPICH's SMP-aware broadcast).
//!
//! Buffers: out of place the root first copies `Input` to `Output`; both phases then run in
//! place in `Output`. No scratch.

use super::group::append;
use super::hosts::Hosts;
use super::{plan, PlanConfig};
use crate::error::Result;
use crate::schedule::{Action, BufId, Schedule, Slice};
use crate::types::{CollDesc, Rank};

/// The leader of every host for a collective rooted at `root`: the root on its host, local
/// index 0 elsewhere.
pub(crate) fn leaders(hosts: &Hosts, root: Rank) -> Vec<Rank> {
    (0..hosts.nhosts())
        .map(|k| {
            if k == hosts.host_of(root) {
                root
            } else {
                hosts.members(k)[0]
            }
        })
        .collect()
}

/// Rank `rank`'s hierarchical broadcast of `desc` (count > 0) on `hosts`.
///
/// # Errors
///
/// Only those of planning a phase, which the caller's validation excludes.
pub(crate) fn plan_broadcast(
    desc: &CollDesc,
    rank: Rank,
    hosts: &Hosts,
    inplace: bool,
    cfg: &PlanConfig,
) -> Result<Schedule> {
    let (h, li) = (hosts.host_of(rank), hosts.local_index(rank));
    let members = hosts.members(h);
    let lead = leaders(hosts, desc.root);
    let all = |buf| Slice::new(buf, 0, desc.count);
    let in_output = |b: BufId| match b {
        BufId::Scratch => (BufId::Scratch, 0),
        _ => (BufId::Output, 0),
    };
    let mut s = Schedule::default();
    if rank == desc.root && !inplace {
        s.push(vec![Action::Copy {
            src: all(BufId::Input),
            dst: all(BufId::Output),
        }]);
    }
    if rank == lead[h] {
        let sub_desc = CollDesc {
            root: hosts.host_of(desc.root),
            ..*desc
        };
        let sub = plan(&sub_desc, h, lead.len(), true, &cfg.for_phase(cfg.inter))?;
        append(&mut s, sub, &lead, &in_output);
    }
    let sub_desc = CollDesc {
        root: hosts.local_index(lead[h]),
        ..*desc
    };
    let sub = plan(
        &sub_desc,
        li,
        members.len(),
        true,
        &cfg.for_phase(cfg.model),
    )?;
    append(&mut s, sub, members, &in_output);
    Ok(s)
}
