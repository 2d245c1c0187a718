//! The logger end to end, on 2 ranks over TCP (`DMSC_SHM=0`, so there are NET lines):
//! `DMSC_DEBUG=WARN` (and unset) prints nothing on a healthy run, `INFO` prints the init
//! banner in NCCL's line shape, and `TRACE` with `DMSC_DEBUG_SUBSYS=NET` writes only NET lines,
//! into the `DMSC_DEBUG_FILE` of each process.
//!
//! The parent tests launch this test executable as the ranks through `dmscrun`; each rank
//! runs the ignored `rank_entry`, which does one checked all-reduce and prints `LOG-OK`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const RANKS: usize = 2;

/// Run the ranks with `env` on top of the test's own; returns (exit code, stdout, stderr).
fn launch(env: &[(&str, &str)]) -> (i32, String, String) {
    let exe = std::env::current_exe().expect("test executable path");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dmscrun"));
    cmd.arg("-n")
        .arg(RANKS.to_string())
        .arg("--")
        .arg(exe)
        .args([
            "--ignored",
            "--exact",
            "rank_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_remove("DMSC_DEBUG")
        .env_remove("DMSC_DEBUG_SUBSYS")
        .env_remove("DMSC_DEBUG_FILE")
        .env("DMSC_SHM", "0")
        .env("DMSC_TIMEOUT", "20")
        .env("DMSC_KILL_GRACE", "1")
        .env("DMSC_LOG_TEST_RANK", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start dmscrun");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Ok(out)) => (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Ok(Err(e)) => panic!("waiting for dmscrun: {e}"),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("the ranks hung with {env:?}");
        }
    }
}

/// A run that must succeed on every rank; returns (stdout, stderr).
fn healthy(env: &[(&str, &str)]) -> (String, String) {
    let (code, out, err) = launch(env);
    assert_eq!(code, 0, "{env:?} failed:\n{out}\n{err}");
    assert_eq!(
        out.matches("LOG-OK").count(),
        RANKS,
        "{env:?}:\n{out}\n{err}"
    );
    (out, err)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The parts of a log line `host:pid:tid [rank] DMSC LEVEL rest`, checked for NCCL's shape:
/// returns (pid, rank, level, rest).
fn parse_line(line: &str) -> (u32, String, String, String) {
    let (head, tail) = line
        .split_once(" DMSC ")
        .unwrap_or_else(|| panic!("not a log line: {line:?}"));
    let (who, rank) = head
        .split_once(' ')
        .unwrap_or_else(|| panic!("no [rank] in {line:?}"));
    let parts: Vec<&str> = who.split(':').collect();
    assert_eq!(parts.len(), 3, "not host:pid:tid in {line:?}");
    assert_eq!(parts[0], hostname(), "{line:?}");
    let pid: u32 = parts[1]
        .parse()
        .unwrap_or_else(|_| panic!("pid in {line:?}"));
    let _tid: u32 = parts[2]
        .parse()
        .unwrap_or_else(|_| panic!("tid in {line:?}"));
    assert!(rank.starts_with('[') && rank.ends_with(']'), "{line:?}");
    let (level, rest) = tail.split_once(' ').unwrap_or((tail, ""));
    (pid, rank.to_string(), level.to_string(), rest.to_string())
}

#[test]
fn warn_and_unset_print_nothing_on_a_healthy_run() {
    for env in [&[("DMSC_DEBUG", "WARN")][..], &[][..]] {
        let (_, err) = healthy(env);
        assert!(err.trim().is_empty(), "{env:?} printed:\n{err}");
    }
}

#[test]
fn info_prints_the_banner_of_every_rank() {
    let (out, err) = healthy(&[("DMSC_DEBUG", "info")]);
    for r in 0..RANKS {
        // dmscrun puts `[r] ` before each line of rank r.
        let lines: Vec<&str> = err
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("[{r}] ")))
            .collect();
        let banner: Vec<String> = lines
            .iter()
            .map(|l| parse_line(l))
            .filter(|(_, rank, level, rest)| {
                *rank == format!("[{r}]") && level == "INFO" && rest.starts_with("INIT: ")
            })
            .map(|(_, _, _, rest)| rest)
            .collect();
        let has = |what: &str| banner.iter().any(|l| l.contains(what));
        let version = format!(
            "dmsc version {}: rank {r} of {RANKS}",
            env!("CARGO_PKG_VERSION")
        );
        assert!(has(&version), "rank {r}: no {version:?} in:\n{err}\n{out}");
        assert!(
            has(&format!("{} tcp-", 1 - r)),
            "rank {r}: no peer transport in:\n{err}"
        );
        assert!(
            has("interfaces: listening on 127.0.0.1"),
            "rank {r}:\n{err}"
        );
        assert!(has("algorithms:") && has("cost model"), "rank {r}:\n{err}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("DMSC INFO COLL: ") && l.contains(" end ")),
            "rank {r}: no operation lines:\n{err}"
        );
    }
}

#[test]
fn trace_of_net_only_writes_net_lines_to_each_process_file() {
    let dir = std::env::temp_dir().join(format!("dmsc-logging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pattern = dir.join("dmsc.%h.%p.log");
    let (_, err) = healthy(&[
        ("DMSC_DEBUG", "TRACE"),
        ("DMSC_DEBUG_SUBSYS", "NET"),
        ("DMSC_DEBUG_FILE", pattern.to_str().unwrap()),
    ]);
    assert!(!err.contains(" DMSC "), "log lines on stderr:\n{err}");
    let files = read_logs(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    // One file per process that set up the logger: the ranks and the launcher (which logs
    // nothing on a healthy run).
    let written: Vec<&(String, String)> = files.iter().filter(|(_, t)| !t.is_empty()).collect();
    assert_eq!(written.len(), RANKS, "{files:?}");
    let mut ranks = Vec::new();
    for (name, text) in written {
        let mut trace = false;
        for line in text.lines() {
            let (pid, rank, level, rest) = parse_line(line);
            assert_eq!(
                name,
                &format!("dmsc.{}.{pid}.log", hostname()),
                "{line:?} in the file of another process"
            );
            assert!(
                rest.starts_with("NET: "),
                "{name}: not a NET line: {line:?}"
            );
            trace |= level == "TRACE";
            ranks.push(rank);
        }
        assert!(trace, "{name}: no TRACE line:\n{text}");
    }
    ranks.sort();
    ranks.dedup();
    assert_eq!(ranks, ["[0]", "[1]"]);
}

/// The name and text of each file in `dir`.
fn read_logs(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let text = std::fs::read_to_string(e.path()).unwrap();
            (e.file_name().to_string_lossy().into_owned(), text)
        })
        .collect();
    v.sort();
    v
}

/// The rank entry point; run by the parent tests through dmscrun.
#[test]
#[ignore = "entry point of the ranks launched by the logging tests"]
fn rank_entry() {
    if std::env::var_os("DMSC_LOG_TEST_RANK").is_none() {
        return;
    }
    let c = dmsc::Communicator::from_env().expect("init");
    let mut v = vec![c.rank() as f32 + 1.0; 1000];
    c.all_reduce_in_place(&mut v, dmsc::ReduceOp::Sum)
        .expect("all_reduce");
    let want = (RANKS * (RANKS + 1) / 2) as f32;
    assert!(v.iter().all(|&x| x == want), "all_reduce gave {}", v[0]);
    println!("LOG-OK rank {}", c.rank());
}

#[test]
fn each_communicator_of_one_process_names_its_own_rank() {
    let exe = std::env::current_exe().expect("test executable path");
    let out = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "two_communicators_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DMSC_LOG_TEST_TWO", "1")
        .env("DMSC_DEBUG", "INFO")
        .env("DMSC_DEBUG_SUBSYS", "INIT,COLL")
        .env("DMSC_TIMEOUT", "20")
        .env_remove("DMSC_DEBUG_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("run the two-communicator process");
    let err = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("TWO-OK"),
        "{text}\n{err}"
    );
    for r in 0..2 {
        let mine: Vec<String> = err
            .lines()
            .filter(|l| l.contains(" DMSC "))
            .map(parse_line)
            .filter(|(_, rank, _, _)| *rank == format!("[{r}]"))
            .map(|(_, _, _, rest)| rest)
            .collect();
        let banner = format!("rank {r} of 2");
        assert!(
            mine.iter().any(|l| l.contains(&banner)),
            "no banner of rank {r} under [{r}]:\n{err}"
        );
        assert!(
            !mine
                .iter()
                .any(|l| l.contains(&format!("rank {} of 2", 1 - r))),
            "the banner of rank {} under [{r}]:\n{err}",
            1 - r
        );
        assert!(
            mine.iter()
                .any(|l| l.starts_with("COLL: ") && l.contains(" end ")),
            "no operation lines under [{r}]:\n{err}"
        );
    }
}

/// Two communicators of one job in this one process, one per thread (as
/// `dmscCommInitAll` makes them); run by the test above.
#[test]
#[ignore = "entry point of the two-communicator logging test"]
fn two_communicators_entry() {
    if std::env::var_os("DMSC_LOG_TEST_TWO").is_none() {
        return;
    }
    let id = dmsc::new_local_unique_id().expect("unique id");
    std::thread::scope(|s| {
        for r in 0..2usize {
            let id = &id;
            s.spawn(move || {
                let config = dmsc::Config::from_env().expect("config");
                let c = dmsc::Communicator::init_with_id(id, r, 2, config).expect("init");
                let mut v = vec![r as f32 + 1.0; 1000];
                c.all_reduce_in_place(&mut v, dmsc::ReduceOp::Sum)
                    .expect("all_reduce");
                assert!(v.iter().all(|&x| x == 3.0), "all_reduce gave {}", v[0]);
            });
        }
    });
    println!("TWO-OK");
}
