//! Segmentation strategies behind one trait and one cost model ([`crate::cost`]).
//!
//! | strategy | what |
//! | --- | --- |
//! | [`Even`] | the same number of layers per stage (the baseline) |
//! | [`Dp`] | exact dynamic programming over cuts ([`dp`]) |
//! | [`Bisect`] | bisection on the bottleneck, an exact cross-check ([`bisect`]) |
//! | [`Tabu`] | tabu search over cuts and rank orders ([`tabu`]) |
//! | [`Block`] | the heaviest layer split over a tensor-parallel group ([`block`]) |
//! | [`Business`] | a shared backbone with per-task heads ([`business`]) |
//!
//! Even, DP and bisection cut the chain on the rank order [`crate::placement`] derives from the
//! link matrix; tabu starts there and also moves ranks.

pub mod bisect;
pub mod block;
pub mod business;
pub mod dp;
pub mod even;
pub mod tabu;

use crate::cluster::{ClusterDesc, LinkMatrix};
use crate::cost::{CostModel, Plan};
use crate::error::{Error, Result};
use crate::model::ModelDesc;
use crate::placement;

/// What to segment, onto what.
#[derive(Clone, Debug)]
pub struct Problem<'a> {
    /// The model.
    pub model: &'a ModelDesc,
    /// The cluster.
    pub cluster: &'a ClusterDesc,
    /// Links between the cluster's ranks (measured or described).
    pub links: LinkMatrix,
    /// Number of pipeline stages (ranks used).
    pub stages: usize,
    /// Micro-batches per step, for the pipeline time.
    pub micro_batches: usize,
}

impl<'a> Problem<'a> {
    /// As many stages as ranks (at most one per layer), the cluster's links, 8 micro-batches.
    pub fn new(model: &'a ModelDesc, cluster: &'a ClusterDesc) -> Problem<'a> {
        Problem {
            model,
            cluster,
            links: cluster.link_matrix(),
            stages: cluster.ranks.len().min(model.layers.len()),
            micro_batches: 8,
        }
    }

    /// Validate the problem; the error names the bad field.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.cluster.validate()?;
        self.links.validate(self.cluster.ranks.len(), "links")?;
        if self.stages == 0 || self.stages > self.cluster.ranks.len() {
            return Err(Error::invalid(
                "stages",
                format!(
                    "{} stages on {} ranks",
                    self.stages,
                    self.cluster.ranks.len()
                ),
            ));
        }
        if self.micro_batches == 0 {
            return Err(Error::invalid("micro_batches", "must be at least 1"));
        }
        Ok(())
    }

    /// The cost model of the backbone.
    pub fn cost(&self) -> CostModel {
        CostModel::for_layers(&self.model.layers, self.cluster, self.links.clone())
    }

    fn chain_stages(&self) -> Result<usize> {
        if self.stages > self.model.layers.len() {
            return Err(Error::invalid(
                "stages",
                format!(
                    "{} stages for {} layers",
                    self.stages,
                    self.model.layers.len()
                ),
            ));
        }
        Ok(self.stages)
    }
}

/// A way to cut a model into pipeline stages and place them.
pub trait Strategy {
    /// The name `dmsc-serve plan --strategy` takes.
    fn name(&self) -> &'static str;
    /// Make a plan.
    fn plan(&self, p: &Problem) -> Result<Plan>;
}

fn infeasible(p: &Problem, k: usize) -> Error {
    Error::Infeasible(format!(
        "{} layers of `{}` do not fit in {k} stages within the ranks' memory",
        p.model.layers.len(),
        p.model.name
    ))
}

/// Equal layer counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Even;

impl Strategy for Even {
    fn name(&self) -> &'static str {
        "even"
    }
    fn plan(&self, p: &Problem) -> Result<Plan> {
        p.validate()?;
        let k = p.chain_stages()?;
        let cost = p.cost();
        let order = placement::chain_order(&cost, k);
        let cuts = even::cuts(cost.layers(), k).ok_or_else(|| infeasible(p, k))?;
        Plan::from_chain(
            self.name(),
            &p.model.name,
            &cost,
            &cuts,
            &order,
            p.micro_batches,
            format!(
                "{} layers per stage, ranks in link order",
                cost.layers() / k
            ),
        )
    }
}

/// Exact dynamic programming.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dp;

impl Strategy for Dp {
    fn name(&self) -> &'static str {
        "dp"
    }
    fn plan(&self, p: &Problem) -> Result<Plan> {
        p.validate()?;
        let k = p.chain_stages()?;
        let cost = p.cost();
        let order = placement::chain_order(&cost, k);
        let (cuts, b) = dp::solve(&cost, &order).ok_or_else(|| infeasible(p, k))?;
        Plan::from_chain(
            self.name(),
            &p.model.name,
            &cost,
            &cuts,
            &order,
            p.micro_batches,
            format!("minimum bottleneck {b:.6e} s over all cuts (exact DP), ranks in link order"),
        )
    }
}

/// Bisection on the bottleneck.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bisect;

impl Strategy for Bisect {
    fn name(&self) -> &'static str {
        "bisect"
    }
    fn plan(&self, p: &Problem) -> Result<Plan> {
        p.validate()?;
        let k = p.chain_stages()?;
        let cost = p.cost();
        let order = placement::chain_order(&cost, k);
        let (cuts, b) = bisect::solve(&cost, &order).ok_or_else(|| infeasible(p, k))?;
        Plan::from_chain(
            self.name(),
            &p.model.name,
            &cost,
            &cuts,
            &order,
            p.micro_batches,
            format!("minimum bottleneck {b:.6e} s by bisection, ranks in link order"),
        )
    }
}

/// Tabu search.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tabu(pub tabu::Params);

impl Strategy for Tabu {
    fn name(&self) -> &'static str {
        "tabu"
    }
    fn plan(&self, p: &Problem) -> Result<Plan> {
        p.validate()?;
        let k = p.chain_stages()?;
        let cost = p.cost();
        let start = placement::chain_order(&cost, k);
        let o = tabu::solve(&cost, &start, self.0).ok_or_else(|| infeasible(p, k))?;
        Plan::from_chain(
            self.name(),
            &p.model.name,
            &cost,
            &o.cuts,
            &o.order,
            p.micro_batches,
            format!(
                "tabu search: bottleneck {:.6e} s after {} iterations",
                o.bottleneck, o.iterations
            ),
        )
    }
}

/// Tensor split of the heaviest layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Block;

impl Strategy for Block {
    fn name(&self) -> &'static str {
        "block"
    }
    fn plan(&self, p: &Problem) -> Result<Plan> {
        p.validate()?;
        block::plan(p.model, p.cluster, &p.cost(), p.stages, p.micro_batches)
    }
}

/// Shared backbone with task heads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Business;

impl Strategy for Business {
    fn name(&self) -> &'static str {
        "business"
    }
    fn plan(&self, p: &Problem) -> Result<Plan> {
        p.validate()?;
        business::plan(p.model, p.cluster, &p.cost(), p.stages, p.micro_batches)
    }
}

/// Names [`by_name`] accepts.
pub const NAMES: [&str; 6] = ["even", "dp", "bisect", "tabu", "block", "business"];

/// The strategy called `name`.
pub fn by_name(name: &str) -> Result<Box<dyn Strategy>> {
    Ok(match name {
        "even" => Box::new(Even),
        "dp" => Box::new(Dp),
        "bisect" => Box::new(Bisect),
        "tabu" => Box::new(Tabu::default()),
        "block" => Box::new(Block),
        "business" => Box::new(Business),
        _ => {
            return Err(Error::invalid(
                "strategy",
                format!("`{name}` is not one of {}", NAMES.join(", ")),
            ))
        }
    })
}
