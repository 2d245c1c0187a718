//! Bisection on the bottleneck: an exact cross-check of [`super::dp`] by a different route.
//!
//! `feasible(T)` asks whether the chain can be cut into exactly `k` stages on the rank order
//! with every stage time at most `T` (a reachability sweep, O(k·n²), which needs no
//! monotonicity of stage times in their bounds — boundary activations make them
//! non-monotone). The search runs over the bit patterns of non-negative `f64`, whose order is
//! the order of the values, and keeps as upper bound the actual bottleneck of each feasible
//! witness. It stops when the bounds are adjacent floats, so the answer is exactly the optimum.

use crate::cost::CostModel;

/// Cuts of `k = order.len()` stages with every stage time ≤ `limit`, and their bottleneck.
pub fn feasible(cost: &CostModel, order: &[usize], limit: f64) -> Option<(Vec<usize>, f64)> {
    let n = cost.layers();
    let k = order.len();
    if k == 0 || k > n {
        return None;
    }
    const NONE: u32 = u32::MAX;
    // from[s][j]: start of stage s when stages 0..=s can cover 0..j within the limit.
    let mut from = vec![vec![NONE; n + 1]; k];
    for j in 1..=n - (k - 1) {
        if cost.stage_time(order, 0, 0, j) <= limit {
            from[0][j] = 0;
        }
    }
    for s in 1..k {
        let j_lo = if s + 1 == k { n } else { s + 1 };
        for j in j_lo..=n - (k - 1 - s) {
            for i in s..j {
                if from[s - 1][i] != NONE && cost.stage_time(order, s, i, j) <= limit {
                    from[s][j] = i as u32;
                    break;
                }
            }
        }
    }
    if from[k - 1][n] == NONE {
        return None;
    }
    let mut cuts = vec![0; k + 1];
    cuts[k] = n;
    for s in (1..k).rev() {
        cuts[s] = from[s][cuts[s + 1]] as usize;
    }
    let b = cost.bottleneck(&cuts, order);
    Some((cuts, b))
}

/// The optimal cuts and bottleneck for stages on `order`, by bisection.
pub fn solve(cost: &CostModel, order: &[usize]) -> Option<(Vec<usize>, f64)> {
    let mut best = feasible(cost, order, f64::MAX)?;
    if let Some(w) = feasible(cost, order, 0.0) {
        return Some(w);
    }
    let mut lo = 0f64.to_bits(); // infeasible
    let mut hi = best.1.to_bits(); // feasible: a witness's bottleneck
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match feasible(cost, order, f64::from_bits(mid)) {
            Some(w) => {
                hi = w.1.to_bits();
                best = w;
            }
            None => lo = mid,
        }
    }
    Some(best)
}
