//! Launch detection: who am I, how many are we, and where is the store?
//!
//! Modelled on torch.distributed's `env://` rendezvous (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT`, as set by torchrun) and on how Horovod and mpi4py read Open MPI's
//! `OMPI_COMM_WORLD_*`, MPICH's PMI and Slurm's `SLURM_*` variables. Sources are tried in
//! this order, and the first one whose rank or size variable is present wins:
//!
//! | launcher | rank / size / local rank / local size | store |
//! | --- | --- | --- |
//! | explicit | `DMSC_RANK`, `DMSC_WORLD_SIZE`, `DMSC_LOCAL_RANK`, `DMSC_LOCAL_WORLD_SIZE` | store address (below) |
//! | dmscrun, torchrun | `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE` | store address (below) |
//! | Open MPI | `OMPI_COMM_WORLD_RANK`, `_SIZE`, `_LOCAL_RANK`, `_LOCAL_SIZE` | store address (below) |
//! | PMI (MPICH, Intel MPI, MVAPICH, Cray) | `PMI_RANK`, `PMI_SIZE`, `MPI_LOCALRANKID` or `PMI_LOCAL_RANK`, `MPI_LOCALNRANKS` or `PMI_LOCAL_SIZE` | store address (below) |
//! | Slurm | `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, `SLURM_NTASKS_PER_NODE` | store address, else derived (below) |
//!
//! The MPI launchers come before Slurm because an `mpirun` inside a Slurm allocation leaves
//! the batch step's `SLURM_PROCID` in its ranks' environment, which is not their rank. The
//! one exception: `srun --mpi=pmi2` sets both `PMI_*` and `SLURM_*`; when `PMI_RANK` and
//! `PMI_SIZE` equal `SLURM_PROCID` and `SLURM_NTASKS`, the launch is Slurm's (so that the
//! store address may be derived).
//!
//! The store address is `DMSC_STORE_ADDR=host:port` when set (so a job can keep dmsc's store
//! off torch's `MASTER_PORT`), else `MASTER_ADDR` and `MASTER_PORT`. dmscrun sets the torchrun
//! variables plus `DMSC_LAUNCHER=dmscrun`.
//!
//! **Under Slurm** neither is needed: the host is `MASTER_ADDR` if set, else the first host of
//! `SLURM_JOB_NODELIST` (or `SLURM_NODELIST`), expanded by [`nodelist`](super::nodelist) as
//! `scontrol show hostnames` does (task 0, which serves the store, runs there under Slurm's
//! default block distribution); the port is `MASTER_PORT` if set, else [`slurm_port`] of
//! `SLURM_JOB_ID` and `SLURM_STEP_ID`, so every task of a step computes the same one.
//!
//! **Under mpirun** (Open MPI or PMI) the store address must be given (`MASTER_ADDR` and
//! `MASTER_PORT`, or `DMSC_STORE_ADDR`); nothing is derived. The variables that name a host
//! do not name rank 0's: Open MPI's `OMPI_MCA_orte_hnp_uri` holds the host where `mpirun`
//! itself runs, which need not run any rank (a login node with a hostfile), and
//! `PMIX_SERVER_URI*` name each node's own local daemon; PMI exposes no address at all. A
//! guess that is wrong on some clusters would hang until the timeout, so a clear error is
//! better.
//!
//! Variables are read through a lookup closure, so tests pass a `HashMap` and nothing here
//! touches the process. A variable set to the empty string (or to blanks) counts as unset, as
//! a shell's `RANK=` would suggest; every other malformed value is an error that names the
//! variable and its value.

use crate::error::{Error, Result};
use crate::types::Rank;
use std::fmt;
use std::time::Duration;

/// Who started this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Launcher {
    /// dmsc's own launcher (torchrun variables plus `DMSC_LAUNCHER=dmscrun`).
    Dmscrun,
    /// torchrun, or anything else that sets `RANK` and `WORLD_SIZE`.
    Torchrun,
    /// Open MPI's `mpirun` (`OMPI_COMM_WORLD_*`).
    OpenMpi,
    /// An `mpirun` or `mpiexec` that speaks PMI (MPICH's Hydra, Intel MPI, MVAPICH, Cray):
    /// `PMI_RANK`, `PMI_SIZE`.
    Pmi,
    /// Slurm's `srun` (`SLURM_PROCID`, `SLURM_NTASKS`).
    Slurm,
    /// `DMSC_RANK`, `DMSC_WORLD_SIZE` and `DMSC_STORE_ADDR` set by hand.
    Explicit,
}

impl Launcher {
    /// Lower-case name (`dmscrun`, `torchrun`, `openmpi`, `pmi`, `slurm`, `explicit`).
    pub const fn name(self) -> &'static str {
        match self {
            Launcher::Dmscrun => "dmscrun",
            Launcher::Torchrun => "torchrun",
            Launcher::OpenMpi => "openmpi",
            Launcher::Pmi => "pmi",
            Launcher::Slurm => "slurm",
            Launcher::Explicit => "explicit",
        }
    }
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the environment says about this process's place in the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchInfo {
    /// This process's rank, `0..world_size`.
    pub rank: Rank,
    /// Number of ranks in the job (at least 1).
    pub world_size: usize,
    /// Rank among the processes on this node, when the launcher says.
    pub local_rank: Option<usize>,
    /// Number of processes on this node, when the launcher says.
    pub local_world_size: Option<usize>,
    /// The rendezvous store: host (name or IP literal, without brackets) and port (1-65535).
    pub store: (String, u16),
    /// Which variables were used.
    pub launcher: Launcher,
}

impl LaunchInfo {
    /// The store address as `host:port`, bracketing an IPv6 literal (`[::1]:29500`), ready for
    /// `ToSocketAddrs`.
    pub fn store_addr(&self) -> String {
        join_host_port(&self.store.0, self.store.1)
    }
}

/// Format `host:port`, bracketing a host that contains `:` (an IPv6 literal).
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The variable lookup [`detect`] and [`env_duration`] take.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Read a variable, treating empty or blank values as unset and trimming the rest.
fn var(get: Lookup<'_>, name: &str) -> Option<String> {
    get(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn parse_count(name: &str, value: &str) -> Result<usize> {
    value.parse::<usize>().map_err(|_| {
        Error::invalid(format!(
            "{name}={value} is not a number (expected a non-negative integer)"
        ))
    })
}

fn parse_port(name: &str, value: &str) -> Result<u16> {
    match value.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Error::invalid(format!(
            "{name}={value} is not a port number (expected 1-65535)"
        ))),
    }
}

/// Parse `host:port` (`node1:29500`, `10.0.0.1:29500`, `[fe80::1]:29500`); `name` is the
/// variable the value came from, for the error message.
pub fn parse_host_port(name: &str, value: &str) -> Result<(String, u16)> {
    let bad = |why: &str| Error::invalid(format!("{name}={value} is not host:port: {why}"));
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| bad("there is no ':port'"))?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or_else(|| bad("'[' without a closing ']'"))?,
        None if host.contains(':') => {
            return Err(bad("write an IPv6 address in brackets, e.g. [::1]:29500"))
        }
        None => host,
    };
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok((host.to_string(), port)),
        _ => Err(bad(&format!(
            "{port:?} is not a port number (expected 1-65535)"
        ))),
    }
}

/// The store address: `DMSC_STORE_ADDR`, else `MASTER_ADDR` + `MASTER_PORT`, else (under
/// Slurm only) derived from the job (see the module documentation). `found` names the variable
/// that selected the launcher, for the error message.
fn store_addr(get: Lookup<'_>, found: &str, launcher: Launcher) -> Result<(String, u16)> {
    if let Some(v) = var(get, "DMSC_STORE_ADDR") {
        return parse_host_port("DMSC_STORE_ADDR", &v);
    }
    let strip = |h: String| h.trim_start_matches('[').trim_end_matches(']').to_string();
    let (addr, port) = (var(get, "MASTER_ADDR").map(strip), var(get, "MASTER_PORT"));
    if launcher == Launcher::Slurm {
        let host = match addr {
            Some(h) => h,
            None => slurm_first_host(get)?,
        };
        let port = match port {
            Some(p) => parse_port("MASTER_PORT", &p)?,
            None => slurm_job_port(get)?,
        };
        return Ok((host, port));
    }
    let mpi_hint = match launcher {
        Launcher::OpenMpi | Launcher::Pmi => {
            " (mpirun does not say which host runs rank 0: give that host as MASTER_ADDR)"
        }
        _ => "",
    };
    match (addr, port) {
        (Some(host), Some(port)) => Ok((host, parse_port("MASTER_PORT", &port)?)),
        (Some(_), None) => Err(Error::invalid(format!(
            "found {found} and MASTER_ADDR but not MASTER_PORT: set MASTER_PORT \
             (or DMSC_STORE_ADDR=host:port)"
        ))),
        (None, Some(_)) => Err(Error::invalid(format!(
            "found {found} and MASTER_PORT but not MASTER_ADDR: set MASTER_ADDR \
             (or DMSC_STORE_ADDR=host:port){mpi_hint}"
        ))),
        (None, None) => Err(Error::invalid(format!(
            "found {found} but no store address: set DMSC_STORE_ADDR=host:port or \
             MASTER_ADDR and MASTER_PORT{mpi_hint}"
        ))),
    }
}

/// The first host of `SLURM_JOB_NODELIST`, else of `SLURM_NODELIST`.
fn slurm_first_host(get: Lookup<'_>) -> Result<String> {
    for name in ["SLURM_JOB_NODELIST", "SLURM_NODELIST"] {
        if let Some(list) = var(get, name) {
            return super::nodelist::first_host(name, &list);
        }
    }
    Err(Error::invalid(
        "found SLURM_PROCID but no store address: SLURM_JOB_NODELIST and SLURM_NODELIST are \
         unset; set DMSC_STORE_ADDR=host:port or MASTER_ADDR and MASTER_PORT",
    ))
}

/// [`slurm_port`] of `SLURM_JOB_ID` and `SLURM_STEP_ID` (0 when unset or not a number, as in
/// a batch script's `batch` step).
fn slurm_job_port(get: Lookup<'_>) -> Result<u16> {
    let Some(job) = var(get, "SLURM_JOB_ID").or_else(|| var(get, "SLURM_JOBID")) else {
        return Err(Error::invalid(
            "found SLURM_PROCID but neither MASTER_PORT nor SLURM_JOB_ID to choose the store's \
             port: set MASTER_PORT (or DMSC_STORE_ADDR=host:port)",
        ));
    };
    let job = job.parse::<u64>().map_err(|_| {
        Error::invalid(format!(
            "SLURM_JOB_ID={job} is not a number (expected a Slurm job id); set MASTER_PORT \
             to choose the store's port"
        ))
    })?;
    let step = var(get, "SLURM_STEP_ID")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(slurm_port(job, step))
}

/// The store port dmsc uses under Slurm when `MASTER_PORT` is not set:
/// `10000 + (job × 64 + step) mod 20000`.
///
/// Deterministic, so every task of a step agrees without talking; different for the steps of
/// one job and for jobs with nearby ids; and within 10000-29999, below Linux's ephemeral range
/// (32768-60999), where outgoing connections would otherwise take the port first. Two jobs
/// sharing a node may still collide (1 in 20000): set `MASTER_PORT` to be sure.
pub fn slurm_port(job: u64, step: u64) -> u16 {
    let k = job.wrapping_mul(64).wrapping_add(step) % 20_000;
    10_000 + k as u16
}

/// The variable names one launcher uses.
struct Names {
    launcher: Launcher,
    rank: &'static str,
    size: &'static str,
    /// The local rank's variables, the first one set winning.
    local_rank: &'static [&'static str],
    /// The local world size's variables, the first one set winning.
    local_size: &'static [&'static str],
}

const SOURCES: [Names; 5] = [
    Names {
        launcher: Launcher::Explicit,
        rank: "DMSC_RANK",
        size: "DMSC_WORLD_SIZE",
        local_rank: &["DMSC_LOCAL_RANK"],
        local_size: &["DMSC_LOCAL_WORLD_SIZE"],
    },
    Names {
        launcher: Launcher::Torchrun,
        rank: "RANK",
        size: "WORLD_SIZE",
        local_rank: &["LOCAL_RANK"],
        local_size: &["LOCAL_WORLD_SIZE"],
    },
    Names {
        launcher: Launcher::OpenMpi,
        rank: "OMPI_COMM_WORLD_RANK",
        size: "OMPI_COMM_WORLD_SIZE",
        local_rank: &["OMPI_COMM_WORLD_LOCAL_RANK"],
        local_size: &["OMPI_COMM_WORLD_LOCAL_SIZE"],
    },
    Names {
        launcher: Launcher::Pmi,
        rank: "PMI_RANK",
        size: "PMI_SIZE",
        // Hydra (MPICH, Intel MPI) sets MPI_LOCALRANKID/MPI_LOCALNRANKS; Cray's PMI sets
        // PMI_LOCAL_RANK/PMI_LOCAL_SIZE.
        local_rank: &["MPI_LOCALRANKID", "PMI_LOCAL_RANK"],
        local_size: &["MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"],
    },
    Names {
        launcher: Launcher::Slurm,
        rank: "SLURM_PROCID",
        size: "SLURM_NTASKS",
        local_rank: &["SLURM_LOCALID"],
        local_size: &["SLURM_NTASKS_PER_NODE"],
    },
];

/// Detect the launch from environment variables read through `get`.
///
/// Returns an [`Error::InvalidArgument`] that names the missing or malformed variable, e.g.
/// `RANK=abc is not a number`, `RANK=4 is out of range: rank 4 >= WORLD_SIZE 4`, or
/// `found SLURM_PROCID but no store address: ...`.
pub fn detect(get: Lookup<'_>) -> Result<LaunchInfo> {
    for names in &SOURCES {
        let (rank, size) = (var(get, names.rank), var(get, names.size));
        if rank.is_none() && size.is_none() {
            continue;
        }
        if names.launcher == Launcher::Pmi && launched_by_srun(get) {
            continue;
        }
        let (rank, size) = match (rank, size) {
            (Some(r), Some(s)) => (r, s),
            (Some(_), None) => {
                return Err(Error::invalid(format!(
                    "found {} but not {}: set both",
                    names.rank, names.size
                )))
            }
            (None, _) => {
                return Err(Error::invalid(format!(
                    "found {} but not {}: set both",
                    names.size, names.rank
                )))
            }
        };
        let world_size = parse_count(names.size, &size)?;
        if world_size == 0 {
            return Err(Error::invalid(format!(
                "{}=0: the world size must be at least 1",
                names.size
            )));
        }
        let rank = parse_count(names.rank, &rank)?;
        if rank >= world_size {
            return Err(Error::invalid(format!(
                "{}={rank} is out of range: rank {rank} >= {} {world_size}",
                names.rank, names.size
            )));
        }
        let (local_rank, local_world_size) = local(get, names)?;
        let launcher = match names.launcher {
            Launcher::Torchrun if var(get, "DMSC_LAUNCHER").as_deref() == Some("dmscrun") => {
                Launcher::Dmscrun
            }
            l => l,
        };
        return Ok(LaunchInfo {
            rank,
            world_size,
            local_rank,
            local_world_size,
            store: store_addr(get, names.rank, launcher)?,
            launcher,
        });
    }
    Err(Error::invalid(
        "no launch environment found: run under dmscrun, torchrun, mpirun (Open MPI, MPICH \
         or another PMI launcher) or srun (Slurm), or set DMSC_RANK, DMSC_WORLD_SIZE and DMSC_STORE_ADDR=host:port",
    ))
}

/// Whether `PMI_RANK` and `PMI_SIZE` are Slurm's own (`srun --mpi=pmi2`): they equal
/// `SLURM_PROCID` and `SLURM_NTASKS`.
fn launched_by_srun(get: Lookup<'_>) -> bool {
    let same = |a, b| matches!((var(get, a), var(get, b)), (Some(x), Some(y)) if x == y);
    same("PMI_RANK", "SLURM_PROCID") && same("PMI_SIZE", "SLURM_NTASKS")
}

/// The first of `names` that is set, with its value.
fn first_set(get: Lookup<'_>, names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|&n| var(get, n).map(|v| (n, v)))
}

/// Local rank and local world size, both optional; validated against each other.
fn local(get: Lookup<'_>, names: &Names) -> Result<(Option<usize>, Option<usize>)> {
    let local_rank = match first_set(get, names.local_rank) {
        Some((n, v)) => Some((n, parse_count(n, &v)?)),
        None => None,
    };
    let local_size = match first_set(get, names.local_size) {
        // Slurm writes heterogeneous layouts as `2(x3),1`; only a plain number is usable.
        Some((_, v)) if names.launcher == Launcher::Slurm && v.parse::<usize>().is_err() => None,
        Some((n, v)) => Some((n, parse_count(n, &v)?)),
        None => None,
    };
    if let Some((n, 0)) = local_size {
        return Err(Error::invalid(format!(
            "{n}=0: the local world size must be at least 1"
        )));
    }
    if let (Some((rn, r)), Some((sn, s))) = (local_rank, local_size) {
        if r >= s {
            return Err(Error::invalid(format!(
                "{rn}={r} is out of range: local rank {r} >= {sn} {s}"
            )));
        }
    }
    Ok((local_rank.map(|(_, r)| r), local_size.map(|(_, s)| s)))
}

/// [`detect`] over the process environment. A value that is not valid UTF-8 is passed on
/// lossily, so that the error shows it.
pub fn detect_from_process_env() -> Result<LaunchInfo> {
    detect(&process_var)
}

/// Read one variable of the process environment (lossy for non-UTF-8 values); the lookup
/// [`detect_from_process_env`] uses, usable with [`env_duration`] too.
pub fn process_var(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// Read a duration in seconds (`300`, `0.5`, `1e3`) from variable `name`, or `default` when
/// it is unset or empty. Negative, non-finite and absurdly large values are errors naming the
/// variable.
pub fn env_duration(get: Lookup<'_>, name: &str, default: Duration) -> Result<Duration> {
    let Some(v) = var(get, name) else {
        return Ok(default);
    };
    let secs: f64 = v.parse().map_err(|_| {
        Error::invalid(format!(
            "{name}={v} is not a number of seconds (e.g. 300 or 0.5)"
        ))
    })?;
    if secs.is_nan() {
        return Err(Error::invalid(format!(
            "{name}={v} is not a number of seconds (e.g. 300 or 0.5)"
        )));
    }
    if secs < 0.0 {
        return Err(Error::invalid(format!("{name}={v} must not be negative")));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| Error::invalid(format!("{name}={v} is too large a number of seconds")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(pairs: &[(&str, &str)]) -> Result<LaunchInfo> {
        let m = env(pairs);
        detect(&|k| m.get(k).cloned())
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        match run(pairs) {
            Err(Error::InvalidArgument { what }) => what,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn torchrun_and_dmscrun() {
        let base = [
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
        ];
        let i = run(&base).unwrap();
        assert_eq!(
            i,
            LaunchInfo {
                rank: 3,
                world_size: 8,
                local_rank: Some(1),
                local_world_size: Some(2),
                store: ("node0".into(), 29500),
                launcher: Launcher::Torchrun,
            }
        );
        assert_eq!(i.store_addr(), "node0:29500");
        let mut d = base.to_vec();
        d.push(("DMSC_LAUNCHER", "dmscrun"));
        assert_eq!(run(&d).unwrap().launcher, Launcher::Dmscrun);
    }

    #[test]
    fn explicit_wins_and_store_addr_overrides_master() {
        let i = run(&[
            ("DMSC_RANK", "0"),
            ("DMSC_WORLD_SIZE", "1"),
            ("DMSC_STORE_ADDR", "[::1]:4000"),
            ("RANK", "5"),
            ("WORLD_SIZE", "9"),
            ("MASTER_ADDR", "x"),
            ("MASTER_PORT", "1"),
        ])
        .unwrap();
        assert_eq!(i.launcher, Launcher::Explicit);
        assert_eq!((i.rank, i.world_size), (0, 1));
        assert_eq!(i.store, ("::1".into(), 4000));
        assert_eq!(i.store_addr(), "[::1]:4000");
        assert_eq!((i.local_rank, i.local_world_size), (None, None));
    }

    #[test]
    fn open_mpi_and_slurm() {
        let i = run(&[
            ("OMPI_COMM_WORLD_RANK", "2"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
            ("DMSC_STORE_ADDR", "10.0.0.1:29501"),
        ])
        .unwrap();
        assert_eq!(i.launcher, Launcher::OpenMpi);
        assert_eq!(i.local_world_size, Some(2));
        assert_eq!(i.store, ("10.0.0.1".into(), 29501));

        let i = run(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "6"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS_PER_NODE", "2(x3)"),
            ("MASTER_ADDR", "n1"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap();
        assert_eq!(i.launcher, Launcher::Slurm);
        assert_eq!(
            (i.rank, i.local_rank, i.local_world_size),
            (5, Some(1), None)
        );
    }

    #[test]
    fn errors_name_the_variable() {
        let store = [("MASTER_ADDR", "a"), ("MASTER_PORT", "1")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = store.to_vec();
            v.extend_from_slice(extra);
            err(&v)
        };
        assert!(
            with(&[("RANK", "abc"), ("WORLD_SIZE", "4")]).starts_with("RANK=abc is not a number")
        );
        assert_eq!(
            with(&[("RANK", "4"), ("WORLD_SIZE", "4")]),
            "RANK=4 is out of range: rank 4 >= WORLD_SIZE 4"
        );
        assert!(with(&[("RANK", "0")]).contains("found RANK but not WORLD_SIZE"));
        assert!(with(&[("WORLD_SIZE", "2")]).contains("found WORLD_SIZE but not RANK"));
        assert!(with(&[("RANK", "0"), ("WORLD_SIZE", "0")]).contains("WORLD_SIZE=0"));
        assert!(
            with(&[("RANK", "1"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "-1")])
                .starts_with("LOCAL_RANK=-1 is not a number")
        );
        assert!(with(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "2"),
            ("LOCAL_WORLD_SIZE", "2")
        ])
        .contains("local rank 2 >= LOCAL_WORLD_SIZE 2"));
        assert_eq!(
            err(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")]),
            "found SLURM_PROCID but no store address: SLURM_JOB_NODELIST and SLURM_NODELIST \
             are unset; set DMSC_STORE_ADDR=host:port or MASTER_ADDR and MASTER_PORT"
        );
        assert!(
            err(&[("RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "h")])
                .contains("not MASTER_PORT")
        );
        assert!(err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "70000")
        ])
        .starts_with("MASTER_PORT=70000 is not a port number"));
        assert!(err(&[]).starts_with("no launch environment found"));
    }

    /// What `srun -N2 -n4` gives task 3 (no MASTER_*, no DMSC_STORE_ADDR).
    const SRUN: [(&str, &str); 6] = [
        ("SLURM_PROCID", "3"),
        ("SLURM_NTASKS", "4"),
        ("SLURM_LOCALID", "1"),
        ("SLURM_JOB_NODELIST", "node[07-08,10],gpu5"),
        ("SLURM_JOB_ID", "123456"),
        ("SLURM_STEP_ID", "2"),
    ];

    fn with(
        base: &[(&'static str, &'static str)],
        extra: &[(&'static str, &'static str)],
    ) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = base
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(x, _)| x == k))
            .copied()
            .collect();
        v.extend_from_slice(extra);
        v.retain(|(_, val)| *val != "<unset>");
        v
    }

    #[test]
    fn slurm_derives_the_store_from_the_job() {
        let i = run(&SRUN).unwrap();
        assert_eq!(i.launcher, Launcher::Slurm);
        assert_eq!((i.rank, i.world_size, i.local_rank), (3, 4, Some(1)));
        let port = slurm_port(123456, 2);
        assert_eq!(port, 10_000 + ((123456 * 64 + 2) % 20_000) as u16);
        assert_eq!(i.store, ("node07".into(), port));
        // A loopback host, for a test on one machine.
        let i = run(&with(&SRUN, &[("SLURM_JOB_NODELIST", "localhost")])).unwrap();
        assert_eq!(i.store, ("localhost".into(), port));
        // The older name, and MASTER_PORT / MASTER_ADDR each taking precedence on its own.
        let i = run(&with(
            &SRUN,
            &[
                ("SLURM_JOB_NODELIST", "<unset>"),
                ("SLURM_NODELIST", "rack[2-3]-n[1-4]"),
                ("MASTER_PORT", "29400"),
            ],
        ))
        .unwrap();
        assert_eq!(i.store, ("rack2-n1".into(), 29400));
        let i = run(&with(&SRUN, &[("MASTER_ADDR", "head")])).unwrap();
        assert_eq!(i.store, ("head".into(), port));
        let i = run(&with(&SRUN, &[("DMSC_STORE_ADDR", "10.1.1.1:7")])).unwrap();
        assert_eq!(i.store, ("10.1.1.1".into(), 7));
        // No step id (a batch script's own task): step 0.
        let i = run(&with(&SRUN, &[("SLURM_STEP_ID", "batch")])).unwrap();
        assert_eq!(i.store.1, slurm_port(123456, 0));
    }

    #[test]
    fn slurm_ports_stay_in_range_and_differ_by_step() {
        for job in [0, 1, 19_999, 20_000, u64::MAX, 987_654_321] {
            for step in [0, 1, 4_294_967_294] {
                let p = slurm_port(job, step);
                assert!((10_000..30_000).contains(&p), "{job} {step}: {p}");
            }
        }
        assert_ne!(slurm_port(42, 0), slurm_port(42, 1));
        assert_ne!(slurm_port(42, 0), slurm_port(43, 0));
    }

    #[test]
    fn slurm_errors_name_the_variable() {
        assert!(err(&with(&SRUN, &[("SLURM_JOB_NODELIST", "node[01-")]))
            .starts_with("SLURM_JOB_NODELIST=node[01- is not a Slurm host list"));
        assert!(err(&with(&SRUN, &[("SLURM_JOB_ID", "<unset>")]))
            .contains("neither MASTER_PORT nor SLURM_JOB_ID"));
        assert!(err(&with(&SRUN, &[("SLURM_JOB_ID", "12x")]))
            .starts_with("SLURM_JOB_ID=12x is not a number"));
        assert!(err(&with(&SRUN, &[("MASTER_PORT", "0")]))
            .starts_with("MASTER_PORT=0 is not a port number"));
    }

    #[test]
    fn pmi_and_open_mpi_need_a_given_store() {
        let hydra = [
            ("PMI_RANK", "2"),
            ("PMI_SIZE", "4"),
            ("MPI_LOCALRANKID", "0"),
            ("MPI_LOCALNRANKS", "2"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29511"),
        ];
        let i = run(&hydra).unwrap();
        assert_eq!(
            i,
            LaunchInfo {
                rank: 2,
                world_size: 4,
                local_rank: Some(0),
                local_world_size: Some(2),
                store: ("127.0.0.1".into(), 29511),
                launcher: Launcher::Pmi,
            }
        );
        // Cray's names for the local rank.
        let i = run(&with(
            &hydra,
            &[
                ("MPI_LOCALRANKID", "<unset>"),
                ("MPI_LOCALNRANKS", "<unset>"),
                ("PMI_LOCAL_RANK", "1"),
                ("PMI_LOCAL_SIZE", "2"),
            ],
        ))
        .unwrap();
        assert_eq!((i.local_rank, i.local_world_size), (Some(1), Some(2)));
        assert!(err(&with(
            &hydra,
            &[("PMI_LOCAL_RANK", "<unset>"), ("MPI_LOCALRANKID", "2")]
        ))
        .starts_with("MPI_LOCALRANKID=2 is out of range: local rank 2 >= MPI_LOCALNRANKS 2"));
        // Without MASTER_*: a clear error, nothing guessed.
        let no_store = with(
            &hydra,
            &[("MASTER_ADDR", "<unset>"), ("MASTER_PORT", "<unset>")],
        );
        let e = err(&no_store);
        assert!(e.starts_with("found PMI_RANK but no store address"), "{e}");
        assert!(e.contains("give that host as MASTER_ADDR"), "{e}");
        let e = err(&[
            ("OMPI_COMM_WORLD_RANK", "0"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_MCA_orte_hnp_uri", "1.0;tcp://10.0.0.9:4000"),
        ]);
        assert!(
            e.starts_with("found OMPI_COMM_WORLD_RANK but no store address"),
            "{e}"
        );
        let i = run(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "[::1]"),
            ("MASTER_PORT", "4000"),
        ])
        .unwrap();
        assert_eq!(
            (i.launcher, i.store),
            (Launcher::OpenMpi, ("::1".into(), 4000))
        );
    }

    #[test]
    fn srun_with_pmi2_is_slurm_but_mpirun_in_an_allocation_is_not() {
        // srun --mpi=pmi2: the PMI variables agree with Slurm's, so the store is derived.
        let pmi2 = with(&SRUN, &[("PMI_RANK", "3"), ("PMI_SIZE", "4")]);
        let i = run(&pmi2).unwrap();
        assert_eq!((i.launcher, i.rank), (Launcher::Slurm, 3));
        assert_eq!(i.store.0, "node07");
        // mpirun inside sbatch: the batch step's SLURM_PROCID=0 is not the rank.
        let mpirun = with(
            &SRUN,
            &[
                ("SLURM_PROCID", "0"),
                ("SLURM_NTASKS", "1"),
                ("PMI_RANK", "3"),
                ("PMI_SIZE", "4"),
                ("MASTER_ADDR", "node07"),
                ("MASTER_PORT", "29500"),
            ],
        );
        let i = run(&mpirun).unwrap();
        assert_eq!((i.launcher, i.rank, i.world_size), (Launcher::Pmi, 3, 4));
    }

    #[test]
    fn host_port_forms() {
        let p = |v| parse_host_port("DMSC_STORE_ADDR", v);
        assert_eq!(p("h:1").unwrap(), ("h".into(), 1));
        assert_eq!(p("[fe80::1]:2").unwrap(), ("fe80::1".into(), 2));
        for bad in ["h", ":1", "::1:5", "[::1:5", "h:0", "h:x", "h:"] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("DMSC_STORE_ADDR={bad}")), "{e}");
        }
    }

    #[test]
    fn blank_counts_as_unset() {
        assert!(run(&[("RANK", " "), ("WORLD_SIZE", "")])
            .unwrap_err()
            .to_string()
            .contains("no launch environment"));
    }

    #[test]
    fn durations() {
        let m = env(&[
            ("A", "1.5"),
            ("B", "abc"),
            ("C", "-1"),
            ("D", "1e300"),
            ("E", "NaN"),
            ("F", ""),
        ]);
        let get = |k: &str| m.get(k).cloned();
        let d = Duration::from_secs(7);
        assert_eq!(
            env_duration(&get, "A", d).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(env_duration(&get, "F", d).unwrap(), d);
        assert_eq!(env_duration(&get, "Z", d).unwrap(), d);
        for (k, want) in [
            ("B", "B=abc is not a number of seconds"),
            ("C", "C=-1 must not be negative"),
            ("D", "D=1e300 is too large"),
            ("E", "E=NaN is not a number"),
        ] {
            let e = env_duration(&get, k, d).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
