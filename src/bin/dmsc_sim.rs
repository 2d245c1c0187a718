//! `dmsc-sim`: the planner and its cost model on a synthetic cluster of H hosts × G ranks.
//!
//! For each size it prints the predicted time and bus bandwidth of every all-reduce
//! algorithm ([`HierCostModel::predict`]), the one the planner picks
//! ([`plan::choose_algo_on`]) and the α–β lower bound ([`HierCostModel::all_reduce_bound`]).
//! Bus bandwidth is nccl-tests' `2(N-1)/N · bytes / time`.

use dmsc_core::model::{CostModel, HierCostModel};
use dmsc_core::plan::{self, Hosts, PlanConfig};
use dmsc_core::{Algo, CollDesc, CollKind, DataType, ReduceOp};
use std::process::ExitCode;

const USAGE: &str = "usage: dmsc-sim --hosts H --ranks-per-host G [options]

Predicts all_reduce on H hosts of G ranks with the planner's two-class cost model.
  --hosts H             hosts (1 to 4096)
  --ranks-per-host G    ranks on each host (1 to 1024)
  --intra LAT_US,GBPS   links within a host (default 1,8: shared memory)
  --inter LAT_US,GBPS   each host's network link (default 20,3)
  --reduce GBPS         reduction speed (default 10)
  -b, -e SIZE           smallest and largest size in bytes, K/M/G suffixes (default 8, 1G)
  -f F                  size factor (default 8)";

fn parse_size(s: &str) -> Result<usize, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1usize << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("'{s}' is not a positive size in bytes"))
}

fn parse_link(flag: &str, s: &str) -> Result<(f64, f64), String> {
    let bad = || format!("{flag} '{s}': give LATENCY_US,GBPS with both positive");
    let (l, b) = s.split_once(',').ok_or_else(bad)?;
    let (l, b): (f64, f64) = (l.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if !(l.is_finite() && b.is_finite() && l >= 0.0 && b > 0.0) {
        return Err(bad());
    }
    Ok((l * 1e-6, b * 1e9))
}

struct Args {
    hosts: usize,
    per_host: usize,
    model: HierCostModel,
    min: usize,
    max: usize,
    factor: usize,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let (mut hosts, mut per_host) = (None, None);
    let (mut intra, mut inter, mut reduce) = ((1e-6, 8e9), (20e-6, 3e9), 10e9);
    let (mut min, mut max, mut factor) = (8, 1 << 30, 8);
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let count = |v: &str, lim: usize| {
            v.parse::<usize>()
                .ok()
                .filter(|&n| (1..=lim).contains(&n))
                .ok_or_else(|| format!("{flag} '{v}': give 1 to {lim}"))
        };
        match flag.as_str() {
            "--hosts" => hosts = Some(count(&value()?, 4096)?),
            "--ranks-per-host" => per_host = Some(count(&value()?, 1024)?),
            "--intra" => intra = parse_link(flag, &value()?)?,
            "--inter" => inter = parse_link(flag, &value()?)?,
            "--reduce" => {
                let v = value()?;
                reduce = v
                    .parse::<f64>()
                    .ok()
                    .filter(|g| g.is_finite() && *g > 0.0)
                    .ok_or_else(|| format!("--reduce '{v}': give GB/s > 0"))?
                    * 1e9;
            }
            "-b" | "--minbytes" => min = parse_size(&value()?)?,
            "-e" | "--maxbytes" => max = parse_size(&value()?)?,
            "-f" | "--stepfactor" => factor = count(&value()?, 1 << 20)?.max(2),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown option '{other}'\n{USAGE}")),
        }
    }
    let hosts = hosts.ok_or_else(|| format!("--hosts is required\n{USAGE}"))?;
    let per_host = per_host.ok_or_else(|| format!("--ranks-per-host is required\n{USAGE}"))?;
    if min > max {
        return Err(format!("-b {min} is larger than -e {max}"));
    }
    let cm = |(alpha, bw): (f64, f64)| CostModel {
        alpha,
        beta: 1.0 / bw,
        gamma: 1.0 / reduce,
    };
    Ok(Args {
        hosts,
        per_host,
        model: HierCostModel {
            intra: cm(intra),
            inter: cm(inter),
        },
        min,
        max,
        factor,
    })
}

fn run(a: &Args) -> Result<(), String> {
    let hosts = Hosts::from_sizes(&vec![a.per_host; a.hosts]).map_err(|e| e.to_string())?;
    let n = hosts.nranks();
    let cfg = PlanConfig {
        model: a.model.intra,
        inter: a.model.inter,
        ..PlanConfig::default()
    };
    let algos = Algo::ALL;
    println!(
        "# dmsc-sim: all_reduce, {} hosts x {} ranks = {n} ranks; time in us, busbw in GB/s",
        a.hosts, a.per_host
    );
    let mut head = format!("# {:>12} {:>10}", "size", "chosen");
    for al in algos {
        head += &format!(" {:>21}", format!("{} time/busbw", al.name()));
    }
    println!("{head} {:>21}", "a-b bound time/busbw");
    let bus = |bytes: usize, t: f64| {
        if t > 0.0 {
            2.0 * (n - 1) as f64 / n as f64 * bytes as f64 / t / 1e9
        } else {
            0.0
        }
    };
    let mut bytes = a.min;
    while bytes <= a.max {
        let desc = CollDesc {
            kind: CollKind::AllReduce,
            count: bytes.div_ceil(4),
            dtype: DataType::Float32,
            op: ReduceOp::Sum,
            root: 0,
        };
        let seg = cfg.segment_elems(desc.dtype, desc.count) * 4;
        let chosen = plan::choose_algo_on(&desc, &hosts, &cfg);
        let mut line = format!("  {bytes:>12} {:>10}", chosen.name());
        for al in algos {
            let t = a.model.predict(&desc, &hosts, al, seg);
            line += &format!(" {:>12.1} {:>8.3}", t * 1e6, bus(bytes, t));
        }
        let lb = a.model.all_reduce_bound(bytes, &hosts);
        println!("{line} {:>12.1} {:>8.3}", lb * 1e6, bus(bytes, lb));
        match bytes.checked_mul(a.factor) {
            Some(b) => bytes = b,
            None => break,
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match parse(&argv).and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmsc-sim: {e}");
            ExitCode::from(2)
        }
    }
}
