//! Acceptance tests of the segmentation strategies on random chain models.
//!
//! - 1,000 chains (16–256 layers, 2–16 stages, five cost spreads): DP and bisection find the
//!   bit-identical bottleneck; tabu is within 1% of it at p99 and exact at the median; the
//!   even split's ratio is reported.
//! - Heterogeneous ranks (2–8, random speeds and links): tabu within 2% at p95 of the optimum
//!   over every rank order.

#[path = "support/rng.rs"]
mod rng;

use dmsc_scheduler::cluster::{ClusterDesc, LinkMatrix};
use dmsc_scheduler::cost::CostModel;
use dmsc_scheduler::model::Layer;
use dmsc_scheduler::placement;
use dmsc_scheduler::segment::{bisect, dp, even, tabu};
use rng::Rng;

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// A random chain of `n` layers with cost spread `spread`.
fn chain(rng: &mut Rng, n: usize, spread: u64) -> Vec<Layer> {
    (0..n)
        .map(|i| {
            let f = match spread {
                0 => rng.range(1_000, 100_000), // uniform
                1 => 1u64 << rng.range(8, 24),  // heavy tail (log-uniform)
                2 => {
                    if rng.range(0, 15) == 0 {
                        500_000
                    } else {
                        10_000
                    }
                } // spikes
                3 => 1_000 + 1_000 * i as u64,  // ramp
                _ => 50_000 + rng.range(0, 100), // nearly equal
            };
            Layer {
                name: format!("l{i}"),
                fwd_flops: f,
                bwd_flops: 2 * f,
                param_bytes: rng.range(0, 1000),
                activation_bytes: rng.range(0, 40_000),
                memory_bytes: rng.range(1, 1000),
            }
        })
        .collect()
}

#[test]
fn dp_bisect_tabu_even_on_1000_random_chains() {
    let mut rng = Rng::new(15);
    let (mut tabu_gap, mut even_ratio) = (Vec::new(), Vec::new());
    let mut memory_limited = 0;
    for case in 0..1000 {
        let n = rng.range(16, 256) as usize;
        let k = rng.range(2, 16) as usize;
        let spread = case % 5;
        let layers = chain(&mut rng, n, spread);
        // Every tenth cluster has memory for only a little more than its share of the model.
        let total_mem: u64 = layers.iter().map(|l| l.memory_bytes + l.param_bytes).sum();
        let mem = if case % 10 == 9 {
            memory_limited += 1;
            total_mem / k as u64 * 2
        } else {
            u64::MAX / 4
        };
        let cluster = ClusterDesc::homogeneous(k, 1e6, mem, 1e6);
        let cost = CostModel::for_layers(&layers, &cluster, cluster.link_matrix());
        let order: Vec<usize> = (0..k).collect();
        let (dcuts, d) = dp::solve(&cost, &order).expect("feasible");
        assert_eq!(
            cost.bottleneck(&dcuts, &order),
            d,
            "case {case}: DP's cuts do not give its value"
        );
        let (bcuts, b) = bisect::solve(&cost, &order).expect("feasible");
        assert_eq!(cost.bottleneck(&bcuts, &order), b);
        assert_eq!(
            d.to_bits(),
            b.to_bits(),
            "case {case} (n={n}, k={k}, spread {spread}): DP {d} vs bisection {b}"
        );
        let t = tabu::solve(&cost, &order, tabu::Params::default()).expect("feasible");
        assert!(
            t.bottleneck >= d,
            "case {case}: tabu {} beat the optimum {d}",
            t.bottleneck
        );
        tabu_gap.push(t.bottleneck / d - 1.0);
        let e = cost.bottleneck(&even::cuts(n, k).unwrap(), &order);
        even_ratio.push(e / d);
    }
    let exact = tabu_gap.iter().filter(|&&g| g == 0.0).count();
    let (p50, p99, max) = (
        quantile(&mut tabu_gap, 0.5),
        quantile(&mut tabu_gap, 0.99),
        quantile(&mut tabu_gap, 1.0),
    );
    let even_finite: Vec<f64> = even_ratio
        .iter()
        .copied()
        .filter(|r| r.is_finite())
        .collect();
    let mut ef = even_finite.clone();
    let (e50, e99) = (quantile(&mut ef, 0.5), quantile(&mut ef, 0.99));
    println!(
        "RESULT chains=1000 (memory-limited {memory_limited}): dp==bisect 1000/1000; tabu gap p50 {:.4}% p99 {:.4}% max {:.4}%, exact {exact}/1000; even/dp p50 {e50:.3} p99 {e99:.3}, even infeasible {}",
        p50 * 100.0,
        p99 * 100.0,
        max * 100.0,
        even_ratio.len() - even_finite.len()
    );
    assert_eq!(p50, 0.0, "tabu's median gap must be 0");
    assert!(p99 <= 0.01, "tabu's p99 gap {:.3}% exceeds 1%", p99 * 100.0);
}

#[test]
fn tabu_against_every_rank_order_on_heterogeneous_ranks() {
    let mut rng = Rng::new(1515);
    let mut gaps = Vec::new();
    let mut placed_dp = Vec::new();
    for case in 0..140 {
        let m = 2 + case % 7; // 2..=8 ranks
        let n = rng.range(m as u64 + 4, 28) as usize;
        let layers = chain(&mut rng, n, (case % 5) as u64);
        let mut cluster = ClusterDesc::homogeneous(m, 1e6, u64::MAX / 4, 1e6);
        for r in &mut cluster.ranks {
            r.speed = 0.5 + 1.5 * rng.unit();
        }
        let mut links = LinkMatrix::uniform(m, 1e6, 0.0);
        for a in 0..m {
            for b in a + 1..m {
                let bw = 2e5 * (1.0 + 20.0 * rng.unit());
                links.bandwidth[a][b] = bw;
                links.bandwidth[b][a] = bw;
                let lat = 1e-4 * rng.unit();
                links.latency[a][b] = lat;
                links.latency[b][a] = lat;
            }
        }
        cluster.links = Some(links);
        let cost = CostModel::for_layers(&layers, &cluster, cluster.link_matrix());
        let (_, _, opt) = dp::solve_all_orders(&cost, m).expect("feasible");
        let start = placement::chain_order(&cost, m);
        let t = tabu::solve(&cost, &start, tabu::Params::default()).expect("feasible");
        assert!(
            t.bottleneck >= opt * (1.0 - 1e-12),
            "case {case}: tabu below the optimum"
        );
        gaps.push(t.bottleneck / opt - 1.0);
        let (_, d) = dp::solve(&cost, &start).unwrap();
        placed_dp.push(d / opt - 1.0);
    }
    let (p50, p95, max) = (
        quantile(&mut gaps, 0.5),
        quantile(&mut gaps, 0.95),
        quantile(&mut gaps, 1.0),
    );
    let dp95 = quantile(&mut placed_dp, 0.95);
    let dp50 = quantile(&mut placed_dp, 0.5);
    println!(
        "RESULT heterogeneous=140 (2-8 ranks): tabu gap to all-orders optimum p50 {:.3}% p95 {:.3}% max {:.3}%; DP on the link-placed order p50 {:.3}% p95 {:.3}%",
        p50 * 100.0,
        p95 * 100.0,
        max * 100.0,
        dp50 * 100.0,
        dp95 * 100.0
    );
    assert!(p95 <= 0.02, "tabu's p95 gap {:.3}% exceeds 2%", p95 * 100.0);
}
