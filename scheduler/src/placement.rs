//! Placing pipeline stages on ranks with the link matrix: which `k` ranks, in which order.
//!
//! Consecutive stages exchange activations, so the chain of ranks should follow the fastest
//! links. The `k` fastest ranks are taken (ties by index); their order maximises the slowest
//! link along the chain, then the sum of link bandwidths (exhaustively for `k ≤ 8`, greedily
//! from every start rank beyond).

use crate::cost::CostModel;

fn link(cost: &CostModel, a: usize, b: usize) -> f64 {
    // Both directions are used (activation forward, gradient back).
    let l = cost.links();
    1.0 / (1.0 / l.bandwidth[a][b] + 1.0 / l.bandwidth[b][a])
}

fn score(cost: &CostModel, order: &[usize]) -> (f64, f64) {
    let mut min = f64::INFINITY;
    let mut sum = 0.0;
    for w in order.windows(2) {
        let b = link(cost, w[0], w[1]);
        min = min.min(b);
        sum += b;
    }
    (min, sum)
}

fn better(a: (f64, f64), b: (f64, f64)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 > b.1)
}

/// The ranks of `k` stages, in pipeline order (`k` ≤ the cluster's ranks).
pub fn chain_order(cost: &CostModel, k: usize) -> Vec<usize> {
    let m = cost.ranks();
    let k = k.min(m);
    let mut chosen: Vec<usize> = (0..m).collect();
    chosen.sort_by(|&a, &b| {
        cost.rank_speed(b)
            .total_cmp(&cost.rank_speed(a))
            .then(a.cmp(&b))
    });
    chosen.truncate(k);
    chosen.sort_unstable();
    if cost.is_uniform() || k <= 2 {
        return chosen;
    }
    if k <= 8 {
        let mut best = chosen.clone();
        let mut best_score = score(cost, &best);
        permute(&mut chosen.clone(), 0, &mut |p| {
            let s = score(cost, p);
            if better(s, best_score) {
                best_score = s;
                best = p.to_vec();
            }
        });
        return best;
    }
    let mut best = chosen.clone();
    let mut best_score = score(cost, &best);
    for &start in &chosen {
        let mut path = vec![start];
        let mut left: Vec<usize> = chosen.iter().copied().filter(|&r| r != start).collect();
        while !left.is_empty() {
            let last = path[path.len() - 1];
            let (i, _) = left
                .iter()
                .enumerate()
                .map(|(i, &r)| (i, link(cost, last, r)))
                .fold((0, f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
            path.push(left.swap_remove(i));
        }
        let s = score(cost, &path);
        if better(s, best_score) {
            best_score = s;
            best = path;
        }
    }
    best
}

fn permute(v: &mut Vec<usize>, i: usize, f: &mut impl FnMut(&[usize])) {
    if i == v.len() {
        f(v);
        return;
    }
    for j in i..v.len() {
        v.swap(i, j);
        permute(v, i + 1, f);
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterDesc, LinkMatrix};
    use crate::model::Layer;

    #[test]
    fn follows_the_fast_links() {
        // Ranks 0..4 where the fast ring is 0-2-1-3.
        let mut c = ClusterDesc::homogeneous(4, 1e9, 1 << 30, 1e9);
        let mut l = LinkMatrix::uniform(4, 1e6, 0.0);
        for (a, b) in [(0, 2), (2, 1), (1, 3)] {
            l.bandwidth[a][b] = 1e10;
            l.bandwidth[b][a] = 1e10;
        }
        c.links = Some(l);
        let layer = Layer {
            name: "l".into(),
            fwd_flops: 1,
            bwd_flops: 1,
            param_bytes: 0,
            activation_bytes: 1,
            memory_bytes: 0,
        };
        let cost = CostModel::for_layers(&vec![layer; 8], &c, c.link_matrix());
        let o = chain_order(&cost, 4);
        assert!(o == vec![0, 2, 1, 3] || o == vec![3, 1, 2, 0], "{o:?}");
    }
}
