//! dmscrun end to end: real multi-process runs of small `sh -c` scripts. Every run is bounded
//! by a timeout (the launcher is killed and the test fails if it hangs).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const DMSCRUN: &str = env!("CARGO_BIN_EXE_dmscrun");
const LIMIT: Duration = Duration::from_secs(30);

struct Out {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    elapsed: Duration,
}

impl Out {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

fn dmscrun(args: &[&str]) -> Command {
    let mut c = Command::new(DMSCRUN);
    c.args(args).env("DMSC_KILL_GRACE", "1");
    c
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dmscrun")
}

/// Wait for `child` at most `LIMIT`, collecting its output; kill it and fail on timeout.
fn finish(mut child: Child) -> Out {
    let start = Instant::now();
    let mut o = child.stdout.take().expect("stdout");
    let mut e = child.stderr.take().expect("stderr");
    let ro = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = o.read_to_end(&mut v);
        v
    });
    let re = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = e.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dmscrun did not finish within {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    Out {
        status,
        stdout: ro.join().expect("stdout reader"),
        stderr: re.join().expect("stderr reader"),
        elapsed,
    }
}

fn run(args: &[&str]) -> Out {
    finish(spawn(dmscrun(args)))
}

/// A fresh directory for pid files.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dmscrun-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// The pids written in `dir/*.pid`.
fn pids(dir: &Path) -> Vec<i32> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read scratch") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|x| x == "pid") {
            let s = std::fs::read_to_string(&p).expect("pid file");
            v.push(s.trim().parse().expect("pid"));
        }
    }
    v
}

/// Whether `pid` is still a live process (zombies count as gone: someone will reap them).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Wait a little for `pids` to disappear (reparented zombies are reaped by init).
fn assert_all_gone(pids: &[i32]) {
    let start = Instant::now();
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "processes still alive: {:?}",
            pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ranks_get_the_environment_and_prefixed_output() {
    let script = r#"echo "env $RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT $DMSC_LAUNCHER"; echo "to stderr $RANK" >&2"#;
    let o = run(&["-n", "3", "sh", "-c", script]);
    assert_eq!(o.code(), Some(0), "{}", o.err());
    let out = o.out();
    let mut ports = Vec::new();
    for rank in 0..3 {
        let prefix = format!("[{rank}] env {rank} 3 {rank} 3 127.0.0.1 ");
        let line = out
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line for rank {rank} in:\n{out}"));
        let rest = &line[prefix.len()..];
        let (port, launcher) = rest.split_once(' ').expect("port and launcher");
        assert_eq!(launcher, "dmscrun");
        ports.push(port.parse::<u16>().expect("MASTER_PORT is a port"));
        assert!(
            o.err().contains(&format!("[{rank}] to stderr {rank}\n")),
            "{}",
            o.err()
        );
    }
    assert!(ports.iter().all(|&p| p == ports[0] && p > 0), "{ports:?}");
    assert_eq!(out.lines().count(), 3);
}

#[test]
fn raw_bytes_and_unterminated_lines_pass_through() {
    let o = run(&["-n", "1", "sh", "-c", r"printf 'a\377\376b\nno newline'"]);
    assert_eq!(o.code(), Some(0));
    assert_eq!(o.stdout, b"[0] a\xff\xfeb\n[0] no newline\n");
}

#[test]
fn overriding_variables_are_removed() {
    // The inherited DMSC_STORE_ADDR gives way to the store dmscrun serves; MASTER_PORT is
    // another port, left free for a torch program's own store.
    let mut cmd = dmscrun(&[
        "-n",
        "2",
        "sh",
        "-c",
        r#"echo "x${DMSC_RANK}x${DMSC_STORE_ADDR}x${DMSC_STORE_EXTERNAL}x$MASTER_ADDR:${MASTER_PORT}x""#,
    ]);
    cmd.env("DMSC_RANK", "7")
        .env("DMSC_STORE_ADDR", "10.0.0.1:1");
    let o = finish(spawn(cmd));
    assert_eq!(o.code(), Some(0));
    for line in o.out().lines() {
        let f: Vec<&str> = line.split('x').collect();
        assert_eq!(f.len(), 6, "{line}");
        assert_eq!((f[1], f[3]), ("", "1"), "{line}");
        assert!(
            f[2].starts_with("127.0.0.1:") && f[4].starts_with("127.0.0.1:"),
            "{line}"
        );
        assert_ne!(f[2], f[4], "MASTER_PORT is not the store's: {line}");
    }
    assert_eq!(o.out().lines().count(), 2, "{}", o.out());
}

#[test]
fn keep_going_lets_the_other_ranks_finish() {
    let script = r#"if [ "$RANK" = 1 ]; then exit 3; fi; sleep 0.5; echo "rank $RANK done""#;
    let o = run(&["-n", "3", "--keep-going", "sh", "-c", script]);
    // The first failure still sets the code, but nobody was terminated.
    assert_eq!(o.code(), Some(3), "{}", o.err());
    assert!(o.out().contains("[0] rank 0 done") && o.out().contains("[2] rank 2 done"));
    assert!(o.err().contains("keep running"), "{}", o.err());
}

#[test]
fn restarts_start_a_failed_job_again() {
    // Rank 1 fails on the first attempt only, once rank 0 has said which attempt it runs (so
    // that a loaded machine cannot stop rank 0 before it prints); every rank runs on each
    // attempt.
    let dir = scratch("restarts");
    let script = format!(
        r#"echo "attempt $DMSC_RESTART_COUNT"; touch {d}/$RANK-$DMSC_RESTART_COUNT; if [ "$RANK$DMSC_RESTART_COUNT" = 10 ]; then i=0; while [ ! -e {d}/0-0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; exit 5; fi; sleep 0.2"#,
        d = dir.display()
    );
    let o = run(&["-n", "2", "--restarts", "2", "sh", "-c", &script]);
    assert_eq!(o.code(), Some(0), "{}", o.err());
    for rank in 0..2 {
        for attempt in 0..2 {
            let line = format!("[{rank}] attempt {attempt}");
            assert!(o.out().contains(&line), "no '{line}' in:\n{}", o.out());
        }
    }
    assert!(!o.out().contains("attempt 2"), "{}", o.out());
    assert!(o.err().contains("restart 1 of 2"), "{}", o.err());
    // Out of restarts: the last failure's code.
    let o = run(&[
        "-n",
        "2",
        "-r",
        "1",
        "sh",
        "-c",
        r#"[ "$RANK" = 0 ] || exit 4"#,
    ]);
    assert_eq!(o.code(), Some(4), "{}", o.err());
    assert_eq!(o.err().matches("restart 1 of 1").count(), 1, "{}", o.err());
}

#[test]
fn first_failing_rank_sets_the_code_and_stops_the_others() {
    let dir = scratch("fail");
    let script = format!(
        r#"echo $$ > {d}/$RANK.pid; if [ "$RANK" = 2 ]; then sleep 0.3; exit 7; fi; sleep 60"#,
        d = dir.display()
    );
    let o = run(&["-n", "4", "sh", "-c", &script]);
    assert_eq!(o.code(), Some(7), "{}", o.err());
    assert!(
        o.err()
            .contains("dmscrun: rank 2 exited with code 7; terminating the other ranks"),
        "{}",
        o.err()
    );
    assert!(o.elapsed < Duration::from_secs(15), "{:?}", o.elapsed);
    let p = pids(&dir);
    assert_eq!(p.len(), 4);
    assert_all_gone(&p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rank_killed_by_a_signal_gives_128_plus_signal() {
    let o = run(&[
        "-n",
        "2",
        "sh",
        "-c",
        r#"if [ "$RANK" = 0 ]; then kill -9 $$; fi; sleep 60"#,
    ]);
    assert_eq!(o.code(), Some(128 + 9), "{}", o.err());
    assert!(
        o.err().contains("rank 0 exited with code 137"),
        "{}",
        o.err()
    );
}

#[test]
fn ranks_ignoring_sigterm_are_killed_after_the_grace_period() {
    let dir = scratch("stubborn");
    // Rank 1 ignores SIGTERM (and so does its sleep, started after the trap).
    let script = format!(
        r#"echo $$ > {d}/$RANK.pid; if [ "$RANK" = 0 ]; then sleep 0.3; exit 3; fi; trap '' TERM; sleep 60 & echo $! > {d}/child$RANK.pid; wait"#,
        d = dir.display()
    );
    let o = run(&["-n", "2", "sh", "-c", &script]);
    assert_eq!(o.code(), Some(3), "{}", o.err());
    assert!(o.elapsed < Duration::from_secs(15), "{:?}", o.elapsed);
    let p = pids(&dir);
    assert_eq!(p.len(), 3, "two ranks and one background sleep");
    assert_all_gone(&p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn background_helpers_of_ranks_do_not_outlive_the_job() {
    let dir = scratch("orphans");
    let script = format!(
        r#"sleep 60 & echo $! > {d}/bg$RANK.pid; echo done"#,
        d = dir.display()
    );
    let o = run(&["-n", "2", "sh", "-c", &script]);
    assert_eq!(o.code(), Some(0), "{}", o.err());
    assert!(o.elapsed < Duration::from_secs(15), "{:?}", o.elapsed);
    let p = pids(&dir);
    assert_eq!(p.len(), 2);
    assert_all_gone(&p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_to_the_launcher_is_forwarded() {
    let dir = scratch("forward");
    let script = format!(
        r#"trap 'echo got TERM; exit 0' TERM; echo $$ > {d}/$RANK.pid; while :; do sleep 0.05; done"#,
        d = dir.display()
    );
    let child = spawn(dmscrun(&["-n", "3", "sh", "-c", &script]));
    let start = Instant::now();
    while pids(&dir).len() < 3 {
        assert!(start.elapsed() < LIMIT, "ranks did not start");
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(100));
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let o = finish(child);
    assert_eq!(o.code(), Some(128 + libc::SIGTERM), "{}", o.err());
    assert!(o.err().contains("received SIGTERM"), "{}", o.err());
    assert_eq!(o.out().matches("got TERM").count(), 3, "{}", o.out());
    assert!(
        !o.err().contains("terminating the other ranks"),
        "{}",
        o.err()
    );
    assert_all_gone(&pids(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn usage_errors() {
    for (args, want) in [
        (&[][..], "missing -n"),
        (&["sh", "-c", "true"], "missing -n"),
        (&["-n", "0", "true"], "at least 1"),
        (&["-n", "two", "true"], "invalid value 'two' for -n"),
        (&["-n", "2"], "missing the command"),
        (&["--bogus", "true"], "unknown option '--bogus'"),
        (
            &["--nnodes", "2", "-n", "1", "true"],
            "--nnodes 2 needs --master-addr HOST",
        ),
        (
            &[
                "--nnodes",
                "2",
                "--node-rank",
                "5",
                "--master-addr",
                "h",
                "-n",
                "1",
                "true",
            ],
            "--node-rank 5 is out of range: with --nnodes 2 it must be 0 to 1",
        ),
        (
            &[
                "--nnodes",
                "2",
                "--master-addr",
                "h",
                "--master-port",
                "0",
                "-n",
                "1",
                "true",
            ],
            "--master-port must be a port number 1-65534, got 0",
        ),
    ] {
        let o = run(args);
        assert_eq!(o.code(), Some(2), "{args:?}");
        assert!(o.err().contains(want), "{args:?}: {}", o.err());
    }
    let o = run(&["--help"]);
    assert_eq!(o.code(), Some(0));
    assert!(o.out().starts_with("usage: dmscrun -n N"));
}

#[test]
fn missing_commands_are_named() {
    let o = run(&["-n", "2", "dmsc-no-such-command-xyz", "arg"]);
    assert_eq!(o.code(), Some(127));
    assert!(
        o.err()
            .contains("dmscrun: dmsc-no-such-command-xyz: command not found"),
        "{}",
        o.err()
    );
    let o = run(&["-n", "1", "/"]);
    assert_eq!(o.code(), Some(126), "{}", o.err());
}

#[test]
fn aliases_of_n() {
    for flag in ["--np", "--nproc-per-node", "--nproc_per_node"] {
        let o = run(&[flag, "2", "--", "sh", "-c", "echo $WORLD_SIZE"]);
        assert_eq!(o.code(), Some(0), "{flag}");
        assert_eq!(o.out().matches("] 2\n").count(), 2, "{flag}: {}", o.out());
    }
}
