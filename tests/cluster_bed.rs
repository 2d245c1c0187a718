//! Three hosts of three ranks each on the namespace cluster bed (`tests/netbed/cluster.sh`):
//! a switch, every host's link shaped to 1 Gbit/s with tbf, each host a network namespace
//! with its own PID, IPC, UTS and mount namespaces and a private /dev/shm.
//!
//! `dmscrun --nnodes 3 --node-rank i --master-addr <host 0> --nproc-per-node 3` is started
//! once in each host, as a user would on three machines, with no `DMSC_STORE_ADDR`. Every
//! rank checks that its host's peers are served by shared memory and the others by TCP,
//! that the reported topology is the bed's (hosts, names, every link measured), that every
//! collective is exact, and that a 64 MiB all-reduce is exact (`support/worker.rs`, case
//! `cluster`). The test then reads from the COLL log that the planner chose the
//! hierarchical schedule for that all-reduce on every rank.
//!
//! Needs root, iproute2 with bridge, veth and tbf support, unshare and mount
//! (`cluster.sh check`); otherwise the test prints why and passes without running (CI runs
//! as root).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/collect.rs"]
mod collect;
#[path = "support/worker.rs"]
mod worker;

use collect::collect;

const BED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netbed/cluster.sh");
const NAME: &str = "dmscbed";
const HOSTS: usize = 3;
const PER_HOST: usize = 3;

fn bed(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(BED)
        .args(args)
        .output()
        .expect("run cluster.sh")
}

/// The bed's hosts; torn down on drop.
struct Bed;

impl Bed {
    fn up() -> Bed {
        let out = bed(&["up", NAME, &HOSTS.to_string(), "1000"]);
        assert!(
            out.status.success(),
            "cluster.sh up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Bed
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        bed(&["down", NAME, &HOSTS.to_string()]);
    }
}

/// Start `dmscrun` for node `i` inside host `i`.
fn start_node(i: usize, master: &str, secret: &str) -> std::process::Child {
    let exe = std::env::current_exe().expect("test executable path");
    let hosts: Vec<String> = (0..HOSTS * PER_HOST)
        .map(|r| (r / PER_HOST).to_string())
        .collect();
    Command::new("bash")
        .arg(BED)
        .args(["exec", NAME, &i.to_string(), env!("CARGO_BIN_EXE_dmscrun")])
        .args([
            "--nnodes",
            &HOSTS.to_string(),
            "--node-rank",
            &i.to_string(),
        ])
        .args(["--master-addr", master, "--master-port", "29561"])
        .args(["--nproc-per-node", &PER_HOST.to_string()])
        .arg(exe)
        .args(["--ignored", "--exact", "worker::entry", "--nocapture"])
        .arg("--test-threads=1")
        .env("DMSC_TEST_CASE", "cluster")
        .env("DMSC_TEST_HOSTS", hosts.join(","))
        .env("DMSC_SECRET", secret)
        .env("DMSC_TIMEOUT", "60")
        .env("DMSC_DEBUG", "INFO")
        .env("DMSC_DEBUG_SUBSYS", "COLL")
        .env_remove("DMSC_STORE_ADDR")
        .env_remove("DMSC_ALGO")
        .env_remove("DMSC_SHM")
        .env_remove("DMSC_TRANSPORT")
        .env_remove("DMSC_TOPO_PROBE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a node")
}

#[test]
fn three_hosts_of_three_ranks_plan_hierarchically_and_are_exact() {
    let check = bed(&["check"]);
    if !check.status.success() {
        println!(
            "cluster_bed: skipped ({})",
            String::from_utf8_lossy(&check.stdout).trim()
        );
        return;
    }
    let _bed = Bed::up();
    let master = String::from_utf8(bed(&["ip", "0"]).stdout).expect("an address");
    let secret = "cluster-bed-test-secret-0123456789";
    let nodes: Vec<_> = (0..HOSTS)
        .map(|i| start_node(i, master.trim(), secret))
        .collect();
    let start = Instant::now();
    let (ok, text) = collect(nodes, start, Duration::from_secs(300), "the cluster job");
    let n = HOSTS * PER_HOST;
    let tail = || text.lines().rev().take(60).collect::<Vec<_>>().join("\n");
    assert!(ok, "a node failed:\n{}", tail());
    for mark in ["MIXED-TRANSPORTS", "TOPOLOGY-OK", "CASE-OK", "CLUSTER-OK"] {
        assert_eq!(text.matches(mark).count(), n, "{mark}:\n{}", tail());
    }
    let planned: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("all_reduce(count=16777216, dtype=float, op=sum) planned with"))
        .collect();
    assert_eq!(
        planned.len(),
        n,
        "one plan per rank:\n{}",
        planned.join("\n")
    );
    assert!(
        planned.iter().all(|l| l.contains("planned with hier ")),
        "64 MiB is not planned hierarchically everywhere:\n{}",
        planned.join("\n")
    );
    let links: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("TOPOLOGY-OK rank 0"))
        .collect();
    println!("cluster_bed: {:?}; {}", start.elapsed(), links.join("; "));
}
