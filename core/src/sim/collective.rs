//! Simulating one collective call end to end: plan every rank, lay out its buffers the way
//! a caller would (NCCL's in-place layouts included), run, and hand back the buffers.

use super::{RankMem, SendMode, Sim, SimRank, SimReport};
use crate::error::{Error, Result};
use crate::plan::{buffer_elems, plan, PlanConfig};
use crate::schedule::Schedule;
use crate::types::{CollDesc, CollKind, Rank};

/// Byte pattern of output memory before the call, so that elements a schedule fails to
/// write stand out.
pub const OUTPUT_FILL: u8 = 0xEE;

/// The buffers of every rank after a simulated collective.
#[derive(Clone, Debug)]
pub struct CollectiveRun {
    /// Each rank's `Output` view (in place: the part of the shared buffer that is output).
    pub outputs: Vec<Vec<u8>>,
    /// Each rank's `Input` view afterwards.
    pub inputs: Vec<Vec<u8>>,
    /// Message counts.
    pub report: SimReport,
}

/// Plan `desc` for all `nranks` ranks with `cfg`, and simulate it with `inputs[r]` as rank
/// `r`'s input bytes (NCCL's input size for the kind, see [`buffer_elems`]).
///
/// Out of place, each `Output` starts filled with [`OUTPUT_FILL`]. In place, the single
/// buffer of each rank holds the input where NCCL expects it (all-gather: at
/// `Output[r*count..]`, the rest filled; reduce-scatter: the whole input, output at
/// `r*count`; otherwise input and output coincide).
///
/// # Errors
///
/// Planning errors as [`Error::InvalidArgument`]; wrongly sized inputs likewise; a defect
/// found by the simulator as [`Error::Internal`] with the [`super::SimError`]'s text.
pub fn run_collective(
    desc: &CollDesc,
    nranks: usize,
    inplace: bool,
    cfg: &PlanConfig,
    inputs: &[Vec<u8>],
    mode: SendMode,
) -> Result<CollectiveRun> {
    run_collective_with(desc, nranks, inplace, inputs, mode, |r| {
        plan(desc, r, nranks, inplace, cfg)
    })
}

/// [`run_collective`] with the schedule of each rank `r` given by `planner(r)` instead of
/// [`plan`] (for the host-aware planners, say); `planner` must plan `desc` with the same
/// `inplace` flag for the buffers to be laid out right.
///
/// # Errors
///
/// As [`run_collective`], with `planner`'s errors passed on.
pub fn run_collective_with(
    desc: &CollDesc,
    nranks: usize,
    inplace: bool,
    inputs: &[Vec<u8>],
    mode: SendMode,
    planner: impl Fn(Rank) -> Result<Schedule>,
) -> Result<CollectiveRun> {
    let (in_elems, out_elems) = buffer_elems(desc, nranks)?;
    let esize = desc.dtype.size();
    let (in_bytes, out_bytes) = (in_elems * esize, out_elems * esize);
    if inputs.len() != nranks {
        return Err(Error::invalid(format!(
            "{} inputs for {nranks} ranks",
            inputs.len()
        )));
    }
    let mut ranks = Vec::with_capacity(nranks);
    for (r, input) in inputs.iter().enumerate() {
        if input.len() != in_bytes {
            return Err(Error::invalid(format!(
                "input of rank {r} has {} bytes, {desc} needs {in_bytes}",
                input.len()
            )));
        }
        let schedule = planner(r)?;
        let mem = if !inplace {
            RankMem::separate(input, &vec![OUTPUT_FILL; out_bytes])
        } else {
            let block = desc.count * esize * r;
            match desc.kind {
                CollKind::AllGather => {
                    let mut buf = vec![OUTPUT_FILL; out_bytes];
                    buf[block..block + in_bytes].copy_from_slice(input);
                    RankMem::aliased(&buf, (block, in_bytes), (0, out_bytes))
                }
                CollKind::ReduceScatter => {
                    RankMem::aliased(input, (0, in_bytes), (block, out_bytes))
                }
                _ => RankMem::aliased(input, (0, in_bytes), (0, out_bytes)),
            }
        };
        ranks.push(SimRank { schedule, mem });
    }
    let sim = Sim {
        dtype: desc.dtype,
        op: desc.op,
        mode,
    };
    let report = sim.run(&mut ranks)?;
    Ok(CollectiveRun {
        outputs: ranks.iter().map(|r| r.mem.output().to_vec()).collect(),
        inputs: ranks.iter().map(|r| r.mem.input().to_vec()).collect(),
        report,
    })
}
