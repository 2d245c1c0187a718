//! The command line of dmsc-perf: nccl-tests' flags (short `-b 8`/`-b8`, long `--minbytes 8`
//! or `--minbytes=8`), the collective as a positional argument, plus `--np N` (start N ranks
//! through [`crate::launch`]), `--json PATH` and `--csv PATH`.

use super::average::Average;
use super::device::PerfDeviceKind;
use super::osu::{OsuOptions, OsuTest};
use super::sizes::{parse_size, Step};
use super::PerfOp;
use crate::{DataType, ReduceOp};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// What to measure: one table of rows over every (type, operator, root) combination.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// The collective.
    pub op: PerfOp,
    /// Smallest message size in bytes (`-b`).
    pub min_bytes: u64,
    /// Largest message size in bytes (`-e`).
    pub max_bytes: u64,
    /// Growth from one size to the next (`-f` or `-i`).
    pub step: Step,
    /// Timed iterations per row (`-n`).
    pub iters: u32,
    /// Untimed iterations before the timed loop (`-w`).
    pub warmup: u32,
    /// Correctness checks per row (`-c`; 0 disables the `#wrong` column).
    pub check: u32,
    /// Calls per timed iteration (`-m`, nccl-tests' `agg_iters`); the reported time is the
    /// loop's time divided by `iters * agg_iters`.
    pub agg_iters: u32,
    /// `-z 1`: every call completes, then all ranks meet in a barrier, before the next call
    /// starts (nccl-tests' blocking mode). `-z 0` (default): the `agg_iters` calls of one
    /// timed iteration are started with the non-blocking `immediate_*` API and waited on
    /// together at the end of the iteration.
    pub blocking: bool,
    /// How per-rank times are combined into the reported time (`-a`).
    pub average: Average,
    /// Element types (`-d`, `all` for every type).
    pub dtypes: Vec<DataType>,
    /// Reduction operators (`-o`, `all` for every operator); ignored by collectives that do
    /// not reduce.
    pub redops: Vec<ReduceOp>,
    /// Root of broadcast, reduce, gather and scatter (`-r`); `None` (`-r -1` or `-r all`) runs every rank as
    /// root in turn, as nccl-tests does.
    pub root: Option<usize>,
    /// Where rank 0 writes the JSON report (`--json`).
    pub json: Option<PathBuf>,
    /// Where rank 0 writes the rows as CSV (`--csv`, see [`super::report::csv`]).
    pub csv: Option<PathBuf>,
    /// Start this many ranks on this machine (`--np`); `None` joins the job described by the
    /// environment.
    pub np: Option<usize>,
    /// Where the measured buffers live (`--device host|cuda`; `-G` is nccl-tests' CUDA-graph
    /// flag, so it is not reused).
    pub device: PerfDeviceKind,
}

impl Options {
    /// nccl-tests' defaults (32 MiB, factor 2, 20 iterations, 1 call per iteration,
    /// non-blocking, mean time over ranks, float sum, root 0) for `op`; warm-up is 5
    /// iterations (nccl-tests 2.13 and older; newer ones use 1).
    pub fn defaults(op: PerfOp) -> Options {
        Options {
            op,
            min_bytes: 32 << 20,
            max_bytes: 32 << 20,
            step: Step::Factor(2),
            iters: 20,
            warmup: 5,
            check: 1,
            agg_iters: 1,
            blocking: false,
            average: Average::Mean,
            dtypes: vec![DataType::Float32],
            redops: vec![ReduceOp::Sum],
            root: Some(0),
            json: None,
            csv: None,
            np: None,
            device: PerfDeviceKind::Host,
        }
    }

    /// The arguments that make a rank re-create these options (everything but `--np`).
    pub fn to_rank_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![self.op.name().into()];
        let mut push = |k: &str, v: String| {
            a.push(k.into());
            a.push(v.into());
        };
        push("-b", self.min_bytes.to_string());
        push("-e", self.max_bytes.to_string());
        match self.step {
            Step::Factor(f) => push("-f", f.to_string()),
            Step::Bytes(b) => {
                push("-f", "1".into());
                push("-i", b.to_string());
            }
        }
        push("-n", self.iters.to_string());
        push("-w", self.warmup.to_string());
        push("-c", self.check.to_string());
        push("-m", self.agg_iters.to_string());
        push("-z", u32::from(self.blocking).to_string());
        push("-a", self.average.flag().to_string());
        let names = |v: Vec<&str>| v.join(",");
        push("-d", names(self.dtypes.iter().map(|d| d.name()).collect()));
        push("-o", names(self.redops.iter().map(|o| o.name()).collect()));
        push("-r", self.root.map_or("-1".into(), |r| r.to_string()));
        if let Some(p) = &self.json {
            a.push("--json".into());
            a.push(p.clone().into_os_string());
        }
        if let Some(p) = &self.csv {
            a.push("--csv".into());
            a.push(p.clone().into_os_string());
        }
        if self.device != PerfDeviceKind::Host {
            a.push("--device".into());
            a.push(self.device.name().into());
        }
        a
    }
}

/// The outcome of parsing.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    /// Run with these options.
    Run(Options),
    /// An OSU-style point-to-point test (`osu_latency`, `osu_bw`, `osu_bibw`).
    Osu(OsuOptions),
    /// `-h`/`--help`: print [`usage`].
    Help,
}

/// A command-line error; its message names the offending flag or argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ArgError> {
    Err(ArgError(msg.into()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    MinBytes,
    MaxBytes,
    StepFactor,
    StepBytes,
    Iters,
    Warmup,
    Check,
    AggIters,
    Blocking,
    Average,
    Datatype,
    Op,
    Root,
    Ngpus,
    Nthreads,
    Json,
    Csv,
    Window,
    Np,
    Device,
    Help,
}

/// (short, long, key); long names are matched with `-` and `_` alike.
const FLAGS: &[(Option<u8>, &str, Key)] = &[
    (Some(b'b'), "minbytes", Key::MinBytes),
    (Some(b'e'), "maxbytes", Key::MaxBytes),
    (Some(b'f'), "stepfactor", Key::StepFactor),
    (Some(b'i'), "stepbytes", Key::StepBytes),
    (Some(b'n'), "iters", Key::Iters),
    (Some(b'w'), "warmup_iters", Key::Warmup),
    (Some(b'c'), "check", Key::Check),
    (Some(b'm'), "agg_iters", Key::AggIters),
    (Some(b'z'), "blocking", Key::Blocking),
    (Some(b'a'), "average", Key::Average),
    (Some(b'd'), "datatype", Key::Datatype),
    (Some(b'o'), "op", Key::Op),
    (Some(b'r'), "root", Key::Root),
    (Some(b'g'), "ngpus", Key::Ngpus),
    (Some(b't'), "nthreads", Key::Nthreads),
    (None, "json", Key::Json),
    (None, "csv", Key::Csv),
    (Some(b'W'), "window", Key::Window),
    (None, "np", Key::Np),
    (None, "device", Key::Device),
    (Some(b'h'), "help", Key::Help),
];

/// `-b/--minbytes`, as error messages name a flag.
fn flag_name(key: Key) -> String {
    match FLAGS.iter().find(|f| f.2 == key) {
        Some((Some(s), l, _)) => format!("-{}/--{l}", *s as char),
        Some((None, l, _)) => format!("--{l}"),
        None => format!("{key:?}"),
    }
}

/// The usage text.
pub fn usage() -> String {
    let ops: Vec<&str> = PerfOp::ALL.iter().map(|o| o.name()).collect();
    let types: Vec<&str> = DataType::ALL.iter().map(|d| d.name()).collect();
    let redops: Vec<&str> = REDOPS.iter().map(|o| o.name()).collect();
    format!(
        "usage: dmsc-perf [--np N] OP [options]\n\
         \n\
         Measures a dmsc collective the way nccl-tests does and prints its table.\n\
         OP: {}\n\
         (all_to_allv: uneven per-peer counts, see dmsc::perf::vsplit; gather and scatter:\n\
         \x20grouped sends and receives to/from the root, as nccl-tests' gather/scatter_perf)\n\
         \n\
         options (nccl-tests' flags):\n\
         \x20 -b, --minbytes SIZE       smallest size in bytes, K/M/G suffixes (default 32M)\n\
         \x20 -e, --maxbytes SIZE       largest size (default 32M)\n\
         \x20 -f, --stepfactor F        multiply the size by F (default 2)\n\
         \x20 -i, --stepbytes SIZE      add SIZE instead (with -f 1; default 1M)\n\
         \x20 -n, --iters N             timed iterations per size (default 20)\n\
         \x20 -w, --warmup_iters N      warm-up iterations per size (default 5)\n\
         \x20 -c, --check N             correctness checks per size, 0 to skip (default 1)\n\
         \x20 -m, --agg_iters N         calls per timed iteration; time = loop / (n * m)\n\
         \x20                           (default 1)\n\
         \x20 -z, --blocking 0|1        0: each iteration's m calls start with the non-blocking\n\
         \x20                           immediate_* API and are waited on together (default);\n\
         \x20                           1: each call completes and all ranks meet in a barrier\n\
         \x20                           before the next call starts\n\
         \x20 -a, --average 0|1|2|3     reported time: 0 rank 0's, 1 mean over ranks (default),\n\
         \x20                           2 minimum, 3 maximum over ranks\n\
         \x20 -d, --datatype T          {}, a comma list or all (default float)\n\
         \x20 -o, --op OP               {}, a comma list or all (default sum)\n\
         \x20 -r, --root R              root of broadcast, reduce, gather and scatter, -1 for\n\
         \x20                           each rank (default 0)\n\
         \x20 -g, --ngpus 1, -t, --nthreads 1   accepted for compatibility (one rank per process)\n\
         \x20     --np N                start N ranks on this machine (else join via dmscrun/env)\n\
         \x20     --json PATH           rank 0 writes the results as JSON to PATH (one object,\n\
         \x20                           or an array of them for several types/ops/roots)\n\
         \x20     --csv PATH            rank 0 writes one CSV line per measurement to PATH\n\
         \x20     --device host|cuda    where the measured buffers live (default host); cuda\n\
         \x20                           allocates them on the rank's GPU (needs the `cuda`\n\
         \x20                           feature, a driver and a GPU; collectives only)\n\
         \x20 -h, --help                this text\n\
         \n\
         OSU-style point-to-point tests on exactly 2 ranks (see dmsc::perf::osu):\n\
         \x20 dmsc-perf --np 2 osu_latency|osu_bw|osu_bibw [-b -e -f -i -n -w] [-W N]\n\
         \x20 osu_latency: ping-pong, one-way latency; osu_bw: -W messages in flight one way;\n\
         \x20 osu_bibw: -W each way. Rows: size, average latency (us) or bandwidth (MB/s),\n\
         \x20 then min, median and p99 of the per-sample times (us). Defaults: -b 1 -e 4M\n\
         \x20 -f 2 -n 100 -w 10 -W 64.\n\
         \x20 -W, --window N            messages per window of osu_bw/osu_bibw (default 64)\n",
        ops.join(", "),
        types.join(", "),
        redops.join(", ")
    )
}

/// Parse the arguments (without the program name).
pub fn parse(args: &[OsString]) -> Result<Parsed, ArgError> {
    let mut values: Vec<(Key, OsString)> = Vec::new();
    let mut positional: Vec<&OsStr> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let tok = args[i].as_bytes();
        i += 1;
        let (key, inline) = if tok == b"--" {
            positional.extend(args[i..].iter().map(|a| a.as_os_str()));
            break;
        } else if let Some(long) = tok.strip_prefix(b"--") {
            let (name, inline) = match long.iter().position(|&b| b == b'=') {
                Some(eq) => (&long[..eq], Some(&long[eq + 1..])),
                None => (long, None),
            };
            let name = String::from_utf8_lossy(name).replace('-', "_");
            match FLAGS.iter().find(|f| f.1 == name) {
                Some(f) => (f.2, inline),
                None => return err(format!("unknown option '--{name}' (see --help)")),
            }
        } else if tok.len() >= 2 && tok[0] == b'-' && !tok[1].is_ascii_digit() {
            match FLAGS.iter().find(|f| f.0 == Some(tok[1])) {
                Some(f) => (f.2, (tok.len() > 2).then(|| &tok[2..])),
                None => {
                    let shown = String::from_utf8_lossy(tok);
                    return err(format!("unknown option '{shown}' (see --help)"));
                }
            }
        } else {
            positional.push(args[i - 1].as_os_str());
            continue;
        };
        if key == Key::Help {
            if inline.is_some() {
                return err("-h/--help takes no value");
            }
            return Ok(Parsed::Help);
        }
        let value = match inline {
            Some(v) => OsStr::from_bytes(v).to_os_string(),
            None if i < args.len() => {
                i += 1;
                args[i - 1].clone()
            }
            None => return err(format!("option {} needs a value", flag_name(key))),
        };
        values.push((key, value));
    }
    if let [name] = positional.as_slice() {
        if let Some(test) = OsuTest::parse(&name.to_string_lossy()) {
            return parse_osu(test, values);
        }
    }
    let op = match positional.as_slice() {
        [] => {
            return err(format!(
                "missing the collective to measure: one of {}",
                op_names()
            ))
        }
        [op] => {
            let s = op.to_string_lossy();
            PerfOp::parse(&s).ok_or_else(|| {
                ArgError(format!(
                    "unknown collective '{s}': expected one of {}",
                    op_names()
                ))
            })?
        }
        [_, extra, ..] => {
            return err(format!(
                "unexpected argument '{}' (only one collective per run)",
                extra.to_string_lossy()
            ))
        }
    };
    let mut o = Options::defaults(op);
    let (mut factor, mut step_bytes) = (None, None);
    for (key, raw) in values {
        if key == Key::Window {
            return err("-W/--window applies only to osu_bw and osu_bibw");
        }
        apply(&mut o, key, &raw, &mut factor, &mut step_bytes)?;
    }
    o.step = resolve_step(factor, step_bytes)?;
    validate(&o)?;
    Ok(Parsed::Run(o))
}

/// The step from `-f` and `-i` (nccl-tests: a factor above 1 wins, else `-i` bytes).
fn resolve_step(factor: Option<u64>, step_bytes: Option<u64>) -> Result<Step, ArgError> {
    Ok(match (factor, step_bytes) {
        (Some(0), _) => return err("-f/--stepfactor must be at least 1"),
        (Some(f), _) if f > 1 => Step::Factor(f),
        (_, Some(0)) => return err("-i/--stepbytes must be at least 1 byte"),
        (_, Some(b)) => Step::Bytes(b),
        (Some(_), None) => Step::Bytes(1 << 20),
        (None, None) => Step::Factor(2),
    })
}

/// The options of an OSU test: the size, iteration and `--np` flags, and `-W`; any other
/// flag is refused by name.
fn parse_osu(test: OsuTest, values: Vec<(Key, OsString)>) -> Result<Parsed, ArgError> {
    let d = OsuOptions::defaults(test);
    let mut o = Options {
        min_bytes: d.min_bytes,
        max_bytes: d.max_bytes,
        iters: d.iters,
        warmup: d.warmup,
        ..Options::defaults(PerfOp::SendRecv)
    };
    let mut window = d.window;
    let (mut factor, mut step_bytes) = (None, None);
    for (key, raw) in values {
        match key {
            Key::Window => {
                let name = flag_name(key);
                window = raw
                    .to_str()
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .filter(|&w| w >= 1)
                    .ok_or_else(|| {
                        ArgError(format!(
                            "invalid value {raw:?} for {name}: expected a number of messages >= 1"
                        ))
                    })?;
            }
            Key::MinBytes
            | Key::MaxBytes
            | Key::StepFactor
            | Key::StepBytes
            | Key::Iters
            | Key::Warmup
            | Key::Np
            | Key::Ngpus
            | Key::Nthreads => apply(&mut o, key, &raw, &mut factor, &mut step_bytes)?,
            other => {
                return err(format!(
                    "option {} does not apply to {} (see --help)",
                    flag_name(other),
                    test.name()
                ))
            }
        }
    }
    o.step = resolve_step(factor, step_bytes)?;
    validate(&o)?;
    if let Some(np) = o.np.filter(|&n| n != 2) {
        return err(format!(
            "--np {np}: {} runs on exactly 2 ranks",
            test.name()
        ));
    }
    Ok(Parsed::Osu(OsuOptions {
        test,
        min_bytes: o.min_bytes,
        max_bytes: o.max_bytes,
        step: o.step,
        iters: o.iters,
        warmup: o.warmup,
        window,
        np: o.np,
    }))
}

fn op_names() -> String {
    let v: Vec<&str> = PerfOp::ALL.iter().map(|o| o.name()).collect();
    v.join(", ")
}

/// Store one flag's value in `o`.
fn apply(
    o: &mut Options,
    key: Key,
    raw: &OsStr,
    factor: &mut Option<u64>,
    step_bytes: &mut Option<u64>,
) -> Result<(), ArgError> {
    if key == Key::Json || key == Key::Csv {
        if raw.is_empty() {
            return err(format!("{} needs a file path", flag_name(key)));
        }
        let path = Some(PathBuf::from(raw));
        if key == Key::Json {
            o.json = path;
        } else {
            o.csv = path;
        }
        return Ok(());
    }
    let name = flag_name(key);
    let Some(v) = raw.to_str() else {
        return err(format!("invalid value {raw:?} for {name}: not valid UTF-8"));
    };
    let bad = |what: &str| ArgError(format!("invalid value '{v}' for {name}: expected {what}"));
    let size = || parse_size(v).ok_or_else(|| bad("a size in bytes such as 8, 64K, 1M or 2G"));
    let uint = || v.trim().parse::<u32>().map_err(|_| bad("a whole number"));
    match key {
        Key::MinBytes => o.min_bytes = size()?,
        Key::MaxBytes => o.max_bytes = size()?,
        Key::StepBytes => *step_bytes = Some(size()?),
        Key::StepFactor => {
            *factor = Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| bad("a whole factor >= 1"))?,
            )
        }
        Key::Iters => o.iters = uint()?,
        Key::Warmup => o.warmup = uint()?,
        Key::Check => o.check = uint()?,
        Key::AggIters => match uint()? {
            0 => return Err(bad("a number of calls per iteration >= 1")),
            m => o.agg_iters = m,
        },
        Key::Blocking => match v.trim() {
            "0" => o.blocking = false,
            "1" => o.blocking = true,
            _ => return Err(bad("0 (non-blocking) or 1 (blocking)")),
        },
        Key::Average => {
            o.average = uint()
                .ok()
                .and_then(Average::from_flag)
                .ok_or_else(|| bad("0 (rank 0), 1 (mean), 2 (min) or 3 (max)"))?
        }
        Key::Datatype => {
            o.dtypes = parse_list(v, DataType::ALL.as_slice(), DataType::parse).map_err(|()| {
                bad(&format!(
                    "a data type ({}), a comma list or all",
                    type_names()
                ))
            })?
        }
        Key::Op => {
            o.redops = parse_list(v, REDOPS.as_slice(), parse_redop).map_err(|()| {
                bad(&format!(
                    "a reduction ({}), a comma list or all",
                    redop_names()
                ))
            })?
        }
        Key::Root => {
            o.root = match v.trim() {
                "-1" | "all" => None,
                r => Some(
                    r.parse::<usize>()
                        .map_err(|_| bad("a rank, or -1 for every rank"))?,
                ),
            }
        }
        Key::Device => {
            o.device = match v.trim() {
                "host" => PerfDeviceKind::Host,
                "cuda" => PerfDeviceKind::Cuda,
                _ => return Err(bad("host or cuda")),
            }
        }
        Key::Np => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => o.np = Some(n),
            _ => return Err(bad("a number of ranks >= 1")),
        },
        Key::Ngpus | Key::Nthreads => {
            if v.trim() != "1" {
                return Err(bad(
                    "1: dmsc runs one rank per process; use --np N or dmscrun -n N for more ranks",
                ));
            }
        }
        Key::Json | Key::Csv | Key::Window | Key::Help => {}
    }
    Ok(())
}

fn type_names() -> String {
    let v: Vec<&str> = DataType::ALL.iter().map(|d| d.name()).collect();
    v.join(", ")
}

/// The reductions dmsc-perf runs: nccl-tests' `-o` list. The bitwise operators (integer
/// types only) and premul_sum (a per-rank factor) are not among them.
pub const REDOPS: [ReduceOp; 5] = [
    ReduceOp::Sum,
    ReduceOp::Prod,
    ReduceOp::Min,
    ReduceOp::Max,
    ReduceOp::Avg,
];

fn parse_redop(s: &str) -> Option<ReduceOp> {
    ReduceOp::parse(s).filter(|o| REDOPS.contains(o))
}

fn redop_names() -> String {
    let v: Vec<&str> = REDOPS.iter().map(|d| d.name()).collect();
    v.join(", ")
}

/// `all`, or a comma-separated list of names.
fn parse_list<T: Copy>(v: &str, all: &[T], one: fn(&str) -> Option<T>) -> Result<Vec<T>, ()> {
    if v.trim().eq_ignore_ascii_case("all") {
        return Ok(all.to_vec());
    }
    v.split(',').map(|s| one(s.trim()).ok_or(())).collect()
}

/// Checks between flags.
fn validate(o: &Options) -> Result<(), ArgError> {
    if o.min_bytes > o.max_bytes {
        return err(format!(
            "-b/--minbytes ({}) is larger than -e/--maxbytes ({})",
            o.min_bytes, o.max_bytes
        ));
    }
    if matches!(o.step, Step::Factor(_)) && o.min_bytes == 0 {
        return err("-b/--minbytes must be at least 1 when sizes grow by a factor (-f)");
    }
    if o.iters == 0 {
        return err("-n/--iters must be at least 1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, ArgError> {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        match parse(&v)? {
            Parsed::Run(o) => Ok(o),
            Parsed::Help => panic!("help"),
            Parsed::Osu(o) => panic!("osu {o:?}"),
        }
    }

    fn error(args: &[&str]) -> String {
        run(args).unwrap_err().0
    }

    #[test]
    fn defaults_follow_nccl_tests() {
        let o = run(&["all_reduce"]).unwrap();
        assert_eq!(o, Options::defaults(PerfOp::AllReduce));
        assert_eq!((o.min_bytes, o.max_bytes), (32 << 20, 32 << 20));
        assert_eq!((o.iters, o.warmup, o.check), (20, 5, 1));
        assert_eq!(o.step, Step::Factor(2));
        assert_eq!(
            (o.agg_iters, o.blocking, o.average),
            (1, false, Average::Mean)
        );
    }

    #[test]
    fn short_long_and_attached_forms() {
        let o = run(&[
            "-b",
            "8",
            "-e128M",
            "--stepfactor=4",
            "--iters",
            "7",
            "--warmup-iters=2",
            "-c0",
            "all_gather",
            "-d",
            "half",
            "--op",
            "max",
            "-r",
            "3",
            "--json",
            "/tmp/x.json",
            "--np",
            "4",
            "-g",
            "1",
            "-t1",
            "-m",
            "3",
            "-z1",
            "--average=2",
            "--csv",
            "/tmp/x.csv",
        ])
        .unwrap();
        assert_eq!(
            (o.agg_iters, o.blocking, o.average),
            (3, true, Average::Min)
        );
        assert_eq!(o.csv, Some(PathBuf::from("/tmp/x.csv")));
        assert_eq!(o.op, PerfOp::AllGather);
        assert_eq!(
            (o.min_bytes, o.max_bytes, o.step),
            (8, 128 << 20, Step::Factor(4))
        );
        assert_eq!((o.iters, o.warmup, o.check), (7, 2, 0));
        assert_eq!(o.dtypes, [DataType::Float16]);
        assert_eq!(o.redops, [ReduceOp::Max]);
        assert_eq!(o.root, Some(3));
        assert_eq!(o.json, Some(PathBuf::from("/tmp/x.json")));
        assert_eq!(o.np, Some(4));
    }

    #[test]
    fn all_lists_and_roots() {
        let o = run(&["reduce", "-d", "all", "-o", "all", "-r", "-1"]).unwrap();
        assert_eq!(o.dtypes, DataType::ALL);
        assert_eq!(o.redops, REDOPS);
        assert_eq!(o.root, None);
        let o = run(&["reduce", "-d", "int32,bf16", "-o", "min, avg"]).unwrap();
        assert_eq!(o.dtypes, [DataType::Int32, DataType::Bfloat16]);
        assert_eq!(o.redops, [ReduceOp::Min, ReduceOp::Avg]);
    }

    #[test]
    fn stepping_by_bytes() {
        assert_eq!(
            run(&["all_reduce", "-f", "1"]).unwrap().step,
            Step::Bytes(1 << 20)
        );
        assert_eq!(
            run(&["all_reduce", "-i", "4K"]).unwrap().step,
            Step::Bytes(4096)
        );
        assert_eq!(
            run(&["all_reduce", "-i", "4K", "-f", "3"]).unwrap().step,
            Step::Factor(3)
        );
    }

    #[test]
    fn help() {
        let v: Vec<OsString> = vec!["all_reduce".into(), "--help".into()];
        assert_eq!(parse(&v).unwrap(), Parsed::Help);
        assert_eq!(parse(&["-h".into()]).unwrap(), Parsed::Help);
        assert!(usage().contains("--minbytes"));
    }

    #[test]
    fn errors_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["all_reduce", "-b", "12Q"], "-b/--minbytes"),
            (&["all_reduce", "--maxbytes=x"], "-e/--maxbytes"),
            (&["all_reduce", "-n", "-3"], "-n/--iters"),
            (&["all_reduce", "-n", "0"], "-n/--iters"),
            (&["all_reduce", "-w", "many"], "-w/--warmup_iters"),
            (&["all_reduce", "-d", "float128"], "-d/--datatype"),
            (&["all_reduce", "-o", "mulsum"], "-o/--op"),
            (&["all_reduce", "-r", "x"], "-r/--root"),
            (&["all_reduce", "-f", "0"], "-f/--stepfactor"),
            (&["all_reduce", "-f", "1", "-i", "0"], "-i/--stepbytes"),
            (&["all_reduce", "--np", "0"], "--np"),
            (&["all_reduce", "-g", "2"], "-g/--ngpus"),
            (&["all_reduce", "-b"], "-b/--minbytes needs a value"),
            (&["all_reduce", "--frobnicate"], "--frobnicate"),
            (&["all_reduce", "-q", "1"], "'-q'"),
            (&["all_reduce", "-z", "2"], "-z/--blocking"),
            (&["all_reduce", "-m", "0"], "-m/--agg_iters"),
            (&["all_reduce", "-a", "4"], "-a/--average"),
            (&["all_reduce", "--average=mean"], "-a/--average"),
            (&["all_reduce", "--csv="], "--csv needs a file path"),
            (
                &["all_reduce", "-b", "2M", "-e", "1M"],
                "-b/--minbytes (2097152)",
            ),
            (
                &["all_reduce", "-b", "0"],
                "-b/--minbytes must be at least 1",
            ),
            (&[], "missing the collective"),
            (&["all_gatherv"], "unknown collective 'all_gatherv'"),
            (
                &["all_reduce", "broadcast"],
                "unexpected argument 'broadcast'",
            ),
        ];
        for (args, want) in cases {
            let e = error(args);
            assert!(e.contains(want), "{args:?}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn osu_tests_parse_their_flags_and_refuse_others() {
        let v = |a: &[&str]| -> Vec<OsString> { a.iter().map(OsString::from).collect() };
        let Parsed::Osu(o) = parse(&v(&[
            "--np", "2", "osu_bw", "-b", "8", "-e", "1K", "-W", "16", "-n", "7",
        ]))
        .unwrap() else {
            panic!("not osu");
        };
        assert_eq!(o.test, OsuTest::Bw);
        assert_eq!(
            (o.min_bytes, o.max_bytes, o.window, o.iters),
            (8, 1024, 16, 7)
        );
        assert_eq!((o.warmup, o.np, o.step), (10, Some(2), Step::Factor(2)));
        let Parsed::Osu(d) = parse(&v(&["osu_latency"])).unwrap() else {
            panic!("not osu");
        };
        assert_eq!(d, OsuOptions::defaults(OsuTest::Latency));
        // The rank arguments re-create the options.
        let mut o2 = o.clone();
        o2.np = None;
        let args = o.to_rank_args();
        assert_eq!(parse(&args).unwrap(), Parsed::Osu(o2));
        for (a, want) in [
            (
                &["osu_bw", "-d", "half"][..],
                "-d/--datatype does not apply to osu_bw",
            ),
            (
                &["osu_bibw", "--np", "3"],
                "--np 3: osu_bibw runs on exactly 2 ranks",
            ),
            (&["osu_bw", "-W", "0"], "-W/--window"),
            (
                &["all_reduce", "-W", "4"],
                "-W/--window applies only to osu_bw",
            ),
        ] {
            let e = parse(&v(a)).unwrap_err().0;
            assert!(e.contains(want), "{a:?}: {e}");
        }
    }

    #[test]
    fn zero_min_with_additive_steps_is_fine() {
        let o = run(&["all_reduce", "-b", "0", "-e", "8", "-f", "1", "-i", "4"]).unwrap();
        assert_eq!((o.min_bytes, o.step), (0, Step::Bytes(4)));
    }

    #[test]
    fn rank_args_round_trip() {
        for args in [
            &["all_reduce"][..],
            &[
                "--np", "3", "reduce", "-b", "1K", "-e", "1M", "-d", "all", "-o", "avg,prod",
            ],
            &[
                "broadcast",
                "-r",
                "-1",
                "-f",
                "1",
                "-i",
                "3",
                "-c",
                "2",
                "--json",
                "o.json",
            ],
            &[
                "sendrecv", "-m", "4", "-z", "1", "-a", "0", "--csv", "o.csv",
            ],
        ] {
            let mut o = run(args).unwrap();
            let strs: Vec<String> = o
                .to_rank_args()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let refs: Vec<&str> = strs.iter().map(String::as_str).collect();
            assert!(!refs.contains(&"--np"));
            o.np = None;
            assert_eq!(run(&refs).unwrap(), o);
        }
    }

    #[test]
    fn device_cuda_is_parsed_passed_to_the_ranks_and_checked() {
        let v = |a: &[&str]| -> Vec<OsString> { a.iter().map(OsString::from).collect() };
        let Parsed::Run(o) = parse(&v(&["all_reduce", "--device", "cuda", "--np", "2"])).unwrap()
        else {
            panic!("not a run");
        };
        assert_eq!(o.device, PerfDeviceKind::Cuda);
        assert!(o.to_rank_args().iter().any(|a| a == "cuda"));
        let Parsed::Run(back) = parse(&o.to_rank_args()).unwrap() else {
            panic!("not a run");
        };
        assert_eq!(back.device, PerfDeviceKind::Cuda);
        let Parsed::Run(d) = parse(&v(&["all_reduce"])).unwrap() else {
            panic!("not a run");
        };
        assert_eq!(d.device, PerfDeviceKind::Host);
        assert!(!d.to_rank_args().iter().any(|a| a == "--device"));
        let e = parse(&v(&["all_reduce", "--device=gpu"])).unwrap_err().0;
        assert!(e.contains("--device") && e.contains("host or cuda"), "{e}");
        assert!(usage().contains("--device host|cuda"));
    }
}
