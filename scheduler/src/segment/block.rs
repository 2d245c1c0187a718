//! Block-based segmentation: one layer's tensors split across a group of ranks.
//!
//! When one layer dominates, no pipeline cut helps: every chain plan has a stage at least as
//! slow as that layer alone. This strategy gives the heaviest layer `L` its own stage on a
//! tensor-parallel group of `g` ranks (Megatron-style: its work divided in proportion to the
//! ranks' speeds, its weights divided evenly, one all-reduce of its output forward and one of
//! its input gradient backward, each `2(g−1)/g · bytes` over the group's slowest link). The
//! layers before and after `L` are cut by [`super::dp`] over the remaining ranks. Every group
//! size and split of the remaining ranks is tried; the best bottleneck wins.

use crate::cluster::ClusterDesc;
use crate::cost::{CostModel, Plan, StagePlan};
use crate::error::{Error, Result};
use crate::model::ModelDesc;
use crate::placement;

/// Time and memory per rank of layer `l` split over `group`.
pub fn split_stage(
    cost: &CostModel,
    model: &ModelDesc,
    l: usize,
    group: &[usize],
) -> (f64, f64, u64) {
    let g = group.len() as f64;
    let speed: f64 = group.iter().map(|&r| cost.rank_speed(r)).sum();
    let compute = cost.flops(l, l + 1) as f64 / speed;
    let links = cost.links();
    let (mut bw, mut lat) = (f64::INFINITY, 0.0f64);
    for &a in group {
        for &b in group {
            if a != b {
                bw = bw.min(links.bandwidth[a][b]);
                lat = lat.max(links.latency[a][b]);
            }
        }
    }
    let comm = if group.len() > 1 {
        let bytes = model.layers[l].activation_bytes as f64;
        2.0 * (2.0 * (g - 1.0) / g * bytes / bw + 2.0 * (g - 1.0) * lat)
    } else {
        0.0
    };
    (
        compute,
        comm,
        cost.memory(l, l + 1).div_ceil(group.len() as u64),
    )
}

/// (bottleneck, stages, cuts, first rank of each stage, group size).
type Candidate = (f64, Vec<StagePlan>, Vec<usize>, Vec<usize>, usize);

fn chain_stages(sub: &CostModel, offset: usize, cuts: &[usize], order: &[usize]) -> Vec<StagePlan> {
    (0..order.len())
        .map(|s| {
            let (i, j) = (cuts[s], cuts[s + 1]);
            let compute = sub.compute_time(i, j, order[s]);
            let time = sub.stage_time(order, s, i, j);
            StagePlan {
                first_layer: i + offset,
                end_layer: j + offset,
                ranks: vec![order[s]],
                part: "backbone".into(),
                compute_s: compute,
                comm_s: time - compute,
                time_s: time,
                memory_bytes: sub.memory(i, j),
            }
        })
        .collect()
}

/// The best block-based plan of `model` on `k` of `cluster`'s ranks (k ≥ 2).
pub fn plan(
    model: &ModelDesc,
    cluster: &ClusterDesc,
    cost: &CostModel,
    k: usize,
    micro_batches: usize,
) -> Result<Plan> {
    let n = model.layers.len();
    if k < 2 {
        return Err(Error::invalid(
            "stages",
            "block-based segmentation needs at least 2 ranks",
        ));
    }
    let order = placement::chain_order(cost, k);
    let l = (0..n)
        .max_by_key(|&i| (cost.flops(i, i + 1), std::cmp::Reverse(i)))
        .unwrap_or(0);
    let before = CostModel::for_layers(&model.layers[..l], cluster, cost.links().clone());
    let after = CostModel::for_layers(&model.layers[l + 1..], cluster, cost.links().clone());
    let mut best: Option<Candidate> = None;
    for g in 2..=k {
        for k1 in 0..=k - g {
            let k2 = k - g - k1;
            if (l == 0) != (k1 == 0) || (l == n - 1) != (k2 == 0) || k1 > l || k2 > n - 1 - l {
                continue;
            }
            let (o1, group, o2) = (&order[..k1], &order[k1..k1 + g], &order[k1 + g..]);
            let mut stages = Vec::new();
            let mut cuts = vec![0];
            if k1 > 0 {
                let Some((c, _)) = super::dp::solve(&before, o1) else {
                    continue;
                };
                stages.extend(chain_stages(&before, 0, &c, o1));
                cuts.extend_from_slice(&c[1..]);
                // The activation into the group goes to each of its ranks.
                let extra = group
                    .iter()
                    .map(|&r| cost.boundary_time(l, o1[k1 - 1], r))
                    .fold(0.0, f64::max);
                let last = stages.last_mut().expect("k1 > 0 stages");
                last.comm_s += extra;
                last.time_s += extra;
            }
            let (compute, mut comm, mem) = split_stage(cost, model, l, group);
            if k1 > 0 {
                comm += group
                    .iter()
                    .map(|&r| cost.boundary_time(l, o1[k1 - 1], r))
                    .fold(0.0, f64::max);
            }
            if k2 > 0 {
                comm += group
                    .iter()
                    .map(|&r| cost.boundary_time(l + 1, r, o2[0]))
                    .fold(0.0, f64::max);
            }
            let fits = group.iter().all(|&r| mem <= cluster.ranks[r].memory_bytes);
            stages.push(StagePlan {
                first_layer: l,
                end_layer: l + 1,
                ranks: group.to_vec(),
                part: "backbone".into(),
                compute_s: compute,
                comm_s: comm,
                time_s: if fits { compute + comm } else { f64::INFINITY },
                memory_bytes: mem,
            });
            cuts.push(l + 1);
            if k2 > 0 {
                let Some((c, _)) = super::dp::solve(&after, o2) else {
                    continue;
                };
                let mut tail = chain_stages(&after, l + 1, &c, o2);
                let extra = group
                    .iter()
                    .map(|&r| cost.boundary_time(l + 1, r, o2[0]))
                    .fold(0.0, f64::max);
                tail[0].comm_s += extra;
                tail[0].time_s += extra;
                stages.extend(tail);
                cuts.extend(c[1..].iter().map(|&x| x + l + 1));
            }
            let b = stages.iter().map(|s| s.time_s).fold(0.0, f64::max);
            if best.as_ref().map(|x| b < x.0).unwrap_or(true) {
                let ranks = stages.iter().map(|s| s.ranks[0]).collect();
                best = Some((b, stages, cuts, ranks, g));
            }
        }
    }
    let Some((_, stages, cuts, ranks, g)) = best else {
        return Err(Error::Infeasible(format!(
            "no block-based plan of {n} layers on {k} ranks fits in memory"
        )));
    };
    let reason = format!(
        "layer {l} (`{}`, the heaviest) split over a tensor-parallel group of {g} ranks; the rest cut by DP",
        model.layers[l].name
    );
    Plan::from_stages(
        "block",
        &model.name,
        cuts,
        ranks,
        stages,
        micro_batches,
        reason,
    )
}
