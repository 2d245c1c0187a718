//! Peer loss, heartbeats and abort across real processes.
//!
//! Four ranks loop a 64 MiB all-reduce. The test then
//! - kills one of them with SIGKILL at a random moment: every survivor's call must fail with
//!   `PeerLost` naming it within 1 s (connection errors, passed on by control messages);
//! - stops one with SIGSTOP: the same, through heartbeats (its kernel still acknowledges TCP);
//! - has a second thread of one rank call `abort()`: that rank's call must return `Aborted`
//!   within 100 ms, also while another peer is stopped, and every other rank must fail naming
//!   the aborting rank.
//!
//! A last test checks the other side: peers that are merely quiet (idle, or busy outside
//! dmsc) for longer than the heartbeat timeout are not lost, a rank that destroys its
//! communicator leaves in good order, and one that exits without destroying it is recorded
//! as lost by the idle ranks at once.
//!
//! After its error every survivor checks that its next call fails at once with the same error,
//! and its process must exit normally. Ranks are started directly (not through dmscrun, which
//! would end the survivors as soon as one rank dies) with `DMSC_RANK`, `DMSC_WORLD_SIZE` and
//! `DMSC_STORE_ADDR`; each prints its error with a wall-clock timestamp (`SystemTime`, shared
//! by all processes), from which the detection time since the signal is measured. Every wait
//! is bounded; a run that hangs fails the test and its processes are killed. Run with
//! `--nocapture` to see the measured detection times; `PL_RUNS=n` changes the run count.

use dmsc::{Communicator, Error, ReduceOp};
#[path = "support/procs.rs"]
mod procs;
use procs::{forward, summary, unix_ns, Line, Rng};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const NRANKS: usize = 4;
/// 64 MiB of f32 per rank.
const ELEMS: usize = 16 << 20;
/// Bound on each phase of a run (start-up, waiting for the errors, exiting).
const PHASE_LIMIT: Duration = Duration::from_secs(30);
/// The bounds.
const DETECT_LIMIT_MS: f64 = 1000.0;
const ABORT_LIMIT_MS: f64 = 100.0;

/// The scenarios run one at a time: they measure latencies on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------
// Rank side.

/// The rank entry point; started by the tests below.
#[test]
#[ignore = "entry point of the ranks started by the peer-loss tests"]
fn rank_entry() {
    let comm = Communicator::from_env().unwrap_or_else(|e| panic!("init: {e}"));
    match std::env::var("PL_MODE").as_deref() {
        Ok("quiet") => return quiet_then_depart(comm),
        Ok("idle_abort") => return abort_while_idle(comm),
        _ => {}
    }
    let rank = comm.rank();
    if let Ok(trigger) = std::env::var("PL_ABORT_TRIGGER") {
        // A second thread aborts once the test creates `<trigger>.<rank>`.
        let path = PathBuf::from(format!("{trigger}.{rank}"));
        let handle = comm.abort_handle();
        std::thread::spawn(move || loop {
            if path.exists() {
                let at = unix_ns();
                handle.abort();
                println!("PL-ABORT {rank} {at}");
                return;
            }
            std::thread::sleep(Duration::from_micros(500));
        });
    }
    let mut buf = vec![rank as f32; ELEMS];
    let mut iters = 0u64;
    let err = loop {
        match comm.all_reduce_in_place(&mut buf, ReduceOp::Max) {
            Ok(()) => {
                iters += 1;
                if iters == 1 {
                    println!("PL-TRANSPORT {rank} {}", comm.transport_name());
                    println!("PL-READY {rank}");
                }
            }
            Err(e) => break e,
        }
    };
    report(&comm, err, iters);
}

/// Print the `PL-ERR` line for `err`, after checking that the next call fails at once with
/// the same error.
fn report(comm: &Communicator, err: Error, iters: u64) {
    let rank = comm.rank();
    let at = unix_ns();
    let named: i64 = match &err {
        Error::PeerLost { peer, .. } => *peer as i64,
        Error::Remote { from, .. } => *from as i64,
        _ => -1,
    };
    // The communicator is failed: the next call fails at once with the same cause.
    let t = Instant::now();
    let again = comm.barrier();
    let sticky = again.as_ref().err() == Some(&err) && t.elapsed() < Duration::from_millis(100);
    println!(
        "PL-ERR {rank} {at} {} {named} {iters} {sticky} {}",
        err.kind_name(),
        err.to_string().replace('\n', " ")
    );
}

/// Rank 0 aborts between calls while the others wait for it in an all-reduce: they must
/// learn of it from rank 0's progress thread.
fn abort_while_idle(comm: Communicator) {
    let rank = comm.rank();
    let mut b = vec![1f32; 1024];
    comm.all_reduce_in_place(&mut b, ReduceOp::Sum)
        .unwrap_or_else(|e| panic!("rank {rank}: first all_reduce: {e}"));
    println!("PL-READY {rank}");
    if rank == 0 {
        std::thread::sleep(Duration::from_millis(300));
        let at = unix_ns();
        comm.abort();
        println!("PL-ABORT 0 {at}");
        std::thread::sleep(Duration::from_millis(500));
        let e = comm.barrier().expect_err("a call after abort");
        return report(&comm, e, 1);
    }
    let e = comm
        .all_reduce_in_place(&mut b, ReduceOp::Sum)
        .expect_err("an all-reduce that rank 0 never joins");
    report(&comm, e, 1);
}

/// Idle (rank 3: busy outside dmsc) for 2 s, meet again, then rank 0 destroys its
/// communicator and rank 1 exits without destroying it; ranks 2 and 3 report what they see.
fn quiet_then_depart(comm: Communicator) {
    let rank = comm.rank();
    let mut b = vec![1f32; 1024];
    let meet = |b: &mut Vec<f32>, what: &str| {
        comm.all_reduce_in_place(b, ReduceOp::Sum)
            .unwrap_or_else(|e| panic!("rank {rank}: all_reduce {what}: {e}"));
    };
    meet(&mut b, "before the quiet time");
    let t = Instant::now();
    if rank == 3 {
        while t.elapsed() < Duration::from_secs(2) {
            std::hint::spin_loop();
        }
    } else {
        std::thread::sleep(Duration::from_secs(2));
    }
    meet(&mut b, "after 2 s of quiet");
    println!("PL-QUIET-OK {rank}");
    let t = Instant::now();
    let at = |ms: u64| std::thread::sleep(Duration::from_millis(ms).saturating_sub(t.elapsed()));
    let err = |c: &Communicator| match c.async_error() {
        None => "none".to_string(),
        Some(Error::PeerLost { peer, .. }) => format!("PeerLost:{peer}"),
        Some(e) => format!("{}:{e}", e.kind_name()),
    };
    match rank {
        0 => drop(comm),
        1 => {
            at(500);
            // Exit without destroying the communicator: no goodbye.
            std::process::exit(0);
        }
        _ => {
            at(300);
            let after_left = err(&comm);
            at(1200);
            let after_exit = err(&comm);
            let next = comm.barrier().err().map(|e| e.kind_name());
            println!("PL-DEPART {rank} {after_left} {after_exit} {next:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Test side.

/// The four rank processes of one run.
struct Job {
    children: Vec<Child>,
    lines: Receiver<Line>,
    log: Vec<String>,
}

/// What a rank reported on its error.
#[derive(Debug)]
struct Report {
    rank: usize,
    at_ns: u128,
    kind: String,
    named: i64,
    sticky: bool,
    text: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Job {
    fn start(env: &[(&str, String)]) -> Job {
        let exe = std::env::current_exe().expect("test executable path");
        let store = format!("127.0.0.1:{}", free_port());
        let (tx, lines) = mpsc::channel();
        let mut children = Vec::new();
        for rank in 0..NRANKS {
            let mut cmd = Command::new(&exe);
            cmd.args([
                "--ignored",
                "--exact",
                "rank_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("DMSC_RANK", rank.to_string())
            .env("DMSC_WORLD_SIZE", NRANKS.to_string())
            .env("DMSC_STORE_ADDR", &store)
            // Failures must come from peer loss, never from the operation deadline.
            .env("DMSC_TIMEOUT", "60")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            for (k, v) in env {
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
        }
    }

    fn pid(&self, rank: usize) -> i32 {
        self.children[rank].id() as i32
    }

    fn signal(&self, rank: usize, sig: i32) {
        // SAFETY: kill(2) on a child process this job started and has not reaped yet.
        let r = unsafe { libc::kill(self.pid(rank), sig) };
        assert_eq!(r, 0, "kill(rank {rank}, {sig})");
    }

    /// Kill every rank, reap them, and fail with `why` and the output so far.
    fn fail(mut self, why: String) -> ! {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        while let Ok((r, l)) = self.lines.try_recv() {
            self.log.push(format!("[{r}] {l}"));
        }
        panic!("{why}\n--- output ---\n{}", self.log.join("\n"));
    }

    /// Wait for lines until `done` says so, or fail after `limit`.
    fn wait_for(mut self, limit: Duration, what: &str, mut done: impl FnMut(&Line) -> bool) -> Job {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((rank, text)) => {
                    self.log.push(format!("[{rank}] {text}"));
                    // The test harness prints `test rank_entry ... ` before the first line.
                    let line = (
                        rank,
                        text.find("PL-")
                            .map_or(text.clone(), |i| text[i..].to_string()),
                    );
                    if done(&line) {
                        return self;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(format!("hung: no {what} within {limit:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(format!("every rank's output ended before {what}"))
                }
            }
        }
    }

    fn wait_ready(self) -> Job {
        let mut ready = 0;
        let mut transports = std::collections::BTreeSet::new();
        let job = self.wait_for(PHASE_LIMIT, "READY from every rank", |(_, l)| {
            if let Some(rest) = l.strip_prefix("PL-TRANSPORT ") {
                transports.insert(rest.split(' ').nth(1).unwrap_or("").to_string());
            }
            ready += usize::from(l.starts_with("PL-READY"));
            ready == NRANKS
        });
        println!("peer_loss: the ranks run over {transports:?}");
        job
    }

    /// Wait for the error reports of `ranks` (and the `PL-ABORT` line of `aborter`).
    fn wait_reports(
        self,
        ranks: &[usize],
        aborter: Option<usize>,
    ) -> (Job, Vec<Report>, Option<u128>) {
        let mut reports = Vec::new();
        let mut abort_at = None;
        let want = ranks.len();
        let job = self.wait_for(PHASE_LIMIT, "error report from every survivor", |(r, l)| {
            if let Some(rest) = l.strip_prefix("PL-ABORT ") {
                abort_at = rest.split(' ').nth(1).and_then(|t| t.parse().ok());
            }
            if let Some(rep) = parse_report(l) {
                if ranks.contains(r) {
                    reports.push(rep);
                }
            }
            reports.len() == want && (aborter.is_none() || abort_at.is_some())
        });
        (job, reports, abort_at)
    }

    /// Every rank must exit (killed ones are reaped); the surviving ones with status 0.
    fn finish(mut self, killed: Option<usize>) {
        if std::env::var_os("PL_VERBOSE").is_some() {
            println!("{}", self.log.join("\n"));
        }
        let end = Instant::now() + PHASE_LIMIT;
        for r in 0..NRANKS {
            loop {
                match self.children[r].try_wait() {
                    Ok(Some(st)) => {
                        if Some(r) != killed && !st.success() {
                            self.fail(format!("rank {r} exited with {st}"));
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Ok(None) => self.fail(format!("rank {r} did not exit after its error")),
                    Err(e) => self.fail(format!("waiting for rank {r}: {e}")),
                }
            }
        }
    }
}

fn parse_report(line: &str) -> Option<Report> {
    let rest = line.strip_prefix("PL-ERR ")?;
    let mut f = rest.splitn(7, ' ');
    let rank = f.next()?.parse().ok()?;
    let at_ns = f.next()?.parse().ok()?;
    let kind = f.next()?.to_string();
    let named = f.next()?.parse().ok()?;
    let _iters = f.next()?;
    let sticky = f.next()? == "true";
    let text = f.next().unwrap_or("").to_string();
    Some(Report {
        rank,
        at_ns,
        kind,
        named,
        sticky,
        text,
    })
}

fn ms_since(at_ns: u128, since_ns: u128) -> f64 {
    (at_ns as f64 - since_ns as f64) / 1e6
}

fn runs(default: usize) -> usize {
    std::env::var("PL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Kill (`sig`) one random rank at a random moment of the loop; every survivor must report
/// `PeerLost` naming it within 1 s. Returns the slowest survivor's detection time (ms).
fn lose_one(rng: &mut Rng, sig: i32, env: &[(&str, String)]) -> f64 {
    let shm_before = dev_shm();
    let job = Job::start(env).wait_ready();
    let victim = rng.below(NRANKS as u64) as usize;
    std::thread::sleep(Duration::from_millis(200 + rng.below(1000)));
    let t0 = unix_ns();
    job.signal(victim, sig);
    let survivors: Vec<usize> = (0..NRANKS).filter(|&r| r != victim).collect();
    let (job, reports, _) = job.wait_reports(&survivors, None);
    if sig == libc::SIGSTOP {
        job.signal(victim, libc::SIGKILL);
    }
    let mut slowest = 0f64;
    for rep in &reports {
        let ms = ms_since(rep.at_ns, t0);
        let ok = rep.kind == "PeerLost"
            && rep.named == victim as i64
            && rep.sticky
            && ms <= DETECT_LIMIT_MS;
        if !ok {
            job.fail(format!(
                "rank {} after signal {sig} to rank {victim}: {} naming {} after {ms:.1} ms (sticky: {}): {}",
                rep.rank, rep.kind, rep.named, rep.sticky, rep.text
            ));
        }
        slowest = slowest.max(ms);
    }
    job.finish(Some(victim));
    // Shared-memory segments are never named, so a killed rank leaves nothing behind.
    let left: Vec<String> = dev_shm().difference(&shm_before).cloned().collect();
    assert!(left.is_empty(), "the job left {left:?} in /dev/shm");
    slowest
}

/// The names in /dev/shm.
fn dev_shm() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn lose_many(name: &str, sig: i32, n: usize, extra: &[(&str, String)]) -> Vec<f64> {
    let mut rng = Rng::new();
    let mut times = Vec::new();
    for i in 0..n {
        let env = if i % 2 == 1 { extra } else { &[] };
        times.push(lose_one(&mut rng, sig, env));
    }
    let mut sorted = times.clone();
    let (median, max) = summary(&mut sorted);
    println!(
        "peer_loss: {name}: detection (slowest survivor) over {n} runs: median {median:.1} ms, max {max:.1} ms; all: {times:.1?}"
    );
    times
}

#[test]
fn sigkill_during_all_reduce_fails_every_survivor_within_1s() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    lose_many("SIGKILL", libc::SIGKILL, runs(20), &[]);
    // The socket backend and pure TCP data path detect it too.
    let sockets = [
        ("DMSC_TRANSPORT", "socket".to_string()),
        ("DMSC_CMA", "0".to_string()),
    ];
    lose_many(
        "SIGKILL, sockets and no CMA",
        libc::SIGKILL,
        runs(20).div_ceil(5),
        &sockets,
    );
}

#[test]
fn sigstop_is_caught_by_heartbeats_within_1s() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    lose_many("SIGSTOP", libc::SIGSTOP, runs(20), &[]);
}

/// One rank's second thread aborts at a random moment (optionally while another rank is
/// stopped). Returns (abort latency on the aborting rank, slowest other rank) in ms.
fn abort_once(rng: &mut Rng, dir: &std::path::Path, run: usize, stop_one: bool) -> (f64, f64) {
    let trigger = dir.join(format!("abort-{run}"));
    let env = [("PL_ABORT_TRIGGER", trigger.display().to_string())];
    let job = Job::start(&env).wait_ready();
    let aborter = rng.below(NRANKS as u64) as usize;
    std::thread::sleep(Duration::from_millis(200 + rng.below(1000)));
    let stopped = if stop_one {
        let v = (aborter + 1 + rng.below(NRANKS as u64 - 1) as usize) % NRANKS;
        job.signal(v, libc::SIGSTOP);
        // Well before heartbeats would catch it.
        std::thread::sleep(Duration::from_millis(150));
        Some(v)
    } else {
        None
    };
    std::fs::write(format!("{}.{aborter}", trigger.display()), b"abort").expect("trigger");
    let waiting: Vec<usize> = (0..NRANKS).filter(|&r| Some(r) != stopped).collect();
    let (job, reports, abort_at) = job.wait_reports(&waiting, Some(aborter));
    if let Some(v) = stopped {
        job.signal(v, libc::SIGKILL);
    }
    let abort_at = abort_at.expect("abort time");
    let (mut own, mut others) = (0f64, 0f64);
    for rep in &reports {
        let ms = ms_since(rep.at_ns, abort_at);
        let ok = if rep.rank == aborter {
            own = ms;
            rep.kind == "Aborted" && ms <= ABORT_LIMIT_MS
        } else {
            others = others.max(ms);
            rep.named == aborter as i64 && ms <= DETECT_LIMIT_MS
        };
        if !ok || !rep.sticky {
            job.fail(format!(
                "rank {} after rank {aborter} aborted (stopped: {stopped:?}): {} naming {} after {ms:.1} ms (sticky: {}): {}",
                rep.rank, rep.kind, rep.named, rep.sticky, rep.text
            ));
        }
    }
    job.finish(stopped);
    (own, others)
}

#[test]
fn abort_from_a_second_thread_returns_within_100ms() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("dmsc-peer-loss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut rng = Rng::new();
    let n = runs(20);
    for (label, stop_one, count) in [
        ("all alive", false, n),
        ("one peer stopped", true, n.div_ceil(4)),
    ] {
        let (mut own, mut others) = (Vec::new(), Vec::new());
        for i in 0..count {
            let run = i + if stop_one { 1000 } else { 0 };
            let (a, b) = abort_once(&mut rng, &dir, run, stop_one);
            own.push(a);
            others.push(b);
        }
        let (m1, x1) = summary(&mut own);
        let (m2, x2) = summary(&mut others);
        println!(
            "peer_loss: abort ({label}) over {count} runs: aborting rank returns after median {m1:.1} ms, max {x1:.1} ms; the other ranks fail after median {m2:.1} ms, max {x2:.1} ms"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);

    // Between calls: the peers waiting for the aborting rank hear of it from its progress
    // thread.
    let job = Job::start(&[("PL_MODE", "idle_abort".to_string())]).wait_ready();
    let all: Vec<usize> = (0..NRANKS).collect();
    let (job, reports, abort_at) = job.wait_reports(&all, Some(0));
    let abort_at = abort_at.expect("abort time");
    let mut slowest = 0f64;
    for rep in &reports {
        let ms = ms_since(rep.at_ns, abort_at);
        let ok = if rep.rank == 0 {
            rep.kind == "Aborted"
        } else {
            slowest = slowest.max(ms);
            rep.named == 0 && ms <= DETECT_LIMIT_MS
        };
        if !ok || !rep.sticky {
            job.fail(format!(
                "rank {} after rank 0 aborted between calls: {} naming {} after {ms:.1} ms: {}",
                rep.rank, rep.kind, rep.named, rep.text
            ));
        }
    }
    println!("peer_loss: abort between calls: the waiting ranks fail after {slowest:.1} ms");
    job.finish(None);
}

#[test]
fn quiet_peers_stay_and_departures_are_told_apart() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let job = Job::start(&[("PL_MODE", "quiet".to_string())]);
    let mut seen = Vec::new();
    let job = job.wait_for(
        PHASE_LIMIT,
        "departure reports of ranks 2 and 3",
        |(_, l)| {
            if l.starts_with("PL-DEPART") {
                seen.push(l.clone());
            }
            seen.len() == 2
        },
    );
    for l in &seen {
        // Rank 0 left in good order (not an error), rank 1 exited without a goodbye.
        if !l.ends_with(" none PeerLost:1 Some(\"PeerLost\")") {
            job.fail(format!("unexpected departure report: {l}"));
        }
    }
    job.finish(None);
}
