//! Criterion: how long planning a collective takes (schedule generation per call).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use dmsc_core::plan::{plan, PlanConfig};
use dmsc_core::{Algo, CollDesc, CollKind, DataType, ReduceOp};
use std::time::Duration;

fn schedules(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    for (kind, algo) in [
        (CollKind::AllReduce, Some(Algo::Ring)),
        (CollKind::AllReduce, Some(Algo::Tree)),
        (CollKind::AllGather, None),
        (CollKind::Broadcast, None),
        (CollKind::AllToAll, None),
        (CollKind::Barrier, None),
    ] {
        for nranks in [8usize, 64] {
            let desc = CollDesc {
                kind,
                count: if kind == CollKind::Barrier {
                    0
                } else {
                    16 << 20
                },
                dtype: DataType::Float32,
                op: ReduceOp::Sum,
                root: 0,
            };
            let cfg = PlanConfig {
                algo,
                ..PlanConfig::default()
            };
            let name = format!(
                "{}{}",
                kind.name(),
                algo.map(|a| format!("/{a:?}")).unwrap_or_default()
            );
            g.bench_with_input(BenchmarkId::new(name, nranks), &nranks, |b, &n| {
                b.iter(|| plan(black_box(&desc), n / 2, n, false, &cfg).expect("plan"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, schedules);
criterion_main!(benches);
