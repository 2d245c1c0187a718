//! The driver: for every (type, operator, root) and size, time the out-of-place and in-place
//! variants over a [`PerfComm`], check them, and print nccl-tests' table on rank 0.
//!
//! One row's measurement, as nccl-tests' `BenchTime`: the buffers are filled (see
//! [`super::check`]), `-w` warm-up calls run, all ranks meet in a barrier, then `-n` timed
//! iterations of `-m` calls each run back to back; the row's time is the loop's time divided
//! by `n * m`, combined over ranks as `-a` says ([`super::average`]). With `-z 0` the `m`
//! calls of an iteration are started with the non-blocking `immediate_*` API, each on its own
//! output buffer (so `m` buffers are allocated), and waited on together at the end of the
//! iteration; with `-z 1` each call completes and the ranks meet in a barrier before the next
//! one starts. With `-c N`, the call then runs N more times (in the same mode) on freshly
//! filled buffers and the wrong elements, summed over ranks (an all-reduce of a `u64`), fill
//! the `#wrong` column.

use super::args::Options;
use super::buf::AlignedBuf;
use super::call::Call;
use super::check::CheckSpec;
use super::comm::PerfComm;
use super::device::{open_cuda, PerfDevice, PerfDeviceBuf, PerfDeviceKind};
use super::ranks;
use super::report::{self, Row, Run};
use super::sizes::{bandwidths, layout, sizes, Step};
use crate::call::{CollArgs, Names, Shape, Span};
use crate::{CollKind, DataType, Error, ReduceOp, Result};
use std::fmt;
use std::io::{self, Write};
use std::time::Instant;

/// A failed run: the error and what was being measured.
#[derive(Debug)]
pub struct RunError {
    /// E.g. `all_reduce of 1024 bytes (float, sum), in place`.
    pub during: String,
    /// The communicator's error.
    pub error: Error,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.during.is_empty() {
            write!(f, "{}", self.error)
        } else {
            write!(f, "during {}: {}", self.during, self.error)
        }
    }
}

impl std::error::Error for RunError {}

/// Everything a finished benchmark produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// One entry per (type, operator, root).
    pub runs: Vec<Run>,
    /// Wrong elements over every row and rank.
    pub wrong_total: u64,
    /// Measurements (rows halves) with at least one wrong element.
    pub wrong_rows: u64,
    /// Mean bus bandwidth of all measurements (nccl-tests' `Avg bus bandwidth`).
    pub avg_busbw: f64,
}

/// Time and check one half of a row; returns (seconds per call, wrong elements). With
/// `dev`, the measured buffers are device memory ([`measure_on_device`]).
fn measure(
    comm: &dyn PerfComm,
    o: &Options,
    call: &mut Call,
    in_place: bool,
    seed: &mut u64,
    dev: Option<&mut dyn PerfDevice>,
) -> Result<(f64, Option<u64>)> {
    if let Some(dev) = dev {
        return measure_on_device(comm, o, call, in_place, seed, dev);
    }
    let e = call.spec.dtype.size();
    let l = call.layout;
    let mut input = AlignedBuf::new(if in_place { 0 } else { l.send * e });
    let out_len = if in_place { l.in_place() } else { l.recv } * e;
    // Non-blocking batches need one output buffer per call in flight.
    let nbuf = if o.blocking {
        1
    } else {
        o.agg_iters.max(1) as usize
    };
    let mut outputs: Vec<AlignedBuf> = (0..nbuf).map(|_| AlignedBuf::new(out_len)).collect();
    let fill = |spec: &CheckSpec, input: &mut AlignedBuf, outputs: &mut [AlignedBuf]| {
        if !in_place {
            spec.fill_input(input.bytes_mut());
        }
        for out in outputs {
            if in_place {
                spec.fill_in_place(out.bytes_mut());
            } else {
                spec.fill_output(out.bytes_mut());
            }
        }
    };
    fill(&call.spec, &mut input, &mut outputs);
    let input_ref = (!in_place).then_some(input.bytes());
    for _ in 0..o.warmup {
        call.batch(comm, input_ref, &mut outputs[..1], o.blocking)?;
    }
    comm.barrier()?;
    let start = Instant::now();
    for _ in 0..o.iters {
        if o.blocking {
            for _ in 0..o.agg_iters {
                call.batch(comm, input_ref, &mut outputs[..1], true)?;
            }
        } else {
            call.batch(comm, input_ref, &mut outputs, false)?;
        }
    }
    let calls = f64::from(o.iters.max(1)) * f64::from(o.agg_iters.max(1));
    let secs = o
        .average
        .combine(comm, start.elapsed().as_secs_f64() / calls)?;
    if o.check == 0 {
        return Ok((secs, None));
    }
    let mut wrong = 0;
    for _ in 0..o.check {
        *seed += 1;
        call.spec.seed = *seed;
        fill(&call.spec, &mut input, &mut outputs[..1]);
        let input_ref = (!in_place).then_some(input.bytes());
        call.batch(comm, input_ref, &mut outputs[..1], o.blocking)?;
        wrong += call.spec.count_wrong(outputs[0].bytes(), in_place);
    }
    Ok((secs, Some(sum_over_ranks(comm, wrong)?)))
}

/// [`measure`] on device buffers of `dev`: the buffers are filled on the host as
/// [`super::check`] says and uploaded before the timed loop; the loop passes only the device
/// buffers to the communicator; each check fills and uploads fresh inputs, runs the call,
/// and downloads the output to count the wrong elements.
fn measure_on_device(
    comm: &dyn PerfComm,
    o: &Options,
    call: &mut Call,
    in_place: bool,
    seed: &mut u64,
    dev: &mut dyn PerfDevice,
) -> Result<(f64, Option<u64>)> {
    let e = call.spec.dtype.size();
    let l = call.layout;
    let mut input = AlignedBuf::new(if in_place { 0 } else { l.send * e });
    let mut output = AlignedBuf::new(if in_place { l.in_place() } else { l.recv } * e);
    let nbuf = if o.blocking {
        1
    } else {
        o.agg_iters.max(1) as usize
    };
    let mut d_input = if in_place {
        None
    } else {
        Some(dev.alloc(input.bytes().len())?)
    };
    let mut d_outputs = (0..nbuf)
        .map(|_| dev.alloc(output.bytes().len()))
        .collect::<Result<Vec<_>>>()?;
    let fill = |spec: &CheckSpec,
                input: &mut AlignedBuf,
                output: &mut AlignedBuf,
                d_input: &mut Option<Box<dyn PerfDeviceBuf>>,
                d_outputs: &mut [Box<dyn PerfDeviceBuf>]|
     -> Result<()> {
        if let Some(d) = d_input {
            spec.fill_input(input.bytes_mut());
            d.upload(input.bytes())?;
        }
        if in_place {
            spec.fill_in_place(output.bytes_mut());
        } else {
            spec.fill_output(output.bytes_mut());
        }
        for d in d_outputs {
            d.upload(output.bytes())?;
        }
        Ok(())
    };
    fill(
        &call.spec,
        &mut input,
        &mut output,
        &mut d_input,
        &mut d_outputs,
    )?;
    let in_span = d_input.as_ref().map(|d| d.span());
    let calls: Vec<DeviceCall> = d_outputs
        .iter()
        .map(|d| device_call(comm, call, in_span, d.span()))
        .collect::<Result<_>>()?;
    for _ in 0..o.warmup {
        device_batch(comm, &calls[..1], o.blocking)?;
    }
    comm.barrier()?;
    let start = Instant::now();
    for _ in 0..o.iters {
        if o.blocking {
            for _ in 0..o.agg_iters {
                device_batch(comm, &calls[..1], true)?;
            }
        } else {
            device_batch(comm, &calls, false)?;
        }
    }
    let n_calls = f64::from(o.iters.max(1)) * f64::from(o.agg_iters.max(1));
    let secs = o
        .average
        .combine(comm, start.elapsed().as_secs_f64() / n_calls)?;
    if o.check == 0 {
        return Ok((secs, None));
    }
    let mut wrong = 0;
    for _ in 0..o.check {
        *seed += 1;
        call.spec.seed = *seed;
        fill(
            &call.spec,
            &mut input,
            &mut output,
            &mut d_input,
            &mut d_outputs[..1],
        )?;
        device_batch(comm, &calls[..1], o.blocking)?;
        d_outputs[0].download(output.bytes_mut())?;
        wrong += call.spec.count_wrong(output.bytes(), in_place);
    }
    Ok((secs, Some(sum_over_ranks(comm, wrong)?)))
}

/// A measured call on device buffers.
type DeviceCall = crate::call::Call;

/// The call of `call`'s row on device spans `input` (none in place) and `output`.
fn device_call(
    comm: &dyn PerfComm,
    call: &Call,
    input: Option<Span>,
    output: Span,
) -> Result<DeviceCall> {
    let s = &call.spec;
    let args = CollArgs {
        kind: s.op.kind(),
        dtype: s.dtype,
        op: s.redop,
        root: s.root,
        input,
        output,
        count: Some(s.count),
        factor: None,
    };
    let shape = Shape {
        rank: comm.rank(),
        size: comm.size(),
    };
    DeviceCall::collective(shape, args, &Names::RUST)
}

/// [`Call::batch`] on device buffers: blocking, each call completes, then a barrier;
/// non-blocking, all are started, then all are waited on (the first error is returned).
fn device_batch(comm: &dyn PerfComm, calls: &[DeviceCall], blocking: bool) -> Result<()> {
    if blocking {
        for c in calls {
            // SAFETY: the call's buffers are device buffers of the measurement, alive until
            // it returns, and run_device_call waits for the call.
            unsafe { comm.run_device_call(c) }?;
            comm.barrier()?;
        }
        return Ok(());
    }
    // SAFETY: as above; every request is waited on below, before the buffers can go.
    let requests: Vec<_> = calls
        .iter()
        .map(|c| unsafe { comm.start_device_call(c) })
        .collect();
    crate::Request::wait_all(requests)
}

/// The sum of `x` over all ranks.
pub fn sum_over_ranks(comm: &dyn PerfComm, x: u64) -> Result<u64> {
    let mut out = AlignedBuf::new(8);
    let input = AlignedBuf::from_bytes(&x.to_ne_bytes());
    let kind = CollKind::AllReduce;
    let (dt, op) = (DataType::Uint64, ReduceOp::Sum);
    comm.collective_bytes(kind, Some(input.bytes()), out.bytes_mut(), 1, dt, op, 0)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(out.bytes());
    Ok(u64::from_ne_bytes(b))
}

/// The settings line printed above the table.
fn settings(o: &Options) -> String {
    let step = match o.step {
        Step::Factor(f) => format!("{f}(factor)"),
        Step::Bytes(b) => format!("{b}(bytes)"),
    };
    format!(
        "minBytes {} maxBytes {} step: {step} warmup iters: {} iters: {} agg iters: {} validation: {}",
        o.min_bytes, o.max_bytes, o.warmup, o.iters, o.agg_iters, o.check
    )
}

/// Run the whole benchmark on this rank. Rank 0 should pass stdout as `out` (it receives the
/// table as it is measured); other ranks a sink.
pub fn benchmark(
    comm: &dyn PerfComm,
    o: &Options,
    out: &mut dyn Write,
) -> std::result::Result<Summary, RunError> {
    benchmark_on(comm, o, out, None)
}

/// [`benchmark`], with the measured buffers on `dev` when given (`--device cuda`).
pub fn benchmark_on(
    comm: &dyn PerfComm,
    o: &Options,
    out: &mut dyn Write,
    mut dev: Option<&mut dyn PerfDevice>,
) -> std::result::Result<Summary, RunError> {
    let (n, rank) = (comm.size(), comm.rank());
    let plain = |error| RunError {
        during: String::new(),
        error,
    };
    if let (true, Some(r)) = (o.op.has_root(), o.root) {
        if r >= n {
            let what = format!("-r/--root {r} is not a rank of this {n}-rank job");
            return Err(plain(Error::invalid(what)));
        }
    }
    let roots: Vec<Option<usize>> = match (o.op.has_root(), o.root) {
        (false, _) => vec![None],
        (true, Some(r)) => vec![Some(r)],
        (true, None) => (0..n).map(Some).collect(),
    };
    let redops: Vec<Option<ReduceOp>> = if o.op.reduces() {
        o.redops.iter().copied().map(Some).collect()
    } else {
        vec![None]
    };
    if dev.is_some() && !o.op.on_device() {
        return Err(plain(Error::usage(format!(
            "--device cuda: dmsc-perf measures {} on host buffers only (on device buffers: \
             the collectives all_reduce, all_gather, reduce_scatter, broadcast, reduce, \
             all_to_all)",
            o.op.name()
        ))));
    }
    let devices = ranks::gather(comm).map_err(plain)?;
    let _ = write!(
        out,
        "{}",
        report::header(o.op, n, &settings(o), o.blocking, o.average, &devices)
    );
    let _ = out.flush();
    let mut summary = Summary {
        runs: Vec::new(),
        wrong_total: 0,
        wrong_rows: 0,
        avg_busbw: 0.0,
    };
    let (mut bw_sum, mut bw_count) = (0.0, 0u32);
    let mut seed = 0u64;
    for &dtype in &o.dtypes {
        for &redop in &redops {
            for &root in &roots {
                let mut run = Run {
                    op: o.op,
                    nranks: n,
                    dtype,
                    redop,
                    root,
                    rows: Vec::new(),
                };
                for size in sizes(o.min_bytes, o.max_bytes, o.step) {
                    let l = layout(o.op, size, dtype, n);
                    let spec = CheckSpec {
                        op: o.op,
                        dtype,
                        redop: redop.unwrap_or(ReduceOp::Sum),
                        nranks: n,
                        rank,
                        root: root.unwrap_or(0),
                        count: l.count,
                        seed,
                    };
                    let mut call = Call { spec, layout: l };
                    let mut line = report::row_prefix(
                        l.size_bytes,
                        l.count,
                        dtype,
                        report::redop_name(redop),
                        report::root_value(root),
                    );
                    for in_place in [false, true] {
                        if in_place && !o.op.has_in_place() {
                            line += &report::row_half_absent();
                            continue;
                        }
                        let d: Option<&mut dyn PerfDevice> = match dev {
                            Some(ref mut d) => Some(&mut **d),
                            None => None,
                        };
                        let (secs, wrong) = measure(comm, o, &mut call, in_place, &mut seed, d)
                            .map_err(|error| RunError {
                                during: call.describe(in_place),
                                error,
                            })?;
                        let (algbw, busbw) = bandwidths(o.op, l.size_bytes, secs, n);
                        let time_us = secs * 1e6;
                        line += &report::row_half(time_us, algbw, busbw, wrong);
                        bw_sum += busbw;
                        bw_count += 1;
                        let w = wrong.unwrap_or(0);
                        summary.wrong_total += w;
                        summary.wrong_rows += u64::from(w > 0);
                        run.rows.push(Row {
                            size: l.size_bytes,
                            count: l.count,
                            inplace: in_place,
                            time_us,
                            algbw,
                            busbw,
                            wrong,
                        });
                    }
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
                summary.runs.push(run);
            }
        }
    }
    if bw_count > 0 {
        summary.avg_busbw = bw_sum / f64::from(bw_count);
    }
    let _ = write!(
        out,
        "{}",
        report::footer(summary.wrong_rows, summary.avg_busbw)
    );
    let _ = out.flush();
    Ok(summary)
}

/// Run the benchmark as one rank of a job: rank 0 prints the table and writes the JSON
/// report. Returns the exit code (1 on wrong results or any error).
pub fn run_rank(comm: &dyn PerfComm, o: &Options) -> i32 {
    let rank = comm.rank();
    let mut dev = match o.device {
        PerfDeviceKind::Host => None,
        PerfDeviceKind::Cuda => {
            let local = std::env::var("LOCAL_RANK")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(rank);
            match open_cuda(local) {
                Ok(d) => Some(d),
                Err(e) => {
                    eprintln!("dmsc-perf: rank {rank}: cannot measure on device buffers: {e}");
                    return 1;
                }
            }
        }
    };
    let dev: Option<&mut dyn PerfDevice> = match dev {
        Some(ref mut d) => Some(&mut **d),
        None => None,
    };
    let result = if rank == 0 {
        benchmark_on(comm, o, &mut io::stdout().lock(), dev)
    } else {
        benchmark_on(comm, o, &mut io::sink(), dev)
    };
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dmsc-perf: rank {rank}: {e}");
            return 1;
        }
    };
    if rank == 0 {
        if let Some(path) = &o.json {
            if let Err(e) = std::fs::write(path, report::json(&summary.runs)) {
                eprintln!("dmsc-perf: cannot write --json {}: {e}", path.display());
                return 1;
            }
        }
        if let Some(path) = &o.csv {
            if let Err(e) = std::fs::write(path, report::csv(&summary.runs)) {
                eprintln!("dmsc-perf: cannot write --csv {}: {e}", path.display());
                return 1;
            }
        }
    }
    if summary.wrong_total > 0 {
        if rank == 0 {
            eprintln!(
                "dmsc-perf: {} wrong element(s) in {} measurement(s)",
                summary.wrong_total, summary.wrong_rows
            );
        }
        return 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::average::Average;
    use crate::perf::fake;
    use crate::perf::PerfOp;
    use std::thread;

    /// Run `o` on `n` fake ranks; returns rank 0's output and every rank's summary.
    fn run_fake(n: usize, o: &Options, corrupt: Option<usize>) -> (String, Vec<Summary>) {
        let (text, results) = run_fake_counted(n, o, corrupt);
        (text, results.into_iter().map(|r| r.0).collect())
    }

    /// [`run_fake`], with every rank's count of non-blocking calls and barriers.
    fn run_fake_counted(
        n: usize,
        o: &Options,
        corrupt: Option<usize>,
    ) -> (String, Vec<(Summary, u64, u64)>) {
        let results: Vec<(Vec<u8>, (Summary, u64, u64))> = thread::scope(|s| {
            let handles: Vec<_> = fake::group(n)
                .into_iter()
                .map(|mut comm| {
                    comm.corrupt = corrupt == Some(comm.rank());
                    s.spawn(move || {
                        let mut out = Vec::new();
                        let summary = benchmark(&comm, o, &mut out).expect("benchmark");
                        let counts = (comm.immediate_calls.get(), comm.barriers.get());
                        (out, (summary, counts.0, counts.1))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("rank"))
                .collect()
        });
        let text = String::from_utf8(results[0].0.clone()).expect("utf8");
        (text, results.into_iter().map(|r| r.1).collect())
    }

    #[test]
    fn aggregated_non_blocking_calls_use_requests() {
        // One size, out-of-place and in-place: per half, warmup + iters * agg + check calls.
        let (warmup, iters, agg, check) = (2u32, 3u32, 4u32, 2u32);
        let o = Options {
            min_bytes: 64,
            max_bytes: 64,
            warmup,
            iters,
            agg_iters: agg,
            check,
            ..opts(PerfOp::AllReduce)
        };
        let per_half = u64::from(warmup + iters * agg + check);
        let (text, r) = run_fake_counted(3, &o, None);
        for (s, immediate, barriers) in &r {
            assert_eq!(s.wrong_total, 0, "{text}");
            assert_eq!(*immediate, 2 * per_half);
            assert_eq!(*barriers, 2, "one barrier before each timed loop");
        }
        assert!(text.contains("agg iters: 4"), "{text}");
        assert!(!text.contains("Blocking Enabled"), "{text}");
        let (text, r) = run_fake_counted(2, &Options { ..o.clone() }, Some(1));
        assert!(r.iter().all(|x| x.0.wrong_total > 0), "{text}");
    }

    #[test]
    fn every_op_checks_clean_in_both_modes_with_aggregation() {
        for op in PerfOp::ALL {
            for blocking in [false, true] {
                let o = Options {
                    agg_iters: 3,
                    blocking,
                    root: None,
                    ..opts(op)
                };
                let (text, r) = run_fake_counted(3, &o, None);
                for (s, immediate, _) in &r {
                    assert_eq!(s.wrong_total, 0, "{op} blocking={blocking}:\n{text}");
                    assert_eq!(*immediate == 0, blocking, "{op} blocking={blocking}");
                }
            }
        }
    }

    #[test]
    fn blocking_mode_barriers_after_each_call() {
        let (warmup, iters, agg, check) = (1u32, 2u32, 3u32, 1u32);
        let o = Options {
            min_bytes: 64,
            max_bytes: 64,
            warmup,
            iters,
            agg_iters: agg,
            check,
            blocking: true,
            ..opts(PerfOp::SendRecv)
        };
        // sendrecv has no in-place half: one half per row.
        let calls = u64::from(warmup + iters * agg + check);
        let (text, r) = run_fake_counted(3, &o, None);
        for (s, immediate, barriers) in &r {
            assert_eq!(s.wrong_total, 0, "{text}");
            assert_eq!(*immediate, 0);
            assert_eq!(*barriers, calls + 1);
        }
        assert!(text.contains("# Blocking Enabled"), "{text}");
        let (_, r) = run_fake_counted(
            3,
            &Options {
                blocking: false,
                ..o.clone()
            },
            None,
        );
        assert!(r.iter().all(|x| x.1 == calls && x.0.wrong_total == 0));
    }

    #[test]
    fn header_lists_every_rank_and_the_average() {
        for (avg, what) in [(Average::Rank0, "rank 0's time"), (Average::Min, "minimum")] {
            let o = Options {
                average: avg,
                ..opts(PerfOp::AllGather)
            };
            let (text, _) = run_fake(3, &o, None);
            assert!(text.contains(what), "{text}");
            let pid = format!("Pid {:>6} on ", std::process::id());
            for r in 0..3 {
                let line = format!("#  Rank {r:>2} Group  0 {pid}");
                assert!(text.contains(&line), "{line:?} in\n{text}");
            }
            assert!(!text.contains("#  Rank  3"));
        }
    }

    fn opts(op: PerfOp) -> Options {
        Options {
            min_bytes: 8,
            max_bytes: 256,
            step: Step::Factor(4),
            iters: 2,
            warmup: 1,
            ..Options::defaults(op)
        }
    }

    #[test]
    fn every_op_type_and_reduction_checks_clean() {
        for op in PerfOp::ALL {
            for n in [1, 3, 4] {
                let o = Options {
                    dtypes: DataType::ALL.to_vec(),
                    redops: crate::perf::args::REDOPS.to_vec(),
                    root: if n > 1 { None } else { Some(0) },
                    // Maxima are exact whatever order the fake reduces in (a mean's sum is
                    // not), so every rank must agree on everything.
                    average: Average::Max,
                    ..opts(op)
                };
                let (text, summaries) = run_fake(n, &o, None);
                for s in &summaries {
                    assert_eq!(s.wrong_total, 0, "{op} n={n}:\n{text}");
                    // Times are maxima over ranks: every rank agrees on everything.
                    assert_eq!(s, &summaries[0]);
                }
                let s = &summaries[0];
                let combos = DataType::ALL.len()
                    * if op.reduces() {
                        crate::perf::args::REDOPS.len()
                    } else {
                        1
                    }
                    * if op.has_root() && n > 1 { n } else { 1 };
                assert_eq!(s.runs.len(), combos, "{op} n={n}");
                let halves = if op.has_in_place() { 2 } else { 1 };
                assert!(s.runs.iter().all(|r| r.rows.len() == 3 * halves));
                assert!(text.contains("# Out of bounds values : 0 OK"), "{text}");
                let table_rows = text.lines().filter(|l| !l.starts_with('#')).count();
                assert_eq!(table_rows, combos * 3);
            }
        }
    }

    #[test]
    fn corruption_is_reported() {
        for op in PerfOp::ALL {
            let o = Options {
                min_bytes: 1024,
                max_bytes: 1024,
                root: Some(1), // reduce delivers only to the root: corrupt the root
                ..opts(op)
            };
            let (text, summaries) = run_fake(3, &o, Some(1));
            for s in &summaries {
                assert!(s.wrong_total > 0, "{op}:\n{text}");
                assert!(s.wrong_rows > 0);
            }
            assert!(text.contains("FAILED"), "{text}");
        }
    }

    #[test]
    fn no_check_prints_na() {
        let o = Options {
            check: 0,
            ..opts(PerfOp::AllReduce)
        };
        let (text, s) = run_fake(2, &o, Some(0));
        assert_eq!(s[0].wrong_total, 0);
        assert!(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| l.ends_with("N/A")));
        assert!(s[0].runs[0].rows.iter().all(|r| r.wrong.is_none()));
    }

    #[test]
    fn rows_follow_the_layout() {
        let o = Options {
            min_bytes: 1000,
            max_bytes: 1000,
            ..opts(PerfOp::AllGather)
        };
        let (text, s) = run_fake(3, &o, None);
        let row = &s[0].runs[0].rows[0];
        // 250 floats / 3 ranks = 83 -> 80 per rank (16-byte multiple); 240 floats printed.
        assert_eq!((row.size, row.count), (960, 80));
        assert!(
            text.contains("         960            80     float    none      -1"),
            "{text}"
        );
        let bus = row.algbw * 2.0 / 3.0;
        assert!((row.busbw - bus).abs() <= 1e-9 * bus.max(1.0));
    }

    #[test]
    fn root_out_of_range_names_the_flag() {
        let o = Options {
            root: Some(5),
            ..opts(PerfOp::Broadcast)
        };
        let comm = fake::group(1).pop().expect("rank");
        let e = benchmark(&comm, &o, &mut io::sink()).unwrap_err();
        assert!(e.to_string().contains("-r/--root 5"), "{e}");
    }

    #[test]
    fn aligned_buffers() {
        for len in [0, 1, 7, 100] {
            let b = AlignedBuf::new(len);
            assert_eq!(b.bytes().len(), len);
            assert_eq!(b.bytes().as_ptr() as usize % AlignedBuf::ALIGN, 0);
        }
    }
}
