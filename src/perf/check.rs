//! Correctness check of one collective call: rank-dependent deterministic inputs, the result
//! every rank should hold, and the count of elements that differ (nccl-tests' `#wrong`).
//!
//! Inputs are small non-negative integers chosen so that results stay exactly representable
//! in every type, whatever order the ranks' contributions are combined in:
//!
//! * sum and avg: 1 to 4, so a sum stays exact in bfloat16 up to 64 ranks;
//! * prod: 1, with a 2 at one element in eight (rotating with rank), so products are powers
//!   of two;
//! * min and max: 0 to 30;
//! * collectives that do not reduce: 0 to 100, every rank's block distinct, so a block
//!   delivered to the wrong place is caught.
//!
//! Integer results are compared exactly, with the wrapping sums and products of NCCL and
//! avg as the truncating division of the wrapped sum. Floating-point results are compared
//! with a relative tolerance of `(nranks + 1)` units of the type's epsilon, which covers the
//! single rounding of avg's division (and of any summation order where values grow past the
//! exact range).

use super::sizes::Layout;
use super::vsplit;
use super::PerfOp;
use crate::{DataType, ReduceOp};
use half::{bf16, f16};

/// The byte an output buffer is filled with before a checked call, so that elements a
/// collective fails to write are counted.
pub const SENTINEL: u8 = 0xA5;

/// One rank's view of one checked call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    /// The collective.
    pub op: PerfOp,
    /// Element type.
    pub dtype: DataType,
    /// Reduction operator (ignored by collectives that do not reduce).
    pub redop: ReduceOp,
    /// Number of ranks.
    pub nranks: usize,
    /// This rank.
    pub rank: usize,
    /// Root of broadcast, reduce, gather and scatter.
    pub root: usize,
    /// The count passed to the collective ([`Layout::count`]).
    pub count: usize,
    /// Varies the data from one checked call to the next.
    pub seed: u64,
}

/// An element's expected value: integers exactly (sign-extended), floats as `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// Any integer type.
    Int(i128),
    /// Any floating-point type.
    Float(f64),
}

impl CheckSpec {
    /// The layout matching this call (element counts of the send and receive buffers).
    pub fn layout(&self) -> Layout {
        let n = self.nranks;
        let c = self.count;
        let (send, recv) = match self.op {
            PerfOp::AllGather => (c, c * n),
            PerfOp::ReduceScatter => (c * n, c),
            PerfOp::AllToAll | PerfOp::AllToAllV => (c * n, c * n),
            PerfOp::Gather => (c, c * n),
            PerfOp::Scatter => (c * n, c),
            _ => (c, c),
        };
        Layout {
            count: c,
            send,
            recv,
            size_bytes: (send.max(recv) * self.dtype.size()) as u64,
        }
    }

    /// Element `idx` of rank `rank`'s input, before conversion to the type.
    pub fn input_value(&self, rank: usize, idx: usize) -> i64 {
        let (r, i, s) = (rank as u64, idx as u64, self.seed);
        let h = r
            .wrapping_mul(13)
            .wrapping_add(i.wrapping_mul(7))
            .wrapping_add(s.wrapping_mul(3));
        if !self.op.reduces() {
            return (h % 101) as i64;
        }
        match self.redop {
            ReduceOp::Sum | ReduceOp::Avg => (h % 4) as i64 + 1,
            ReduceOp::Prod => {
                if r.wrapping_add(i).wrapping_add(s) & 7 == 0 {
                    2
                } else {
                    1
                }
            }
            ReduceOp::Min | ReduceOp::Max => (h % 31) as i64,
            other => not_run(other),
        }
    }

    /// Fill this rank's send buffer (`layout().send` elements).
    pub fn fill_input(&self, buf: &mut [u8]) {
        for (idx, el) in buf.chunks_exact_mut(self.dtype.size()).enumerate() {
            write_element(self.dtype, el, self.input_value(self.rank, idx));
        }
    }

    /// Fill the output buffer of an out-of-place call with [`SENTINEL`].
    pub fn fill_output(&self, buf: &mut [u8]) {
        buf.fill(SENTINEL);
    }

    /// Fill the single buffer of an in-place call (`layout().in_place()` elements): this
    /// rank's input where the collective reads it (at `rank * count` for all_gather and
    /// gather, at the start otherwise), [`SENTINEL`] elsewhere.
    pub fn fill_in_place(&self, buf: &mut [u8]) {
        buf.fill(SENTINEL);
        let e = self.dtype.size();
        let start = match self.op {
            PerfOp::AllGather | PerfOp::Gather => self.rank * self.count * e,
            _ => 0,
        };
        let len = self.layout().send * e;
        self.fill_input(&mut buf[start..start + len]);
    }

    /// The expected value of element `idx` of this rank's result (the receive buffer of the
    /// out-of-place call); `None` where nothing is defined (reduce on a non-root rank).
    pub fn expected(&self, idx: usize) -> Option<Value> {
        let n = self.nranks;
        let c = self.count;
        let me = self.rank;
        let copy = |rank, i| Some(exact(self.dtype, self.input_value(rank, i)));
        match self.op {
            PerfOp::AllReduce => Some(self.reduced(idx)),
            PerfOp::Reduce => (me == self.root).then(|| self.reduced(idx)),
            PerfOp::ReduceScatter => Some(self.reduced(me * c + idx)),
            PerfOp::Broadcast => copy(self.root, idx),
            PerfOp::AllGather => copy(idx / c.max(1), idx % c.max(1)),
            PerfOp::AllToAll => copy(idx / c.max(1), me * c + idx % c.max(1)),
            PerfOp::SendRecv => copy((me + n - 1) % n, idx),
            PerfOp::AllToAllV => {
                let (src, at) = vsplit::source_of(c * n, n, me, idx)?;
                copy(src, at)
            }
            PerfOp::Gather => {
                (me == self.root).then_some(())?;
                copy(idx / c.max(1), idx % c.max(1))
            }
            PerfOp::Scatter => copy(self.root, me * c + idx),
        }
    }

    /// The reduction over all ranks of input element `idx`, in the type's arithmetic.
    fn reduced(&self, idx: usize) -> Value {
        let n = self.nranks;
        let vals = (0..n).map(|r| self.input_value(r, idx));
        if self.dtype.is_float() {
            let v: Vec<f64> = vals.map(|v| v as f64).collect();
            let x = match self.redop {
                ReduceOp::Sum => v.iter().sum(),
                ReduceOp::Avg => v.iter().sum::<f64>() / n as f64,
                ReduceOp::Prod => v.iter().product(),
                ReduceOp::Min => v.iter().copied().fold(f64::INFINITY, f64::min),
                ReduceOp::Max => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                other => not_run(other),
            };
            return Value::Float(round_to(self.dtype, x));
        }
        let v: Vec<i128> = vals.map(i128::from).collect();
        let x = match self.redop {
            ReduceOp::Sum => v.iter().fold(0i128, |a, b| a.wrapping_add(*b)),
            ReduceOp::Avg => {
                let sum = v.iter().fold(0i128, |a, b| a.wrapping_add(*b));
                wrap(self.dtype, sum) / n as i128
            }
            ReduceOp::Prod => v.iter().fold(1i128, |a, b| a.wrapping_mul(*b)),
            ReduceOp::Min => v.iter().copied().min().unwrap_or(0),
            ReduceOp::Max => v.iter().copied().max().unwrap_or(0),
            other => not_run(other),
        };
        Value::Int(wrap(self.dtype, x))
    }

    /// Count the wrong elements of this rank's result. `output` is the receive buffer of an
    /// out-of-place call or the single buffer of an in-place one (for reduce_scatter and
    /// scatter in place the result is read at `rank * count`).
    pub fn count_wrong(&self, output: &[u8], in_place: bool) -> u64 {
        let e = self.dtype.size();
        let recv = self.layout().recv;
        let start = match (in_place, self.op) {
            (true, PerfOp::ReduceScatter | PerfOp::Scatter) => self.rank * self.count,
            _ => 0,
        };
        let Some(region) = output.get(start * e..(start + recv) * e) else {
            // A buffer too short for the result: every element is wrong.
            return recv as u64;
        };
        let mut wrong = 0;
        for (idx, el) in region.chunks_exact(e).enumerate() {
            if let Some(want) = self.expected(idx) {
                if !matches(self.dtype, self.nranks, want, read_element(self.dtype, el)) {
                    wrong += 1;
                }
            }
        }
        wrong
    }
}

/// Reduce an integer to the range of `dtype` (two's complement wrap), sign-extended.
fn wrap(dtype: DataType, v: i128) -> i128 {
    match dtype {
        DataType::Int8 => v as i8 as i128,
        DataType::Uint8 => v as u8 as i128,
        DataType::Int32 => v as i32 as i128,
        DataType::Uint32 => v as u32 as i128,
        DataType::Int64 => v as i64 as i128,
        DataType::Uint64 => v as u64 as i128,
        _ => v,
    }
}

/// Round `x` to the nearest value of the floating-point `dtype`.
fn round_to(dtype: DataType, x: f64) -> f64 {
    match dtype {
        DataType::Float16 => f16::from_f64(x).to_f64(),
        DataType::Bfloat16 => bf16::from_f64(x).to_f64(),
        DataType::Float32 => x as f32 as f64,
        _ => x,
    }
}

/// A small integer as the exact [`Value`] of `dtype`.
fn exact(dtype: DataType, v: i64) -> Value {
    if dtype.is_float() {
        Value::Float(round_to(dtype, v as f64))
    } else {
        Value::Int(wrap(dtype, v.into()))
    }
}

/// Machine epsilon of a floating-point type.
fn epsilon(dtype: DataType) -> f64 {
    match dtype {
        DataType::Float16 => f16::EPSILON.to_f64(),
        DataType::Bfloat16 => bf16::EPSILON.to_f64(),
        DataType::Float32 => f32::EPSILON as f64,
        _ => f64::EPSILON,
    }
}

/// Whether `got` is an acceptable result where `want` is expected.
pub fn matches(dtype: DataType, nranks: usize, want: Value, got: Value) -> bool {
    match (want, got) {
        (Value::Int(w), Value::Int(g)) => w == g,
        (Value::Float(w), Value::Float(g)) => {
            if w == g {
                return true;
            }
            let tol = epsilon(dtype) * (nranks + 1) as f64 * w.abs().max(1.0);
            w.is_finite() && g.is_finite() && (w - g).abs() <= tol
        }
        _ => false,
    }
}

/// Store `v` (a small integer) as one element of `dtype` in native byte order.
pub fn write_element(dtype: DataType, el: &mut [u8], v: i64) {
    match dtype {
        DataType::Int8 => el.copy_from_slice(&(v as i8).to_ne_bytes()),
        DataType::Uint8 => el.copy_from_slice(&(v as u8).to_ne_bytes()),
        DataType::Int32 => el.copy_from_slice(&(v as i32).to_ne_bytes()),
        DataType::Uint32 => el.copy_from_slice(&(v as u32).to_ne_bytes()),
        DataType::Int64 => el.copy_from_slice(&v.to_ne_bytes()),
        DataType::Uint64 => el.copy_from_slice(&(v as u64).to_ne_bytes()),
        DataType::Float16 => el.copy_from_slice(&f16::from_f64(v as f64).to_ne_bytes()),
        DataType::Bfloat16 => el.copy_from_slice(&bf16::from_f64(v as f64).to_ne_bytes()),
        DataType::Float32 => el.copy_from_slice(&(v as f32).to_ne_bytes()),
        DataType::Float64 => el.copy_from_slice(&(v as f64).to_ne_bytes()),
    }
}

/// Read one element of `dtype` (native byte order; `el` is exactly one element).
pub fn read_element(dtype: DataType, el: &[u8]) -> Value {
    fn arr<const N: usize>(el: &[u8]) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(el);
        a
    }
    match dtype {
        DataType::Int8 => Value::Int(i8::from_ne_bytes(arr(el)).into()),
        DataType::Uint8 => Value::Int(u8::from_ne_bytes(arr(el)).into()),
        DataType::Int32 => Value::Int(i32::from_ne_bytes(arr(el)).into()),
        DataType::Uint32 => Value::Int(u32::from_ne_bytes(arr(el)).into()),
        DataType::Int64 => Value::Int(i64::from_ne_bytes(arr(el)).into()),
        DataType::Uint64 => Value::Int(u64::from_ne_bytes(arr(el)).into()),
        DataType::Float16 => Value::Float(f16::from_ne_bytes(arr(el)).to_f64()),
        DataType::Bfloat16 => Value::Float(bf16::from_ne_bytes(arr(el)).to_f64()),
        DataType::Float32 => Value::Float(f32::from_ne_bytes(arr(el)).into()),
        DataType::Float64 => Value::Float(f64::from_ne_bytes(arr(el))),
    }
}

/// An operator outside [`REDOPS`](super::args::REDOPS), which the argument parser refuses.
fn not_run(op: ReduceOp) -> ! {
    unreachable!("dmsc-perf does not run reduce op {op} (see args::REDOPS)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::buf::AlignedBuf;
    use crate::perf::fake::reference;

    /// Every rank's input and the reference result of every rank; checks that the result
    /// counts as right, and that one corrupted element counts as one wrong element.
    fn check_all_ranks(base: CheckSpec, reverse: bool) {
        let n = base.nranks;
        let e = base.dtype.size();
        let spec = |rank| CheckSpec { rank, ..base };
        let inputs: Vec<AlignedBuf> = (0..n)
            .map(|r| {
                let mut b = AlignedBuf::new(spec(r).layout().send * e);
                spec(r).fill_input(b.bytes_mut());
                b
            })
            .collect();
        let contribs: Vec<&[u8]> = inputs.iter().map(|b| b.bytes()).collect();
        for me in 0..n {
            let s = spec(me);
            let mut out = AlignedBuf::new(s.layout().recv * e);
            s.fill_output(out.bytes_mut());
            let (kind, count, op, root) = (base.op.kind(), base.count, base.redop, base.root);
            if let Some(r) = reference(kind, &contribs, me, count, base.dtype, op, root, reverse) {
                out.bytes_mut().copy_from_slice(r.bytes());
            }
            let ctx = format!("{s:?} reverse={reverse}");
            assert_eq!(s.count_wrong(out.bytes(), false), 0, "{ctx}");
            if s.expected(0).is_some() && base.count > 0 {
                // Flip the element into something no input pattern produces.
                write_element(base.dtype, &mut out.bytes_mut()[..e], 120);
                assert_eq!(s.count_wrong(out.bytes(), false), 1, "{ctx}");
            }
        }
    }

    #[test]
    fn reference_results_pass_and_corruption_is_counted() {
        for op in PerfOp::ALL {
            if matches!(op, PerfOp::AllToAllV | PerfOp::Gather | PerfOp::Scatter) {
                // Not collectives of the fake's `reference`: run.rs's tests check them end
                // to end through the fake's all_to_all_v and groups of sends and receives.
                continue;
            }
            let redops: &[ReduceOp] = if op.reduces() {
                &crate::perf::args::REDOPS
            } else {
                &[ReduceOp::Sum]
            };
            for &redop in redops {
                for dtype in DataType::ALL {
                    for nranks in [1, 2, 3, 5, 8] {
                        for (seed, count) in [(0, 0), (1, 1), (2, 37)] {
                            let root = nranks / 2;
                            let base = CheckSpec {
                                op,
                                dtype,
                                redop,
                                nranks,
                                rank: 0,
                                root,
                                count,
                                seed,
                            };
                            check_all_ranks(base, false);
                            check_all_ranks(base, true);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn unwritten_output_is_wrong() {
        let s = CheckSpec {
            op: PerfOp::AllReduce,
            dtype: DataType::Float32,
            redop: ReduceOp::Sum,
            nranks: 4,
            rank: 1,
            root: 0,
            count: 10,
            seed: 3,
        };
        let mut out = vec![0u8; 40];
        s.fill_output(&mut out);
        assert_eq!(s.count_wrong(&out, false), 10);
        assert_eq!(s.count_wrong(&out[..8], false), 10, "short buffer");
    }

    #[test]
    fn in_place_layouts() {
        let base = CheckSpec {
            op: PerfOp::AllGather,
            dtype: DataType::Int32,
            redop: ReduceOp::Sum,
            nranks: 3,
            rank: 2,
            root: 0,
            count: 4,
            seed: 0,
        };
        let mut buf = vec![0u8; 12 * 4];
        base.fill_in_place(&mut buf);
        // Rank 2's block is in place at elements 8..12 and right; the rest is sentinel.
        let wrong = base.count_wrong(&buf, true);
        assert_eq!(wrong, 8);
        let rs = CheckSpec {
            op: PerfOp::ReduceScatter,
            nranks: 1,
            rank: 0,
            ..base
        };
        let mut buf = vec![0u8; 4 * 4];
        rs.fill_in_place(&mut buf);
        assert_eq!(
            rs.count_wrong(&buf, true),
            0,
            "one rank: the input is the result"
        );
    }

    #[test]
    fn value_ranges_keep_results_exact() {
        let s = |op, redop| CheckSpec {
            op,
            dtype: DataType::Int8,
            redop,
            nranks: 64,
            rank: 0,
            root: 0,
            count: 0,
            seed: 9,
        };
        for r in 0..64 {
            for i in 0..64 {
                assert!((1..=4).contains(&s(PerfOp::AllReduce, ReduceOp::Sum).input_value(r, i)));
                assert!((1..=2).contains(&s(PerfOp::Reduce, ReduceOp::Prod).input_value(r, i)));
                assert!((0..=30).contains(&s(PerfOp::AllReduce, ReduceOp::Min).input_value(r, i)));
                assert!((0..=100).contains(&s(PerfOp::AllToAll, ReduceOp::Sum).input_value(r, i)));
            }
        }
    }

    #[test]
    fn float_tolerance() {
        let f = |w, g| matches(DataType::Float16, 4, Value::Float(w), Value::Float(g));
        assert!(f(1.0, 1.0));
        assert!(f(0.333, 0.3333));
        assert!(!f(2.0, 2.1));
        assert!(f(f64::INFINITY, f64::INFINITY));
        assert!(!f(1.0, f64::NAN));
        assert!(!matches(DataType::Int8, 2, Value::Int(1), Value::Int(2)));
        assert!(!matches(
            DataType::Int8,
            2,
            Value::Int(1),
            Value::Float(1.0)
        ));
    }

    #[test]
    fn elements_round_trip() {
        for dtype in DataType::ALL {
            let mut el = vec![0u8; dtype.size()];
            for v in [0i64, 1, 2, 30, 100] {
                write_element(dtype, &mut el, v);
                assert_eq!(read_element(dtype, &el), exact(dtype, v), "{dtype}");
            }
        }
        assert_eq!(wrap(DataType::Int8, 200), -56);
        assert_eq!(wrap(DataType::Uint32, -1), u32::MAX as i128);
    }
}
