//! Packet spraying across network namespaces: two hosts joined by four shaped veth paths
//! (100/200/300/400 Mbit/s, `tests/netbed/netbed.sh`), paths cut and restored while data
//! moves. Needs root and `ip`/`tc`; otherwise every test here prints why and passes without
//! running (the acceptance runs are in CI, which is root).
//!
//! Ranks are this test binary started again (`rank_entry`) inside the namespaces with
//! `ip netns exec`, joined through a store on the unshaped management link, with
//! `DMSC_PATHS=4 DMSC_SOCKET_IFNAME==sp0,sp1,sp2,sp3 DMSC_CMA=0` (memory attach would
//! bypass the network: the namespaces share one kernel). Each rank checks every byte it
//! receives against what its peer must have sent, and prints its path metrics every 20 ms,
//! from which the driver measures when a restored path carries data again. Every wait is
//! bounded; a hang fails the test and kills the ranks.
//!
//! `SN_CUTS=n` changes the number of random cuts (default 26), `--nocapture` shows the
//! measurements.

use dmsc::{Communicator, Error, ReduceOp};
#[path = "support/procs.rs"]
mod procs;
use procs::{forward, summary, unix_ns, Line, Rng};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Bytes a rank sends to its peer per iteration.
const P2P_BYTES: usize = 32 << 20;
/// Distinct payloads a rank cycles through.
const PATTERNS: usize = 3;
/// f32 elements of the all-reduce per iteration.
const AR_ELEMS: usize = 1 << 18;
const PATHS: usize = 4;
const RATES: [&str; PATHS] = ["100", "200", "300", "400"];
const PHASE_LIMIT: Duration = Duration::from_secs(60);

/// One bed at a time: they share the 10.77/16 addresses.
static SERIAL: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------
// Rank side.

/// Byte `i` of what `rank` sends in iteration `it`.
fn pattern(rank: usize, it: u64, i: usize) -> u8 {
    let x = (i as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(it.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(rank as u64 * 0x94D0_49BB_1331_11EB);
    (x >> 29) as u8
}

/// The rank entry point; started by the tests below.
#[test]
#[ignore = "entry point of the ranks started by the netns spraying tests"]
fn rank_entry() {
    let sockets_before = count_sockets();
    let comm = Communicator::from_env().unwrap_or_else(|e| panic!("init: {e}"));
    let rank = comm.rank();
    println!("SN-READY {rank}");
    let stop = PathBuf::from(std::env::var("SN_STOP").expect("SN_STOP"));
    let mode = std::env::var("SN_MODE").unwrap_or_default();
    // Metrics, every 20 ms, from a second thread (reading them takes no engine lock).
    let done = std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|sc| {
        sc.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for p in comm.path_metrics() {
                    let at = p
                        .taken
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0);
                    for m in &p.paths {
                        println!(
                            "SN-PM {rank} {at} {} {} {} {} {} {} {:.0} {}",
                            p.peer,
                            m.path,
                            m.state.name(),
                            m.epoch,
                            m.bytes_acked,
                            m.failures,
                            m.rate_bps,
                            m.inflight
                        );
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let r = match mode.as_str() {
            "ring" => ring(&comm, &stop),
            _ => stream(&comm, &stop),
        };
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    });
    match result {
        Ok(iters) => println!("SN-DONE {rank} {iters}"),
        Err(e) => {
            let kind = match &e {
                Error::PeerLost { .. } => "PeerLost",
                Error::Timeout { .. } => "Timeout",
                _ => "other",
            };
            println!(
                "SN-ERR {rank} {} {kind} {}",
                unix_ns(),
                e.to_string().replace('\n', " ")
            );
        }
    }
    drop(comm);
    println!("SN-SOCKETS {rank} {sockets_before} {}", count_sockets());
}

/// Whether any rank was told to stop (every rank leaves the loop at the same iteration).
fn told_to_stop(comm: &Communicator, stop: &std::path::Path) -> Result<bool, Error> {
    let mut flag = [u32::from(stop.exists())];
    comm.all_reduce_in_place(&mut flag, ReduceOp::Max)?;
    Ok(flag[0] != 0)
}

/// Point-to-point exchange with the other rank plus an all-reduce, every byte checked,
/// until the driver says stop. The payloads rotate among a few precomputed patterns, so
/// checking them (a comparison) leaves the paths busy nearly all the time.
fn stream(comm: &Communicator, stop: &std::path::Path) -> Result<u64, Error> {
    let rank = comm.rank();
    let peer = rank ^ 1;
    let patterns = |r: usize| -> Vec<Vec<u8>> {
        (0..PATTERNS)
            .map(|k| (0..P2P_BYTES).map(|i| pattern(r, k as u64, i)).collect())
            .collect()
    };
    let (mine, theirs) = (patterns(rank), patterns(peer));
    let mut inp = vec![0u8; P2P_BYTES];
    let mut ar = vec![0f32; AR_ELEMS];
    let mut it = 0u64;
    while !told_to_stop(comm, stop)? {
        let k = (it % PATTERNS as u64) as usize;
        inp.fill(0);
        let mut g = comm.group();
        g.send(&mine[k], peer, 7)?;
        g.recv(&mut inp, peer, 7)?;
        g.end()?;
        if inp != theirs[k] {
            let i = (0..P2P_BYTES)
                .find(|&i| inp[i] != theirs[k][i])
                .unwrap_or(0);
            panic!("rank {rank}: iteration {it}: byte {i} from rank {peer} is wrong");
        }
        for (i, v) in ar.iter_mut().enumerate() {
            *v = ((i as u64 * 31 + it + rank as u64) % 1024) as f32;
        }
        comm.all_reduce_in_place(&mut ar, ReduceOp::Sum)?;
        for (i, v) in ar.iter().enumerate() {
            let want: u64 = (0..comm.size() as u64)
                .map(|r| (i as u64 * 31 + it + r) % 1024)
                .sum();
            assert_eq!(
                *v, want as f32,
                "rank {rank}: all-reduce element {i}, iteration {it}"
            );
        }
        it += 1;
        println!("SN-ITER {rank} {it}");
    }
    Ok(it)
}

/// Ring all-reduce over every rank, checked, until the driver says stop.
fn ring(comm: &Communicator, stop: &std::path::Path) -> Result<u64, Error> {
    let mut buf = vec![0f32; 2 << 20];
    let mut it = 0u64;
    while !told_to_stop(comm, stop)? {
        for (i, v) in buf.iter_mut().enumerate() {
            *v = ((i as u64 + 3 * it + comm.rank() as u64 * 7) % 4096) as f32;
        }
        comm.all_reduce_in_place(&mut buf, ReduceOp::Sum)?;
        for (i, v) in buf.iter().enumerate() {
            let want: u64 = (0..comm.size() as u64)
                .map(|r| (i as u64 + 3 * it + r * 7) % 4096)
                .sum();
            assert_eq!(
                *v,
                want as f32,
                "rank {}: element {i}, iteration {it}",
                comm.rank()
            );
        }
        it += 1;
        println!("SN-ITER {} {it}", comm.rank());
    }
    Ok(it)
}

fn count_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .map(|l| l.to_string_lossy().starts_with("socket:"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Driver side.

fn netbed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/netbed/netbed.sh")
}

/// Why the bed cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    match Command::new("bash").arg(netbed()).arg("check").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(
            String::from_utf8_lossy(&o.stdout).trim().to_string()
                + String::from_utf8_lossy(&o.stderr).trim(),
        ),
        Err(e) => Some(format!("cannot run netbed.sh: {e}")),
    }
}

fn bed(args: &[&str]) {
    let o = Command::new("bash")
        .arg(netbed())
        .args(args)
        .output()
        .expect("run netbed.sh");
    assert!(
        o.status.success(),
        "netbed.sh {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A bed that is removed when dropped.
struct Bed(String);

impl Bed {
    fn up(name: &str) -> Bed {
        let mut args = vec!["up", name, "4"];
        args.extend(RATES);
        bed(&args);
        Bed(name.to_string())
    }

    fn cut(&self, path: usize, link: bool) {
        let p = path.to_string();
        bed(&[if link { "linkdown" } else { "cut" }, &self.0, &p]);
    }

    fn restore(&self, path: usize, link: bool) {
        let p = path.to_string();
        bed(&[if link { "linkup" } else { "restore" }, &self.0, &p]);
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(netbed())
            .args(["down", &self.0])
            .output();
    }
}

struct Job {
    children: Vec<Child>,
    lines: Receiver<Line>,
    log: Vec<String>,
    stop: PathBuf,
}

impl Job {
    /// Start `nranks` ranks, alternating between the namespaces (rank r in `a` when r is
    /// even), as `mode`.
    fn start(bed: &Bed, nranks: usize, mode: &str, extra: &[(&str, &str)]) -> Job {
        let exe = std::env::current_exe().expect("test executable path");
        let stop =
            std::env::temp_dir().join(format!("dmsc-sn-stop-{}-{}", std::process::id(), bed.0));
        let _ = std::fs::remove_file(&stop);
        let store = format!("10.77.200.1:{}", 20000 + std::process::id() % 20000);
        let (tx, lines) = mpsc::channel();
        let mut children = Vec::new();
        for rank in 0..nranks {
            let ns = format!("{}{}", bed.0, if rank % 2 == 0 { "a" } else { "b" });
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &ns])
                .arg(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "rank_entry",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("DMSC_RANK", rank.to_string())
                .env("DMSC_WORLD_SIZE", nranks.to_string())
                .env("DMSC_STORE_ADDR", &store)
                .env("DMSC_PATHS", PATHS.to_string())
                .env("DMSC_SOCKET_IFNAME", "=sp0,sp1,sp2,sp3")
                .env("DMSC_CMA", "0")
                .env("DMSC_TIMEOUT", "30")
                .env("DMSC_DEBUG", std::env::var("SN_DEBUG").unwrap_or_default())
                .env("SN_MODE", mode)
                .env("SN_STOP", &stop)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in extra {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("start a rank");
            forward(rank, child.stdout.take().expect("stdout"), tx.clone());
            forward(rank, child.stderr.take().expect("stderr"), tx.clone());
            children.push(child);
        }
        Job {
            children,
            lines,
            log: Vec::new(),
            stop,
        }
    }

    fn fail(mut self, why: String) -> ! {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        while let Ok((r, l)) = self.lines.try_recv() {
            self.log.push(format!("[{r}] {l}"));
        }
        let tail: Vec<&String> = self
            .log
            .iter()
            .filter(|l| {
                !["SN-PM", "SN-ITER", " start ", " end "]
                    .iter()
                    .any(|k| l.contains(k))
            })
            .collect();
        let from = tail.len().saturating_sub(150);
        let changes = self.path_changes();
        panic!(
            "{why}\n--- path state changes (rank at peer path state epoch acked failures rate inflight) ---\n{}\n--- output (last lines, metrics left out) ---\n{}",
            changes.join("\n"),
            tail[from..]
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// The metrics lines where a path's state or incarnation changed, per rank and path,
    /// and the last metrics line of each.
    fn path_changes(&self) -> Vec<&str> {
        let mut seen: std::collections::HashMap<(String, String), (String, String)> =
            Default::default();
        let mut last: std::collections::BTreeMap<(String, String), &str> = Default::default();
        let mut changes = Vec::new();
        for l in &self.log {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 || f[1] != "SN-PM" {
                continue;
            }
            let key = (f[2].to_string(), f[5].to_string());
            let val = (f[6].to_string(), f[7].to_string());
            last.insert(key.clone(), l.as_str());
            if seen.get(&key) != Some(&val) {
                changes.push(l.as_str());
                seen.insert(key, val);
            }
        }
        changes.push("(last)");
        changes.extend(last.into_values());
        changes
    }

    /// Consume lines until `until`, passing each to `each`; fail after `limit`.
    fn pump(&mut self, limit: Duration, mut each: impl FnMut(&Line) -> bool) -> Result<(), String> {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out".into());
            }
            match self.lines.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(l) => {
                    self.log.push(format!("[{}] {}", l.0, l.1));
                    if l.1.contains("panicked") {
                        return Err(format!("rank {} panicked", l.0));
                    }
                    if each(&l) {
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if each(&(usize::MAX, String::new())) {
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err("every rank exited".into()),
            }
        }
    }

    fn wait_ready(mut self, n: usize) -> Job {
        let mut ready = 0;
        if let Err(e) = self.pump(PHASE_LIMIT, |l| {
            if l.1.starts_with("SN-ITER") && l.1.ends_with(" 1") {
                ready += 1;
            }
            ready == n
        }) {
            self.fail(format!("starting: {e}"));
        }
        self
    }

    /// Tell the ranks to stop; each must finish cleanly. Returns (iterations, sockets
    /// before, after) per rank.
    fn finish(mut self) -> Vec<(u64, usize, usize)> {
        std::fs::write(&self.stop, b"").expect("create the stop file");
        let n = self.children.len();
        let mut done = vec![None; n];
        let mut socks = vec![None; n];
        if let Err(e) = self.pump(PHASE_LIMIT, |l| {
            let f: Vec<&str> = l.1.split_whitespace().collect();
            match f.first().copied() {
                Some("SN-DONE") => done[l.0] = f.get(2).and_then(|x| x.parse().ok()),
                Some("SN-SOCKETS") => {
                    socks[l.0] = Some((f[2].parse().unwrap_or(0), f[3].parse().unwrap_or(0)))
                }
                _ => {}
            }
            socks.iter().all(Option::is_some)
        }) {
            self.fail(format!("finishing: {e}"));
        }
        if let Some(r) = done.iter().position(Option::is_none) {
            self.fail(format!("rank {r} did not finish its loop cleanly"));
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.stop);
        done.into_iter()
            .zip(socks)
            .map(|(d, s)| {
                let s = s.expect("checked");
                (d.expect("checked"), s.0, s.1)
            })
            .collect()
    }
}

fn skip_reason() -> Option<String> {
    let r = unavailable();
    if let Some(why) = &r {
        eprintln!("skipping the network-namespace spraying test: {why}");
    }
    r
}

/// Acked bytes of `path` as rank `rank` reports it, from a metrics line.
fn metric(l: &Line, rank: usize, path: usize) -> Option<(u128, String, u64)> {
    let f: Vec<&str> = l.1.split_whitespace().collect();
    if f.len() < 9 || f[0] != "SN-PM" || f[1].parse::<usize>().ok()? != rank {
        return None;
    }
    if f[4].parse::<usize>().ok()? != path {
        return None;
    }
    Some((f[2].parse().ok()?, f[5].to_string(), f[7].parse().ok()?))
}

/// Rank 0's view of the bytes its peer acknowledged over every path, in time order:
/// (unix ns, total bytes acknowledged), from its metrics lines.
fn acked_series(log: &[String]) -> Vec<(u128, u64)> {
    // Snapshot time -> bytes acknowledged per path (a snapshot may be printed twice).
    let mut snaps: std::collections::BTreeMap<u128, [u64; PATHS]> = Default::default();
    for l in log {
        let f: Vec<&str> = l.split_whitespace().collect();
        // "[0] SN-PM rank at peer path state epoch acked failures rate inflight"
        if f.len() < 10 || f[1] != "SN-PM" || f[2] != "0" {
            continue;
        }
        let (Ok(at), Ok(path), Ok(acked)) = (
            f[3].parse::<u128>(),
            f[5].parse::<usize>(),
            f[8].parse::<u64>(),
        ) else {
            continue;
        };
        if path < PATHS {
            snaps.entry(at).or_default()[path] = acked;
        }
    }
    snaps
        .into_iter()
        .map(|(at, a)| (at, a.iter().sum()))
        .collect()
}

/// Throughput between two instants from a series of (unix ns, bytes acknowledged).
fn rate_between(series: &[(u128, u64)], a: u128, b: u128) -> Option<f64> {
    let at = |t: u128| series.iter().rev().find(|s| s.0 <= t).map(|s| s.1);
    Some((at(b)?.checked_sub(at(a)?)?) as f64 / ((b - a) as f64 / 1e9))
}

/// Seconds from `cut` until the throughput over the next 200 ms first reaches 90% of
/// `capacity` bytes per second (before `until`); None if it never does.
fn recovery(series: &[(u128, u64)], cut: u128, until: u128, capacity: f64) -> Option<f64> {
    const WINDOW: u128 = 200_000_000;
    (0..)
        .map(|k| cut + k * 10_000_000)
        .take_while(|&t| t + WINDOW <= until)
        .find(|&t| rate_between(series, t, t + WINDOW).is_some_and(|r| r >= 0.9 * capacity))
        .map(|t| (t - cut) as f64 / 1e9)
}

/// Cuts each path in turn at random moments, by either method, while two ranks stream
/// checked data; each cut lasts 0.7 to 1.5 s. Returns, per cut, the seconds until a
/// restored path carried data again, and until the throughput was back to 90% of the
/// surviving paths' capacity (None: not within the cut).
fn cut_many(cuts: usize) -> (Vec<f64>, Vec<(Option<f64>, f64)>) {
    let bed = Bed::up("dsc");
    let mut job = Job::start(&bed, 2, "stream", &[]).wait_ready(2);
    let mut rng = Rng::new();
    let mut back = Vec::new();
    let mut windows = Vec::new();
    for k in 0..cuts {
        // Each path in turn, so that a path is cut again only seconds after it came back
        // (a path cut again soon after coming back counts as flapping, and is held back).
        let path = k % PATHS;
        let link = rng.below(2) == 0;
        let pause = Duration::from_millis(300 + rng.below(500));
        let _ = job.pump(pause, |_| false);
        let cut_at = unix_ns();
        bed.cut(path, link);
        job.log.push(format!(
            "[driver] dmsc: rank - cut path {path} (link: {link}) at {cut_at}"
        ));
        let _ = job.pump(Duration::from_millis(700 + rng.below(800)), |_| false);
        let restored = unix_ns();
        bed.restore(path, link);
        windows.push((path, cut_at, restored));
        // Within 3 s the path must be up and its acked bytes (as rank 0's sender sees them)
        // growing again.
        let mut first: Option<u64> = None;
        let mut used_at = None;
        let r = job.pump(Duration::from_secs(3), |l| {
            if let Some((at, state, acked)) = metric(l, 0, path) {
                if at >= restored && state == "up" {
                    match first {
                        None => first = Some(acked),
                        Some(a) if acked > a => {
                            used_at = Some(at);
                            return true;
                        }
                        _ => {}
                    }
                }
            }
            false
        });
        match (r, used_at) {
            (Ok(()), Some(at)) => back.push((at - restored) as f64 / 1e9),
            _ => job.fail(format!(
                "cut {k}: path {path} (link method: {link}) was not in use again within 3 s of being restored"
            )),
        }
    }
    let series = acked_series(&job.log);
    if std::env::var("SN_TRACE").is_ok() {
        for l in job.path_changes() {
            eprintln!("{l}");
        }
        for l in job
            .log
            .iter()
            .filter(|l| (l.contains(" DMSC ") || l.contains("dmsc: rank")) && l.contains("path"))
        {
            eprintln!("{l}");
        }
    }
    let res = job.finish();
    for (r, (iters, before, after)) in res.iter().enumerate() {
        assert!(*iters > 0, "rank {r} made no progress");
        assert_eq!(
            before, after,
            "rank {r} leaked sockets: {before} before, {after} after"
        );
    }
    let mbit: Vec<f64> = RATES
        .iter()
        .map(|r| r.parse::<f64>().unwrap() * 1e6 / 8.0)
        .collect();
    let recovered = windows
        .iter()
        .map(|&(path, cut, until)| {
            let survivors: f64 = (0..PATHS).filter(|&p| p != path).map(|p| mbit[p]).sum();
            if std::env::var("SN_TRACE").is_ok() {
                let pts: Vec<String> = series
                    .windows(2)
                    .filter(|w| w[0].0 + 300_000_000 >= cut && w[0].0 <= until)
                    .map(|w| {
                        format!(
                            "{:+.2}:{:.0}",
                            (w[0].0 as f64 - cut as f64) / 1e9,
                            (w[1].1 - w[0].1) as f64 / ((w[1].0 - w[0].0) as f64 / 1e9) / 1e6
                        )
                    })
                    .collect();
                eprintln!(
                    "cut of path {path}: survivors {:.0} MB/s; MB/s: {}",
                    survivors / 1e6,
                    pts.join(" ")
                );
            }
            let steady = rate_between(&series, cut + 500_000_000, until).unwrap_or(0.0);
            (recovery(&series, cut, until, survivors), steady / survivors)
        })
        .collect();
    (back, recovered)
}

#[test]
fn random_path_cuts_lose_nothing_and_paths_come_back() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if skip_reason().is_some() {
        return;
    }
    let cuts = std::env::var("SN_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(26);
    let (mut back, recovered) = cut_many(cuts);
    let (med, max) = summary(&mut back);
    eprintln!("{cuts} cuts, every byte checked; a restored path carried data again after median {med:.2} s, max {max:.2} s");
    let mut ok: Vec<f64> = recovered.iter().filter_map(|r| r.0).collect();
    let n_ok = ok.len();
    let (rmed, rmax) = summary(&mut ok);
    let mut steady: Vec<f64> = recovered.iter().map(|r| r.1).collect();
    let (smed, _) = summary(&mut steady);
    let smin = steady.first().copied().unwrap_or(f64::NAN);
    // Reported, not asserted: timing on a shared 2-core machine is a benchmark's business.
    eprintln!(
        "throughput over 200 ms back to 90% of the surviving paths' capacity: {n_ok} of {cuts} cuts, \
         median {rmed:.2} s, max {rmax:.2} s after the cut; from 0.5 s after the cut to its end the \
         throughput was {:.0}% (median) and at least {:.0}% of the surviving capacity; per cut: {recovered:.2?}",
        smed * 100.0,
        smin * 100.0
    );
    assert!(
        max <= 2.0,
        "a restored path took {max:.2} s to carry data again"
    );
}

#[test]
fn a_flapping_path_loses_nothing_and_is_held_down() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if skip_reason().is_some() {
        return;
    }
    let bed = Bed::up("dsf");
    let mut job = Job::start(&bed, 2, "stream", &[]).wait_ready(2);
    let flips = 16;
    for k in 0..flips {
        let _ = job.pump(Duration::from_millis(500), |_| false);
        if k % 2 == 0 {
            bed.cut(1, false);
        } else {
            bed.restore(1, false);
        }
    }
    bed.restore(1, false);
    // Readmissions of path 1, from rank 0's metrics: its incarnation counts them.
    let mut epoch = 0u32;
    let _ = job.pump(Duration::from_millis(200), |l| {
        let f: Vec<&str> = l.1.split_whitespace().collect();
        if f.len() >= 9 && f[0] == "SN-PM" && f[1] == "0" && f[4] == "1" {
            epoch = f[6].parse().unwrap_or(epoch);
        }
        false
    });
    let res = job.finish();
    eprintln!("path 1 flapped {flips} times every 500 ms: incarnation {epoch} at the end; iterations {:?}", res.iter().map(|r| r.0).collect::<Vec<_>>());
    assert!(
        (epoch as usize) <= flips / 2 + 1,
        "path 1 was readmitted {} times for {flips} flips: it oscillates",
        epoch.saturating_sub(1)
    );
}

#[test]
fn every_path_cut_fails_clearly_without_hanging_or_leaking() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if skip_reason().is_some() {
        return;
    }
    let bed = Bed::up("dsa");
    let mut job = Job::start(&bed, 2, "stream", &[]).wait_ready(2);
    let cut_at = unix_ns();
    for p in 0..PATHS {
        bed.cut(p, false);
    }
    let mut errs: Vec<Option<(u128, String)>> = vec![None, None];
    let mut socks = [None, None];
    if let Err(e) = job.pump(Duration::from_secs(20), |l| {
        let f: Vec<&str> = l.1.splitn(5, ' ').collect();
        match f.first().copied() {
            Some("SN-ERR") if f.len() == 5 => {
                errs[l.0] = Some((f[2].parse().unwrap_or(0), f[4].to_string()));
            }
            Some("SN-SOCKETS") => {
                let g: Vec<&str> = l.1.split_whitespace().collect();
                socks[l.0] = Some((g[2].to_string(), g[3].to_string()));
            }
            _ => {}
        }
        socks.iter().all(Option::is_some)
    }) {
        job.fail(format!("with every path cut: {e}"));
    }
    for (r, e) in errs.iter().enumerate() {
        let Some((at, msg)) = e else {
            job.fail(format!("rank {r} gave no error with every path cut"))
        };
        let after = (*at - cut_at) as f64 / 1e9;
        eprintln!("rank {r}: error {after:.2} s after the cut: {msg}");
        assert!(
            msg.contains(&format!("rank {}", r ^ 1)),
            "rank {r}'s error does not name its peer: {msg}"
        );
        assert!(
            msg.contains("path"),
            "rank {r}'s error does not describe the paths: {msg}"
        );
        assert!(after < 30.0, "rank {r} failed only after {after:.1} s");
    }
    for (r, s) in socks.iter().enumerate() {
        let (b, a) = s.clone().expect("checked");
        assert_eq!(b, a, "rank {r} leaked sockets");
    }
    for c in &mut job.children {
        let _ = c.wait();
    }
}

#[test]
fn four_rank_ring_all_reduce_across_namespaces_survives_a_cut() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if skip_reason().is_some() {
        return;
    }
    let bed = Bed::up("dsr");
    let mut job = Job::start(&bed, 4, "ring", &[("DMSC_ALGO", "ring")]).wait_ready(4);
    let mut rng = Rng::new();
    for _ in 0..3 {
        let path = rng.below(PATHS as u64) as usize;
        let _ = job.pump(Duration::from_millis(200 + rng.below(300)), |_| false);
        bed.cut(path, false);
        let _ = job.pump(Duration::from_millis(600), |_| false);
        bed.restore(path, false);
    }
    let _ = job.pump(Duration::from_millis(500), |_| false);
    let res = job.finish();
    eprintln!(
        "4-rank ring all-reduce across namespaces with 3 cuts: iterations {:?}",
        res.iter().map(|r| r.0).collect::<Vec<_>>()
    );
}
