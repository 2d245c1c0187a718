//! Planning time at 256 layers × 16 stages: DP, bisection and tabu (homogeneous ranks), and
//! tabu with its rank-order search on heterogeneous ranks.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dmsc_scheduler::cluster::{ClusterDesc, LinkMatrix};
use dmsc_scheduler::cost::CostModel;
use dmsc_scheduler::model::Layer;
use dmsc_scheduler::segment::{bisect, dp, tabu};

fn layers(n: usize, seed: u64) -> Vec<Layer> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let f = 1_000 + next() % 100_000;
            Layer {
                name: format!("l{i}"),
                fwd_flops: f,
                bwd_flops: 2 * f,
                param_bytes: next() % 1000,
                activation_bytes: next() % 40_000,
                memory_bytes: 1 + next() % 1000,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let l = layers(256, 42);
    let cluster = ClusterDesc::homogeneous(16, 1e6, u64::MAX / 4, 1e6);
    let cost = CostModel::for_layers(&l, &cluster, cluster.link_matrix());
    let order: Vec<usize> = (0..16).collect();
    c.bench_function("dp 256x16", |b| {
        b.iter(|| dp::solve(black_box(&cost), &order))
    });
    c.bench_function("bisect 256x16", |b| {
        b.iter(|| bisect::solve(black_box(&cost), &order))
    });
    c.bench_function("tabu 256x16", |b| {
        b.iter(|| tabu::solve(black_box(&cost), &order, tabu::Params::default()))
    });
    let mut het = ClusterDesc::homogeneous(8, 1e6, u64::MAX / 4, 1e6);
    let mut links = LinkMatrix::uniform(8, 1e6, 0.0);
    for (i, r) in het.ranks.iter_mut().enumerate() {
        r.speed = 0.5 + 0.2 * i as f64;
    }
    for a in 0..8 {
        for b in 0..8 {
            links.bandwidth[a][b] = 2e5 * (1.0 + ((a * 7 + b * 3) % 11) as f64);
            links.bandwidth[b][a] = links.bandwidth[a][b];
        }
    }
    het.links = Some(links);
    let l64 = layers(64, 7);
    let hcost = CostModel::for_layers(&l64, &het, het.link_matrix());
    let horder: Vec<usize> = (0..8).collect();
    c.bench_function("tabu heterogeneous 64x8", |b| {
        b.iter(|| tabu::solve(black_box(&hcost), &horder, tabu::Params::default()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
