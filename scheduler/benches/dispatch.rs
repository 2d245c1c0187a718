//! Dispatch throughput in memory: 10,000 tasks through 64 workers, dispatch and complete,
//! under each policy.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dmsc_scheduler::clock::ManualClock;
use dmsc_scheduler::policy::Policy;
use dmsc_scheduler::scheduler::{Config, Scheduler};
use dmsc_scheduler::task::TaskSpec;

const TASKS: u64 = 10_000;

fn setup(policy: Policy) -> Scheduler {
    let mut s = Scheduler::new(
        Config {
            policy,
            ..Config::default()
        },
        ManualClock::new(),
    );
    for w in 0..64 {
        s.add_worker(w, 1.0);
    }
    for i in 0..TASKS {
        s.submit(TaskSpec {
            class: format!("c{}", i % 4),
            weight: 1 + (i % 4) as u32,
            priority: (i % 7) as i32,
            ..TaskSpec::new("t")
        })
        .unwrap();
    }
    s.take_events();
    s
}

fn drain(mut s: Scheduler) -> u64 {
    let mut done = 0;
    while done < TASKS {
        for a in s.dispatch() {
            s.complete(a.id, serde_json::Value::Null).unwrap();
            done += 1;
        }
        s.take_events();
    }
    done
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch in memory");
    g.throughput(Throughput::Elements(TASKS));
    for (name, p) in [
        ("fcfs", Policy::Fcfs),
        ("priority", Policy::Priority),
        ("fair", Policy::WeightedFair),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(|| setup(p), drain, BatchSize::LargeInput)
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
