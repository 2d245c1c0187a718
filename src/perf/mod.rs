//! `dmsc-perf`: end-to-end bandwidth of the collectives, measured and printed the way
//! [nccl-tests](https://github.com/NVIDIA/nccl-tests) does it, so that its figures can be read
//! next to NCCL's.
//!
//! * [`args`]: the command line (nccl-tests' flags, plus `--np`, `--json` and `--csv`).
//! * [`average`]: how per-rank times are combined into the reported time (`-a`).
//! * [`sizes`]: message sizes, element counts per collective and bus-bandwidth factors
//!   (nccl-tests' `getCollByteCount` and `getBw`, see its `doc/PERFORMANCE.md`).
//! * [`check`]: deterministic rank-dependent inputs and the expected results, to count wrong
//!   elements (the `#wrong` column).
//! * [`vsplit`]: the non-uniform per-peer counts of `all_to_allv`.
//! * [`huge`]: huge-page advice for large buffers, as numpy gives its arrays.
//! * [`osu`]: the OSU-style point-to-point mode (`osu_latency`, `osu_bw`, `osu_bibw`).
//! * [`ranks`]: the per-rank lines above the table (process id and host of every rank).
//! * [`report`]: the table, the footer, the JSON report and the CSV file.
//! * [`comm`]: what dmsc-perf needs of a communicator ([`comm::PerfComm`]); [`buf`]: aligned
//!   buffers; `call`: one measured call, blocking or not; [`device`]: device buffers of the
//!   measured calls (`--device cuda`).
//! * [`run`]: the driver: the timed loops and checks of every row.
//! * [`main`]: the program: command line, `--np`, joining a job, the OSU mode.
//!
//! Only rank 0 prints; every rank prints its own errors.

pub mod args;
pub mod average;
pub mod buf;
mod call;
pub mod check;
pub mod comm;
pub mod device;
pub mod huge;
pub mod main;
pub mod osu;
pub mod ranks;
pub mod report;
pub mod run;
pub mod sizes;
pub mod vsplit;

#[cfg(test)]
mod fake;

use crate::CollKind;
use std::fmt;

/// The collectives dmsc-perf measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PerfOp {
    /// `all_reduce` (nccl-tests' all_reduce_perf).
    AllReduce,
    /// `all_gather` (all_gather_perf).
    AllGather,
    /// `reduce_scatter` (reduce_scatter_perf).
    ReduceScatter,
    /// `broadcast` (broadcast_perf).
    Broadcast,
    /// `reduce` (reduce_perf).
    Reduce,
    /// `all_to_all` (alltoall_perf).
    AllToAll,
    /// `sendrecv` (sendrecv_perf): every rank sends to rank+1 and receives from rank-1.
    SendRecv,
    /// `all_to_allv`: [`crate::Communicator::all_to_all_v_bytes`] with the non-uniform
    /// per-peer counts of [`vsplit`] (nccl-tests has no such binary).
    AllToAllV,
    /// `gather` (gather_perf): every rank sends its block to the root, which receives one
    /// block from each rank, all in one group of sends and receives ([`crate::Group`]).
    Gather,
    /// `scatter` (scatter_perf): the root sends block `r` to each rank `r`, which receives
    /// it, all in one group of sends and receives.
    Scatter,
}

impl PerfOp {
    /// Every collective, in the order of the usage text.
    pub const ALL: [PerfOp; 10] = [
        PerfOp::AllReduce,
        PerfOp::AllGather,
        PerfOp::ReduceScatter,
        PerfOp::Broadcast,
        PerfOp::Reduce,
        PerfOp::AllToAll,
        PerfOp::SendRecv,
        PerfOp::AllToAllV,
        PerfOp::Gather,
        PerfOp::Scatter,
    ];

    /// The name used on the command line and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            PerfOp::AllReduce => "all_reduce",
            PerfOp::AllGather => "all_gather",
            PerfOp::ReduceScatter => "reduce_scatter",
            PerfOp::Broadcast => "broadcast",
            PerfOp::Reduce => "reduce",
            PerfOp::AllToAll => "all_to_all",
            PerfOp::SendRecv => "sendrecv",
            PerfOp::AllToAllV => "all_to_allv",
            PerfOp::Gather => "gather",
            PerfOp::Scatter => "scatter",
        }
    }

    /// Parse a name: ours, nccl-tests' binary names (`all_reduce_perf`, `alltoall_perf`,
    /// `sendrecv_perf`), with `-` or `_` and in any case.
    pub fn parse(s: &str) -> Option<PerfOp> {
        let s = s.to_ascii_lowercase().replace('-', "_");
        let s = s.strip_suffix("_perf").unwrap_or(&s);
        Some(match s {
            "all_reduce" | "allreduce" => PerfOp::AllReduce,
            "all_gather" | "allgather" => PerfOp::AllGather,
            "reduce_scatter" | "reducescatter" => PerfOp::ReduceScatter,
            "broadcast" | "bcast" => PerfOp::Broadcast,
            "reduce" => PerfOp::Reduce,
            "all_to_all" | "alltoall" => PerfOp::AllToAll,
            "sendrecv" | "send_recv" => PerfOp::SendRecv,
            "all_to_allv" | "all_to_all_v" | "alltoallv" => PerfOp::AllToAllV,
            "gather" => PerfOp::Gather,
            "scatter" => PerfOp::Scatter,
            _ => return None,
        })
    }

    /// The collective kind this measures (gather and scatter are groups of sends and
    /// receives: [`CollKind::SendRecv`]).
    pub const fn kind(self) -> CollKind {
        match self {
            PerfOp::AllReduce => CollKind::AllReduce,
            PerfOp::AllGather => CollKind::AllGather,
            PerfOp::ReduceScatter => CollKind::ReduceScatter,
            PerfOp::Broadcast => CollKind::Broadcast,
            PerfOp::Reduce => CollKind::Reduce,
            PerfOp::AllToAll => CollKind::AllToAll,
            PerfOp::SendRecv | PerfOp::Gather | PerfOp::Scatter => CollKind::SendRecv,
            PerfOp::AllToAllV => CollKind::AllToAllV,
        }
    }

    /// True when the collective applies a reduction operator (`-o` matters).
    pub const fn reduces(self) -> bool {
        matches!(
            self,
            PerfOp::AllReduce | PerfOp::ReduceScatter | PerfOp::Reduce
        )
    }

    /// True when the collective has a root (`-r` matters).
    pub const fn has_root(self) -> bool {
        matches!(
            self,
            PerfOp::Broadcast | PerfOp::Reduce | PerfOp::Gather | PerfOp::Scatter
        )
    }

    /// True when dmsc-perf measures an in-place variant. `sendrecv` has none: a send and a
    /// receive cannot share one buffer safely (nccl-tests does not check it either).
    pub const fn has_in_place(self) -> bool {
        !matches!(self, PerfOp::SendRecv)
    }

    /// True when dmsc-perf measures it on device buffers (`--device cuda`): the collectives
    /// with one call each; gather, scatter (groups of sends), all_to_allv and sendrecv run on
    /// host buffers only.
    pub const fn on_device(self) -> bool {
        !matches!(
            self,
            PerfOp::Gather | PerfOp::Scatter | PerfOp::AllToAllV | PerfOp::SendRecv
        )
    }
}

impl fmt::Display for PerfOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_nccl_aliases() {
        for op in PerfOp::ALL {
            assert_eq!(PerfOp::parse(op.name()), Some(op));
        }
        assert_eq!(PerfOp::parse("all_reduce_perf"), Some(PerfOp::AllReduce));
        assert_eq!(PerfOp::parse("alltoall"), Some(PerfOp::AllToAll));
        assert_eq!(PerfOp::parse("Reduce-Scatter"), Some(PerfOp::ReduceScatter));
        assert_eq!(PerfOp::parse("sendrecv_perf"), Some(PerfOp::SendRecv));
        assert_eq!(PerfOp::parse("alltoallv_perf"), Some(PerfOp::AllToAllV));
        assert_eq!(PerfOp::parse("gather_perf"), Some(PerfOp::Gather));
        assert_eq!(PerfOp::parse("all_gatherv"), None);
    }
}
