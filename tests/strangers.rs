//! Strangers at the door of a running job (issue 4, acceptance item 3).
//!
//! The test starts three ranks of this executable (the ignored `rank_entry` test) with a known
//! `DMSC_SECRET` and a store on a known port. While they all-reduce 1 MiB of checked values
//! in a loop, the test process connects to the store with a wrong secret, with no secret,
//! with random bytes, with a valid store request header announcing an absurd length, and
//! with silence; and it looks for the ranks' data ports, which must be closed once the mesh
//! is up. The job must finish with correct results on every rank, and rank 0 must have
//! logged the refusals with the strangers' addresses.
//!
//! The accept path of the data ports while they are open (during setup) is tested in
//! `dmsc-transports` (`tcp::setup::tests`), with strangers connecting before the real peers.

use dmsc::{Communicator, ReduceOp, Secret};
use dmsc_transports::store::StoreClient;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const SECRET: &str = "strangers-test: 32 bytes of key!";
const RANKS: usize = 3;
const COUNT: usize = 1 << 18; // 1 MiB of f32

/// One rank: all-reduce until rank 0 sees the stop file, checking every result.
#[test]
#[ignore = "a rank of `a_job_survives_strangers`, started by it"]
fn rank_entry() {
    let stop = PathBuf::from(std::env::var("DMSC_TEST_STOP").expect("DMSC_TEST_STOP"));
    let c = Communicator::from_env().expect("init");
    let (rank, n) = (c.rank(), c.size());
    let mut iters = 0u64;
    let start = Instant::now();
    loop {
        let mut v: Vec<f32> = (0..COUNT)
            .map(|i| (rank + 1) as f32 + (i % 13) as f32 + (iters % 5) as f32)
            .collect();
        c.all_reduce_in_place(&mut v, ReduceOp::Sum)
            .expect("all_reduce");
        let tri = (n * (n + 1) / 2) as f32;
        for (i, &x) in v.iter().enumerate() {
            let want = tri + n as f32 * ((i % 13) as f32 + (iters % 5) as f32);
            assert_eq!(x, want, "rank {rank} iteration {iters} element {i}");
        }
        iters += 1;
        if iters == 1 && rank == 0 {
            println!("LOOPING");
        }
        // Rank 0 decides when to stop; everyone learns it from the same all-reduce.
        let mut flag = [u32::from(rank == 0 && stop.exists())];
        c.all_reduce_in_place(&mut flag, ReduceOp::Max)
            .expect("all_reduce of the stop flag");
        if flag[0] == 1 || start.elapsed() > Duration::from_secs(90) {
            break;
        }
    }
    println!("STRANGERS-OK rank {rank} after {iters} iterations");
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Collect a child's stdout and stderr into one shared string, as they come.
fn collect(child: &mut Child) -> (Arc<Mutex<String>>, Vec<thread::JoinHandle<()>>) {
    let text = Arc::new(Mutex::new(String::new()));
    let mut readers = Vec::new();
    let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
    let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
    for mut pipe in [out, err] {
        let text = text.clone();
        readers.push(thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }));
    }
    (text, readers)
}

/// Whether the server closes `s` (rather than leaving it open) within `limit`, reading and
/// skipping whatever it sends first (its authentication challenge).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// Pseudo-random bytes (xorshift), different for every `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

#[test]
fn a_job_survives_strangers() {
    let port = free_port();
    let store: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stop = std::env::temp_dir().join(format!("dmsc-strangers-{}-stop", std::process::id()));
    let _ = std::fs::remove_file(&stop);
    let exe = std::env::current_exe().unwrap();
    let mut ranks: Vec<Child> = (0..RANKS)
        .map(|r| {
            Command::new(&exe)
                .args(["--ignored", "--exact", "rank_entry", "--nocapture"])
                .args(["--test-threads=1"])
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", RANKS.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("DMSC_SECRET", SECRET)
                .env("DMSC_TIMEOUT", "60")
                .env("DMSC_TEST_STOP", &stop)
                .env_remove("DMSC_STORE_ADDR")
                .env_remove("DMSC_RANK")
                .env_remove("DMSC_WORLD_SIZE")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a rank")
        })
        .collect();
    let outputs: Vec<_> = ranks.iter_mut().map(collect).collect();
    let kill_all = |ranks: &mut Vec<Child>| {
        for c in ranks.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    };

    // Wait until the job is running its loop.
    let t0 = Instant::now();
    while !outputs[0].0.lock().unwrap().contains("LOOPING") {
        if t0.elapsed() > Duration::from_secs(60) {
            kill_all(&mut ranks);
            panic!("the job never started:\n{}", outputs[0].0.lock().unwrap());
        }
        thread::sleep(Duration::from_millis(20));
    }
    let attack_start = Instant::now();

    // (d) Silence: connect and say nothing (checked below).
    let mut silent = TcpStream::connect(store).unwrap();

    // (a) A client with the wrong secret, and one with none: refused, with a clear error.
    let wrong = Secret::new(b"not the job's secret at all").unwrap();
    let e = StoreClient::connect(store, Duration::from_secs(5), Some(&wrong)).unwrap_err();
    assert!(e.to_string().contains("did not prove knowledge"), "{e}");
    let e = StoreClient::connect(store, Duration::from_secs(5), None).unwrap_err();
    assert!(e.to_string().contains("secret mismatch"), "{e}");

    // (b) Random bytes, (c) a valid store request header announcing a 4 GiB body, and an
    // authentication header with garbage after it: each closed at once.
    let mut huge = b"DMSS\x01\x01".to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    let mut fake_auth = b"DMSA\x01\x02\x00\x00".to_vec();
    fake_auth.extend_from_slice(&noise(7, 32));
    for (what, bytes) in [
        ("random bytes", noise(1, 64 << 10)),
        ("an absurd length", huge),
        ("a forged proof", fake_auth),
    ] {
        let mut s = TcpStream::connect(store).unwrap();
        let _ = s.write_all(&bytes);
        assert!(
            closed_within(&mut s, Duration::from_secs(5)),
            "the store kept a connection that sent {what}"
        );
    }

    // The silent stranger is dropped after the store's authentication deadline.
    assert!(closed_within(&mut silent, Duration::from_secs(15)));
    let silent_for = attack_start.elapsed();

    // A flood of short-lived garbage connections.
    let flood: Vec<_> = (0..64)
        .map(|i| {
            thread::spawn(move || {
                if let Ok(mut s) = TcpStream::connect(store) {
                    let _ = s.write_all(&noise(100 + i, 100));
                    closed_within(&mut s, Duration::from_secs(10))
                } else {
                    true
                }
            })
        })
        .collect();
    for t in flood {
        assert!(t.join().unwrap(), "a garbage connection was kept open");
    }

    // The data ports: learn them from the store like a rank would (the test knows the
    // secret); once the mesh is up nothing listens there any more.
    let key = Secret::new(SECRET.as_bytes()).unwrap();
    let mut c = StoreClient::connect(store, Duration::from_secs(5), Some(&key)).unwrap();
    let id = c.get("dmsc/world/id", Duration::from_secs(5)).unwrap();
    let id = u64::from_le_bytes(id.try_into().unwrap());
    for r in 0..RANKS {
        let addr = c
            .get(
                &format!("dmsc/world/{id:016x}/addr/{r}"),
                Duration::from_secs(5),
            )
            .unwrap();
        let rec = dmsc_transports::connect::Record::decode(&addr, r).unwrap();
        let card = rec.card;
        let addr: SocketAddr = std::str::from_utf8(rec.addrs).unwrap().parse().unwrap();
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            let _ = s.write_all(&noise(r as u64, 4096));
            assert!(closed_within(&mut s, Duration::from_secs(10)));
        }
        // Nor does anything listen on the rank's shared-memory socket once it is set up.
        if card.willing {
            use std::os::linux::net::SocketAddrExt;
            let name = std::os::unix::net::SocketAddr::from_abstract_name(card.socket_name());
            assert!(
                std::os::unix::net::UnixStream::connect_addr(&name.unwrap()).is_err(),
                "rank {r}'s shared-memory listener is still open after set-up"
            );
        }
    }
    drop(c);

    let attacks_took = attack_start.elapsed();

    std::fs::write(&stop, b"stop").unwrap();
    let t = Instant::now();
    let mut codes = Vec::new();
    for c in ranks.iter_mut() {
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                codes.push(status.code());
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                kill_all(&mut ranks);
                panic!("the job did not finish after the stop request");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_file(&stop);
    let texts: Vec<String> = outputs
        .into_iter()
        .map(|(text, readers)| {
            readers.into_iter().for_each(|r| r.join().unwrap());
            let t = text.lock().unwrap().clone();
            t
        })
        .collect();
    let all = texts.join("\n----\n");
    assert!(codes.iter().all(|&c| c == Some(0)), "{codes:?}\n{all}");
    assert_eq!(all.matches("STRANGERS-OK").count(), RANKS, "{all}");
    let refusals = texts[0]
        .matches("DMSC WARN BOOTSTRAP: store refused 127.0.0.1:")
        .count();
    assert!(
        refusals >= 5,
        "rank 0 logged {refusals} refusals:\n{}",
        texts[0]
    );
    assert!(texts[0].contains("did not prove knowledge"), "{}", texts[0]);
    assert!(texts[0].contains("no authentication within the deadline"));
    eprintln!(
        "strangers took {attacks_took:?}; the silent one was dropped after {silent_for:?}; \
         rank 0 logged {refusals} refusals; {}",
        texts[0]
            .lines()
            .find(|l| l.contains("STRANGERS-OK"))
            .unwrap_or("")
    );
}
