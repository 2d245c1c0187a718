//! The etcd registry backend against a real etcd (feature `etcd`): each test starts its own
//! `etcd` on loopback, in a temporary data directory, on free ports. Without the `etcd`
//! binary these tests fail, saying to install Debian's `etcd-server`.
#![cfg(feature = "etcd")]

use dmsc_scheduler::etcd::EtcdRegistry;
use dmsc_scheduler::registry::{Heartbeat, ServiceRegistry};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-0123";

/// An etcd process, killed and its data directory removed on drop.
struct Etcd {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn log_of(dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Start etcd (`$DMSC_ETCD`, else `etcd` on the PATH) and wait until it answers.
// The child is killed and reaped by `Etcd`'s Drop; panics before that end the test.
#[allow(clippy::zombie_processes)]
fn start_etcd(tag: &str) -> Etcd {
    let exe = std::env::var("DMSC_ETCD").unwrap_or_else(|_| "etcd".into());
    let dir = std::env::temp_dir().join(format!("dmsc-etcd-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the etcd temp dir");
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let log = std::fs::File::create(dir.join("etcd.log")).expect("create etcd.log");
    let child = Command::new(&exe)
        .arg("--name")
        .arg(format!("dmsc-test-{tag}"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("dmsc-test-{tag}=http://127.0.0.1:{peer}"),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "the `{exe}` binary was not found: these tests (feature `etcd`) need a real etcd; \
             install Debian's `etcd-server` (apt-get install -y etcd-server), or set DMSC_ETCD \
             to an etcd binary, or run the tests without --features etcd"
        ),
        Err(e) => panic!("starting `{exe}`: {e}"),
    };
    let mut etcd = Etcd { child, url, dir };
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("an HTTP client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = etcd.child.try_wait() {
            panic!(
                "etcd exited ({status}) before answering:\n{}",
                log_of(&etcd.dir)
            );
        }
        // Answers once it has a leader and serves the KV API.
        let ok = http
            .post(format!("{}/v3/kv/range", etcd.url))
            .body(r#"{"key":"AA=="}"#)
            .send()
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return etcd;
        }
        if Instant::now() > deadline {
            let log = log_of(&etcd.dir);
            etcd.child.kill().ok();
            panic!("etcd did not answer at {} within 30 s:\n{log}", etcd.url);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn beat(service: &str, instance: &str, pid: u32) -> Heartbeat {
    Heartbeat {
        service: service.into(),
        instance: instance.into(),
        pid,
        job: None,
        rank: None,
    }
}

fn names(r: &mut EtcdRegistry, service: Option<&str>) -> Vec<String> {
    r.discover(service, 0)
        .expect("discover")
        .into_iter()
        .map(|i| format!("{}/{}", i.beat.service, i.beat.instance))
        .collect()
}

#[test]
fn services_register_discover_expire_after_their_ttl_and_deregister() {
    let etcd = start_etcd("registry");
    let mut r = EtcdRegistry::connect(&etcd.url, 2).expect("connect");
    // Another connection: what one registers, any client of the same etcd discovers.
    let mut other = EtcdRegistry::connect(&etcd.url, 2).expect("connect");

    r.heartbeat(beat("worker", "w1", 11), 0).unwrap();
    r.heartbeat(beat("store", "s1", 12), 0).unwrap();
    assert_eq!(names(&mut other, None), ["store/s1", "worker/w1"]);
    assert_eq!(names(&mut other, Some("worker")), ["worker/w1"]);
    assert!(
        names(&mut other, Some("work")).is_empty(),
        "prefix is per service"
    );
    let found = other.discover(Some("store"), 0).unwrap();
    assert_eq!(found[0].beat.pid, 12);

    // s1's heartbeats stop; w1 keeps beating every 300 ms and stays.
    let silent = Instant::now();
    let expired = loop {
        r.heartbeat(beat("worker", "w1", 11), 0).unwrap();
        let live = names(&mut other, None);
        assert!(live.contains(&"worker/w1".to_string()), "{live:?}");
        if !live.contains(&"store/s1".to_string()) {
            break silent.elapsed();
        }
        assert!(
            silent.elapsed() < Duration::from_secs(6),
            "s1 still registered 6 s after its last heartbeat (TTL 2 s)"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    eprintln!(
        "s1 expired {} ms after its last heartbeat (TTL 2 s)",
        expired.as_millis()
    );
    assert!(
        expired >= Duration::from_millis(1500),
        "s1 expired after only {expired:?}, before its 2 s TTL"
    );

    // A heartbeat after expiry registers it again, under a new lease.
    r.heartbeat(beat("store", "s1", 13), 0).unwrap();
    assert_eq!(other.discover(Some("store"), 0).unwrap()[0].beat.pid, 13);
    // A changed heartbeat rewrites the record under the same lease.
    r.heartbeat(beat("worker", "w1", 14), 0).unwrap();
    assert_eq!(other.discover(Some("worker"), 0).unwrap()[0].beat.pid, 14);

    // Deregistering revokes the lease: gone at once, not after the TTL.
    r.deregister("worker", "w1").unwrap();
    assert_eq!(names(&mut other, None), ["store/s1"]);
    // Another client deregisters what it did not register by deleting the key.
    other.deregister("store", "s1").unwrap();
    assert!(names(&mut r, None).is_empty());
    r.deregister("store", "s1").unwrap();

    // Errors name what was wrong.
    let e = r.heartbeat(beat("a/b", "x", 1), 0).unwrap_err().to_string();
    assert!(e.contains("must not contain `/`"), "{e}");
    let e = r
        .heartbeat(beat("worker", " ", 1), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("instance"), "{e}");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let e = EtcdRegistry::connect(&dead, 2).unwrap_err().to_string();
    assert!(e.contains(&dead), "{e}");
}

#[test]
fn an_etcd_error_names_the_call_the_key_and_etcds_message() {
    let etcd = start_etcd("errors");
    let mut r = EtcdRegistry::connect(&etcd.url, 2).expect("connect");
    r.heartbeat(beat("worker", "w1", 1), 0).unwrap();
    // etcd refuses a lease longer than its maximum TTL: its message comes through.
    let mut greedy = EtcdRegistry::connect(&etcd.url, 10_000_000_000).expect("connect");
    let e = greedy
        .heartbeat(beat("worker", "w2", 1), 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lease grant for /dmsc/services/worker/w2 at http://127.0.0.1:")
            && e.contains("etcd says: etcdserver: too large lease TTL"),
        "{e}"
    );
    // Stop etcd: the next call names the endpoint and the key.
    drop(etcd);
    let e = r
        .heartbeat(beat("worker", "w1", 1), 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lease keepalive for /dmsc/services/worker/w1 at http://127.0.0.1:"),
        "{e}"
    );
}

/// A `dmsc-serve demo` gateway, killed on drop.
struct Gateway {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Start the demo gateway with `--registry registry`; its address, or its stderr if it
/// exited before listening.
// The child is killed and reaped by `Gateway`'s Drop, or here when it exits early.
#[allow(clippy::zombie_processes)]
fn start_gateway(registry: &str, tag: &str) -> Result<Gateway, String> {
    let dir = std::env::temp_dir().join(format!("dmsc-etcd-gw-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the gateway temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dmsc-serve"))
        .args(["demo", "--token", TOKEN, "--bind", "127.0.0.1:0"])
        .args(["--workers", "2", "--registry", registry, "--db"])
        .arg(dir.join("demo.sqlite"))
        .env("DMSC_SERVE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dmsc-serve demo");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(err);
        }
        if let Some(addr) = line.trim().strip_prefix("LISTENING ") {
            let url = format!("http://{addr}");
            return Ok(Gateway { child, url, dir });
        }
    }
}

#[test]
fn the_demo_gateway_keeps_its_registry_in_etcd() {
    let etcd = start_etcd("gateway");
    let g = start_gateway(&format!("etcd={}", etcd.url), "up").expect("the gateway starts");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let post = |instance: &str| {
        http.post(format!("{}/registry/heartbeat", g.url))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({
                "service": "worker", "instance": instance, "pid": 7, "job": 1, "rank": 0
            }))
            .send()
            .expect("heartbeat")
            .status()
            .as_u16()
    };
    let live = || -> Vec<String> {
        let v: Value = http
            .get(format!("{}/registry", g.url))
            .bearer_auth(TOKEN)
            .send()
            .expect("GET /registry")
            .json()
            .expect("registry JSON");
        v["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .map(|i| i["instance"].as_str().unwrap_or("").to_string())
            .collect()
    };
    // What the demo's workers do: heartbeats through the gateway, discovery through it.
    assert_eq!(post("job1-rank0"), 204);
    assert_eq!(post("job1-rank1"), 204);
    assert_eq!(post("job1-rank0"), 204);
    assert_eq!(live(), ["job1-rank0", "job1-rank1"]);
    // The records are in etcd itself, where any client finds them.
    let mut direct = EtcdRegistry::connect(&etcd.url, 3).unwrap();
    let found = direct.discover(Some("worker"), 0).unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].beat.job, Some(1));
    // A bad heartbeat is refused with the field named, as with the in-process registry.
    assert_eq!(post(""), 400);
    // Heartbeats stop: the gateway's 3 s leases expire in etcd.
    let silent = Instant::now();
    while !live().is_empty() {
        assert!(silent.elapsed() < Duration::from_secs(8), "{:?}", live());
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "the gateway's instances expired {} ms after their last heartbeat (TTL 3 s)",
        silent.elapsed().as_millis()
    );
    assert!(silent.elapsed() >= Duration::from_millis(2500));
    drop(g);

    // An etcd that does not answer: the gateway exits, naming the endpoint.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let err = match start_gateway(&format!("etcd={dead}"), "dead") {
        Ok(_) => panic!("the gateway started without etcd"),
        Err(err) => err,
    };
    assert!(
        err.contains(&format!("reaching etcd at {dead}/version")),
        "{err}"
    );
}
