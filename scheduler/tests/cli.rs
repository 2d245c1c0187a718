//! `dmsc-serve plan` end to end on the shipped profiles, and its errors.

use std::process::Command;

fn serve(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dmsc-serve"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DMSC_SERVE_LOG", "warn")
        .output()
        .expect("run dmsc-serve");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plans_the_shipped_profiles_with_every_chain_strategy() {
    for model in ["profiles/resnet18.json", "profiles/gpt2-small.json"] {
        let mut bottleneck = std::collections::HashMap::new();
        for s in ["even", "dp", "bisect", "tabu"] {
            let (ok, out, err) = serve(&[
                "plan",
                "--model",
                model,
                "--cluster",
                "profiles/cluster-4.json",
                "--strategy",
                s,
            ]);
            assert!(ok, "{model} {s}: {err}");
            let p: serde_json::Value = serde_json::from_str(&out).expect("plan JSON");
            let cuts: Vec<u64> = serde_json::from_value(p["cuts"].clone()).unwrap();
            assert_eq!(cuts.len(), 5, "{out}");
            assert_eq!(p["stages"].as_array().unwrap().len(), 4);
            let b = p["bottleneck_s"].as_f64().unwrap();
            let times: Vec<f64> = p["stages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["time_s"].as_f64().unwrap())
                .collect();
            assert_eq!(times.iter().copied().fold(0.0, f64::max), b);
            let sum: f64 = times.iter().sum();
            let pt = p["pipeline_time_s"].as_f64().unwrap();
            assert!(
                (pt - (sum + 7.0 * b)).abs() <= 1e-12 * pt,
                "{pt} vs {}",
                sum + 7.0 * b
            );
            println!("RESULT plan {model} {s}: cuts {cuts:?} ranks {} bottleneck {b:.5} s pipeline {pt:.5} s", p["ranks"]);
            bottleneck.insert(s, b);
        }
        assert_eq!(bottleneck["dp"], bottleneck["bisect"]);
        assert!(bottleneck["dp"] <= bottleneck["even"]);
        // Tabu also reorders ranks, so it may beat DP on the link-placed order.
        assert!(bottleneck["tabu"] <= bottleneck["dp"] * 1.01);
    }
}

#[test]
fn errors_name_what_was_wrong() {
    let (ok, _, err) = serve(&[
        "plan",
        "--model",
        "profiles/resnet18.json",
        "--cluster",
        "profiles/cluster-4.json",
        "--strategy",
        "magic",
    ]);
    assert!(
        !ok && err.contains("strategy") && err.contains("magic"),
        "{err}"
    );
    let (ok, _, err) = serve(&["plan", "--cluster", "profiles/cluster-4.json"]);
    assert!(!ok && err.contains("--model"), "{err}");
    let (ok, _, err) = serve(&[
        "plan",
        "--model",
        "profiles/resnet18.json",
        "--cluster",
        "profiles/cluster-4.json",
        "--stages",
        "9",
    ]);
    assert!(!ok && err.contains("stages"), "{err}");
    let dir = std::env::temp_dir().join(format!("dmsc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"name":"c","base_flops":1e12,"ranks":[{"name":"a","speed":0,"memory_bytes":1}]}"#,
    )
    .unwrap();
    let (ok, _, err) = serve(&[
        "plan",
        "--model",
        "profiles/resnet18.json",
        "--cluster",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("ranks[0].speed"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without the `etcd` feature, choosing etcd is refused before anything starts, naming the
/// feature (flag and environment variable alike).
#[cfg(not(feature = "etcd"))]
#[test]
fn the_etcd_registry_needs_the_etcd_feature() {
    let demo = [
        "demo",
        "--token",
        "test-token-0123",
        "--bind",
        "127.0.0.1:0",
    ];
    let mut args = demo.to_vec();
    args.extend(["--registry", "etcd=http://127.0.0.1:2379"]);
    let (ok, _, err) = serve(&args);
    assert!(!ok);
    assert!(err.contains("built without the `etcd` feature"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_dmsc-serve"))
        .args(demo)
        .env("DMSC_SERVE_REGISTRY", "etcd=http://127.0.0.1:2379")
        .output()
        .expect("run dmsc-serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("built without the `etcd` feature"), "{err}");
}
