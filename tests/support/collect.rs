//! Waiting for the launcher processes of a multi-host test with one deadline for all
//! (`mixed_hosts.rs`, `cluster_bed.rs`).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Wait for every child, at most `limit` in all since `start`, and return whether all
/// succeeded and their stdout and stderr, in order. A child still running at the deadline
/// is killed (its unshare'd init takes its ranks along) and the test fails with `what` and
/// the output so far.
pub fn collect(
    children: Vec<Child>,
    start: Instant,
    limit: Duration,
    what: &str,
) -> (bool, String) {
    let waits: Vec<_> = children
        .into_iter()
        .map(|c| {
            let (tx, rx) = std::sync::mpsc::channel();
            let pid = c.id();
            std::thread::spawn(move || {
                let _ = tx.send(c.wait_with_output());
            });
            (pid, rx)
        })
        .collect();
    let mut text = String::new();
    let mut ok = true;
    for (pid, rx) in waits {
        match rx.recv_timeout(limit.saturating_sub(start.elapsed())) {
            Ok(Ok(out)) => {
                ok &= out.status.success();
                text.push_str(&String::from_utf8_lossy(&out.stdout));
                text.push_str(&String::from_utf8_lossy(&out.stderr));
            }
            Ok(Err(e)) => panic!("{what}: waiting for a process: {e}"),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("{what} hung for {:?}:\n{text}", start.elapsed());
            }
        }
    }
    (ok, text)
}
