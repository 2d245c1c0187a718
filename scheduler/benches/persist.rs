//! Dispatch throughput with SQLite persistence (WAL): 2,000 tasks through 16 workers; every
//! dispatch and every commit is in the store before the call returns.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dmsc_scheduler::clock::ManualClock;
use dmsc_scheduler::durable::Durable;
use dmsc_scheduler::scheduler::{Config, Scheduler};
use dmsc_scheduler::store::Store;
use dmsc_scheduler::task::TaskSpec;
use std::sync::atomic::{AtomicU64, Ordering};

const TASKS: u64 = 2_000;
static RUN: AtomicU64 = AtomicU64::new(0);

fn setup() -> (Durable, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "dmsc-bench-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&dir.join("b.sqlite")).unwrap();
    let (mut d, _) =
        Durable::open(Scheduler::new(Config::default(), ManualClock::new()), store).unwrap();
    for w in 0..16 {
        d.sched.add_worker(w, 1.0);
    }
    d.submit_all((0..TASKS).map(|_| TaskSpec::new("t")).collect())
        .unwrap();
    (d, dir)
}

fn drain((mut d, dir): (Durable, std::path::PathBuf)) {
    let mut done = 0;
    while done < TASKS {
        for a in d.dispatch().unwrap() {
            d.complete(a.id, serde_json::json!(1)).unwrap();
            done += 1;
        }
    }
    drop(d);
    let _ = std::fs::remove_dir_all(dir);
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch with sqlite");
    g.throughput(Throughput::Elements(TASKS));
    g.bench_function("fcfs wal", |b| {
        b.iter_batched(setup, drain, BatchSize::PerIteration)
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
