//! `dmscrun -n N [--] CMD ARGS...`: start N ranks of a program on this machine with the
//! torchrun environment, prefix their output with `[rank] `, and stop them all when one
//! fails (or let the others run on, `--keep-going`; or start the job again, `--restarts K`).
//! With `--nnodes M --node-rank I --master-addr HOST [--master-port P]`, one dmscrun per host
//! starts that host's N ranks of an M × N job, prefixed `[node:rank] `. See `dmsc::launch`
//! for the details.

use dmsc::launch::{LaunchOptions, Nodes};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

/// Exit code of command-line errors.
const USAGE_ERROR: u8 = 2;

const USAGE: &str = "\
usage: dmscrun -n N [--] COMMAND [ARGS...]
       dmscrun --nnodes M --node-rank I --master-addr HOST [--master-port P]
               --nproc-per-node N [--] COMMAND [ARGS...]

Starts N ranks of COMMAND on this machine for one dmsc job (like torchrun --standalone):
dmscrun serves the rendezvous store on a free port of 127.0.0.1 and each rank gets
DMSC_STORE_ADDR (the store), DMSC_STORE_EXTERNAL=1, MASTER_ADDR=127.0.0.1 and MASTER_PORT (a
free port, not the store's, for torch's own store under init_process_group),
RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, DMSC_RESTART_COUNT, DMSC_LAUNCHER=dmscrun
and DMSC_SECRET (a fresh random one unless set). Output lines are prefixed with [rank].
When a rank fails, the others get SIGTERM, then SIGKILL after DMSC_KILL_GRACE seconds
(default 3); the exit code is that of the first failing rank (128+signal).

Several hosts (like torchrun --nnodes): run one dmscrun on each host, with the same
--nnodes, --master-addr and --master-port, and --node-rank 0 to M-1. The job has M*N ranks;
local rank L of node I is rank I*N+L (LOCAL_RANK=L, GROUP_RANK=NODE_RANK=I,
GROUP_WORLD_SIZE=M). Node 0 serves the store on port P of all interfaces (only of loopback
when HOST is a loopback address); the other nodes serve none. DMSC_STORE_ADDR is HOST:P on
every node; MASTER_ADDR=HOST and MASTER_PORT=P+1 (left to torch's own store). DMSC_SECRET
must be set, to the same value, on every node. Output lines are prefixed [node:rank].
A failing rank stops its node's ranks; the other nodes' ranks then fail (peer lost, or
DMSC_TIMEOUT) and every node exits non-zero. --restarts is refused with several nodes.

options:
  -n, --np, --nproc-per-node, --nproc_per_node N   number of ranks (required)
  -k, --keep-going          when a rank fails, let the others run on (they may shrink
                            their communicator and finish without it)
  -r, --restarts, --max-restarts, --max_restarts K
                            when the job fails, start all N ranks again, at most K times;
                            DMSC_RESTART_COUNT tells the ranks which attempt they are in
      --nnodes M            number of hosts, one dmscrun on each (default 1)
      --node-rank, --node_rank I
                            this host's place, 0 to M-1 (default 0); node 0 serves the store
      --master-addr, --master_addr HOST
                            node 0's address, reachable from every host (needed with M > 1)
      --master-port, --master_port P
                            the store's port on node 0 (default 29500 with --master-addr;
                            with one node and no --master-port, a free port)
  -h, --help                this text
  -V, --version             print the version
";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Cmd {
    Help,
    Version,
    Run {
        n: usize,
        program: OsString,
        args: Vec<OsString>,
        opts: LaunchOptions,
    },
}

fn parse(args: &[OsString]) -> Result<Cmd, String> {
    let mut n: Option<usize> = None;
    let mut opts = LaunchOptions::default();
    let (mut nnodes, mut node_rank) = (None, None);
    let (mut master_addr, mut master_port): (Option<String>, Option<u16>) = (None, None);
    let mut i = 0;
    while i < args.len() {
        let tok = args[i].as_bytes();
        if tok == b"--" {
            i += 1;
            break;
        }
        if !tok.starts_with(b"-") || tok == b"-" {
            break;
        }
        let text = String::from_utf8_lossy(tok).into_owned();
        let (flag, inline) = match text.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ if (text.starts_with("-n") || text.starts_with("-r"))
                && text.len() > 2
                && !text.starts_with("--") =>
            {
                (text[..2].to_string(), Some(text[2..].to_string()))
            }
            _ => (text.clone(), None),
        };
        let mut value = |what: &str| match inline.clone() {
            Some(v) => Ok(v),
            None => {
                i += 1;
                match args.get(i) {
                    Some(v) => Ok(v.to_string_lossy().into_owned()),
                    None => Err(format!("option {flag} needs {what}")),
                }
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Cmd::Help),
            "-V" | "--version" => return Ok(Cmd::Version),
            "-n" | "--np" | "--nproc-per-node" | "--nproc_per_node" => {
                let v = value("a number of ranks")?;
                n = Some(parse_ranks(&flag, &v)?);
            }
            "-r" | "--restarts" | "--max-restarts" | "--max_restarts" => {
                let v = value("a number of restarts")?;
                opts.restarts = v.trim().parse::<usize>().map_err(|_| {
                    format!("invalid value '{v}' for {flag}: expected a number of restarts")
                })?;
            }
            "--nnodes" => {
                let v = value("a number of nodes")?;
                if v.contains(':') {
                    return Err(format!(
                        "invalid value '{v}' for --nnodes: elastic ranges (MIN:MAX) are not \
                         supported; give the number of nodes"
                    ));
                }
                nnodes = Some(parse_count(&flag, &v, "a number of nodes")?);
            }
            "--node-rank" | "--node_rank" => {
                let v = value("a node rank")?;
                node_rank = Some(parse_count(&flag, &v, "a node rank (0 to nnodes-1)")?);
            }
            "--master-addr" | "--master_addr" => master_addr = Some(value("a host")?),
            "--master-port" | "--master_port" => {
                let v = value("a port")?;
                master_port = Some(v.trim().parse::<u16>().map_err(|_| {
                    format!("invalid value '{v}' for {flag}: expected a port number 1-65534")
                })?);
            }
            "-k" | "--keep-going" if inline.is_none() => opts.keep_going = true,
            _ => return Err(format!("unknown option '{text}' (see --help)")),
        }
        i += 1;
    }
    let Some(n) = n else {
        return Err("missing -n N: the number of ranks to start".into());
    };
    let what = |e: dmsc::Error| match e {
        dmsc::Error::InvalidArgument { what } => what,
        other => other.to_string(),
    };
    opts.nodes =
        Nodes::new(nnodes, node_rank, master_addr.as_deref(), master_port).map_err(what)?;
    opts.nodes.check_restarts(opts.restarts).map_err(what)?;
    let Some(program) = args.get(i) else {
        return Err("missing the command to run after the options".into());
    };
    Ok(Cmd::Run {
        n,
        program: program.clone(),
        args: args[i + 1..].to_vec(),
        opts,
    })
}

fn parse_count(flag: &str, value: &str, what: &str) -> Result<usize, String> {
    value
        .trim()
        .parse::<usize>()
        .map_err(|_| format!("invalid value '{value}' for {flag}: expected {what}"))
}

fn parse_ranks(flag: &str, value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(0) => Err(format!("{flag} must be at least 1, got 0")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "invalid value '{value}' for {flag}: expected a number of ranks"
        )),
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let (n, program, rest, opts) = match parse(&args) {
        Ok(Cmd::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Cmd::Version) => {
            println!("dmscrun {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Cmd::Run {
            n,
            program,
            args,
            opts,
        }) => (n, program, args, opts),
        Err(e) => {
            eprintln!("dmscrun: {e}\nTry 'dmscrun --help' for more information.");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    match dmsc::launch::launch_with(n, &program, &rest, &[], &opts) {
        Ok(code) => ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)),
        Err(e) => {
            let name = program.to_string_lossy();
            let code = match &e {
                dmsc::Error::System {
                    errno: Some(libc::ENOENT),
                    ..
                } => {
                    eprintln!("dmscrun: {name}: command not found");
                    127
                }
                dmsc::Error::System {
                    errno: Some(libc::EACCES),
                    ..
                } => {
                    eprintln!("dmscrun: {name}: permission denied (not executable?)");
                    126
                }
                _ => {
                    eprintln!("dmscrun: {e}");
                    1
                }
            };
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Cmd, String> {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(&v)
    }

    fn run(n: usize, program: &str, args: &[&str]) -> Cmd {
        run_with(n, program, args, LaunchOptions::default())
    }

    fn run_with(n: usize, program: &str, args: &[&str], opts: LaunchOptions) -> Cmd {
        Cmd::Run {
            n,
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            opts,
        }
    }

    #[test]
    fn forms() {
        assert_eq!(
            p(&["-n", "4", "python", "-u", "x.py"]).unwrap(),
            run(4, "python", &["-u", "x.py"])
        );
        assert_eq!(
            p(&["-n2", "--", "-weird", "-n", "3"]).unwrap(),
            run(2, "-weird", &["-n", "3"])
        );
        assert_eq!(p(&["--np=3", "sh"]).unwrap(), run(3, "sh", &[]));
        assert_eq!(
            p(&["--nproc-per-node", "5", "a"]).unwrap(),
            run(5, "a", &[])
        );
        assert_eq!(
            p(&["--nproc_per_node=6", "a", "--help"]).unwrap(),
            run(6, "a", &["--help"])
        );
        let recover = |keep_going, restarts| LaunchOptions {
            keep_going,
            restarts,
            ..LaunchOptions::default()
        };
        assert_eq!(
            p(&["-n", "4", "--keep-going", "a"]).unwrap(),
            run_with(4, "a", &[], recover(true, 0))
        );
        assert_eq!(
            p(&["--restarts", "2", "-n2", "a", "-k"]).unwrap(),
            run_with(2, "a", &["-k"], recover(false, 2))
        );
        assert_eq!(
            p(&["-k", "--max-restarts=3", "-n", "2", "a"]).unwrap(),
            run_with(2, "a", &[], recover(true, 3))
        );
        assert_eq!(
            p(&["-r1", "-n", "2", "a"]).unwrap(),
            run_with(2, "a", &[], recover(false, 1))
        );
        let multi = |nnodes, node_rank, port| LaunchOptions {
            nodes: Nodes::new(Some(nnodes), Some(node_rank), Some("h0"), port).unwrap(),
            ..LaunchOptions::default()
        };
        assert_eq!(
            p(&[
                "--nnodes",
                "3",
                "--node-rank",
                "2",
                "--master-addr",
                "h0",
                "--master-port",
                "29400",
                "--nproc-per-node",
                "4",
                "a"
            ])
            .unwrap(),
            run_with(4, "a", &[], multi(3, 2, Some(29400)))
        );
        assert_eq!(
            p(&[
                "--nnodes=2",
                "--node_rank=0",
                "--master_addr=h0",
                "-n2",
                "a"
            ])
            .unwrap(),
            run_with(2, "a", &[], multi(2, 0, None))
        );
        assert_eq!(p(&["-h"]).unwrap(), Cmd::Help);
        assert_eq!(p(&["-n", "2", "--version"]).unwrap(), Cmd::Version);
    }

    #[test]
    fn errors() {
        for (args, want) in [
            (&["sh"][..], "missing -n"),
            (&[], "missing -n"),
            (&["-n", "0", "sh"], "at least 1"),
            (&["-n", "x", "sh"], "invalid value 'x' for -n"),
            (&["--np"], "--np needs a number"),
            (&["-n", "2"], "missing the command"),
            (&["-n", "2", "--"], "missing the command"),
            (&["-q", "sh"], "unknown option '-q'"),
            (
                &["-n", "2", "--restarts", "x", "sh"],
                "invalid value 'x' for --restarts",
            ),
            (&["-n", "2", "--restarts"], "--restarts needs a number"),
            (
                &["-n", "2", "--nnodes", "2", "sh"],
                "--nnodes 2 needs --master-addr HOST",
            ),
            (
                &[
                    "-n",
                    "2",
                    "--nnodes",
                    "2",
                    "--node-rank",
                    "2",
                    "--master-addr",
                    "h",
                    "sh",
                ],
                "--node-rank 2 is out of range: with --nnodes 2 it must be 0 to 1",
            ),
            (
                &["-n", "2", "--node-rank", "1", "sh"],
                "--node-rank 1 is out of range",
            ),
            (
                &["-n", "2", "--nnodes", "0", "sh"],
                "--nnodes must be at least 1",
            ),
            (&["-n", "2", "--nnodes", "1:4", "sh"], "elastic ranges"),
            (
                &["-n", "2", "--nnodes", "x", "sh"],
                "invalid value 'x' for --nnodes",
            ),
            (
                &["-n", "2", "--node-rank", "-1", "sh"],
                "invalid value '-1' for --node-rank",
            ),
            (
                &[
                    "-n",
                    "2",
                    "--nnodes",
                    "2",
                    "--master-addr",
                    "h",
                    "--master-port",
                    "0",
                    "sh",
                ],
                "--master-port must be a port number 1-65534, got 0",
            ),
            (
                &["-n", "2", "--master-port", "70000", "sh"],
                "invalid value '70000' for --master-port",
            ),
            (&["-n", "2", "--master-addr"], "--master-addr needs a host"),
            (
                &[
                    "-n",
                    "1",
                    "--nnodes",
                    "2",
                    "--master-addr",
                    "h",
                    "-r",
                    "1",
                    "sh",
                ],
                "--restarts 1 is not supported with --nnodes 2",
            ),
            (
                &["-n", "2", "--keep-going=1", "sh"],
                "unknown option '--keep-going=1'",
            ),
        ] {
            let e = p(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
