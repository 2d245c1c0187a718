//! Business-based segmentation: a shared backbone with one head per task.
//!
//! Two layouts are compared and the one with the smaller bottleneck wins:
//! - **heads apart**: each head on a rank of its own; the backbone is cut by [`super::dp`] over
//!   the other ranks, and its last stage sends its output (and receives a gradient) to every
//!   head;
//! - **heads together**: all heads run on the rank of the backbone's last stage (the heads'
//!   costs are added to the last backbone layer, so the DP accounts for them exactly).

use crate::cluster::ClusterDesc;
use crate::cost::{CostModel, Plan, StagePlan};
use crate::error::{Error, Result};
use crate::model::{Layer, ModelDesc};
use crate::placement;

/// (stages, backbone cuts, backbone ranks, why).
type Layout = (Vec<StagePlan>, Vec<usize>, Vec<usize>, String);

fn sum_layers(name: &str, layers: &[Layer]) -> Layer {
    let mut out = Layer {
        name: name.into(),
        fwd_flops: 0,
        bwd_flops: 0,
        param_bytes: 0,
        activation_bytes: 0,
        memory_bytes: 0,
    };
    for l in layers {
        out.fwd_flops += l.fwd_flops;
        out.bwd_flops += l.bwd_flops;
        out.param_bytes += l.param_bytes;
        out.memory_bytes += l.memory_bytes;
    }
    out
}

fn backbone_stages(cost: &CostModel, cuts: &[usize], order: &[usize]) -> Vec<StagePlan> {
    (0..order.len())
        .map(|s| {
            let (i, j) = (cuts[s], cuts[s + 1]);
            let compute = cost.compute_time(i, j, order[s]);
            let time = cost.stage_time(order, s, i, j);
            StagePlan {
                first_layer: i,
                end_layer: j,
                ranks: vec![order[s]],
                part: "backbone".into(),
                compute_s: compute,
                comm_s: time - compute,
                time_s: time,
                memory_bytes: cost.memory(i, j),
            }
        })
        .collect()
}

/// The best business-based plan of `model` (with heads) on `k` of `cluster`'s ranks.
pub fn plan(
    model: &ModelDesc,
    cluster: &ClusterDesc,
    cost: &CostModel,
    k: usize,
    micro_batches: usize,
) -> Result<Plan> {
    let h = model.heads.len();
    if h == 0 {
        return Err(Error::invalid(
            "heads",
            "business-based segmentation needs a model with task heads",
        ));
    }
    let n = model.layers.len();
    let links = cost.links().clone();
    let mut candidates: Vec<Layout> = Vec::new();

    // Heads together on the last backbone stage.
    {
        let mut layers = model.layers.clone();
        let last = layers.len() - 1;
        let heads: Vec<Layer> = model
            .heads
            .iter()
            .flat_map(|hd| hd.layers.iter().cloned())
            .collect();
        let extra = sum_layers("heads", &heads);
        layers[last].fwd_flops += extra.fwd_flops;
        layers[last].bwd_flops += extra.bwd_flops;
        layers[last].param_bytes += extra.param_bytes;
        layers[last].memory_bytes += extra.memory_bytes;
        let merged = CostModel::for_layers(&layers, cluster, links.clone());
        let kb = k.min(n);
        let order = placement::chain_order(&merged, kb);
        if let Some((cuts, _)) = super::dp::solve(&merged, &order) {
            let stages = backbone_stages(&merged, &cuts, &order);
            candidates.push((
                stages,
                cuts,
                order,
                format!("all {h} heads on the last backbone stage"),
            ));
        }
    }
    // Heads apart, one rank each.
    if k > h && k - h <= n {
        let all = placement::chain_order(cost, k);
        let (order, head_ranks) = all.split_at(k - h);
        if let Some((cuts, _)) = super::dp::solve(cost, order) {
            let mut stages = backbone_stages(cost, &cuts, order);
            let tail = order[order.len() - 1];
            let fan_out: f64 = head_ranks
                .iter()
                .map(|&r| cost.boundary_time(n, tail, r))
                .sum();
            let last = stages.last_mut().expect("at least one backbone stage");
            last.comm_s += fan_out;
            last.time_s += fan_out;
            for (hd, &r) in model.heads.iter().zip(head_ranks) {
                let s = sum_layers(&hd.name, &hd.layers);
                let compute = s.flops() as f64 / cost.rank_speed(r);
                let comm = cost.boundary_time(n, tail, r);
                let mem = s.memory_bytes + s.param_bytes;
                let fits = mem <= cluster.ranks[r].memory_bytes;
                stages.push(StagePlan {
                    first_layer: 0,
                    end_layer: hd.layers.len(),
                    ranks: vec![r],
                    part: format!("head:{}", hd.name),
                    compute_s: compute,
                    comm_s: comm,
                    time_s: if fits { compute + comm } else { f64::INFINITY },
                    memory_bytes: mem,
                });
            }
            candidates.push((
                stages,
                cuts,
                order.to_vec(),
                format!("each of the {h} heads on a rank of its own"),
            ));
        }
    }
    let best = candidates
        .into_iter()
        .map(|c| (c.0.iter().map(|s| s.time_s).fold(0.0, f64::max), c))
        .filter(|(b, _)| b.is_finite())
        .min_by(|a, b| a.0.total_cmp(&b.0));
    let Some((_, (stages, cuts, ranks, why))) = best else {
        return Err(Error::Infeasible(format!(
            "no business-based plan of {n} layers and {h} heads on {k} ranks fits in memory"
        )));
    };
    Plan::from_stages(
        "business",
        &model.name,
        cuts,
        ranks,
        stages,
        micro_batches,
        format!("shared backbone; {why} (the smaller bottleneck)"),
    )
}
