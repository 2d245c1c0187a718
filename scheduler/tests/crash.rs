//! The scheduler killed with SIGKILL and restarted, three times: every task is committed
//! exactly once, none is lost, and no committed task is dispatched again.

use dmsc_scheduler::store::Store;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TASKS: u64 = 400;

fn start(db: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_dmsc-serve"))
        .args(["sched-run", "--db"])
        .arg(db)
        .args(["--tasks", &TASKS.to_string(), "--work-ms", "2"])
        .env("DMSC_SERVE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start dmsc-serve sched-run")
}

fn committed(db: &std::path::Path) -> usize {
    Store::open(db)
        .and_then(|s| s.results())
        .map(|r| r.len())
        .unwrap_or(0)
}

#[test]
fn sigkill_and_restart_loses_and_repeats_nothing() {
    let dir = std::env::temp_dir().join(format!("dmsc-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("tasks.sqlite");
    let mut seen = Vec::new();
    for round in 0..3 {
        let mut child = start(&db);
        // Let it commit some more, then kill it mid-run.
        let before = committed(&db);
        let t = Instant::now();
        while committed(&db) < before + 40 && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().expect("SIGKILL"); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the run finished before it was killed"
        );
        let n = committed(&db);
        println!("RESULT crash round {round}: killed with {n} of {TASKS} committed");
        assert!(
            n > before && (n as u64) < TASKS,
            "round {round}: {before} -> {n}"
        );
        seen.push(n);
    }
    let out = start(&db).wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("DONE committed={TASKS}")));
    let store = Store::open(&db).unwrap();
    let results = store.results().unwrap();
    assert_eq!(results.len() as u64, TASKS);
    // Task ids are 1..=TASKS in submission order; task i squared x = i - 1.
    for (task, v) in &results {
        let x = task - 1;
        assert_eq!(v, &serde_json::json!(x * x), "task {task}");
    }
    let commits = store.event_counts("committed").unwrap();
    assert_eq!(commits.len() as u64, TASKS);
    assert!(
        commits.iter().all(|&(_, c)| c == 1),
        "a task committed twice"
    );
    assert_eq!(
        store.dispatched_after_commit().unwrap(),
        0,
        "a committed task ran again"
    );
    let submitted = store.event_counts("submitted").unwrap();
    assert_eq!(
        submitted.len() as u64,
        TASKS,
        "tasks submitted again after a restart"
    );
    println!("RESULT crash: 3 SIGKILLs at {seen:?} committed; final {TASKS}/{TASKS}, each once, none re-run");
    let _ = std::fs::remove_dir_all(&dir);
}
