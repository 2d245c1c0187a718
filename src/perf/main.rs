//! The program `dmsc-perf`: parse the command line, then start ranks (`--np`), join a job,
//! or run the OSU point-to-point mode.

use super::args::{self, Parsed};
use super::run::run_rank;
use crate::launch::{launch_with, LaunchOptions};
use crate::Communicator;
use std::ffi::OsString;
use std::io;

/// The program: parse `args` (without the program name); with `--np N` start N ranks of this
/// executable through [`launch_with`], else join the job described by the environment.
/// Returns the exit code (2 for usage errors).
pub fn main(args: &[OsString]) -> i32 {
    let o = match args::parse(args) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Osu(o)) => return osu_main(&o),
        Ok(Parsed::Help) => {
            print!("{}", args::usage());
            return 0;
        }
        Err(e) => {
            eprintln!("dmsc-perf: {e}\nTry 'dmsc-perf --help' for more information.");
            return 2;
        }
    };
    if let Some(np) = o.np {
        return launch_ranks(np, &o.to_rank_args());
    }
    match join() {
        Some(comm) => run_rank(&comm, &o),
        None => 1,
    }
}

/// Join the job described by the environment, printing why not on failure.
fn join() -> Option<Communicator> {
    match Communicator::from_env() {
        Ok(c) => Some(c),
        Err(e) => {
            let rank = std::env::var("RANK").map_or(String::new(), |r| format!("rank {r}: "));
            eprintln!(
                "dmsc-perf: {rank}cannot join the job: {e}\n\
                 (start the ranks with dmscrun -n N dmsc-perf ..., or pass --np N)"
            );
            None
        }
    }
}

/// The OSU mode: launch 2 ranks with `--np 2`, else run as one rank of the job; rank 0
/// prints the rows. Returns the exit code.
fn osu_main(o: &super::osu::OsuOptions) -> i32 {
    if let Some(np) = o.np {
        return launch_ranks(np, &o.to_rank_args());
    }
    let Some(comm) = join() else {
        return 1;
    };
    let rank = comm.rank();
    let result = if rank == 0 {
        super::osu::benchmark(&comm, o, &mut io::stdout().lock())
    } else {
        super::osu::benchmark(&comm, o, &mut io::sink())
    };
    match result {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("dmsc-perf: rank {rank}: {}: {e}", o.test.name());
            1
        }
    }
}

/// Start `np` ranks of this executable with the same options; rank 0's table goes to stdout
/// unprefixed, errors keep their `[rank]` prefix.
fn launch_ranks(np: usize, rank_args: &[OsString]) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dmsc-perf: cannot find its own executable to start the ranks: {e}");
            return 1;
        }
    };
    let opts = LaunchOptions {
        prefix_stdout: false,
        ..LaunchOptions::default()
    };
    match launch_with(np, exe.as_os_str(), rank_args, &[], &opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dmsc-perf: cannot start {np} ranks: {e}");
            1
        }
    }
}
