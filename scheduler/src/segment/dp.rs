//! Layer-based exact dynamic programming: the minimum bottleneck over every way to cut the
//! chain into `k` contiguous stages on a fixed rank order.
//!
//! `best[s][j]` is the smallest bottleneck of stages `0..=s` covering layers `0..j`:
//! `best[s][j] = min_i max(best[s-1][i], t(s, i, j))`. O(k·n²) stage evaluations.

use crate::cost::CostModel;

/// Optimal cuts (`k+1` boundaries) and their bottleneck for stages on `order`; `None` when no
/// cut fits in memory or `order` has more stages than there are layers.
pub fn solve(cost: &CostModel, order: &[usize]) -> Option<(Vec<usize>, f64)> {
    let n = cost.layers();
    let k = order.len();
    if k == 0 || k > n {
        return None;
    }
    let inf = f64::INFINITY;
    // arg[s][j]: start of stage s in the best solution ending stage s at j.
    let mut arg = vec![vec![0u32; n + 1]; k];
    let mut prev = vec![inf; n + 1];
    for (j, p) in prev.iter_mut().enumerate().take(n - (k - 1) + 1).skip(1) {
        *p = cost.stage_time(order, 0, 0, j);
    }
    let mut cur = vec![inf; n + 1];
    for s in 1..k {
        cur.iter_mut().for_each(|c| *c = inf);
        // Stage s ends at j in s+1..=n-(k-1-s); the last stage ends at n.
        let j_lo = if s + 1 == k { n } else { s + 1 };
        let j_hi = n - (k - 1 - s);
        for j in j_lo..=j_hi {
            let (mut best, mut at) = (inf, s);
            for i in s..j {
                let p = prev[i];
                if p >= best {
                    continue;
                }
                let v = p.max(cost.stage_time(order, s, i, j));
                if v < best {
                    (best, at) = (v, i);
                }
            }
            cur[j] = best;
            arg[s][j] = at as u32;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let b = prev[n];
    if !b.is_finite() {
        return None;
    }
    let mut cuts = vec![0; k + 1];
    cuts[k] = n;
    for s in (1..k).rev() {
        cuts[s] = arg[s][cuts[s + 1]] as usize;
    }
    Some((cuts, b))
}

/// The optimum over every order of `k` of the cluster's ranks (brute force; for checking
/// heuristics on small clusters). Returns cuts, order and bottleneck.
pub fn solve_all_orders(cost: &CostModel, k: usize) -> Option<(Vec<usize>, Vec<usize>, f64)> {
    let m = cost.ranks();
    if k == 0 || k > m {
        return None;
    }
    let mut best: Option<(Vec<usize>, Vec<usize>, f64)> = None;
    let mut order = Vec::with_capacity(k);
    let mut used = vec![false; m];
    fn rec(
        cost: &CostModel,
        k: usize,
        order: &mut Vec<usize>,
        used: &mut [bool],
        best: &mut Option<(Vec<usize>, Vec<usize>, f64)>,
    ) {
        if order.len() == k {
            if let Some((cuts, b)) = solve(cost, order) {
                let better = match best {
                    Some(x) => b < x.2,
                    None => true,
                };
                if better {
                    *best = Some((cuts, order.clone(), b));
                }
            }
            return;
        }
        for r in 0..used.len() {
            if !used[r] {
                used[r] = true;
                order.push(r);
                rec(cost, k, order, used, best);
                order.pop();
                used[r] = false;
            }
        }
    }
    rec(cost, k, &mut order, &mut used, &mut best);
    best
}
