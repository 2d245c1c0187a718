//! Two hosts with two ranks each, on one kernel: shared memory inside a host, TCP across.
//!
//! A "host" is a network namespace (joined to the other by a veth pair) in which one
//! `unshare --pid --fork --ipc --uts --mount` holds both of its ranks, with a private tmpfs
//! on /dev/shm. Namespaces share the kernel, so anything less would let same-host paths
//! (shared memory, cross-memory attach) cross between the hosts. Each rank checks that the
//! peers on its host are served by shared memory and the others by TCP, then runs every
//! collective with counts that are not powers of two and checks every element
//! (`support/worker.rs`, case `mixed`).
//!
//! Needs root, `ip` and `unshare`; otherwise the test prints why and passes without running
//! (CI runs as root).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/collect.rs"]
mod collect;
#[path = "support/worker.rs"]
mod worker;

use collect::collect;

const NS: [&str; 2] = ["dmsc-mh-a", "dmsc-mh-b"];
const IFS: [&str; 2] = ["dmsc-mha", "dmsc-mhb"];
const IPS: [&str; 2] = ["10.79.0.1", "10.79.0.2"];

fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for tool in ["ip", "unshare", "mount"] {
        if !sh(&format!("command -v {tool}")) {
            return Some(format!("`{tool}` is missing"));
        }
    }
    None
}

/// The two namespaces and their veth link; torn down on drop.
struct Bed;

impl Bed {
    fn up() -> Bed {
        Bed::down();
        let cmds = [
            format!("ip netns add {}", NS[0]),
            format!("ip netns add {}", NS[1]),
            format!("ip link add {} type veth peer name {}", IFS[0], IFS[1]),
        ];
        for c in &cmds {
            assert!(sh(c), "bed: {c} failed");
        }
        for h in 0..2 {
            for c in [
                format!("ip link set {} netns {}", IFS[h], NS[h]),
                format!("ip -n {} addr add {}/24 dev {}", NS[h], IPS[h], IFS[h]),
                format!("ip -n {} link set {} up", NS[h], IFS[h]),
                format!("ip -n {} link set lo up", NS[h]),
            ] {
                assert!(sh(&c), "bed: {c} failed");
            }
        }
        Bed
    }

    fn down() {
        for ns in NS {
            sh(&format!("ip netns del {ns}"));
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        Bed::down();
    }
}

/// Start host `h` (ranks `2h` and `2h + 1`) in its namespaces; returns the child.
fn start_host(h: usize, store: &str, secret: &str) -> std::process::Child {
    let exe = std::env::current_exe().expect("test executable path");
    let exe = exe.display();
    let args = "--ignored --exact worker::entry --nocapture --test-threads=1";
    // Both ranks of a host share its PID, IPC, UTS and mount namespaces and its /dev/shm.
    let script = format!(
        "mount -t tmpfs -o size=256m dmsc-shm /dev/shm && hostname host-{h} && \
         DMSC_RANK={r0} {exe} {args} 2>&1 | sed 's/^/[{r0}] /' & \
         DMSC_RANK={r1} {exe} {args} 2>&1 | sed 's/^/[{r1}] /' & \
         wait",
        r0 = 2 * h,
        r1 = 2 * h + 1,
    );
    Command::new("ip")
        .args([
            "netns", "exec", NS[h], "unshare", "--pid", "--fork", "--ipc", "--uts",
        ])
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("DMSC_TEST_CASE", "mixed")
        .env("DMSC_TEST_HOSTS", "0,0,1,1")
        .env("DMSC_WORLD_SIZE", "4")
        .env("DMSC_STORE_ADDR", store)
        .env("DMSC_SOCKET_IFNAME", IFS[h])
        .env("DMSC_SECRET", secret)
        .env("DMSC_TIMEOUT", "60")
        .env_remove("DMSC_SHM")
        .env_remove("DMSC_TRANSPORT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a host")
}

#[test]
fn shared_memory_inside_each_host_and_tcp_across() {
    if let Some(why) = skip_reason() {
        println!("mixed_hosts: skipped ({why})");
        return;
    }
    let _bed = Bed::up();
    let store = format!("{}:29555", IPS[0]);
    let secret = "mixed-hosts-test-secret-0123456789";
    let hosts = [start_host(0, &store, secret), start_host(1, &store, secret)];
    let start = Instant::now();
    let (ok, text) = collect(
        hosts.into(),
        start,
        Duration::from_secs(240),
        "the mixed-hosts job",
    );
    assert!(ok, "a host failed:\n{text}");
    assert_eq!(text.matches("CASE-OK").count(), 4, "{text}");
    assert_eq!(text.matches("MIXED-TRANSPORTS").count(), 4, "{text}");
    assert_eq!(text.matches("TOPOLOGY-OK").count(), 4, "{text}");
    println!(
        "mixed_hosts: {:?}; {}",
        start.elapsed(),
        text.lines()
            .filter(|l| l.contains("MIXED-TRANSPORTS") || l.contains("TOPOLOGY-OK rank 0"))
            .collect::<Vec<_>>()
            .join("; ")
    );
}
