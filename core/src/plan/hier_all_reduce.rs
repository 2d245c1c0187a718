//! Hierarchical all-reduce: reduce-scatter within each host, all-reduce across hosts among
//! the ranks of equal local index, all-gather within each host.
//!
//! With `H` hosts and `m` ranks on the smallest host, the data is cut into `m` blocks (as
//! equal as possible). Phase 1: on every host, a ring reduce-scatter leaves the host's sum
//! of block `j` at the rank of local index `j`, for `j < m`; ranks of local index `>= m`
//! (on hosts larger than the smallest) contribute but own no block. Phase 2: for each
//! `j < m`, the `H` ranks of local index `j` (one per host, in host order) all-reduce block
//! `j` in place in `Output`, with the flat algorithm [`super::plan`] picks for a block of
//! that size over `H` ranks (ring, double binary tree or recursive doubling; `Avg` divides
//! there, once per element). Phase 3: a ring all-gather on every host hands the `m` reduced
//! blocks to all its ranks. Each element is reduced at exactly one rank and copied from
//! there, so every rank's result is bit-identical.
//!
//! Cost, with `b` bytes, hosts of `s_h` ranks and `s = max s_h`: phases 1 and 3 take
//! `s-1` steps of `b/m` bytes over intra-host links; phase 2 moves `2(H-1)/H · b/m` bytes per
//! rank, and with the `m` groups sharing a host's network link, `2(H-1)/H · b` per host —
//! against `2(N-1)/N · b` for a flat ring over the `N` ranks. On uneven hosts the intra-host
//! phases are slower than a perfect split by `s/m` (the simple choice: blocks by the minimum
//! host size). This is the two-level scheme of Jia et al., "Highly scalable deep learning
//! training system with mixed-precision", arXiv:1807.11205 (2018), and of NCCL's and
//! Horovod's hierarchical all-reduce; the ring phases follow Patarasuk and Yuan, JPDC 69(2),
//! 2009.
//!
//! Buffers: partial sums live in `Output` (in place, `Input` is the same memory); no scratch
//! but what the phase-2 algorithm needs (at most one block).
//!
//! Large calls are pipelined in segments ([`super::hier_all_reduce_pipelined`]) when the
//! cost model ([`HierCostModel::hier_all_reduce_segments`]) says it pays.

use super::group::append;
use super::group_ring::{all_gather, reduce_scatter};
use super::hier_all_reduce_pipelined;
use super::hosts::Hosts;
use super::{block, plan, PlanConfig, Slice2};
use crate::error::Result;
use crate::model::{CostModel, HierCostModel};
use crate::schedule::{BufId, Schedule};
use crate::types::ReduceOp;
use crate::types::{CollDesc, Rank};

/// Rank `rank`'s hierarchical all-reduce of `desc` (count > 0) on the layout `hosts`.
///
/// # Errors
///
/// Only those of planning the inter-host phase, which the caller's validation excludes.
pub(crate) fn plan_all_reduce(
    desc: &CollDesc,
    rank: Rank,
    hosts: &Hosts,
    inplace: bool,
    cfg: &PlanConfig,
) -> Result<Schedule> {
    let count = desc.count;
    let model = HierCostModel {
        intra: cfg.model,
        inter: cfg.inter,
    };
    let segments = model.hier_all_reduce_segments(count, desc.dtype.size(), &hosts.host_ids());
    if segments > 1 {
        let avg = desc.op == ReduceOp::Avg;
        return Ok(hier_all_reduce_pipelined::plan(
            rank, hosts, count, segments, inplace, avg,
        ));
    }
    let (h, li) = (hosts.host_of(rank), hosts.local_index(rank));
    let members = hosts.members(h);
    let m = hosts.min_size();
    let parts = |i: usize| -> Vec<Slice2> {
        if i < m {
            vec![block(count, m, i)]
        } else {
            Vec::new()
        }
    };
    let src = if inplace { BufId::Output } else { BufId::Input };
    let mut s = Schedule::default();
    reduce_scatter(&mut s, members, li, &parts, src, BufId::Output);
    if li < m {
        let (off, len) = block(count, m, li);
        let group: Vec<Rank> = (0..hosts.nhosts()).map(|k| hosts.members(k)[li]).collect();
        let sub_desc = CollDesc {
            count: len,
            root: 0,
            ..*desc
        };
        // The `m` groups share each host's network link: price it at `m` times its β.
        let shared = CostModel {
            beta: cfg.inter.beta * m as f64,
            ..cfg.inter
        };
        let sub = plan(&sub_desc, h, group.len(), true, &cfg.for_phase(shared))?;
        append(&mut s, sub, &group, &|b| match b {
            BufId::Scratch => (BufId::Scratch, 0),
            _ => (BufId::Output, off),
        });
    }
    all_gather(&mut s, members, li, &parts, BufId::Output);
    Ok(s)
}
