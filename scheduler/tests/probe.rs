//! The link matrix measured by dmsc itself: `dmsc-serve probe` launches local ranks that run
//! the point-to-point probe over dmsc send/recv.

use dmsc_scheduler::cluster::LinkMatrix;
use std::process::Command;

fn probe(n: usize) -> LinkMatrix {
    let dir = std::env::temp_dir().join(format!("dmsc-probe-{}-{n}", std::process::id()));
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
    serde_json::from_str(&text).expect("a link matrix")
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
