//! Recovery from a lost rank, end to end through `dmscrun`.
//!
//! - Shrink: four ranks train (repeated all-reduces of a gradient whose every element is
//!   checked); at a known step one rank dies at once (SIGKILL to itself: no cleanup, no
//!   goodbye). The survivors get `PeerLost` naming it, build a communicator without it with
//!   [`Communicator::shrink`], redo the failed step on three ranks and train to the end.
//!   `dmscrun --keep-going` leaves them running. Once with rank 2 lost, once with rank 0
//!   (which shows that the store, served by dmscrun, outlives it).
//! - Restart: `dmscrun --restarts 1` runs a job whose rank 1 dies on the first attempt
//!   (`DMSC_RESTART_COUNT=0`); the second attempt trains to the end on all ranks.
//!
//! Every launch is bounded by an outer timeout that fails the test.

use dmsc::{Communicator, Error, ReduceOp};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: usize = 6;
const ELEMS: usize = 100_000;
const LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// Rank side.

fn env_usize(name: &str) -> usize {
    let v = std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by the test"));
    v.parse().unwrap_or_else(|_| panic!("{name}={v}"))
}

/// The gradient contribution of original rank `r` at element `i` of step `s`: integers, so
/// sums are exact in f64.
fn grad(r: usize, s: usize, i: usize) -> f64 {
    ((r + 1) * 1000 + s * 7 + i % 101) as f64
}

/// Train `STEPS` steps; `dead` (an original rank) kills itself before step `die_at`. On a
/// failed step the others shrink the communicator and redo it.
#[test]
#[ignore = "entry point of the ranks launched by the recovery tests"]
fn rank_entry() {
    let dead = env_usize("RECOVERY_DEAD");
    let die_at = env_usize("RECOVERY_DIE_AT");
    let attempt = env_usize("DMSC_RESTART_COUNT");
    let mut comm = Communicator::from_env().unwrap_or_else(|e| panic!("init: {e}"));
    let me = comm.rank();
    // Original ranks of the current communicator's ranks.
    let mut members: Vec<usize> = (0..comm.size()).collect();
    let mut weights = vec![0f64; ELEMS];
    let mut g = vec![0f64; ELEMS];
    let mut step = 0;
    let mut shrinks = 0;
    while step < STEPS {
        if me == dead && step == die_at && attempt == 0 {
            // Let every peer finish the previous step, then vanish.
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: plain system calls; the process ends here.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        for (i, x) in g.iter_mut().enumerate() {
            *x = grad(me, step, i);
        }
        match comm.all_reduce_in_place(&mut g, ReduceOp::Sum) {
            Ok(()) => {
                for (i, (&x, w)) in g.iter().zip(weights.iter_mut()).enumerate() {
                    let want: f64 = members.iter().map(|&r| grad(r, step, i)).sum();
                    assert_eq!(x, want, "rank {me} step {step} element {i} on {members:?}");
                    *w += x;
                }
                step += 1;
            }
            Err(e) => {
                let lost = members.iter().position(|&r| r == dead);
                let Some(lost) = lost.filter(|_| step == die_at && shrinks == 0) else {
                    panic!("rank {me} step {step}: unexpected error {e}");
                };
                assert!(
                    matches!(&e, Error::PeerLost { peer, .. } if *peer == lost),
                    "rank {me} step {step}: expected PeerLost naming rank {lost}, got {e}"
                );
                println!("rank {me}: step {step} failed ({e}); shrinking without rank {lost}");
                let t = Instant::now();
                comm = comm
                    .shrink(&[lost])
                    .unwrap_or_else(|e| panic!("rank {me}: shrink: {e}"));
                members.remove(lost);
                shrinks += 1;
                println!(
                    "rank {me}: now rank {} of {} after a shrink of {:.1} ms",
                    comm.rank(),
                    comm.size(),
                    t.elapsed().as_secs_f64() * 1e3
                );
                assert_eq!(members[comm.rank()], me);
            }
        }
    }
    // Every step's sum over the members of that step, accumulated.
    let survivors: Vec<usize> = (0..4).filter(|&r| r != dead || attempt > 0).collect();
    for (i, &w) in weights.iter().enumerate().step_by(997) {
        let want: f64 = (0..STEPS)
            .map(|s| {
                let who: Vec<usize> = if s < die_at || attempt > 0 {
                    (0..4).collect()
                } else {
                    survivors.clone()
                };
                who.iter().map(|&r| grad(r, s, i)).sum::<f64>()
            })
            .sum();
        assert_eq!(w, want, "rank {me}: weight {i}");
    }
    comm.barrier()
        .unwrap_or_else(|e| panic!("rank {me}: final barrier: {e}"));
    println!(
        "RECOVERY-OK rank {me} attempt {attempt} size {} shrinks {shrinks}",
        comm.size()
    );
}

// ---------------------------------------------------------------------------------------
// Test side.

/// Run 4 ranks of `rank_entry` under `dmscrun FLAGS`; returns (exit code, combined output).
fn launch(flags: &[&str], dead: usize, die_at: usize) -> (i32, String) {
    let exe = std::env::current_exe().expect("test executable path");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dmscrun"));
    cmd.args(["-n", "4"])
        .args(flags)
        .arg("--")
        .arg(exe)
        .args([
            "--ignored",
            "--exact",
            "rank_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RECOVERY_DEAD", dead.to_string())
        .env("RECOVERY_DIE_AT", die_at.to_string())
        .env("DMSC_TIMEOUT", "20")
        .env("DMSC_KILL_GRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("start dmscrun");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(Ok(out)) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.code().unwrap_or(-1), text)
        }
        Ok(Err(e)) => panic!("waiting for dmscrun: {e}"),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("dmscrun {flags:?} hung for {LIMIT:?}");
        }
    }
}

fn shrink_case(dead: usize) {
    let (code, out) = launch(&["--keep-going"], dead, 3);
    // The job's code is the lost rank's (SIGKILL), but every survivor finished.
    assert_eq!(code, 128 + libc::SIGKILL, "{out}");
    for r in (0..4).filter(|&r| r != dead) {
        let line = format!("RECOVERY-OK rank {r} attempt 0 size 3 shrinks 1");
        assert!(out.contains(&line), "no '{line}' in:\n{out}");
    }
    assert_eq!(out.matches("RECOVERY-OK").count(), 3, "{out}");
    for l in out.lines().filter(|l| l.contains("shrink")) {
        println!("{l}");
    }
}

#[test]
fn training_continues_on_the_survivors() {
    shrink_case(2);
}

#[test]
fn training_continues_without_rank_0() {
    shrink_case(0);
}

#[test]
fn a_restarted_job_trains_to_the_end() {
    let (code, out) = launch(&["--restarts", "1"], 1, 2);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("restart 1 of 1"), "{out}");
    assert_eq!(out.matches("RECOVERY-OK").count(), 4, "{out}");
    for r in 0..4 {
        let line = format!("RECOVERY-OK rank {r} attempt 1 size 4 shrinks 0");
        assert!(out.contains(&line), "no '{line}' in:\n{out}");
    }
}
