//! Message sizes, element counts and bandwidths, as nccl-tests computes them.
//!
//! A row of the table is one message size `S` in bytes (from `-b`, `-e`, `-f`/`-i`). Its
//! element count is `S / elemsize`; for the collectives whose count is per rank (all_gather,
//! reduce_scatter, all_to_all) the per-rank count is `count / nranks` rounded down to a
//! multiple of 16 bytes' worth of elements, exactly as nccl-tests' `*GetCollByteCount`
//! functions do. The printed size is the larger of the send and receive buffers (nccl-tests'
//! `max(sendBytes, expectedBytes)`), the printed count the count passed to the collective.
//!
//! Bandwidths follow nccl-tests' `doc/PERFORMANCE.md`: `algbw = size / time` in GB/s
//! (1 GB = 1e9 bytes) and `busbw = algbw * factor`, with factor `2(n-1)/n` for all_reduce,
//! `(n-1)/n` for all_gather, reduce_scatter, all_to_all, gather and scatter (nccl-tests'
//! `GatherGetBw` and `ScatterGetBw`), and 1 for broadcast, reduce and sendrecv. all_to_allv
//! has the layout and factor of all_to_all: each rank sends and receives the same total,
//! split unevenly between peers (see [`super::vsplit`]).

use super::PerfOp;
use crate::DataType;

/// How the size grows from one row to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Multiply by this factor (at least 2): nccl-tests' `-f`.
    Factor(u64),
    /// Add this many bytes (at least 1): nccl-tests' `-i`.
    Bytes(u64),
}

/// Parse a size as nccl-tests does: a number (fractions allowed) with an optional binary
/// suffix `K`, `M` or `G` (1K = 1024), in either case. Fractional byte counts round down.
/// `None` for anything else (negative, empty, unknown suffix, beyond `u64`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let num = num.trim_end();
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    if let Ok(whole) = num.parse::<u64>() {
        return whole.checked_mul(unit);
    }
    let x: f64 = num.parse().ok()?;
    let bytes = (x * unit as f64).floor();
    // 2^64 is exactly representable; anything at or above it does not fit.
    (bytes.is_finite() && bytes < 18_446_744_073_709_551_616.0).then_some(bytes as u64)
}

/// The sizes of the rows: `min`, then stepped while `<= max` (nccl-tests' loop). Stops rather
/// than overflow. A `Factor` below 2 or `Bytes(0)` would never advance and yields only `min`.
pub fn sizes(min: u64, max: u64, step: Step) -> Vec<u64> {
    let mut out = Vec::new();
    let mut s = min;
    while s <= max {
        out.push(s);
        let next = match step {
            Step::Factor(f) if f >= 2 && s > 0 => s.checked_mul(f),
            Step::Bytes(b) if b > 0 => s.checked_add(b),
            _ => None,
        };
        match next {
            Some(n) => s = n,
            None => break,
        }
    }
    out
}

/// Element counts of one row, in elements of the row's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The count passed to the collective (NCCL's convention, see `CollKind`), printed in
    /// the `count` column.
    pub count: usize,
    /// Elements in each rank's send buffer.
    pub send: usize,
    /// Elements in each rank's receive buffer.
    pub recv: usize,
    /// Bytes printed in the `size` column: `max(send, recv) * elemsize`.
    pub size_bytes: u64,
}

impl Layout {
    /// Elements of the single buffer of the in-place variant: the larger of the two.
    pub fn in_place(&self) -> usize {
        self.send.max(self.recv)
    }
}

/// The layout of a row of `bytes` bytes of `dtype` over `nranks` ranks.
pub fn layout(op: PerfOp, bytes: u64, dtype: DataType, nranks: usize) -> Layout {
    let elem = dtype.size();
    let total = usize::try_from(bytes / elem as u64).unwrap_or(usize::MAX);
    let n = nranks.max(1);
    // nccl-tests: (count/nranks) & ~(16/eltSize - 1)
    let per_rank = (total / n) & !(16 / elem - 1);
    let (count, send, recv) = match op {
        PerfOp::AllReduce | PerfOp::Broadcast | PerfOp::Reduce | PerfOp::SendRecv => {
            (total, total, total)
        }
        PerfOp::AllGather => (per_rank, per_rank, per_rank * n),
        PerfOp::ReduceScatter => (per_rank, per_rank * n, per_rank),
        PerfOp::AllToAll | PerfOp::AllToAllV => (per_rank, per_rank * n, per_rank * n),
        PerfOp::Gather => (per_rank, per_rank, per_rank * n),
        PerfOp::Scatter => (per_rank, per_rank * n, per_rank),
    };
    Layout {
        count,
        send,
        recv,
        size_bytes: (send.max(recv) * elem) as u64,
    }
}

/// nccl-tests' bus-bandwidth factor of `op` over `nranks` ranks.
pub fn bus_factor(op: PerfOp, nranks: usize) -> f64 {
    let n = nranks.max(1) as f64;
    match op {
        PerfOp::AllReduce => 2.0 * (n - 1.0) / n,
        PerfOp::AllGather
        | PerfOp::ReduceScatter
        | PerfOp::AllToAll
        | PerfOp::AllToAllV
        | PerfOp::Gather
        | PerfOp::Scatter => (n - 1.0) / n,
        PerfOp::Broadcast | PerfOp::Reduce | PerfOp::SendRecv => 1.0,
    }
}

/// `(algbw, busbw)` in GB/s (1e9 bytes/s) of `size_bytes` moved in `secs`.
pub fn bandwidths(op: PerfOp, size_bytes: u64, secs: f64, nranks: usize) -> (f64, f64) {
    let algbw = size_bytes as f64 / 1.0e9 / secs;
    (algbw, algbw * bus_factor(op, nranks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_nccl_tests() {
        assert_eq!(parse_size("8"), Some(8));
        assert_eq!(parse_size("1K"), Some(1024));
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1.5K"), Some(1536));
        assert_eq!(parse_size("0.3"), Some(0));
        assert_eq!(parse_size(" 16 M"), Some(16 << 20));
        for bad in [
            "",
            "K",
            "-8",
            "8T",
            "1e3",
            "abc",
            "8KB",
            "1.2.3",
            "99999999999G",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        assert_eq!(parse_size("17179869184G"), None, "2^64 overflows");
        assert_eq!(parse_size("17179869183G"), Some(17_179_869_183 << 30));
        assert_eq!(parse_size("17179869184.5G"), None);
    }

    #[test]
    fn size_sequences() {
        assert_eq!(sizes(8, 64, Step::Factor(2)), [8, 16, 32, 64]);
        assert_eq!(sizes(8, 100, Step::Factor(4)), [8, 32]);
        assert_eq!(sizes(32 << 20, 32 << 20, Step::Factor(2)), [32 << 20]);
        assert_eq!(sizes(0, 3, Step::Bytes(1)), [0, 1, 2, 3]);
        assert_eq!(sizes(1, 0, Step::Bytes(1)), Vec::<u64>::new());
        assert_eq!(sizes(0, 8, Step::Factor(2)), [0], "0 never grows");
        assert_eq!(
            sizes(u64::MAX - 1, u64::MAX, Step::Bytes(5)),
            [u64::MAX - 1]
        );
        assert_eq!(sizes(1 << 63, u64::MAX, Step::Factor(2)), [1 << 63]);
    }

    #[test]
    fn counts_round_like_nccl_tests() {
        use DataType::*;
        // all_reduce: whole elements only.
        let l = layout(PerfOp::AllReduce, 10, Float32, 4);
        assert_eq!((l.count, l.send, l.recv, l.size_bytes), (2, 2, 2, 8));
        // all_gather over 3 ranks, 1 MiB of float: 262144/3 = 87381 -> multiple of 4.
        let l = layout(PerfOp::AllGather, 1 << 20, Float32, 3);
        assert_eq!((l.count, l.send, l.recv), (87380, 87380, 262140));
        assert_eq!(l.size_bytes, 262140 * 4);
        // reduce_scatter of int8: per-rank count a multiple of 16.
        let l = layout(PerfOp::ReduceScatter, 1000, Int8, 3);
        assert_eq!(
            (l.count, l.send, l.recv, l.size_bytes),
            (320, 960, 320, 960)
        );
        // all_to_all of double: per-rank count even.
        let l = layout(PerfOp::AllToAll, 1024, Float64, 5);
        assert_eq!((l.count, l.send, l.recv, l.size_bytes), (24, 120, 120, 960));
        // Too small for one aligned block per rank.
        let l = layout(PerfOp::AllGather, 8, Float32, 2);
        assert_eq!((l.count, l.size_bytes), (0, 0));
        assert_eq!(l.in_place(), 0);
        // broadcast / reduce / sendrecv: the total.
        for op in [PerfOp::Broadcast, PerfOp::Reduce, PerfOp::SendRecv] {
            let l = layout(op, 1001, Float16, 8);
            assert_eq!(
                (l.count, l.send, l.recv, l.size_bytes),
                (500, 500, 500, 1000)
            );
        }
        let l = layout(PerfOp::ReduceScatter, 4096, Bfloat16, 4);
        assert_eq!(l.in_place(), 2048);
    }

    #[test]
    fn bus_factors_follow_performance_md() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(bus_factor(PerfOp::AllReduce, 4), 1.5));
        assert!(close(bus_factor(PerfOp::AllReduce, 1), 0.0));
        assert!(close(bus_factor(PerfOp::AllGather, 4), 0.75));
        assert!(close(bus_factor(PerfOp::ReduceScatter, 8), 0.875));
        assert!(close(bus_factor(PerfOp::AllToAll, 2), 0.5));
        for op in [PerfOp::Broadcast, PerfOp::Reduce, PerfOp::SendRecv] {
            assert!(close(bus_factor(op, 16), 1.0));
        }
        let (alg, bus) = bandwidths(PerfOp::AllReduce, 2_000_000_000, 2.0, 2);
        assert!(close(alg, 1.0) && close(bus, 1.0));
    }
}
