//! The scheduler's policies, gang admission, retries, timeouts, heartbeats, reassignment and
//! redundancy, on a manual clock.

use dmsc_scheduler::clock::ManualClock;
use dmsc_scheduler::policy::Policy;
use dmsc_scheduler::scheduler::{Config, Scheduler};
use dmsc_scheduler::task::{Aggregate, TaskSpec, TaskStatus};
use serde_json::json;
use std::collections::HashMap;

fn sched(policy: Policy, workers: u64) -> (Scheduler, std::sync::Arc<ManualClock>) {
    let clock = ManualClock::new();
    let mut s = Scheduler::new(
        Config {
            policy,
            ..Config::default()
        },
        clock.clone(),
    );
    for w in 0..workers {
        s.add_worker(w, 1.0);
    }
    (s, clock)
}

fn task(name: &str) -> TaskSpec {
    TaskSpec::new(name)
}

#[test]
fn fcfs_and_priority_orders() {
    let (mut s, _) = sched(Policy::Fcfs, 1);
    let ids: Vec<u64> = (0..3)
        .map(|i| {
            s.submit(TaskSpec {
                priority: i,
                ..task("t")
            })
            .unwrap()
        })
        .collect();
    let mut order = Vec::new();
    for _ in 0..3 {
        let a = s.dispatch();
        assert_eq!(a.len(), 1);
        order.push(a[0].task);
        s.complete(a[0].id, json!(1)).unwrap();
    }
    assert_eq!(order, ids);
    let (mut s, _) = sched(Policy::Priority, 1);
    let ids: Vec<u64> = [1, 5, 3]
        .iter()
        .map(|&p| {
            s.submit(TaskSpec {
                priority: p,
                ..task("t")
            })
            .unwrap()
        })
        .collect();
    let mut order = Vec::new();
    for _ in 0..3 {
        let a = s.dispatch();
        order.push(a[0].task);
        s.complete(a[0].id, json!(1)).unwrap();
    }
    assert_eq!(order, vec![ids[1], ids[2], ids[0]]);
}

#[test]
fn weighted_shares_within_5_percent() {
    let (mut s, _) = sched(Policy::WeightedFair, 4);
    let weights = [("a", 1u32), ("b", 2), ("c", 5)];
    let mut class_of = HashMap::new();
    for (c, w) in weights {
        for i in 0..8000 {
            let id = s
                .submit(TaskSpec {
                    class: c.into(),
                    weight: w,
                    ..task(&format!("{c}{i}"))
                })
                .unwrap();
            class_of.insert(id, c);
        }
    }
    let mut count: HashMap<&str, u64> = HashMap::new();
    let mut inflight = s.dispatch();
    for _ in 0..8000 {
        let a = inflight.remove(0);
        *count.entry(class_of[&a.task]).or_default() += 1;
        s.complete(a.id, json!(null)).unwrap();
        inflight.extend(s.dispatch());
    }
    let total: u64 = count.values().sum();
    for (c, w) in weights {
        let share = count[c] as f64 / total as f64;
        let target = w as f64 / 8.0;
        println!("RESULT share {c}: {share:.4} (target {target:.4})");
        assert!(
            (share / target - 1.0).abs() <= 0.05,
            "class {c}: share {share} vs target {target}"
        );
    }
}

#[test]
fn gangs_are_admitted_whole_or_not_at_all() {
    let (mut s, _) = sched(Policy::Fcfs, 2);
    let big = s
        .submit(TaskSpec {
            gang: 3,
            ..task("big")
        })
        .unwrap();
    let small = s.submit(task("small")).unwrap();
    // Strict order: the gang of 3 does not fit on 2 workers and blocks the small task.
    assert!(s.dispatch().is_empty());
    assert_eq!(s.free_workers(), 2);
    s.add_worker(7, 1.0);
    let a = s.dispatch();
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].task, a[0].workers.len()), (big, 3));
    s.complete(a[0].id, json!("ok")).unwrap();
    let a = s.dispatch();
    assert_eq!(a[0].task, small);
    // With backfill the small one passes the gang that does not fit.
    let clock = ManualClock::new();
    let mut s = Scheduler::new(
        Config {
            backfill: true,
            ..Config::default()
        },
        clock,
    );
    s.add_worker(1, 1.0);
    s.add_worker(2, 1.0);
    s.submit(TaskSpec {
        gang: 3,
        ..task("big")
    })
    .unwrap();
    let small = s.submit(task("small")).unwrap();
    let a = s.dispatch();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].task, small);
}

#[test]
fn retries_back_off_then_fail_for_good_with_the_reason() {
    let (mut s, clock) = sched(Policy::Fcfs, 1);
    let t = s
        .submit(TaskSpec {
            retries: 2,
            ..task("flaky")
        })
        .unwrap();
    let a = s.dispatch();
    s.fail(a[0].id, "disk full").unwrap();
    // First backoff: 100 ms.
    clock.advance(99);
    s.heartbeat(0).unwrap();
    assert!(s.dispatch().is_empty());
    clock.advance(1);
    let a = s.dispatch();
    assert_eq!(a.len(), 1);
    s.fail(a[0].id, "disk full").unwrap();
    // Second backoff: 200 ms.
    clock.advance(199);
    s.heartbeat(0).unwrap();
    assert!(s.dispatch().is_empty());
    clock.advance(1);
    let a = s.dispatch();
    let st = s.fail(a[0].id, "disk full").unwrap();
    assert!(matches!(st, Some(TaskStatus::Failed { .. })), "{st:?}");
    let ex: Vec<_> = s.exceptions().collect();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].task, t);
    assert!(
        ex[0].reason.contains("disk full") && ex[0].reason.contains("3 time"),
        "{}",
        ex[0].reason
    );
    assert_eq!(s.stats().failures, 3);
}

#[test]
fn a_timed_out_replica_is_retried_and_its_late_result_refused() {
    let (mut s, clock) = sched(Policy::Fcfs, 1);
    let t = s
        .submit(TaskSpec {
            timeout_ms: 500,
            retries: 1,
            ..task("slow")
        })
        .unwrap();
    let first = s.dispatch()[0].id;
    clock.advance(501);
    s.heartbeat(0).unwrap();
    s.tick();
    assert!(
        s.complete(first, json!(1)).is_err(),
        "a timed-out assignment's result must be refused"
    );
    clock.advance(100);
    s.heartbeat(0).unwrap();
    let second = s.dispatch();
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].id, first);
    s.complete(second[0].id, json!(2)).unwrap();
    assert_eq!(s.status(t), Some(TaskStatus::Done { result: json!(2) }));
}

#[test]
fn a_dead_workers_task_is_reassigned_and_completes() {
    let (mut s, clock) = sched(Policy::Fcfs, 2);
    let t = s.submit(task("job")).unwrap();
    let a = s.dispatch();
    let victim = a[0].workers[0];
    let other = 1 - victim;
    // Only the other worker keeps sending heartbeats.
    for _ in 0..4 {
        clock.advance(1000);
        s.heartbeat(other).unwrap();
        s.tick();
    }
    assert_eq!(s.workers(), 1);
    assert_eq!(s.stats().reassigned, 1);
    let b = s.dispatch();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].workers, vec![other]);
    assert!(s.complete(a[0].id, json!("stale")).is_err());
    s.complete(b[0].id, json!("done")).unwrap();
    assert_eq!(
        s.status(t),
        Some(TaskStatus::Done {
            result: json!("done")
        })
    );
    // Failures were not charged for the reassignment.
    assert_eq!(s.stats().failures, 0);
}

#[test]
fn redundant_replicas_run_on_distinct_workers_and_are_aggregated() {
    let (mut s, _) = sched(Policy::Fcfs, 3);
    let t = s
        .submit(TaskSpec {
            redundancy: 3,
            aggregate: Aggregate::Vote,
            ..task("vote")
        })
        .unwrap();
    let a = s.dispatch();
    assert_eq!(a.len(), 3);
    let mut ws: Vec<u64> = a.iter().map(|x| x.workers[0]).collect();
    ws.sort();
    ws.dedup();
    assert_eq!(ws.len(), 3);
    s.complete(a[0].id, json!("x")).unwrap();
    s.complete(a[1].id, json!("y")).unwrap();
    s.complete(a[2].id, json!("x")).unwrap();
    assert_eq!(s.status(t), Some(TaskStatus::Done { result: json!("x") }));

    let clock = ManualClock::new();
    let mut s = Scheduler::new(Config::default(), clock);
    s.add_worker(1, 1.0);
    s.add_worker(2, 3.0);
    let t = s
        .submit(TaskSpec {
            redundancy: 2,
            aggregate: Aggregate::WeightedAverage,
            ..task("avg")
        })
        .unwrap();
    let a = s.dispatch();
    for x in &a {
        let v = if x.workers[0] == 1 {
            json!([0.0, 4.0])
        } else {
            json!([4.0, 0.0])
        };
        s.complete(x.id, v).unwrap();
    }
    assert_eq!(
        s.status(t),
        Some(TaskStatus::Done {
            result: json!([3.0, 1.0])
        })
    );
}

#[test]
fn asynchronous_submission_from_other_threads() {
    let (mut s, _) = sched(Policy::Fcfs, 8);
    let sub = s.submitter();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let sub = sub.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|j| sub.submit(task(&format!("t{i}.{j}"))).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    assert!(sub
        .submit(TaskSpec {
            gang: 0,
            ..task("bad")
        })
        .unwrap_err()
        .to_string()
        .contains("gang"));
    let mut done = 0;
    while done < 100 {
        for a in s.dispatch() {
            s.complete(a.id, json!(a.task)).unwrap();
            done += 1;
        }
    }
    for id in ids {
        assert_eq!(s.status(id), Some(TaskStatus::Done { result: json!(id) }));
    }
}
