//! Tabu search over cuts and rank orders, the heuristic the draft names.
//!
//! A solution is the cut vector and the order of ranks. Each iteration evaluates every
//! neighbour and moves to the best one that is not tabu, even when it is worse:
//! - **shift a cut**: move cut `b` to any position between its neighbours (changes stages
//!   `b-1` and `b`); a cut just moved stays put for `(k−1)/3` iterations;
//! - **shift a run**: move cuts `b..=e` together by one layer (a cascade in one step);
//! - **swap ranks**: exchange the ranks of two stages, or a stage's rank with an unused one
//!   (changes those stages and their neighbours' boundaries). Skipped when all ranks and links
//!   are identical.
//!
//! On clusters whose ranks or links differ, a tabu search over rank orders alone runs first,
//! each order valued by a short search over its cuts. The search over cuts starts from the
//! better of a speed-proportional split and a greedy packing under a bisected limit.
//!
//! After a move, returning cut `b` to its old position, reversing a run shift, or swapping
//! the same two ranks again, is tabu for `tenure` iterations, unless the move beats the best solution so far
//! (aspiration). Solutions compare by bottleneck, then by `Σ (t/t₀)^p` over the stages (p = 8 by default),
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
    /// Exponent of the tie-breaking sum `Σ (t/t₀)^p` (t₀: the starting bottleneck); larger
    /// values weigh the slowest stages more, approaching a lexicographic min-max.
    pub power: i32,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            max_iters: 2000,
            patience: 200,
            tenure: 0,
            power: 8,
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
const PENALTY: f64 = 1e200;

#[derive(Clone, Copy, PartialEq)]
struct Key {
    max: f64,
    sumsq: f64,
}

/// The weight of one stage time in the tie-breaking sum.
#[derive(Clone, Copy)]
struct Weigh {
    inv_scale: f64,
    power: i32,
}

impl Weigh {
    #[inline]
    fn w(&self, t: f64) -> f64 {
        if t.is_finite() {
            (t * self.inv_scale).powi(self.power)
        } else {
            PENALTY
        }
    }

    fn key(&self, times: &[f64]) -> Key {
        Key {
            max: times.iter().copied().fold(0.0, f64::max),
            sumsq: times.iter().map(|&t| self.w(t)).sum(),
        }
    }
}

impl Key {
    fn cmp(&self, o: &Key) -> Ordering {
        self.max
            .total_cmp(&o.max)
            .then(self.sumsq.total_cmp(&o.sumsq))
    }
}

enum Move {
    Cut { b: usize, to: usize },
    Run { b: usize, e: usize, up: bool },
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

/// Greedy packing: each stage takes layers as far as it stays within `limit`; exactly `k`
/// stages (stages with a single layer split off the longest ones when fewer are needed).
fn pack(cost: &CostModel, order: &[usize], limit: f64) -> Option<Vec<usize>> {
    let n = cost.layers();
    let k = order.len();
    let mut cuts = vec![0];
    let mut i = 0;
    for s in 0..k {
        if i == n {
            break;
        }
        if s + 1 == k {
            if cost.stage_time(order, s, i, n) > limit {
                return None;
            }
            i = n;
            cuts.push(n);
            break;
        }
        // Leave a layer for each later stage; the furthest end within the limit.
        let mut end = None;
        for j in i + 1..=n - (k - 1 - s) {
            if cost.compute_time(i, j, order[s]) > limit {
                break;
            }
            if cost.stage_time(order, s, i, j) <= limit {
                end = Some(j);
            }
        }
        i = end?;
        cuts.push(i);
    }
    if i != n {
        return None;
    }
    // Fewer stages than ranks: split the stages with the most layers.
    while cuts.len() < k + 1 {
        let s = (0..cuts.len() - 1).max_by_key(|&s| cuts[s + 1] - cuts[s])?;
        if cuts[s + 1] - cuts[s] < 2 {
            return None;
        }
        cuts.insert(s + 1, (cuts[s] + cuts[s + 1]) / 2);
    }
    Some(cuts)
}

/// A starting point by greedy packing under a bisected limit (the classic linear-partition
/// probe; not exact here, since boundary costs make stage times non-monotone).
pub fn packed_cuts(cost: &CostModel, order: &[usize]) -> Option<Vec<usize>> {
    let n = cost.layers();
    let mut hi = order
        .iter()
        .map(|&r| cost.compute_time(0, n, r))
        .fold(0.0, f64::max)
        * 2.0
        + 1.0;
    let mut best = None;
    let mut lo = 0.0;
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        match pack(cost, order, mid) {
            Some(c) => {
                hi = mid;
                best = Some(c);
            }
            None => lo = mid,
        }
    }
    if best.is_none() {
        best = pack(cost, order, f64::MAX);
    }
    best
}

/// Value of `order`: the bottleneck a short search over its cuts reaches (`+∞`: none fits).
fn order_value(cost: &CostModel, order: &[usize]) -> f64 {
    let quick = Params {
        max_iters: 60,
        patience: 12,
        ..Params::default()
    };
    search(cost, order, quick, false).map_or(f64::INFINITY, |o| o.bottleneck)
}

/// Tabu search over rank orders alone: moves swap two stages' ranks or give a stage an
/// unused rank, each order valued by a short search over its cuts; the pair of ranks just
/// exchanged is tabu for `tenure` iterations unless the move beats the best order
/// (aspiration).
fn order_search(cost: &CostModel, start: &[usize], params: Params) -> Vec<usize> {
    let k = start.len();
    let m = cost.ranks();
    let tenure = if params.tenure > 0 {
        params.tenure
    } else {
        1 + k / 2
    };
    let patience = (params.patience / 8).max(8);
    let mut tabu = vec![vec![0usize; m]; m];
    let mut order = start.to_vec();
    let mut best = order.clone();
    let mut best_v = order_value(cost, &order);
    let (mut iter, mut last) = (0, 0);
    while iter < params.max_iters / 8 && iter - last <= patience {
        iter += 1;
        // (stage, new rank, value)
        let mut chosen: Option<(usize, usize, f64)> = None;
        for a in 0..k {
            for r in 0..m {
                if r == order[a] {
                    continue;
                }
                let mut cand = order.clone();
                match order.iter().position(|&x| x == r) {
                    Some(b) if b < a => continue, // each swap once
                    Some(b) => cand.swap(a, b),
                    None => cand[a] = r,
                }
                let v = order_value(cost, &cand);
                let (lo, hi) = (r.min(order[a]), r.max(order[a]));
                if tabu[lo][hi] > iter && v >= best_v {
                    continue;
                }
                if chosen.is_none_or(|c| v < c.2) {
                    chosen = Some((a, r, v));
                }
            }
        }
        let Some((a, r, v)) = chosen else { break };
        let (lo, hi) = (r.min(order[a]), r.max(order[a]));
        tabu[lo][hi] = iter + tenure;
        match order.iter().position(|&x| x == r) {
            Some(b) => order.swap(a, b),
            None => order[a] = r,
        }
        if v < best_v {
            (best, best_v, last) = (order.clone(), v, iter);
        }
    }
    best
}

/// Search on `start` (the ranks of the `k` stages, in order). On a cluster whose ranks or
/// links differ, a tabu search over rank orders runs first. Then the search over cuts (and
/// rank swaps) runs from the better of balanced and packed cuts.
pub fn solve(cost: &CostModel, start: &[usize], params: Params) -> Option<Outcome> {
    if start.is_empty() || start.len() > cost.layers() {
        return None;
    }
    if cost.is_uniform() {
        return search(cost, start, params, false);
    }
    let order = order_search(cost, start, params);
    search(cost, &order, params, true)
}

fn search(cost: &CostModel, start: &[usize], params: Params, swaps: bool) -> Option<Outcome> {
    let n = cost.layers();
    let k = start.len();
    if k == 0 || k > n {
        return None;
    }
    let m = cost.ranks();
    let mut order = start.to_vec();
    let mut cuts = balanced_cuts(cost, &order);
    if let Some(p) = packed_cuts(cost, &order) {
        if cost.bottleneck(&p, &order) < cost.bottleneck(&cuts, &order) {
            cuts = p;
        }
    }
    let mut times = cost.stage_times(&cuts, &order);
    let finite_max = times
        .iter()
        .copied()
        .filter(|t| t.is_finite())
        .fold(0.0, f64::max);
    let weigh = Weigh {
        inv_scale: if finite_max > 0.0 {
            1.0 / finite_max
        } else {
            1.0
        },
        power: params.power.clamp(1, 64),
    };
    let mut key = weigh.key(&times);
    let (mut best_cuts, mut best_order, mut best_key) = (cuts.clone(), order.clone(), key);
    let tenure = if params.tenure > 0 {
        params.tenure
    } else {
        3 + k / 2
    };
    // Expiry iteration of each tabu attribute.
    let mut tabu_cut = vec![vec![0usize; n + 1]; k + 1];
    // A cut just moved stays put for a while, so that its neighbours move next.
    let mut moved = vec![0usize; k + 1];
    // Expiry of shifting the run b..=e down ([0]) or up ([1]).
    let mut tabu_run = vec![vec![[0usize; 2]; k + 1]; k + 1];
    let cut_tenure = (k - 1) / 3;
    let mut tabu_swap = vec![vec![0usize; m]; m];
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
            if chosen
                .as_ref()
                .is_none_or(|c| cand.cmp(&c.1) == Ordering::Less)
            {
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
            let base = sumsq - weigh.w(times[b - 1]) - weigh.w(times[b]);
            for p in cuts[b - 1] + 1..cuts[b + 1] {
                if p == cuts[b] {
                    continue;
                }
                let t1 = cost.stage_time(&order, b - 1, cuts[b - 1], p);
                let t2 = cost.stage_time(&order, b, p, cuts[b + 1]);
                let cand = Key {
                    max: others.max(t1).max(t2),
                    sumsq: base + weigh.w(t1) + weigh.w(t2),
                };
                let is_tabu = tabu_cut[b][p] > iter || moved[b] > iter;
                consider(Move::Cut { b, to: p }, cand, is_tabu, &mut chosen);
            }
        }
        // Shift a run of cuts b..=e by one layer: moves one layer's worth of work from one
        // end of the run to the other in a single step (a cascade of single shifts).
        for b in 1..k {
            for e in b + 1..k {
                for up in [false, true] {
                    let ok = if up {
                        cuts[e] + 1 < cuts[e + 1]
                    } else {
                        cuts[b] - 1 > cuts[b - 1]
                    };
                    if !ok {
                        continue;
                    }
                    let shifted = |c: usize| if up { c + 1 } else { c - 1 };
                    let left = if b >= 2 { pm[b - 2] } else { 0.0 };
                    let right = if e + 1 < k { sm[e + 1] } else { 0.0 };
                    let (mut mx, mut sum) = (left.max(right), sumsq);
                    for st in b - 1..=e {
                        let i = if st >= b { shifted(cuts[st]) } else { cuts[st] };
                        let j = if st < e {
                            shifted(cuts[st + 1])
                        } else {
                            cuts[st + 1]
                        };
                        let t = cost.stage_time(&order, st, i, j);
                        mx = mx.max(t);
                        sum += weigh.w(t) - weigh.w(times[st]);
                    }
                    let cand = Key {
                        max: mx,
                        sumsq: sum,
                    };
                    consider(
                        Move::Run { b, e, up },
                        cand,
                        tabu_run[b][e][usize::from(!up)] > iter,
                        &mut chosen,
                    );
                }
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
                weigh.key(&scratch)
            };
            for a in 0..k {
                for b in a + 1..k {
                    order.swap(a, b);
                    let touched = [a.wrapping_sub(1), a, a + 1, b - 1, b, b + 1];
                    let cand = eval(&order, &touched);
                    order.swap(a, b);
                    let (ra, rb) = (order[a].min(order[b]), order[a].max(order[b]));
                    consider(
                        Move::Swap { a, b },
                        cand,
                        tabu_swap[ra][rb] > iter,
                        &mut chosen,
                    );
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
                    consider(
                        Move::Replace { a, rank: r },
                        cand,
                        tabu_swap[ra][rb] > iter,
                        &mut chosen,
                    );
                }
            }
        }
        let Some((mv, _)) = chosen else { break };
        match mv {
            Move::Cut { b, to } => {
                tabu_cut[b][cuts[b]] = iter + tenure;
                moved[b] = iter + cut_tenure;
                cuts[b] = to;
            }
            Move::Run { b, e, up } => {
                tabu_run[b][e][usize::from(up)] = iter + tenure;
                for c in &mut cuts[b..=e] {
                    *c = if up { *c + 1 } else { *c - 1 };
                }
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
        key = weigh.key(&times);
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
