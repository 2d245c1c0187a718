//! Tabu search over cuts and rank orders, the heuristic the draft names.
//!
//! A solution is the cut vector and the order of ranks. Each iteration evaluates every
//! neighbour and moves to the best one that is not tabu, even when it is worse:
//! - **shift a cut**: move cut `b` to any position between its neighbours (changes stages
//!   `b-1` and `b`);
//! - **swap ranks**: exchange the ranks of two stages, or a stage's rank with an unused one
//!   (changes those stages and their neighbours' boundaries). Skipped when all ranks and links
//!   are identical.
//!
//! After a move, returning cut `b` to its old position, or swapping the same two ranks again,
//! is tabu for `tenure` iterations, unless the move beats the best solution so far
//! (aspiration). Solutions compare by bottleneck, then by the sum of squared stage times,
//! which rewards shrinking the stages just below the bottleneck and leads the search across
//! plateaus. It stops after `patience` iterations without improvement or `max_iters` in all.

use crate::cost::CostModel;
use std::cmp::Ordering;

/// Search settings.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Iterations at most.
    pub max_iters: usize,
    /// Stop after this many iterations without a new best.
    pub patience: usize,
    /// Iterations a reversed move stays tabu (0: derive from the stage count).
    pub tenure: usize,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            max_iters: 2000,
            patience: 200,
            tenure: 0,
        }
    }
}

/// The outcome of a search.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Stage boundaries.
    pub cuts: Vec<usize>,
    /// Rank of each stage.
    pub order: Vec<usize>,
    /// Bottleneck stage time.
    pub bottleneck: f64,
    /// Iterations run.
    pub iterations: usize,
}

/// Squares of infinite times would poison the sums; an infeasible stage counts as this.
const PENALTY: f64 = 1e150;

fn pen(t: f64) -> f64 {
    if t.is_finite() {
        t
    } else {
        PENALTY
    }
}

#[derive(Clone, Copy, PartialEq)]
struct Key {
    max: f64,
    sumsq: f64,
}

impl Key {
    fn of(times: &[f64]) -> Key {
        Key {
            max: times.iter().copied().fold(0.0, f64::max),
            sumsq: times.iter().map(|&t| pen(t) * pen(t)).sum(),
        }
    }

    fn cmp(&self, o: &Key) -> Ordering {
        self.max
            .total_cmp(&o.max)
            .then(self.sumsq.total_cmp(&o.sumsq))
    }
}

enum Move {
    Cut { b: usize, to: usize },
    Swap { a: usize, b: usize },
    Replace { a: usize, rank: usize },
}

/// Balanced starting cuts: each stage gets compute in proportion to its rank's speed.
pub fn balanced_cuts(cost: &CostModel, order: &[usize]) -> Vec<usize> {
    let n = cost.layers();
    let k = order.len();
    let total = cost.flops(0, n) as f64;
    let speed_sum: f64 = order.iter().map(|&r| cost.rank_speed(r)).sum();
    let mut cuts = vec![0; k + 1];
    cuts[k] = n;
    let mut acc = 0.0;
    let mut j = 0;
    for s in 1..k {
        acc += cost.rank_speed(order[s - 1]) / speed_sum;
        let target = total * acc;
        while j < n && (cost.flops(0, j) as f64) < target {
            j += 1;
        }
        // Between the previous cut + 1 and what leaves a layer for each later stage; pick the
        // side of the target that is closer.
        let mut c = j;
        if c > 0 && target - cost.flops(0, c - 1) as f64 <= cost.flops(0, c) as f64 - target {
            c -= 1;
        }
        cuts[s] = c.clamp(cuts[s - 1] + 1, n - (k - s));
    }
    cuts
}

/// Search from balanced cuts on `start` (the ranks of the `k` stages, in order).
pub fn solve(cost: &CostModel, start: &[usize], params: Params) -> Option<Outcome> {
    let n = cost.layers();
    let k = start.len();
    if k == 0 || k > n {
        return None;
    }
    let m = cost.ranks();
    let mut order = start.to_vec();
    let mut cuts = balanced_cuts(cost, &order);
    let mut times = cost.stage_times(&cuts, &order);
    let mut key = Key::of(&times);
    let (mut best_cuts, mut best_order, mut best_key) = (cuts.clone(), order.clone(), key);
    let tenure = if params.tenure > 0 {
        params.tenure
    } else {
        3 + k / 2
    };
    // Expiry iteration of each tabu attribute.
    let mut tabu_cut = vec![vec![0usize; n + 1]; k + 1];
    let mut tabu_swap = vec![vec![0usize; m]; m];
    let swaps = !cost.is_uniform();
    let mut in_use = vec![false; m];
    let mut last_improve = 0;
    let mut iter = 0;
    let mut pm = vec![0.0; k];
    let mut sm = vec![0.0; k];
    let mut scratch = vec![0.0; k];
    while iter < params.max_iters && iter - last_improve <= params.patience {
        iter += 1;
        let mut acc = 0.0f64;
        for s in 0..k {
            acc = acc.max(times[s]);
            pm[s] = acc;
        }
        acc = 0.0;
        for s in (0..k).rev() {
            acc = acc.max(times[s]);
            sm[s] = acc;
        }
        let sumsq = key.sumsq;
        let mut chosen: Option<(Move, Key)> = None;
        let consider = |mv: Move, cand: Key, is_tabu: bool, chosen: &mut Option<(Move, Key)>| {
            if is_tabu && cand.cmp(&best_key) != Ordering::Less {
                return;
            }
            if chosen.as_ref().is_none_or_less(&cand) {
                *chosen = Some((mv, cand));
            }
        };
        // Shift a cut.
        for b in 1..k {
            let others = {
                let left = if b >= 2 { pm[b - 2] } else { 0.0 };
                let right = if b + 1 < k { sm[b + 1] } else { 0.0 };
                left.max(right)
            };
            let base = sumsq - pen(times[b - 1]).powi(2) - pen(times[b]).powi(2);
            for p in cuts[b - 1] + 1..cuts[b + 1] {
                if p == cuts[b] {
                    continue;
                }
                let t1 = cost.stage_time(&order, b - 1, cuts[b - 1], p);
                let t2 = cost.stage_time(&order, b, p, cuts[b + 1]);
                let cand = Key {
                    max: others.max(t1).max(t2),
                    sumsq: base + pen(t1).powi(2) + pen(t2).powi(2),
                };
                consider(Move::Cut { b, to: p }, cand, tabu_cut[b][p] > iter, &mut chosen);
            }
        }
        if swaps {
            in_use.iter_mut().for_each(|u| *u = false);
            order.iter().for_each(|&r| in_use[r] = true);
            let mut eval = |order: &[usize], touched: &[usize]| {
                scratch.copy_from_slice(&times);
                for &s in touched {
                    if s < k {
                        scratch[s] = cost.stage_time(order, s, cuts[s], cuts[s + 1]);
                    }
                }
                Key::of(&scratch)
            };
            for a in 0..k {
                for b in a + 1..k {
                    order.swap(a, b);
                    let touched = [a.wrapping_sub(1), a, a + 1, b - 1, b, b + 1];
                    let cand = eval(&order, &touched);
                    order.swap(a, b);
                    let (ra, rb) = (order[a].min(order[b]), order[a].max(order[b]));
                    consider(Move::Swap { a, b }, cand, tabu_swap[ra][rb] > iter, &mut chosen);
                }
                for r in 0..m {
                    if in_use[r] {
                        continue;
                    }
                    let old = std::mem::replace(&mut order[a], r);
                    let touched = [a.wrapping_sub(1), a, a + 1];
                    let cand = eval(&order, &touched);
                    order[a] = old;
                    let (ra, rb) = (old.min(r), old.max(r));
                    consider(Move::Replace { a, rank: r }, cand, tabu_swap[ra][rb] > iter, &mut chosen);
                }
            }
        }
        let Some((mv, _)) = chosen else { break };
        match mv {
            Move::Cut { b, to } => {
                tabu_cut[b][cuts[b]] = iter + tenure;
                cuts[b] = to;
            }
            Move::Swap { a, b } => {
                let (ra, rb) = (order[a].min(order[b]), order[a].max(order[b]));
                tabu_swap[ra][rb] = iter + tenure;
                order.swap(a, b);
            }
            Move::Replace { a, rank } => {
                let (ra, rb) = (order[a].min(rank), order[a].max(rank));
                tabu_swap[ra][rb] = iter + tenure;
                order[a] = rank;
            }
        }
        times = cost.stage_times(&cuts, &order);
        key = Key::of(&times);
        if key.cmp(&best_key) == Ordering::Less {
            (best_cuts, best_order, best_key) = (cuts.clone(), order.clone(), key);
            last_improve = iter;
        }
    }
    if !best_key.max.is_finite() {
        return None;
    }
    Some(Outcome {
        bottleneck: cost.bottleneck(&best_cuts, &best_order),
        cuts: best_cuts,
        order: best_order,
        iterations: iter,
    })
}

trait NoneOrLess {
    fn is_none_or_less(&self, cand: &Key) -> bool;
}

impl NoneOrLess for Option<&(Move, Key)> {
    fn is_none_or_less(&self, cand: &Key) -> bool {
        match self {
            None => true,
            Some((_, k)) => cand.cmp(k) == Ordering::Less,
        }
    }
}
