//! One test case: plan it for every rank, check the schedules' static properties, simulate
//! it and compare every rank's buffers with a reference computed directly from the inputs.

use crate::plan::{buffer_elems, plan, PlanConfig};
use crate::reduce::{reduce_in_place, scale_div};
use crate::schedule::{BufId, Schedule};
use crate::sim::{run_collective_with, Aligned, SendMode, OUTPUT_FILL};
use crate::types::{Algo, CollDesc, CollKind, DataType, ReduceOp};
use half::{bf16, f16};

/// Every (kind, forced algorithm) pair.
pub(super) const ALGOS: [(CollKind, Option<Algo>); 11] = [
    (CollKind::AllReduce, Some(Algo::Ring)),
    (CollKind::AllReduce, Some(Algo::Tree)),
    (CollKind::AllReduce, Some(Algo::RecursiveDoubling)),
    (CollKind::AllReduce, Some(Algo::Rabenseifner)),
    (CollKind::ReduceScatter, None),
    (CollKind::AllGather, None),
    (CollKind::Broadcast, Some(Algo::Ring)),
    (CollKind::Broadcast, Some(Algo::Tree)),
    (CollKind::Reduce, Some(Algo::Ring)),
    (CollKind::Reduce, Some(Algo::Tree)),
    (CollKind::AllToAll, None),
];

/// A collective call to test.
#[derive(Clone, Copy, Debug)]
pub(super) struct Case {
    pub kind: CollKind,
    pub n: usize,
    pub count: usize,
    pub dtype: DataType,
    pub op: ReduceOp,
    pub root: usize,
    pub inplace: bool,
    pub algo: Option<Algo>,
    pub seg_bytes: usize,
    /// Random values (full-range integers, non-integral floats) instead of small integers.
    pub random: bool,
    pub seed: u64,
    pub mode: SendMode,
}

impl Case {
    /// A small-integer, rendezvous-mode case with small pipeline segments.
    pub fn new(kind: CollKind, n: usize, count: usize) -> Case {
        Case {
            kind,
            n,
            count,
            dtype: DataType::Int32,
            op: ReduceOp::Sum,
            root: n / 2,
            inplace: false,
            algo: None,
            seg_bytes: 12,
            random: false,
            seed: 1,
            mode: SendMode::Rendezvous,
        }
    }

    pub fn desc(&self) -> CollDesc {
        CollDesc {
            kind: self.kind,
            count: self.count,
            dtype: self.dtype,
            op: self.op,
            root: self.root,
        }
    }

    pub fn cfg(&self) -> PlanConfig {
        PlanConfig {
            algo: self.algo,
            segment_bytes: self.seg_bytes,
            ..PlanConfig::default()
        }
    }
}

/// SplitMix64: a tiny deterministic generator for test data.
pub(super) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn reduces(kind: CollKind) -> bool {
    matches!(
        kind,
        CollKind::AllReduce | CollKind::ReduceScatter | CollKind::Reduce
    )
}

/// Encode `v` as one element of `dtype` (integers truncate toward zero and wrap).
pub(super) fn encode(dtype: DataType, v: f64, out: &mut Vec<u8>) {
    match dtype {
        DataType::Int8 => out.push(v as i64 as i8 as u8),
        DataType::Uint8 => out.push(v as i64 as u8),
        DataType::Int32 => out.extend((v as i64 as i32).to_ne_bytes()),
        DataType::Uint32 => out.extend((v as i64 as u32).to_ne_bytes()),
        DataType::Int64 => out.extend((v as i64).to_ne_bytes()),
        DataType::Uint64 => out.extend((v as i64 as u64).to_ne_bytes()),
        DataType::Float16 => out.extend(f16::from_f64(v).to_bits().to_ne_bytes()),
        DataType::Bfloat16 => out.extend(bf16::from_f64(v).to_bits().to_ne_bytes()),
        DataType::Float32 => out.extend((v as f32).to_ne_bytes()),
        DataType::Float64 => out.extend(v.to_ne_bytes()),
    }
}

/// Decode floating-point elements to f64.
fn decode_float(dtype: DataType, b: &[u8]) -> Vec<f64> {
    let w = dtype.size();
    b.chunks_exact(w)
        .map(|c| match dtype {
            DataType::Float16 => f16::from_bits(u16::from_ne_bytes([c[0], c[1]])).to_f64(),
            DataType::Bfloat16 => bf16::from_bits(u16::from_ne_bytes([c[0], c[1]])).to_f64(),
            DataType::Float32 => f64::from(f32::from_ne_bytes([c[0], c[1], c[2], c[3]])),
            _ => f64::from_ne_bytes(c.try_into().unwrap_or([0; 8])),
        })
        .collect()
}

/// One rank's input for a reduction: values that keep float results well conditioned.
fn reduction_input(c: &Case, rank: usize, elems: usize) -> Vec<u8> {
    let mut rng = Rng(c.seed ^ (rank as u64).wrapping_mul(0x1234_5678_9ABC));
    if c.random && !c.dtype.is_float() {
        return rng.bytes(elems * c.dtype.size()); // wrapping arithmetic on any bits
    }
    let mut out = Vec::with_capacity(elems * c.dtype.size());
    for _ in 0..elems {
        let sign = if rng.below(2) == 0 { 1.0 } else { -1.0 };
        let v = match (c.op, c.random) {
            (ReduceOp::Prod, false) if c.dtype.is_float() => {
                // Powers of two: products of up to 10 of them stay exact even in f16.
                let choices = [1.0, -1.0, 2.0, 0.5];
                choices[rng.below(if rank < 10 { 4 } else { 2 }) as usize]
            }
            (ReduceOp::Prod, false) => [1.0, -1.0, 2.0, 3.0][rng.below(4) as usize],
            (ReduceOp::Prod, true) => sign * (0.8 + 0.45 * rng.unit()),
            (_, true) => 2.0 * rng.unit() - 1.0,
            _ if c.dtype.name().starts_with('u') => rng.below(9) as f64,
            _ => rng.below(9) as f64 - 4.0,
        };
        encode(c.dtype, v, &mut out);
    }
    out
}

/// Every rank's input bytes.
pub(super) fn inputs(c: &Case) -> Vec<Vec<u8>> {
    let (in_elems, _) = buffer_elems(&c.desc(), c.n).unwrap_or((0, 0));
    (0..c.n)
        .map(|r| {
            if reduces(c.kind) {
                reduction_input(c, r, in_elems)
            } else {
                Rng(c.seed.wrapping_add(r as u64 * 7919)).bytes(in_elems * c.dtype.size())
            }
        })
        .collect()
}

/// The reduction of `parts` in rank order, as bytes (integers: exact wrapping arithmetic).
fn reference_bytes(c: &Case, parts: &[&[u8]]) -> Vec<u8> {
    let mut acc = Aligned::from_bytes(parts[0]);
    for p in &parts[1..] {
        let p = Aligned::from_bytes(p);
        reduce_in_place(c.dtype, c.op, acc.bytes_mut(), p.bytes()).expect("aligned operands");
    }
    if c.op == ReduceOp::Avg {
        scale_div(c.dtype, acc.bytes_mut(), c.n).expect("aligned operand");
    }
    acc.bytes().to_vec()
}

/// Unit roundoff of a float type.
fn unit_roundoff(dtype: DataType) -> f64 {
    match dtype {
        DataType::Float16 => 2f64.powi(-11),
        DataType::Bfloat16 => 2f64.powi(-8),
        DataType::Float32 => 2f64.powi(-24),
        _ => 2f64.powi(-53),
    }
}

/// Compare a reduction result with the reference of `parts`: integers exactly, floats
/// within the rounding error of `n` combining steps.
fn compare_reduction(c: &Case, what: &str, got: &[u8], parts: &[&[u8]]) -> Result<(), String> {
    if !c.dtype.is_float() {
        let want = reference_bytes(c, parts);
        return compare_bytes(c, what, got, &want);
    }
    let vals: Vec<Vec<f64>> = parts.iter().map(|p| decode_float(c.dtype, p)).collect();
    let got = decode_float(c.dtype, got);
    if got.len() != vals[0].len() {
        return Err(format!(
            "{what}: {} elements, want {}",
            got.len(),
            vals[0].len()
        ));
    }
    let u = unit_roundoff(c.dtype);
    for (i, g) in got.iter().enumerate() {
        let xs = vals.iter().map(|v| v[i]);
        let (want, mag) = match c.op {
            // A plan runs premul_sum as Sum: the factors were applied before it started.
            ReduceOp::Sum | ReduceOp::Avg | ReduceOp::PreMulSum => {
                let (s, m) = xs.fold((0.0, 0.0), |(s, m), x| (s + x, m + x.abs()));
                if c.op == ReduceOp::Avg {
                    (s / c.n as f64, m / c.n as f64)
                } else {
                    (s, m)
                }
            }
            ReduceOp::Prod => {
                let p: f64 = xs.product();
                (p, p.abs())
            }
            ReduceOp::Min => (xs.fold(f64::INFINITY, f64::min), 0.0),
            ReduceOp::Max => (xs.fold(f64::NEG_INFINITY, f64::max), 0.0),
            ReduceOp::BAnd | ReduceOp::BOr | ReduceOp::BXor => {
                return Err(format!("{what}: bitwise op {} on {}", c.op, c.dtype))
            }
        };
        let tol = 2.0 * u * (c.n + 1) as f64 * mag;
        if (g - want).abs() > tol {
            return Err(format!(
                "{what}: element {i} is {g}, want {want} (tolerance {tol:e})"
            ));
        }
    }
    Ok(())
}

fn compare_bytes(c: &Case, what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} bytes, want {}", got.len(), want.len()));
    }
    match got.iter().zip(want).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => {
            let e = i / c.dtype.size();
            let w = c.dtype.size();
            Err(format!(
                "{what}: element {e} differs: got {:02x?}, want {:02x?}",
                &got[e * w..(e + 1) * w],
                &want[e * w..(e + 1) * w]
            ))
        }
    }
}

/// Properties every schedule of the case must have, whatever its data.
fn check_static(c: &Case, rank: usize, s: &Schedule) -> Result<(), String> {
    let (in_elems, out_elems) = buffer_elems(&c.desc(), c.n).map_err(|e| e.to_string())?;
    let actions = || s.steps.iter().flat_map(|st| &st.actions);
    if c.kind != CollKind::Barrier {
        if c.count == 0 && !s.steps.is_empty() {
            return Err(format!("rank {rank}: count 0 but {} steps", s.steps.len()));
        }
        if let Some(a) =
            actions().find(|a| !a.is_local() && a.reads().chain(a.writes()).any(|x| x.len == 0))
        {
            return Err(format!("rank {rank}: zero-length transfer {a:?}"));
        }
    }
    if let Some(a) =
        actions().find(|a| a.reads().chain(a.writes()).any(|x| x.len == 0) && a.is_local())
    {
        return Err(format!("rank {rank}: zero-length local action {a:?}"));
    }
    if !c.inplace {
        if let Some(a) = actions().find(|a| a.writes().is_some_and(|w| w.buf == BufId::Input)) {
            return Err(format!("rank {rank}: out of place but writes Input: {a:?}"));
        }
    }
    if c.kind == CollKind::Reduce && rank != c.root {
        if let Some(a) = actions().find(|a| {
            a.writes()
                .is_some_and(|w| w.buf == BufId::Output || (c.inplace && w.buf == BufId::Input))
        }) {
            return Err(format!(
                "rank {rank}: non-root reduce writes the user buffer: {a:?}"
            ));
        }
    }
    if s.scratch_elems > in_elems.max(out_elems) {
        return Err(format!(
            "rank {rank}: {} scratch elements for {in_elems}/{out_elems} of data",
            s.scratch_elems
        ));
    }
    Ok(())
}

/// Run one case through planner, static checks, simulator and reference.
pub(super) fn check(c: &Case) -> Result<(), String> {
    let (desc, cfg) = (c.desc(), c.cfg());
    check_with(c, &|r| plan(&desc, r, c.n, c.inplace, &cfg))
}

/// [`check`] with the schedule of rank `r` given by `planner(r)`.
pub(super) fn check_with(
    c: &Case,
    planner: &dyn Fn(usize) -> crate::error::Result<Schedule>,
) -> Result<(), String> {
    let desc = c.desc();
    for r in 0..c.n {
        let s = planner(r).map_err(|e| format!("plan: {e}"))?;
        check_static(c, r, &s)?;
    }
    let ins = inputs(c);
    let run = run_collective_with(&desc, c.n, c.inplace, &ins, c.mode, planner)
        .map_err(|e| e.to_string())?;
    if !c.inplace && run.inputs != ins {
        return Err("out of place, but an input changed".into());
    }
    let w = c.dtype.size();
    let blk =
        |b: &Vec<u8>, i: usize| -> Vec<u8> { b[i * c.count * w..(i + 1) * c.count * w].to_vec() };
    for (r, out) in run.outputs.iter().enumerate() {
        let what = format!("rank {r} output");
        match c.kind {
            CollKind::AllReduce => {
                let p: Vec<&[u8]> = ins.iter().map(Vec::as_slice).collect();
                compare_reduction(c, &what, out, &p)?;
                if out != &run.outputs[0] {
                    return Err(format!("{what} is not bit-identical to rank 0's"));
                }
            }
            CollKind::ReduceScatter => {
                let p: Vec<Vec<u8>> = ins.iter().map(|b| blk(b, r)).collect();
                let p: Vec<&[u8]> = p.iter().map(Vec::as_slice).collect();
                compare_reduction(c, &what, out, &p)?;
            }
            CollKind::Reduce if r == c.root => {
                let p: Vec<&[u8]> = ins.iter().map(Vec::as_slice).collect();
                compare_reduction(c, &what, out, &p)?;
            }
            CollKind::Reduce if c.inplace => compare_bytes(c, &what, out, &ins[r])?,
            CollKind::Reduce => compare_bytes(c, &what, out, &vec![OUTPUT_FILL; out.len()])?,
            CollKind::AllGather => compare_bytes(c, &what, out, &ins.concat())?,
            CollKind::Broadcast => compare_bytes(c, &what, out, &ins[c.root])?,
            CollKind::AllToAll => {
                let want: Vec<u8> = ins.iter().flat_map(|b| blk(b, r)).collect();
                compare_bytes(c, &what, out, &want)?;
            }
            CollKind::Barrier | CollKind::AllToAllV | CollKind::SendRecv => {}
        }
    }
    Ok(())
}

/// Run many cases; fail listing the first few that fail.
pub(super) fn check_all(cases: impl IntoIterator<Item = Case>) -> usize {
    let mut failures = Vec::new();
    let mut n = 0;
    for c in cases {
        n += 1;
        if let Err(e) = check(&c) {
            failures.push(format!("{c:?}\n    {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed; first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    n
}
