//! Replay from the SQLite store: committed results stay committed, failures stay in the
//! exception queue with their reason, and unfinished tasks run again with their failure
//! count.

use dmsc_scheduler::clock::ManualClock;
use dmsc_scheduler::durable::Durable;
use dmsc_scheduler::scheduler::{Config, Scheduler};
use dmsc_scheduler::store::Store;
use dmsc_scheduler::task::{TaskSpec, TaskStatus};
use serde_json::json;

fn open(path: &std::path::Path) -> Durable {
    let store = Store::open(path).unwrap();
    let (mut d, _) =
        Durable::open(Scheduler::new(Config::default(), ManualClock::new()), store).unwrap();
    d.sched.add_worker(1, 1.0);
    d
}

#[test]
fn replay_restores_done_failed_and_pending_tasks() {
    let dir = std::env::temp_dir().join(format!("dmsc-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("s.sqlite");
    let (done, failed, pending);
    {
        let mut d = open(&db);
        done = d.submit(TaskSpec::new("done")).unwrap();
        failed = d.submit(TaskSpec::new("failed")).unwrap();
        pending = d
            .submit(TaskSpec {
                retries: 3,
                ..TaskSpec::new("pending")
            })
            .unwrap();
        let a = d.dispatch().unwrap();
        d.complete(a[0].id, json!("r")).unwrap();
        let a = d.dispatch().unwrap();
        d.fail(a[0].id, "bad input").unwrap();
        let a = d.dispatch().unwrap();
        assert_eq!(a[0].task, pending);
        d.fail(a[0].id, "flaky").unwrap();
        // The process "dies" here, with `pending` waiting for its retry.
    }
    let mut d = open(&db);
    assert_eq!(
        d.sched.status(done),
        Some(TaskStatus::Done { result: json!("r") })
    );
    match d.sched.status(failed) {
        Some(TaskStatus::Failed { reason }) => assert!(reason.contains("bad input"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(d.sched.exceptions().count(), 1);
    let a = d.dispatch().unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].task, pending);
    d.complete(a[0].id, json!(3)).unwrap();
    assert_eq!(d.store.result(pending).unwrap(), Some(json!(3)));
    // The committed result cannot be committed twice.
    let results = d.store.results().unwrap();
    assert_eq!(results.len(), 2);
    // New ids continue after the replayed ones.
    let next = d.submit(TaskSpec::new("new")).unwrap();
    assert!(next > pending);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
