//! How the per-rank times of one measurement are combined into the reported time (`-a N`,
//! `--average N`), as nccl-tests does it.
//!
//! Definition implemented: nccl-tests' `src/common.cu`, function `Allreduce(args, value,
//! average)` as called by `BenchTime` on `deltaSec` (the timed loop's seconds divided by
//! `iters * agg_iters`):
//!
//! * `0`: no reduction across processes; every rank keeps its own time and rank 0, the only
//!   one that prints, reports rank 0's time;
//! * `1` (the default, nccl-tests' `static int average = 1`): the sum over ranks
//!   (`MPI_Allreduce` with `MPI_SUM`) divided by the number of ranks
//!   (`totalProcs * nThreads`, one thread per process here);
//! * `2`: the minimum over ranks (`MPI_MIN`);
//! * `3`: the maximum over ranks (`MPI_MAX`; what dmsc-perf reported before `-a` existed).
//!
//! nccl-tests' usage text documents 0 to 3 (its value 4, a plain sum, serves the `#wrong`
//! counts); dmsc-perf refuses any other value with an error naming `-a/--average`.

use super::buf::AlignedBuf;
use super::comm::PerfComm;
use crate::{CollKind, DataType, ReduceOp, Result};
use std::fmt;

/// The combination of per-rank times (`-a`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Average {
    /// `-a 0`: rank 0's own time.
    Rank0,
    /// `-a 1`: the mean over ranks (default).
    Mean,
    /// `-a 2`: the minimum over ranks.
    Min,
    /// `-a 3`: the maximum over ranks.
    Max,
}

impl Average {
    /// The value of `-a` for `n` (0 to 3); `None` for anything else.
    pub const fn from_flag(n: u32) -> Option<Average> {
        match n {
            0 => Some(Average::Rank0),
            1 => Some(Average::Mean),
            2 => Some(Average::Min),
            3 => Some(Average::Max),
            _ => None,
        }
    }

    /// The flag value (0 to 3) that selects this combination.
    pub const fn flag(self) -> u32 {
        match self {
            Average::Rank0 => 0,
            Average::Mean => 1,
            Average::Min => 2,
            Average::Max => 3,
        }
    }

    /// What the reported time is, for the line above the table.
    pub const fn describe(self) -> &'static str {
        match self {
            Average::Rank0 => "rank 0's time (-a 0)",
            Average::Mean => "mean over ranks (-a 1)",
            Average::Min => "minimum over ranks (-a 2)",
            Average::Max => "maximum over ranks (-a 3)",
        }
    }

    /// Combine this rank's `secs` with every other rank's. Every rank must call it (the
    /// mean, minimum and maximum are all-reduces of one `f64`); with [`Average::Rank0`] no
    /// communication happens and each rank gets its own value back.
    pub fn combine(self, comm: &dyn PerfComm, secs: f64) -> Result<f64> {
        let op = match self {
            Average::Rank0 => return Ok(secs),
            Average::Mean => ReduceOp::Sum,
            Average::Min => ReduceOp::Min,
            Average::Max => ReduceOp::Max,
        };
        let reduced = all_reduce_f64(comm, secs, op)?;
        Ok(if self == Average::Mean {
            reduced / comm.size().max(1) as f64
        } else {
            reduced
        })
    }
}

impl fmt::Display for Average {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.flag())
    }
}

/// `x` reduced with `op` over all ranks (an all-reduce of one `f64`).
pub fn all_reduce_f64(comm: &dyn PerfComm, x: f64, op: ReduceOp) -> Result<f64> {
    let mut out = AlignedBuf::new(8);
    let input = AlignedBuf::from_bytes(&x.to_ne_bytes());
    let (kind, dt) = (CollKind::AllReduce, DataType::Float64);
    comm.collective_bytes(kind, Some(input.bytes()), out.bytes_mut(), 1, dt, op, 0)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(out.bytes());
    Ok(f64::from_ne_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::fake;
    use std::thread;

    /// Every rank's combined value when rank r contributes `times[r]`.
    fn combined(avg: Average, times: &[f64]) -> Vec<f64> {
        thread::scope(|s| {
            let hs: Vec<_> = fake::group(times.len())
                .into_iter()
                .map(|c| s.spawn(move || avg.combine(&c, times[c.rank()]).expect("combine")))
                .collect();
            hs.into_iter().map(|h| h.join().expect("rank")).collect()
        })
    }

    #[test]
    fn flags_round_trip_and_range() {
        for n in 0..4 {
            assert_eq!(Average::from_flag(n).map(Average::flag), Some(n));
        }
        assert_eq!(Average::from_flag(4), None);
    }

    #[test]
    fn each_definition() {
        let t = [3.0, 1.0, 8.0, 4.0];
        assert_eq!(combined(Average::Rank0, &t), t.to_vec());
        assert_eq!(combined(Average::Mean, &t), vec![4.0; 4]);
        assert_eq!(combined(Average::Min, &t), vec![1.0; 4]);
        assert_eq!(combined(Average::Max, &t), vec![8.0; 4]);
        assert_eq!(combined(Average::Mean, &[2.5]), vec![2.5]);
    }
}
