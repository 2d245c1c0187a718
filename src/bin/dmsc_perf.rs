//! `dmsc-perf`: nccl-tests-style bandwidth measurement of dmsc's collectives.
//! See `dmsc-perf --help` and the `dmsc::perf` module.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(dmsc::perf::main::main(&args));
}
