//! The four-layer demo end to end: submit through the gateway (and be refused without the
//! token), watch the progress stream, kill a worker mid-job, and check that the job resumed
//! from a checkpoint and that its trained weights equal a single-process run's.

use dmsc_scheduler::mlp::{self, JobSpec};
use dmsc_scheduler::store::Store;
use dmsc_scheduler::worker::checkpoint_key;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-0123";

struct Gateway {
    child: Child,
    url: String,
    dir: std::path::PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// The child is killed and reaped by `Gateway`'s Drop; panics before that end the test.
#[allow(clippy::zombie_processes)]
fn start() -> Gateway {
    let dir = std::env::temp_dir().join(format!("dmsc-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dmsc-serve"))
        .args([
            "demo",
            "--token",
            TOKEN,
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "4",
            "--db",
        ])
        .arg(dir.join("demo.sqlite"))
        .env("DMSC_SERVE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dmsc-serve demo");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway exited before listening");
        }
        if let Some(addr) = line.trim().strip_prefix("LISTENING ") {
            let url = format!("http://{addr}");
            // Keep draining the ranks' output so they never block on a full pipe.
            std::thread::spawn(move || {
                let mut sink = String::new();
                let _ = out.read_to_string(&mut sink);
            });
            return Gateway { child, url, dir };
        }
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn get(g: &Gateway, path: &str) -> Value {
    client()
        .get(format!("{}{path}", g.url))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn train_through_the_gateway_kill_a_worker_and_match_a_single_process_run() {
    let g = start();
    let c = client();
    let spec = JobSpec {
        steps: 80,
        step_ms: 25,
        checkpoint_every: 5,
        seed: 7,
        ..JobSpec::default()
    };

    // Business layer: no token, or a wrong one: 401, and nothing is queued.
    let r = c
        .post(format!("{}/jobs", g.url))
        .json(&spec)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .post(format!("{}/jobs", g.url))
        .bearer_auth("wrong-token-000")
        .json(&spec)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = c.get(format!("{}/jobs", g.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(get(&g, "/jobs")["jobs"], json!([]));
    // A bad job is refused with the field named.
    let r = c
        .post(format!("{}/jobs", g.url))
        .bearer_auth(TOKEN)
        .body(r#"{"stages": 9}"#)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().unwrap().contains("stages"));

    let r = c
        .post(format!("{}/jobs", g.url))
        .bearer_auth(TOKEN)
        .json(&spec)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().unwrap()["id"].as_u64().unwrap();

    // The progress stream yields server-sent events.
    let mut stream = c
        .get(format!("{}/jobs/{id}/progress", g.url))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        first.contains("event: progress") && first.contains("data:"),
        "{first}"
    );
    drop(stream);

    // Wait until it is a third of the way through, then kill one worker with SIGKILL.
    let t = Instant::now();
    let victim = loop {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no progress: {}",
            get(&g, &format!("/jobs/{id}"))
        );
        let v = get(&g, &format!("/jobs/{id}"));
        let step = v["progress"]["step"].as_u64().unwrap_or(0);
        let workers = get(&g, "/registry")["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if step >= 20 && workers.len() == 4 {
            let w = workers
                .iter()
                .find(|w| w["rank"] == json!(1))
                .expect("rank 1 registered");
            break (w["pid"].as_u64().unwrap(), step);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = Command::new("kill")
        .args(["-KILL", &victim.0.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    println!(
        "RESULT demo: killed rank 1 (pid {}) at step {}",
        victim.0, victim.1
    );

    // The job is replaced, resumes from its last checkpoint and completes.
    let t = Instant::now();
    let done = loop {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "job did not finish: {}",
            get(&g, &format!("/jobs/{id}"))
        );
        let v = get(&g, &format!("/jobs/{id}"));
        match v["status"]["state"].as_str() {
            Some("done") => break v,
            Some("failed") => panic!("job failed: {v}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let resumed: Vec<u64> = serde_json::from_value(done["resumed_from"].clone()).unwrap();
    println!(
        "RESULT demo: resumed from steps {resumed:?}; result {}",
        done["status"]["result"]
    );
    assert_eq!(resumed[0], 0);
    assert!(resumed.len() >= 2, "the job was not restarted: {resumed:?}");
    assert!(
        resumed[1] >= 15 && resumed[1] <= victim.1,
        "resumed from {} (killed at {})",
        resumed[1],
        victim.1
    );

    // Data layer: the final weights in the store equal a single-process run's.
    let cuts: Vec<usize> =
        serde_json::from_value(done["status"]["result"]["cuts"].clone()).unwrap();
    let (reference, ref_loss) = mlp::train_reference(&spec, &cuts);
    let store = Store::open(&g.dir.join("demo.sqlite")).unwrap();
    let mut max_diff = 0f32;
    for (s, want) in reference.iter().enumerate() {
        let (step, bytes) = store
            .latest_checkpoint(&checkpoint_key(id, s))
            .unwrap()
            .expect("final weights");
        assert_eq!(step, spec.steps);
        let got = mlp::from_bytes(&bytes).unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(want) {
            max_diff = max_diff.max((a - b).abs());
        }
    }
    let loss = done["progress"]["loss"].as_f64().unwrap();
    println!("RESULT demo: weights max |pipeline - single process| = {max_diff:e}; loss {loss} vs {ref_loss}");
    assert!(max_diff <= 1e-6, "weights differ by {max_diff}");
}
