//! Hierarchical all-reduce in pipeline segments: the phases of [`super::hier_all_reduce`]
//! run on different segments at the same time, so that the intra-host rings hide behind the
//! network.
//!
//! The data is cut into `P` segments (as equal as possible), and each segment is
//! all-reduced by the three phases of the unpipelined schedule: a ring reduce-scatter within
//! each host leaves block `j` of the segment at the rank of local index `j` (`j < m`, `m` the
//! smallest host's size), a ring all-reduce among the `H` ranks of local index `j` (one per
//! host) reduces it across hosts, and a ring all-gather within each host hands the reduced
//! blocks to every rank. Stage `k` runs phase 1 of segment `k`, phase 2 of segment `k-1`
//! and phase 3 of segment `k-2` side by side: one step of each per time slot, `L` slots per
//! stage, where `L` is the longest phase (`s-1` intra-host steps for the largest host of `s`
//! ranks, `2(H-1)` network steps, plus one slot for `Avg`'s division). With the network
//! the bottleneck, the `P` inter-host phases run back to back and the intra-host work costs
//! only the first reduce-scatter and the last all-gather, of one segment each: this is the
//! pipelining of NCCL's hierarchical (CollNet and NVLS-tree) all-reduce and of Jia et al.,
//! arXiv:1807.11205 (2018); the rings follow Patarasuk and Yuan, JPDC 69(2), 2009.
//!
//! Every step is laid out on one global clock (`timeline.rs`): step `i` of a phase of
//! segment `q` sits at time `(stage · L) + i` on every rank, and the actions of one time are
//! placed segment by segment in the same order on every rank. The n-th message between two
//! ranks is therefore the same on both sides (intra-host pairs carry phases 1 and 3 only,
//! inter-host pairs phase 2 only), and the schedule needs no buffering from the transport.
//! Segments are disjoint ranges of the buffers, so the actions of one step never overlap.
//!
//! Each element is reduced at exactly one rank and copied from there, so every rank's
//! result is bit-identical; `Avg` divides once, at the owner of each inter-host part.

use super::group_ring::{all_gather_at, reduce_scatter_at};
use super::hosts::Hosts;
use super::timeline::Timeline;
use super::{block, sl, Slice2};
use crate::schedule::{Action, BufId, Schedule};
use crate::types::Rank;

/// Rank `rank`'s hierarchical all-reduce of `count` elements on `hosts` in `segments`
/// pipeline segments (each at least `m·H` elements, which the caller ensures).
pub(crate) fn plan(
    rank: Rank,
    hosts: &Hosts,
    count: usize,
    segments: usize,
    inplace: bool,
    avg: bool,
) -> Schedule {
    let nh = hosts.nhosts();
    let (h, li) = (hosts.host_of(rank), hosts.local_index(rank));
    let members = hosts.members(h);
    let m = hosts.min_size();
    let s_max = hosts.sizes().into_iter().max().unwrap_or(1);
    let (intra, inter) = (s_max - 1, nh - 1);
    let scale = usize::from(avg);
    let stage = intra.max(2 * inter + scale).max(1);
    let group: Vec<Rank> = if li < m {
        (0..nh).map(|k| hosts.members(k)[li]).collect()
    } else {
        Vec::new()
    };
    let src = if inplace { BufId::Output } else { BufId::Input };
    let mut t = Timeline::default();
    for q in 0..segments {
        let (seg_off, seg_len) = block(count, segments, q);
        // Block `j` of segment `q`, owned by local index `j < m`.
        let blk = move |j: usize| -> Slice2 {
            let (o, l) = block(seg_len, m, j);
            (seg_off + o, l)
        };
        let parts = |i: usize| -> Vec<Slice2> {
            if i < m {
                vec![blk(i)]
            } else {
                Vec::new()
            }
        };
        reduce_scatter_at(&mut t, q * stage, members, li, &parts, src, BufId::Output);
        if li < m {
            let (off, len) = blk(li);
            let sub = move |i: usize| -> Slice2 {
                let (o, l) = block(len, nh, i);
                (off + o, l)
            };
            let ring_parts = |i: usize| vec![sub(i)];
            let base = (q + 1) * stage;
            reduce_scatter_at(
                &mut t,
                base,
                &group,
                h,
                &ring_parts,
                BufId::Output,
                BufId::Output,
            );
            if avg && sub(h).1 > 0 {
                t.at(
                    base + inter,
                    Action::Scale {
                        dst: sl(BufId::Output, sub(h)),
                    },
                );
            }
            all_gather_at(
                &mut t,
                base + inter + scale,
                &group,
                h,
                &ring_parts,
                BufId::Output,
            );
        }
        all_gather_at(&mut t, (q + 2) * stage, members, li, &parts, BufId::Output);
    }
    t.into_schedule(0)
}
