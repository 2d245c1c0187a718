//! Start the ranks of a job on this node, as `dmscrun` (and `dmsc-perf --np N`) do.
//!
//! [`launch`] plays the part torchrun's `--standalone` mode plays for PyTorch: it serves the
//! rendezvous store itself on a free TCP port of 127.0.0.1 (as torchrun's agent hosts the
//! `TCPStore`, so the store outlives any rank, which is what lets survivors of a failure
//! [`shrink`](crate::Communicator::shrink) through it), starts `n` copies of a program with
//! the torchrun environment (`MASTER_ADDR`, `MASTER_PORT`, `RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `LOCAL_WORLD_SIZE`) plus `DMSC_LAUNCHER=dmscrun`, `DMSC_STORE_ADDR` and
//! `DMSC_STORE_EXTERNAL=1` (the store's address; no rank serves it). `MASTER_PORT` is
//! another free port, not the store's, so that a torch program's rank 0 can serve torch's
//! own store there (`init_process_group("dmsc")` under dmscrun); prefixes every line the
//! ranks print with `[rank] `, and waits for all of them. Unless `DMSC_SECRET` is set (in the launcher's
//! environment or `extra_env`), every rank also gets a fresh random `DMSC_SECRET` (64 hex
//! digits), so the job's connections are authenticated with a secret only its ranks know.
//!
//! # Several nodes
//!
//! With [`LaunchOptions::nodes`] (`dmscrun --nnodes N --node-rank I --master-addr HOST
//! --master-port P`), one launcher runs on each host: node 0's serves the store on port `P`
//! and the others' ranks connect to it; ranks are numbered across the nodes as torchrun
//! numbers them and also get `GROUP_RANK`, `GROUP_WORLD_SIZE` and `NODE_RANK`; output lines
//! are prefixed `[node:rank] `. See [`Nodes`] for the layout, the address the store binds and
//! what `MASTER_PORT` then means. The nodes share no random secret, so a job of several nodes
//! needs `DMSC_SECRET` set to the same value on every node, and `restarts` is refused (the
//! launchers would restart their nodes independently). Each launcher supervises its own
//! ranks only: a failure on one node stops that node's ranks, and the other nodes' ranks
//! then fail on their own (a lost peer, or the store's timeout) and their launchers stop in
//! turn, each exiting non-zero.
//!
//! # Failure handling
//!
//! When a rank exits with a non-zero code or is killed by a signal, the launcher prints
//! `dmscrun: rank R exited with code C; terminating the other ranks`, sends SIGTERM to the
//! others and SIGKILL to those still alive after a grace period (3 s, or `DMSC_KILL_GRACE`
//! seconds). Its own result is the exit code of that first failing rank (128 + signal number
//! for a signal). SIGINT and SIGTERM received by the launcher are forwarded to the ranks (with
//! the same grace period before SIGKILL) and the result is then 128 + that signal.
//!
//! With [`LaunchOptions::keep_going`] (`dmscrun --keep-going`) the other ranks are left
//! running instead, so that they can recover without the failed one; the result is still the
//! code of the first failing rank. With [`LaunchOptions::restarts`] `K` (`dmscrun --restarts
//! K`, torchrun's `--max-restarts`), a failed job (every rank ended, the failing ones
//! counted) is started again, all `n` ranks with a fresh store, up to `K` times; each
//! attempt's ranks get `DMSC_RESTART_COUNT` (0 on the first, torchrun's
//! `TORCHELASTIC_RESTART_COUNT`). A job interrupted by a signal is not restarted.
//!
//! # Process hygiene
//!
//! Every rank runs in its own process group and signals go to the whole group, so the helpers
//! a rank starts (the `sleep` under `sh -c "...; sleep 9"`) go with it. Once every rank has
//! exited, whatever is left in their process groups is killed, and every rank is reaped: no
//! zombie and no orphan outlives `launch`. On Linux each rank also gets `PR_SET_PDEATHSIG`, so
//! the ranks die with the launcher even if the launcher is SIGKILLed. The ranks' stdin is
//! `/dev/null` (a rank outside the terminal's foreground group must not read from it).
//!
//! Inherited `DMSC_RANK`, `DMSC_WORLD_SIZE`, `DMSC_LOCAL_RANK`, `DMSC_LOCAL_WORLD_SIZE` and
//! `DMSC_STORE_ADDR` are removed from the ranks' environment, since they would take precedence
//! over the launcher's variables (pass them in `extra_env` to set them on purpose).
//!
//! The launcher installs process-wide SIGINT and SIGTERM handlers while [`launch`] runs and
//! restores the previous ones before it returns; calls to [`launch`] from several threads are
//! serialized.

mod nodes;

pub use nodes::{Nodes, DEFAULT_MASTER_PORT};

use crate::{Error, Result};
use dmsc_core::auth::Secret;
use dmsc_transports::store::StoreServer;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Default time between SIGTERM and SIGKILL when ranks are being terminated.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);

/// Environment variable overriding [`DEFAULT_KILL_GRACE`], in (fractional) seconds.
pub const KILL_GRACE_ENV: &str = "DMSC_KILL_GRACE";

/// How often the wait loop looks at the signal flag when no rank has exited.
const POLL: Duration = Duration::from_millis(50);

/// Longest line kept whole; longer output is forwarded in pieces of this size.
const MAX_LINE: usize = 64 * 1024;

/// Variables that would override the launcher's rendezvous in `dmsc_core::bootstrap::env`.
const OVERRIDING_VARS: [&str; 5] = [
    "DMSC_RANK",
    "DMSC_WORLD_SIZE",
    "DMSC_LOCAL_RANK",
    "DMSC_LOCAL_WORLD_SIZE",
    "DMSC_STORE_ADDR",
];

/// The last SIGINT/SIGTERM received while a launch runs (0: none). Written by the signal
/// handler, swapped to 0 by the wait loop.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Serializes [`launch`] calls: the signal handlers and [`RECEIVED`] are process-wide.
static LAUNCH_LOCK: Mutex<()> = Mutex::new(());

/// How [`launch_with`] presents the ranks' output and handles failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchOptions {
    /// Prefix the ranks' stdout lines with `[rank] ` (default true). `dmsc-perf --np` turns
    /// it off so that rank 0's table reads as nccl-tests' does.
    pub prefix_stdout: bool,
    /// Prefix the ranks' stderr lines with `[rank] ` (default true).
    pub prefix_stderr: bool,
    /// Leave the other ranks running when one fails (default false: terminate them).
    pub keep_going: bool,
    /// Start a failed job again, every rank, at most this many times (default 0).
    pub restarts: usize,
    /// The job's nodes and this launcher's place among them (default: one node).
    pub nodes: Nodes,
}

impl Default for LaunchOptions {
    fn default() -> LaunchOptions {
        LaunchOptions {
            prefix_stdout: true,
            prefix_stderr: true,
            keep_going: false,
            restarts: 0,
            nodes: Nodes::default(),
        }
    }
}

/// Run `n` ranks of `program args...` on this machine and wait for all of them (`n` per node
/// when [`LaunchOptions::nodes`] names several).
///
/// Returns the job's exit code: 0 when every rank exited with 0, else the code of the first
/// rank that failed (128 + signal number when it was killed by a signal), or 128 + the signal
/// that interrupted the launcher. `extra_env` is set in every rank's environment after the
/// launcher's own variables (so it may override them).
///
/// Errors when `n` is 0, when the store cannot listen (on 127.0.0.1, or on the master port of
/// node 0), when several nodes are asked for without `DMSC_SECRET` or with restarts, or when
/// a rank cannot be
/// started ([`Error::System`] whose `errno` is `ENOENT` when the program does not exist and
/// `EACCES` when it is not executable); ranks already started are killed and reaped first.
pub fn launch(
    n: usize,
    program: &OsStr,
    args: &[OsString],
    extra_env: &[(String, String)],
) -> Result<i32> {
    launch_with(n, program, args, extra_env, &LaunchOptions::default())
}

/// [`launch`] with output and failure options.
pub fn launch_with(
    n: usize,
    program: &OsStr,
    args: &[OsString],
    extra_env: &[(String, String)],
    opts: &LaunchOptions,
) -> Result<i32> {
    if n == 0 {
        return Err(Error::invalid("the number of ranks must be at least 1"));
    }
    check_nodes(extra_env, opts)?;
    // The store this launcher serves logs the connections it refuses.
    crate::logger::install(&crate::config::log_settings_from_env()?, None)?;
    let _serial = LAUNCH_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let grace = kill_grace();
    let extra_env = &with_job_secret(extra_env)?;
    let secret = job_secret(extra_env)?;
    let _signals = SignalGuard::install()?;
    let mut attempt = 0;
    loop {
        let (code, interrupted) =
            run_attempt(n, program, args, extra_env, &secret, attempt, grace, opts)?;
        if code == 0 || interrupted || attempt >= opts.restarts {
            return Ok(code);
        }
        attempt += 1;
        eprintln!(
            "dmscrun: the job failed with code {code}; starting all {n} ranks again \
             (restart {attempt} of {})",
            opts.restarts
        );
    }
}

/// One attempt of the job: serve a fresh store, start the ranks, supervise them. Returns the
/// exit code and whether the launcher was interrupted by a signal.
#[allow(clippy::too_many_arguments)]
fn run_attempt(
    n: usize,
    program: &OsStr,
    args: &[OsString],
    extra_env: &[(String, String)],
    secret: &Option<Secret>,
    attempt: usize,
    grace: Duration,
    opts: &LaunchOptions,
) -> Result<(i32, bool)> {
    let nodes = &opts.nodes;
    let store = match nodes.store_bind() {
        Some(addr) => Some(StoreServer::bind(addr, secret.clone())?),
        None => None,
    };
    let ports = nodes.ports(store.as_ref().map(|s| s.local_addr().port()), free_port)?;
    let mut children = Vec::with_capacity(n);
    for local in 0..n {
        let mut cmd = rank_command(program, args, extra_env, &nodes.rank_env(n, local, ports));
        cmd.env("DMSC_RESTART_COUNT", attempt.to_string());
        match cmd.spawn() {
            Ok(child) => children.push(child),
            Err(e) => {
                abandon(children);
                return Err(Error::io(
                    format!(
                        "starting `{}` for rank {}",
                        program.to_string_lossy(),
                        nodes.rank(n, local)
                    ),
                    &e,
                ));
            }
        }
    }
    let outcome = supervise(children, grace, opts);
    if let Some(store) = store {
        store.shutdown();
    }
    Ok(outcome)
}

/// What a job of several nodes needs beyond one node's: a shared secret, and no restarts.
fn check_nodes(extra_env: &[(String, String)], opts: &LaunchOptions) -> Result<()> {
    let nodes = &opts.nodes;
    if !nodes.is_multi() {
        return Ok(());
    }
    nodes.check_restarts(opts.restarts)?;
    if !secret_given(extra_env) {
        return Err(Error::invalid(format!(
            "{} nodes need DMSC_SECRET set to the same value on every node (e.g. `export \
             DMSC_SECRET=$(openssl rand -hex 32)` once, passed to all): the launchers cannot \
             share a random one",
            nodes.nnodes
        )));
    }
    Ok(())
}

/// Whether `DMSC_SECRET` is set (non-blank) in `extra_env` or this process's environment.
fn secret_given(extra_env: &[(String, String)]) -> bool {
    let set = |v: &OsStr| !v.to_string_lossy().trim().is_empty();
    extra_env
        .iter()
        .any(|(k, v)| k == "DMSC_SECRET" && set(v.as_ref()))
        || std::env::var_os("DMSC_SECRET").is_some_and(|v| set(&v))
}

/// The grace period between SIGTERM and SIGKILL: `DMSC_KILL_GRACE` seconds, else 3 s.
fn kill_grace() -> Duration {
    let Some(raw) = std::env::var_os(KILL_GRACE_ENV) else {
        return DEFAULT_KILL_GRACE;
    };
    match raw.to_str().and_then(|s| s.trim().parse::<f64>().ok()) {
        Some(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Duration::from_secs_f64(s),
        _ => {
            eprintln!(
                "dmscrun: ignoring {KILL_GRACE_ENV}={}: expected seconds between 0 and 86400; \
                 using {} s",
                raw.to_string_lossy(),
                DEFAULT_KILL_GRACE.as_secs()
            );
            DEFAULT_KILL_GRACE
        }
    }
}

/// `extra_env` plus a fresh random `DMSC_SECRET` when neither it nor this process's
/// environment sets one.
fn with_job_secret(extra_env: &[(String, String)]) -> Result<Vec<(String, String)>> {
    let mut env = extra_env.to_vec();
    if !secret_given(extra_env) {
        env.push((
            "DMSC_SECRET".into(),
            dmsc_transports::auth::new_secret_hex()?,
        ));
    }
    Ok(env)
}

/// The secret the ranks will read from `DMSC_SECRET` (the last one in `env`, else this
/// process's), for the store the launcher serves them.
fn job_secret(env: &[(String, String)]) -> Result<Option<Secret>> {
    let value = env
        .iter()
        .rev()
        .find(|(k, _)| k == "DMSC_SECRET")
        .map(|(_, v)| v.clone().into_bytes())
        .or_else(|| {
            use std::os::unix::ffi::OsStringExt;
            std::env::var_os("DMSC_SECRET").map(OsStringExt::into_vec)
        });
    match value {
        Some(v) if !v.trim_ascii().is_empty() => Ok(Some(Secret::new(&v)?)),
        _ => Ok(None),
    }
}

/// A TCP port of 127.0.0.1 that was free a moment ago, for `MASTER_PORT` (as torchrun's
/// standalone mode picks one).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("finding a free port for MASTER_PORT", &e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free port for MASTER_PORT", &e))
}

/// The command line and environment of one rank: `rank_env` is its rendezvous variables
/// ([`Nodes::rank_env`]; `MASTER_PORT` there is not the store's port, so that rank 0 of a
/// torch job can serve torch's own store on it), then `extra_env`.
fn rank_command(
    program: &OsStr,
    args: &[OsString],
    extra_env: &[(String, String)],
    rank_env: &[(&str, String)],
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for var in OVERRIDING_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in rank_env {
        cmd.env(k, v);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unix_setup(&mut cmd);
    cmd
}

/// Own process group per rank; on Linux, die with the launcher.
fn unix_setup(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpid has no preconditions.
        let launcher = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (prctl, getppid); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The launcher may have died between fork and prctl.
                if libc::getppid() != launcher {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
}

/// Send `sig` to the process group led by `pid` (a rank and the processes it started).
fn signal_group(pid: u32, sig: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill has no memory-safety preconditions; a negative pid names a process group.
    // ESRCH (the group is gone) is expected and ignored.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Kill and reap ranks started before a later rank failed to start.
fn abandon(children: Vec<Child>) {
    for mut child in children {
        signal_group(child.id(), libc::SIGKILL);
        let _ = child.wait();
    }
}

/// What the wait loop hears about.
enum Event {
    /// A rank's process ended (and has been reaped).
    Exited(usize, io::Result<ExitStatus>),
}

/// Forward output, wait for every rank, terminate the rest on the first failure (unless
/// `opts.keep_going`); returns the job's exit code and whether a signal interrupted it.
fn supervise(children: Vec<Child>, grace: Duration, opts: &LaunchOptions) -> (i32, bool) {
    let n = children.len();
    let nodes = &opts.nodes;
    let names = Names {
        who: if nodes.is_multi() {
            format!("dmscrun (node {})", nodes.node_rank)
        } else {
            "dmscrun".into()
        },
        ranks: (0..n).map(|l| nodes.rank(n, l)).collect(),
    };
    let (tx, rx) = mpsc::channel();
    let (out_tx, out_rx) = mpsc::channel();
    let mut pids = Vec::with_capacity(n);
    let mut waiters = Vec::with_capacity(n);
    for (local, mut child) in children.into_iter().enumerate() {
        pids.push(child.id());
        let tag = nodes.tag(n, local);
        if let Some(out) = child.stdout.take() {
            spawn_forwarder(&tag, out, false, opts.prefix_stdout, out_tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            spawn_forwarder(&tag, err, true, opts.prefix_stderr, out_tx.clone());
        }
        waiters.push(spawn_waiter(local, child, tx.clone()));
    }
    drop(tx);
    drop(out_tx);
    let code = wait_all(&pids, &rx, grace, opts.keep_going, &names);
    for w in waiters {
        let _ = w.join();
    }
    // Stragglers in the ranks' process groups (background jobs of a rank) would keep the
    // output pipes open and become orphans: no process outlives the job.
    for &pid in &pids {
        signal_group(pid, libc::SIGKILL);
    }
    drain_forwarders(&out_rx, grace.max(Duration::from_secs(1)));
    code
}

/// How the wait loop's messages name the launcher and the ranks.
struct Names {
    /// `dmscrun`, or `dmscrun (node I)` on several nodes.
    who: String,
    /// The global rank of each local rank.
    ranks: Vec<usize>,
}

/// The wait loop: returns the job's exit code, and whether a signal interrupted it, once every
/// rank has exited. Events carry local ranks; messages name global ones.
fn wait_all(
    pids: &[u32],
    rx: &Receiver<Event>,
    grace: Duration,
    keep_going: bool,
    names: &Names,
) -> (i32, bool) {
    let who = &names.who;
    let n = pids.len();
    let mut alive = vec![true; n];
    let mut remaining = n;
    let mut first_failure: Option<i32> = None;
    let mut interrupted: Option<i32> = None;
    let mut kill_at: Option<Instant> = None;
    let signal_alive = |alive: &[bool], sig| {
        for (rank, _) in alive.iter().enumerate().filter(|(_, a)| **a) {
            signal_group(pids[rank], sig);
        }
    };
    while remaining > 0 {
        let sig = RECEIVED.swap(0, Ordering::SeqCst);
        if sig != 0 {
            if interrupted.is_none() {
                eprintln!(
                    "{who}: received {}; forwarding it to the ranks",
                    signal_name(sig)
                );
            }
            interrupted.get_or_insert(sig);
            signal_alive(&alive, sig);
            kill_at.get_or_insert(Instant::now() + grace);
        }
        let mut timeout = POLL;
        if let Some(at) = kill_at {
            let now = Instant::now();
            if now >= at {
                signal_alive(&alive, libc::SIGKILL);
                kill_at = Some(now + POLL.max(grace));
            } else {
                timeout = timeout.min(at - now);
            }
        }
        let (local, status) = match rx.recv_timeout(timeout) {
            Ok(Event::Exited(local, status)) => (local, status),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        alive[local] = false;
        let rank = names.ranks[local];
        remaining -= 1;
        let code = match status {
            Ok(status) => exit_code(status),
            Err(e) => {
                eprintln!("{who}: waiting for rank {rank} failed: {e}");
                1
            }
        };
        if code != 0 && first_failure.is_some() && keep_going {
            eprintln!("{who}: rank {rank} exited with code {code}");
        }
        if code != 0 && first_failure.is_none() && interrupted.is_none() {
            first_failure = Some(code);
            if remaining > 0 && keep_going {
                eprintln!(
                    "{who}: rank {rank} exited with code {code}; the other ranks keep running \
                     (--keep-going)"
                );
            } else if remaining > 0 {
                eprintln!(
                    "{who}: rank {rank} exited with code {code}; terminating the other ranks"
                );
                signal_alive(&alive, libc::SIGTERM);
                kill_at.get_or_insert(Instant::now() + grace);
            } else {
                eprintln!("{who}: rank {rank} exited with code {code}");
            }
        }
    }
    let code = first_failure.or(interrupted.map(|s| 128 + s)).unwrap_or(0);
    (code, interrupted.is_some())
}

/// The shell's convention: the exit code, or 128 + the signal that killed the process.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 1,
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        s => format!("signal {s}"),
    }
}

/// A thread that reaps one rank and reports its status.
fn spawn_waiter(rank: usize, mut child: Child, tx: Sender<Event>) -> JoinHandle<()> {
    thread::Builder::new()
        .name(format!("dmscrun-wait-{rank}"))
        .spawn(move || {
            let status = child.wait();
            let _ = tx.send(Event::Exited(rank, status));
        })
        .unwrap_or_else(|e| panic!("cannot start a thread to wait for rank {rank}: {e}"))
}

/// A thread that copies one pipe of a rank to our stdout or stderr, line by line, each line
/// prefixed with `[tag] ` if `prefix` (`tag`: the rank, or `node:rank`); it sends `()` on
/// `done` at end of file.
fn spawn_forwarder<R: Read + Send + 'static>(
    tag: &str,
    pipe: R,
    to_stderr: bool,
    prefix: bool,
    done: Sender<()>,
) {
    let name = format!("dmscrun-{}-{tag}", if to_stderr { "err" } else { "out" });
    let owned = tag.to_string();
    let spawned = thread::Builder::new().name(name).spawn(move || {
        forward_lines(&owned, pipe, to_stderr, prefix);
        let _ = done.send(());
    });
    if let Err(e) = spawned {
        eprintln!("dmscrun: cannot forward the output of rank {tag}: {e}");
    }
}

/// Copy `pipe` to stdout or stderr, each line (prefixed with `[tag] ` if `prefix`) written
/// whole, so that lines of different ranks never interleave.
fn forward_lines<R: Read>(tag: &str, pipe: R, to_stderr: bool, prefix: bool) {
    let skip = if prefix { 0 } else { tag.len() + 3 };
    prefix_lines(tag, pipe, |line| {
        let line = &line[skip..];
        // Errors (a closed stdout, say) are ignored: the pipe keeps being drained so that
        // the rank never blocks on a full pipe.
        if to_stderr {
            let mut e = io::stderr().lock();
            let _ = e.write_all(line).and_then(|_| e.flush());
        } else {
            let mut o = io::stdout().lock();
            let _ = o.write_all(line).and_then(|_| o.flush());
        }
    });
}

/// Split `pipe` into lines and hand each to `emit` as `[tag] line\n`. Bytes are passed
/// through as they are (no UTF-8 decoding); a last line without a newline gets one; lines
/// over 64 KiB are split.
fn prefix_lines<R: Read>(tag: &str, pipe: R, mut emit: impl FnMut(&[u8])) {
    let prefix = format!("[{tag}] ");
    let p = prefix.len();
    let mut reader = BufReader::new(pipe);
    let mut line = prefix.into_bytes();
    let mut flush = |line: &mut Vec<u8>| {
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        emit(line);
        line.truncate(p);
    };
    loop {
        let (used, complete) = match reader.fill_buf() {
            Ok([]) => break,
            Ok(buf) => {
                let room = MAX_LINE - (line.len() - p);
                match buf.iter().take(room).position(|&b| b == b'\n') {
                    Some(i) => {
                        line.extend_from_slice(&buf[..=i]);
                        (i + 1, true)
                    }
                    None => {
                        let k = buf.len().min(room);
                        line.extend_from_slice(&buf[..k]);
                        (k, line.len() - p >= MAX_LINE)
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        reader.consume(used);
        if complete {
            flush(&mut line);
        }
    }
    if line.len() > p {
        flush(&mut line);
    }
}

/// Wait until every forwarder has seen end of file, at most `limit` (a process that left the
/// ranks' process groups may hold a pipe open forever; its forwarder is then left behind).
fn drain_forwarders(done: &Receiver<()>, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match done.recv_timeout(left) {
            Ok(()) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                eprintln!(
                    "dmscrun: a process outside the ranks' process groups still holds their \
                     output open; not waiting for it"
                );
                return;
            }
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    RECEIVED.store(sig, Ordering::SeqCst);
}

/// SIGINT and SIGTERM handlers installed for the duration of a launch; the previous
/// dispositions come back on drop.
struct SignalGuard {
    old: Vec<(libc::c_int, libc::sigaction)>,
}

impl SignalGuard {
    fn install() -> Result<SignalGuard> {
        RECEIVED.store(0, Ordering::SeqCst);
        let mut guard = SignalGuard { old: Vec::new() };
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: sigaction structs are plain data for which all-zero is valid; the
            // handler only performs an atomic store, which is async-signal-safe.
            unsafe {
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                new.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut new.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &new, &mut old) != 0 {
                    let e = io::Error::last_os_error();
                    drop(guard);
                    return Err(Error::io(
                        format!("installing a handler for signal {sig}"),
                        &e,
                    ));
                }
                guard.old.push((sig, old));
            }
        }
        Ok(guard)
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, old) in self.old.drain(..).rev() {
            // SAFETY: `old` was filled in by sigaction for this signal.
            unsafe {
                libc::sigaction(sig, &old, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> (OsString, Vec<OsString>) {
        ("sh".into(), vec!["-c".into(), script.into()])
    }

    #[test]
    fn zero_ranks_is_an_error() {
        let (p, a) = sh("true");
        let e = launch(0, &p, &a, &[]).unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
    }

    #[test]
    fn success_is_zero() {
        let (p, a) = sh("exit 0");
        assert_eq!(launch(3, &p, &a, &[]).unwrap(), 0);
    }

    #[test]
    fn every_rank_gets_the_same_job_secret() {
        // Each rank checks that it has a 64-digit secret and that it is the one rank 0 saw.
        let dir = std::env::temp_dir().join(format!("dmscrun-secret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            r#"[ ${{#DMSC_SECRET}} -ge 16 ] || exit 3; echo "$DMSC_SECRET" > {0}/$RANK"#,
            dir.display()
        );
        let (p, a) = sh(&script);
        assert_eq!(launch(3, &p, &a, &[]).unwrap(), 0);
        let read = |r: usize| std::fs::read_to_string(dir.join(r.to_string())).unwrap();
        assert_eq!(read(0), read(1));
        assert_eq!(read(0), read(2));
        // A secret given to the launcher is passed on, not replaced.
        let given = [(
            "DMSC_SECRET".to_string(),
            "given secret, 16+ bytes".to_string(),
        )];
        assert_eq!(launch(2, &p, &a, &given).unwrap(), 0);
        assert_eq!(read(1).trim(), "given secret, 16+ bytes");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn first_failure_code_and_extra_env() {
        let (p, a) = sh(r#"if [ "$RANK" = 1 ]; then exit "$CODE"; fi; exec sleep 30"#);
        let env = [("CODE".to_string(), "9".to_string())];
        let t = Instant::now();
        assert_eq!(launch(3, &p, &a, &env).unwrap(), 9);
        assert!(t.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn missing_program_names_it() {
        let e = launch(2, OsStr::new("dmsc-no-such-program-xyz"), &[], &[]).unwrap_err();
        match &e {
            Error::System { errno, context, .. } => {
                assert_eq!(*errno, Some(libc::ENOENT));
                assert!(context.contains("dmsc-no-such-program-xyz"), "{e}");
            }
            other => panic!("unexpected error {other:?}"),
        }
    }

    fn lines_of(rank: usize, input: &[u8]) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        prefix_lines(&rank.to_string(), input, |l| got.push(l.to_vec()));
        got
    }

    #[test]
    fn node_tags_prefix_lines() {
        let mut got = Vec::new();
        prefix_lines("1:3", &b"x\ny"[..], |l| got.push(l.to_vec()));
        assert_eq!(got, vec![b"[1:3] x\n".to_vec(), b"[1:3] y\n".to_vec()]);
    }

    #[test]
    fn several_nodes_need_a_secret_and_no_restarts() {
        let (p, a) = sh("true");
        let multi = |restarts| LaunchOptions {
            restarts,
            nodes: Nodes::new(Some(2), Some(1), Some("127.0.0.1"), Some(9)).unwrap(),
            ..LaunchOptions::default()
        };
        let secret = [("DMSC_SECRET".to_string(), "s".repeat(32))];
        let e = launch_with(1, &p, &a, &secret, &multi(1)).unwrap_err();
        assert!(
            e.to_string().contains("--restarts 1 is not supported"),
            "{e}"
        );
        if std::env::var_os("DMSC_SECRET").is_none() {
            let e = launch_with(1, &p, &a, &[], &multi(0)).unwrap_err();
            assert!(e.to_string().contains("need DMSC_SECRET"), "{e}");
        }
    }

    #[test]
    fn prefixes_lines_and_keeps_raw_bytes() {
        assert_eq!(
            lines_of(3, b"a\n\xff\xfe\nlast"),
            vec![
                b"[3] a\n".to_vec(),
                b"[3] \xff\xfe\n".to_vec(),
                b"[3] last\n".to_vec()
            ]
        );
        assert!(lines_of(0, b"").is_empty());
        assert_eq!(lines_of(1, b"\n"), vec![b"[1] \n".to_vec()]);
    }

    #[test]
    fn splits_very_long_lines() {
        let input = vec![b'x'; MAX_LINE * 2 + 10];
        let got = lines_of(0, &input);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].len(), 4 + MAX_LINE + 1);
        assert_eq!(got[2], [b"[0] ".as_slice(), &[b'x'; 10], b"\n"].concat());
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
