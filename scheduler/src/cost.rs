//! The cost model every segmentation strategy shares.
//!
//! A plan cuts the backbone's layers `0..n` into `k` contiguous stages and places stage `s` on
//! rank `order[s]`. Per micro-batch, stage `s` holding layers `i..j` costs
//!
//! ```text
//! t(s) = flops(i..j) / speed(order[s])
//!      + boundary(i) between order[s-1] and order[s]     (s > 0)
//!      + boundary(j) between order[s]   and order[s+1]   (s < k-1)
//! boundary(c) = act(c-1)/bw(a→b) + act(c-1)/bw(b→a) + lat(a→b) + lat(b→a)
//! ```
//!
//! (the activation goes forward, its gradient of the same size comes back; both ends are busy
//! with it). A stage whose memory `Σ memory_bytes + param_bytes` exceeds its rank's memory costs
//! `+∞`. The bottleneck is the stage with the largest `t`; for `B` micro-batches the pipeline
//! takes `Σ t + (B−1)·max t` (GPipe's fill, steady state and drain).
//!
//! Every strategy evaluates a stage through [`CostModel::stage_time`] only, from integer prefix
//! sums, so two strategies that find the same bottleneck find the bit-identical `f64`.

use crate::cluster::{ClusterDesc, LinkMatrix};
use crate::error::{Error, Result};
use crate::model::{Layer, ModelDesc};
use serde::{Deserialize, Serialize};

/// Precomputed sums over one chain of layers on one cluster.
#[derive(Clone, Debug)]
pub struct CostModel {
    /// `flops[i]`: forward+backward FLOPs of layers `0..i`.
    flops: Vec<u64>,
    /// `mem[i]`: memory of layers `0..i`.
    mem: Vec<u64>,
    /// `act[l]`: boundary bytes after layer `l`.
    act: Vec<u64>,
    /// FLOP/s of each rank.
    speed: Vec<f64>,
    /// Memory of each rank.
    capacity: Vec<u64>,
    links: LinkMatrix,
    /// True when all ranks and links are identical (rank swaps change nothing).
    uniform: bool,
}

impl CostModel {
    /// The cost model of `model`'s backbone on `cluster` with its link matrix.
    pub fn new(model: &ModelDesc, cluster: &ClusterDesc) -> CostModel {
        CostModel::for_layers(&model.layers, cluster, cluster.link_matrix())
    }

    /// The cost model of a chain of layers on `cluster` with the given links (validated
    /// descriptions are assumed).
    pub fn for_layers(layers: &[Layer], cluster: &ClusterDesc, links: LinkMatrix) -> CostModel {
        let mut flops = Vec::with_capacity(layers.len() + 1);
        let mut mem = Vec::with_capacity(layers.len() + 1);
        let (mut f, mut m) = (0u64, 0u64);
        flops.push(0);
        mem.push(0);
        for l in layers {
            f = f.saturating_add(l.flops());
            m = m
                .saturating_add(l.memory_bytes)
                .saturating_add(l.param_bytes);
            flops.push(f);
            mem.push(m);
        }
        let speed: Vec<f64> = cluster
            .ranks
            .iter()
            .map(|r| r.speed * cluster.base_flops)
            .collect();
        let capacity: Vec<u64> = cluster.ranks.iter().map(|r| r.memory_bytes).collect();
        let first_bw = links
            .bandwidth
            .first()
            .and_then(|r| r.get(1).or(r.first()))
            .copied();
        let first_lat = links
            .latency
            .first()
            .and_then(|r| r.get(1).or(r.first()))
            .copied();
        let uniform = speed.windows(2).all(|w| w[0] == w[1])
            && capacity.windows(2).all(|w| w[0] == w[1])
            && (0..links.len()).all(|i| {
                (0..links.len()).all(|j| {
                    i == j
                        || (Some(links.bandwidth[i][j]) == first_bw
                            && Some(links.latency[i][j]) == first_lat)
                })
            });
        CostModel {
            flops,
            mem,
            act: layers.iter().map(|l| l.activation_bytes).collect(),
            speed,
            capacity,
            links,
            uniform,
        }
    }

    /// Number of layers in the chain.
    pub fn layers(&self) -> usize {
        self.act.len()
    }

    /// Number of ranks in the cluster.
    pub fn ranks(&self) -> usize {
        self.speed.len()
    }

    /// True when every rank and link is the same, so the rank order does not matter.
    pub fn is_uniform(&self) -> bool {
        self.uniform
    }

    /// The link matrix in use.
    pub fn links(&self) -> &LinkMatrix {
        &self.links
    }

    /// FLOP/s of rank `r`.
    pub fn rank_speed(&self, r: usize) -> f64 {
        self.speed[r]
    }

    /// FLOPs of layers `i..j`.
    pub fn flops(&self, i: usize, j: usize) -> u64 {
        self.flops[j] - self.flops[i]
    }

    /// Memory of layers `i..j`.
    pub fn memory(&self, i: usize, j: usize) -> u64 {
        self.mem[j] - self.mem[i]
    }

    /// Boundary bytes of a cut before layer `c` (after layer `c-1`), `0 < c < n`.
    pub fn cut_bytes(&self, c: usize) -> u64 {
        self.act[c - 1]
    }

    /// Seconds ranks `a` and `b` spend on a cut before layer `c` (activation and gradient).
    pub fn boundary_time(&self, c: usize, a: usize, b: usize) -> f64 {
        let bytes = self.act[c - 1] as f64;
        bytes / self.links.bandwidth[a][b]
            + bytes / self.links.bandwidth[b][a]
            + self.links.latency[a][b]
            + self.links.latency[b][a]
    }

    /// Seconds of compute of layers `i..j` on rank `r`.
    pub fn compute_time(&self, i: usize, j: usize, r: usize) -> f64 {
        self.flops(i, j) as f64 / self.speed[r]
    }

    /// Time of stage `s` (layers `i..j`) when the stages run on ranks `order` (`k` =
    /// `order.len()` stages, `n` = [`CostModel::layers`]); `+∞` when it does not fit in memory.
    /// The one function every strategy uses.
    #[inline]
    pub fn stage_time(&self, order: &[usize], s: usize, i: usize, j: usize) -> f64 {
        let r = order[s];
        if self.mem[j] - self.mem[i] > self.capacity[r] {
            return f64::INFINITY;
        }
        let mut t = (self.flops[j] - self.flops[i]) as f64 / self.speed[r];
        if s > 0 {
            t += self.boundary_time(i, order[s - 1], r);
        }
        if s + 1 < order.len() {
            t += self.boundary_time(j, r, order[s + 1]);
        }
        t
    }

    /// Times of every stage of `cuts` (`k+1` boundaries from 0 to n) on `order`.
    pub fn stage_times(&self, cuts: &[usize], order: &[usize]) -> Vec<f64> {
        (0..order.len())
            .map(|s| self.stage_time(order, s, cuts[s], cuts[s + 1]))
            .collect()
    }

    /// The bottleneck (largest stage time) of `cuts` on `order`.
    pub fn bottleneck(&self, cuts: &[usize], order: &[usize]) -> f64 {
        self.stage_times(cuts, order)
            .into_iter()
            .fold(0.0, f64::max)
    }

    /// Check that `cuts` and `order` describe a valid plan of `k = order.len()` stages.
    pub fn check(&self, cuts: &[usize], order: &[usize]) -> Result<()> {
        let n = self.layers();
        if order.is_empty() {
            return Err(Error::invalid("stages", "a plan needs at least one stage"));
        }
        if cuts.len() != order.len() + 1 || cuts[0] != 0 || cuts[cuts.len() - 1] != n {
            return Err(Error::invalid(
                "cuts",
                format!("must run from 0 to {n} with one entry per stage plus one"),
            ));
        }
        if cuts.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::invalid(
                "cuts",
                "every stage needs at least one layer",
            ));
        }
        let mut seen = vec![false; self.ranks()];
        for (s, &r) in order.iter().enumerate() {
            if r >= self.ranks() || std::mem::replace(&mut seen[r], true) {
                return Err(Error::invalid(
                    format!("order[{s}]"),
                    format!("rank {r} is out of range or used twice"),
                ));
            }
        }
        Ok(())
    }
}

/// Pipeline time of `B` micro-batches over stages with times `t`: `Σt + (B−1)·max t`.
pub fn pipeline_time(times: &[f64], micro_batches: usize) -> f64 {
    let sum: f64 = times.iter().sum();
    let max = times.iter().copied().fold(0.0, f64::max);
    sum + micro_batches.saturating_sub(1) as f64 * max
}

/// One stage of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StagePlan {
    /// First layer (inclusive).
    pub first_layer: usize,
    /// Last layer (exclusive).
    pub end_layer: usize,
    /// Rank(s) that run it: one, or a tensor-parallel group (block-based).
    pub ranks: Vec<usize>,
    /// What the stage runs: `backbone`, or `head:<name>`.
    pub part: String,
    /// Seconds of compute per micro-batch.
    pub compute_s: f64,
    /// Seconds of communication per micro-batch (boundaries, tensor-parallel all-reduce).
    pub comm_s: f64,
    /// `compute_s + comm_s`.
    pub time_s: f64,
    /// Memory per rank, bytes.
    pub memory_bytes: u64,
}

/// A segmentation plan, as `dmsc-serve plan` prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The strategy that made it.
    pub strategy: String,
    /// The model's name.
    pub model: String,
    /// Backbone stage boundaries: `cuts[s]..cuts[s+1]` is stage `s`.
    pub cuts: Vec<usize>,
    /// Rank of each backbone stage (the first of its group for block-based plans).
    pub ranks: Vec<usize>,
    /// Every stage, backbone first, then heads.
    pub stages: Vec<StagePlan>,
    /// Index in `stages` of the slowest stage.
    pub bottleneck_stage: usize,
    /// Its time per micro-batch, seconds.
    pub bottleneck_s: f64,
    /// Micro-batches the pipeline time is computed for.
    pub micro_batches: usize,
    /// `Σ t + (B−1)·max t`, seconds.
    pub pipeline_time_s: f64,
    /// Why this plan (a sentence for logs).
    pub reason: String,
}

impl Plan {
    /// Build the plan of a chain segmentation (`cuts`, `order`) under `cost`.
    pub fn from_chain(
        strategy: &str,
        model: &str,
        cost: &CostModel,
        cuts: &[usize],
        order: &[usize],
        micro_batches: usize,
        reason: String,
    ) -> Result<Plan> {
        cost.check(cuts, order)?;
        let stages: Vec<StagePlan> = (0..order.len())
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
            .collect();
        Plan::from_stages(
            strategy,
            model,
            cuts.to_vec(),
            order.to_vec(),
            stages,
            micro_batches,
            reason,
        )
    }

    /// Build a plan from its stages; fails when a stage does not fit in memory.
    pub fn from_stages(
        strategy: &str,
        model: &str,
        cuts: Vec<usize>,
        ranks: Vec<usize>,
        stages: Vec<StagePlan>,
        micro_batches: usize,
        reason: String,
    ) -> Result<Plan> {
        let times: Vec<f64> = stages.iter().map(|s| s.time_s).collect();
        let (mut b, mut bt) = (0, f64::NEG_INFINITY);
        for (s, &t) in times.iter().enumerate() {
            if t > bt {
                (b, bt) = (s, t);
            }
        }
        if !bt.is_finite() {
            return Err(Error::Infeasible(format!(
                "stage {b} (layers {}..{}) does not fit in the memory of rank(s) {:?}",
                stages[b].first_layer, stages[b].end_layer, stages[b].ranks
            )));
        }
        Ok(Plan {
            strategy: strategy.into(),
            model: model.into(),
            cuts,
            ranks,
            bottleneck_stage: b,
            bottleneck_s: bt,
            micro_batches,
            pipeline_time_s: pipeline_time(&times, micro_batches),
            stages,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Layer;

    fn layer(f: u64, act: u64) -> Layer {
        Layer {
            name: "l".into(),
            fwd_flops: f,
            bwd_flops: 0,
            param_bytes: 0,
            activation_bytes: act,
            memory_bytes: 1,
        }
    }

    #[test]
    fn stage_time_is_compute_plus_boundaries() {
        let layers = vec![layer(100, 10), layer(200, 20), layer(300, 30)];
        let mut c = ClusterDesc::homogeneous(2, 100.0, 2, 10.0);
        c.ranks[1].speed = 2.0;
        let m = CostModel::for_layers(&layers, &c, c.link_matrix());
        let order = [0, 1];
        // stage 0: layers 0..2 on rank 0: 300/100 = 3, cut after layer 1 (20 B): 2*20/10 = 4.
        assert_eq!(m.stage_time(&order, 0, 0, 2), 7.0);
        // stage 1: layer 2 on rank 1: 300/200 = 1.5 + 4.
        assert_eq!(m.stage_time(&order, 1, 2, 3), 5.5);
        assert_eq!(m.bottleneck(&[0, 2, 3], &order), 7.0);
        // memory: 3 layers of 1 B on a rank of 2 B do not fit.
        assert_eq!(m.stage_time(&[0], 0, 0, 3), f64::INFINITY);
        assert_eq!(pipeline_time(&[7.0, 5.5], 4), 12.5 + 3.0 * 7.0);
    }
}
