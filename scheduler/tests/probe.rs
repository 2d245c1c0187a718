//! The link matrix measured by dmsc itself: `dmsc-serve probe` launches local ranks that run
//! the point-to-point probe over dmsc send/recv.

use dmsc_scheduler::cluster::LinkMatrix;
use std::process::Command;

fn probe(n: usize) -> LinkMatrix {
    probe_to(n).0
}

fn probe_to(n: usize) -> (LinkMatrix, String) {
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("dmsc-probe-{}-{n}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("links.json");
    let status = Command::new(env!("CARGO_BIN_EXE_dmsc-serve"))
        .args(["probe", "--np", &n.to_string(), "--out"])
        .arg(&out)
        .args(["--bytes", "1048576"])
        .env("DMSC_TIMEOUT", "30")
        .status()
        .expect("run dmsc-serve probe");
    assert!(status.success(), "probe on {n} ranks failed: {status}");
    let text = std::fs::read_to_string(&out).expect("rank 0 wrote the matrix");
    let _ = std::fs::remove_dir_all(&dir);
    (serde_json::from_str(&text).expect("a link matrix"), text)
}

#[test]
fn measures_every_pair_on_2_and_4_ranks() {
    for n in [2, 4] {
        let m = probe(n);
        m.validate(n, "links").expect("a complete, valid matrix");
        for i in 0..n {
            for j in 0..n {
                if i == j {
                    continue;
                }
                let (bw, lat) = (m.bandwidth[i][j], m.latency[i][j]);
                println!(
                    "RESULT probe n={n} {i}->{j}: {:.2} GB/s, {:.1} us",
                    bw / 1e9,
                    lat * 1e6
                );
                // Loopback moves more than 10 MB/s and answers within a second.
                assert!(bw > 1e7, "{i}->{j}: {bw} B/s");
                assert!(lat > 0.0 && lat < 1.0, "{i}->{j}: {lat} s");
                assert_eq!(m.latency[i][j], m.latency[j][i]);
            }
        }
    }
}

#[test]
fn a_measured_matrix_places_the_stages_of_a_plan() {
    let (m, text) = probe_to(4);
    m.validate(4, "links").unwrap();
    let dir = std::env::temp_dir().join(format!("dmsc-probe-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let links = dir.join("links.json");
    std::fs::write(&links, text).unwrap();
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_dmsc-serve"))
        .args(["plan", "--strategy", "dp", "--model"])
        .arg(manifest.join("profiles/resnet18.json"))
        .arg("--cluster")
        .arg(manifest.join("profiles/cluster-4.json"))
        .arg("--links")
        .arg(&links)
        .env("DMSC_SERVE_LOG", "warn")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ranks: Vec<u64> = serde_json::from_value(plan["ranks"].clone()).unwrap();
    ranks.sort();
    assert_eq!(ranks, vec![0, 1, 2, 3]);
    println!(
        "RESULT probe plan: resnet18 on measured links: cuts {} ranks {} bottleneck {}",
        plan["cuts"], plan["ranks"], plan["bottleneck_s"]
    );
}
