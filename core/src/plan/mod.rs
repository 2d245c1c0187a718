//! Collective algorithms as pure per-rank [`Schedule`]s.
//!
//! Each algorithm is a function from (collective, rank, world size, in-place flag,
//! [`PlanConfig`]) to the [`Schedule`] that one rank executes; no algorithm touches a socket.
//! The simulator ([`crate::sim`]) runs the schedules of all ranks in memory and is the oracle
//! of every algorithm test (see `plan/tests.rs`).
//!
//! The entry points are [`plan`], [`plan_all_to_all_v`] and [`plan_send_recv`], which
//! validate their arguments; the algorithm modules document how each schedule is built.
//!
//! | collective | algorithm | module |
//! | --- | --- | --- |
//! | all_reduce | ring reduce-scatter + ring all-gather, pipelined double binary tree, recursive doubling (small messages), or Rabenseifner's halving-doubling | [`ring_all_reduce`], [`tree`], [`recursive_doubling`], [`rabenseifner`] |
//! | reduce_scatter | ring | [`reduce_scatter`] |
//! | all_gather | ring | [`all_gather`] |
//! | broadcast, reduce | pipelined chain or binomial tree | [`chain`], [`binomial`] |
//! | all_to_all, all_to_all_v | pairwise exchange | [`all_to_all`] |
//! | barrier | dissemination | [`barrier`] |
//! | send/recv groups | one step of point-to-point transfers | [`send_recv`] |
//!
//! Host-aware variants ([`plan_hierarchical`], [`plan_host_ring_all_reduce`], on a [`Hosts`]
//! layout): two-level all_reduce, reduce_scatter, all_gather, broadcast and reduce
//! ([`hier_all_reduce`], in pipeline segments for large calls
//! ([`hier_all_reduce_pipelined`]), [`hier_reduce_scatter`], [`hier_all_gather`],
//! [`hier_broadcast`], [`hier_reduce`]) and the ring all-reduce in host order ([`host_ring`]).
//!
//! ## Buffer conventions
//!
//! Counts follow NCCL's (see [`CollKind`]). In place, the caller's input and output are one
//! allocation: for all_gather the input is `Output[rank*count ..]`, for reduce_scatter the
//! output is `Input[rank*count ..]`, for every other kind `Input` and `Output` are the same
//! memory at the same offsets. An in-place schedule is correct under that aliasing; an
//! out-of-place schedule never writes `Input`. Reduce never writes the `Output` of a
//! non-root rank (partial sums live in `Scratch`).
//!
//! ## Deadlock freedom
//!
//! Every multi-rank algorithm here is laid out on a global clock (see `timeline.rs`): the
//! n-th send from `a` to `b` and the n-th receive from `a` at `b` sit at the same global
//! time on both ranks, and ranks skip the times at which they have nothing to do. Such
//! schedules complete even when every send is synchronous (a send finishes only once the
//! matching receive is posted), so they need no buffering from the transport.

use crate::error::{Error, Result};
use crate::model::CostModel;
use crate::schedule::{Action, BufId, Schedule, Slice};
use crate::types::{Algo, CollDesc, CollKind, DataType, Rank, ReduceOp};

pub mod all_gather;
pub mod all_to_all;
pub mod barrier;
pub mod binomial;
pub mod chain;
mod fold;
mod group;
mod group_ring;
pub mod hier_all_gather;
pub mod hier_all_reduce;
pub mod hier_all_reduce_pipelined;
pub mod hier_broadcast;
pub mod hier_reduce;
pub mod hier_reduce_scatter;
pub mod hierarchical;
pub mod host_ring;
pub mod hosts;
mod on_hosts;
pub mod rabenseifner;
pub mod recursive_doubling;
pub mod reduce_scatter;
pub mod ring_all_reduce;
pub mod send_recv;
mod timeline;
pub mod tree;

pub use hierarchical::{plan_hierarchical, plan_host_ring_all_reduce};
pub use hosts::Hosts;
pub use on_hosts::{choose_algo_on, plan_on};
pub use send_recv::P2p;

#[cfg(test)]
mod tests;

/// Default pipeline segment: 1 MiB.
pub const DEFAULT_SEGMENT_BYTES: usize = 1 << 20;

/// Upper bound on the number of pipeline segments of one call. Larger calls get larger
/// segments, so that a huge `count` cannot make a schedule of billions of steps.
pub const MAX_SEGMENTS: usize = 1 << 16;

/// Tuning knobs of the planner.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanConfig {
    /// Force an algorithm (`DMSC_ALGO`); `None` lets the cost model choose. For broadcast
    /// and reduce, [`Algo::Ring`] means the pipelined chain and [`Algo::Tree`] the binomial
    /// tree; other collectives have a single algorithm and ignore this.
    pub algo: Option<Algo>,
    /// Pipeline segment size in bytes for the tree all-reduce and the chain broadcast and
    /// reduce (rounded down to whole elements, at least one). Must be positive.
    pub segment_bytes: usize,
    /// The cost model used to choose between algorithms: of the links within a host, and
    /// of all links when the communicator runs on one host.
    pub model: CostModel,
    /// The cost model of the links between hosts (used when the ranks span hosts).
    pub inter: CostModel,
    /// All-reduces of up to this many bytes per rank run Rabenseifner's halving-doubling
    /// whatever the cost model says, when the ranks of one host are a power of two of at least
    /// 4 (0, the default: never). Set for a host with more ranks than cores, where a step
    /// costs a context switch rather than a ring hand-off and the α–β model misjudges the
    /// schedules: a measured threshold, as Open MPI's tuned decision rules are.
    pub halving_doubling_max_bytes: usize,
    /// All-reduces of up to this many bytes per rank are left to the cost model even within
    /// [`PlanConfig::halving_doubling_max_bytes`] (0, the default: none). On a host with
    /// more ranks than cores, where the model (with the larger alpha it is given there)
    /// takes recursive doubling for small vectors, `log2 p` whole-vector exchanges beat
    /// halving-doubling's `2·log2 p` steps until the bytes matter.
    pub halving_doubling_min_bytes: usize,
}

impl PlanConfig {
    /// The settings of one phase of a host-aware algorithm, whose flat algorithm is priced
    /// with `model` (the links the phase uses): a forced host-aware algorithm is dropped
    /// (the phase is flat), any other forced algorithm is kept.
    pub fn for_phase(&self, model: CostModel) -> PlanConfig {
        PlanConfig {
            algo: self.algo.filter(|a| !a.is_host_aware()),
            model,
            ..*self
        }
    }
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            algo: None,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            model: CostModel::default(),
            inter: CostModel::default(),
            halving_doubling_max_bytes: 0,
            halving_doubling_min_bytes: 0,
        }
    }
}

impl PlanConfig {
    /// Segment length in elements of `dtype` for a call of `count` elements: at least one
    /// element, and large enough that there are at most [`MAX_SEGMENTS`] segments.
    pub fn segment_elems(&self, dtype: DataType, count: usize) -> usize {
        let seg = (self.segment_bytes / dtype.size()).max(1);
        seg.max(count.div_ceil(MAX_SEGMENTS))
    }
}

/// The schedule rank `rank` of `nranks` runs for the collective `desc`.
///
/// `inplace` says that the caller's input and output buffers alias as described in the
/// [module documentation](self). All-to-all-v and send/recv groups have their own planners
/// ([`plan_all_to_all_v`], [`plan_send_recv`]). `count == 0` gives an empty schedule (no
/// messages) for every kind but barrier.
///
/// # Errors
///
/// [`Error::InvalidArgument`] naming the argument when `nranks` is 0, `rank` or a root is
/// out of range, the buffer sizes overflow, `segment_bytes` is 0, or `desc.kind` is
/// all-to-all-v or send/recv.
pub fn plan(
    desc: &CollDesc,
    rank: Rank,
    nranks: usize,
    inplace: bool,
    cfg: &PlanConfig,
) -> Result<Schedule> {
    plan_flat(desc, rank, nranks, inplace, cfg, None)
}

/// [`plan`] with the flat algorithm `algo` (a host-aware one is an internal error), or the
/// one [`choose_algo`] picks when `None`.
fn plan_flat(
    desc: &CollDesc,
    rank: Rank,
    nranks: usize,
    inplace: bool,
    cfg: &PlanConfig,
    algo: Option<Algo>,
) -> Result<Schedule> {
    validate(desc, rank, nranks, cfg)?;
    let CollDesc { count, .. } = *desc;
    if desc.kind == CollKind::Barrier {
        return Ok(barrier::plan(rank, nranks));
    }
    if count == 0 {
        return Ok(Schedule::default());
    }
    if nranks == 1 {
        return Ok(single_rank(desc, inplace));
    }
    let seg = cfg.segment_elems(desc.dtype, count);
    let avg = desc.op == ReduceOp::Avg;
    let algo = algo.unwrap_or_else(|| choose_algo(desc, nranks, cfg));
    Ok(match desc.kind {
        CollKind::AllReduce => match algo {
            Algo::Ring => ring_all_reduce::plan(rank, nranks, count, avg),
            Algo::Tree => tree::plan(rank, nranks, count, seg, avg),
            Algo::RecursiveDoubling => recursive_doubling::plan(rank, nranks, count, avg),
            Algo::Rabenseifner => rabenseifner::plan(rank, nranks, count, avg),
            Algo::Hierarchical | Algo::HostRing => {
                return Err(Error::internal(
                    "a host-aware algorithm reached the flat planner",
                ))
            }
        },
        CollKind::ReduceScatter => reduce_scatter::plan(rank, nranks, count, inplace, avg),
        CollKind::AllGather => all_gather::plan(rank, nranks, count, inplace),
        CollKind::Broadcast => match algo {
            Algo::Ring => chain::broadcast(rank, nranks, desc.root, count, seg, inplace),
            Algo::Tree
            | Algo::RecursiveDoubling
            | Algo::Rabenseifner
            | Algo::Hierarchical
            | Algo::HostRing => binomial::broadcast(rank, nranks, desc.root, count, inplace),
        },
        CollKind::Reduce => match algo {
            Algo::Ring => chain::reduce(rank, nranks, desc.root, count, seg, avg),
            Algo::Tree
            | Algo::RecursiveDoubling
            | Algo::Rabenseifner
            | Algo::Hierarchical
            | Algo::HostRing => binomial::reduce(rank, nranks, desc.root, count, avg),
        },
        CollKind::AllToAll => all_to_all::plan(rank, nranks, count, inplace),
        CollKind::Barrier | CollKind::AllToAllV | CollKind::SendRecv => {
            return Err(Error::internal(format!("{} reached plan", desc.kind)))
        }
    })
}

/// The algorithm [`plan`] uses for this call (for logging and dmsc-perf).
///
/// For all-reduce: [`Algo::Ring`], [`Algo::Tree`] (double binary tree),
/// [`Algo::RecursiveDoubling`] or [`Algo::Rabenseifner`]. For broadcast and reduce:
/// [`Algo::Ring`] stands for the pipelined chain, [`Algo::Tree`] (and a forced
/// [`Algo::RecursiveDoubling`] or [`Algo::Rabenseifner`]) for the
/// binomial tree. Every other collective has one algorithm and reports [`Algo::Ring`]. A forced
/// [`PlanConfig::algo`] wins where it applies; then an all-reduce above
/// [`PlanConfig::halving_doubling_min_bytes`] and within
/// [`PlanConfig::halving_doubling_max_bytes`] takes [`Algo::Rabenseifner`]; otherwise the
/// cheaper prediction of [`PlanConfig::model`] does (ring on ties). This is the choice on one host: a forced
/// host-aware algorithm ([`Algo::Hierarchical`], [`Algo::HostRing`]) leaves it to the cost
/// model, and [`choose_algo_on`] chooses for ranks spread over hosts.
pub fn choose_algo(desc: &CollDesc, nranks: usize, cfg: &PlanConfig) -> Algo {
    let has_choice = matches!(
        desc.kind,
        CollKind::AllReduce | CollKind::Broadcast | CollKind::Reduce
    );
    if !has_choice || nranks <= 1 {
        return Algo::Ring;
    }
    // On one host a host-aware algorithm is the flat one the cost model picks (its phases
    // within the host are flat collectives).
    if let Some(a) = cfg.algo.filter(|a| !a.is_host_aware()) {
        return match (desc.kind, a) {
            (CollKind::AllReduce, a) => a,
            (_, Algo::RecursiveDoubling | Algo::Rabenseifner) => Algo::Tree,
            (_, a) => a,
        };
    }
    let bytes = desc.count.saturating_mul(desc.dtype.size());
    if desc.kind == CollKind::AllReduce
        && nranks >= 4
        && nranks.is_power_of_two()
        && bytes <= cfg.halving_doubling_max_bytes
        && bytes > cfg.halving_doubling_min_bytes
    {
        return Algo::Rabenseifner;
    }
    let seg = cfg.segment_elems(desc.dtype, desc.count) * desc.dtype.size();
    let m = &cfg.model;
    let (ring, tree) = match desc.kind {
        CollKind::AllReduce => (
            m.ring_all_reduce(bytes, nranks),
            m.tree_all_reduce(bytes, nranks, seg),
        ),
        CollKind::Broadcast => (
            m.chain_broadcast(bytes, nranks, seg),
            m.binomial_broadcast(bytes, nranks),
        ),
        _ => (
            m.chain_reduce(bytes, nranks, seg),
            m.binomial_reduce(bytes, nranks),
        ),
    };
    if desc.kind == CollKind::AllReduce {
        let rd = m.recursive_doubling_all_reduce(bytes, nranks);
        if rd < ring && rd < tree {
            return Algo::RecursiveDoubling;
        }
    }
    if tree < ring {
        Algo::Tree
    } else {
        Algo::Ring
    }
}

/// Element counts of the `(Input, Output)` buffers one rank passes for `desc` (NCCL's
/// conventions; both are `count` for broadcast and reduce on every rank, 0 for barrier).
///
/// # Errors
///
/// [`Error::InvalidArgument`] when the sizes overflow, or for all-to-all-v and send/recv,
/// whose sizes are not described by a `count`.
pub fn buffer_elems(desc: &CollDesc, nranks: usize) -> Result<(usize, usize)> {
    let c = desc.count;
    let total = || {
        c.checked_mul(nranks)
            .filter(|t| t.checked_mul(desc.dtype.size()).is_some())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "count {c} times {nranks} ranks of {} overflows the address space",
                    desc.dtype
                ))
            })
    };
    Ok(match desc.kind {
        CollKind::AllReduce | CollKind::Broadcast | CollKind::Reduce => (c, c),
        CollKind::ReduceScatter => (total()?, c),
        CollKind::AllGather => (c, total()?),
        CollKind::AllToAll => (total()?, total()?),
        CollKind::Barrier => (0, 0),
        CollKind::AllToAllV | CollKind::SendRecv => {
            return Err(Error::invalid(format!(
                "{} has no single count: use plan_all_to_all_v or plan_send_recv",
                desc.kind
            )))
        }
    })
}

/// Plan an all-to-all-v: `send_counts[j]` elements from `Input[send_displs[j]..]` go to
/// rank `j` and land at its `Output[recv_displs[rank]..]`; `recv_counts[j]` elements arrive
/// from rank `j` at `Output[recv_displs[j]..]`. Counts and displacements are in elements.
///
/// Displacement ranges may overlap and come in any order. In place, `Input` and `Output`
/// are the same memory: every range to send is first packed into `Scratch` (as many
/// elements as are sent in all), so receives never overwrite data not yet sent.
///
/// Inconsistencies between ranks (what `i` sends to `j` is not what `j` expects from `i`)
/// cannot be seen from one rank; the engine reports them as a length mismatch.
///
/// # Errors
///
/// [`Error::InvalidArgument`] when a slice does not have `nranks` entries, a range
/// overflows, `send_counts[rank] != recv_counts[rank]`, or `rank`/`nranks` are invalid.
#[allow(clippy::too_many_arguments)]
pub fn plan_all_to_all_v(
    rank: Rank,
    nranks: usize,
    dtype: DataType,
    send_counts: &[usize],
    send_displs: &[usize],
    recv_counts: &[usize],
    recv_displs: &[usize],
    inplace: bool,
) -> Result<Schedule> {
    validate_world(rank, nranks)?;
    let v = all_to_all::VSpec::new(
        rank,
        nranks,
        dtype,
        [send_counts, send_displs, recv_counts, recv_displs],
    )?;
    Ok(all_to_all::plan_v(&v, inplace))
}

/// Plan a group of point-to-point operations: one step holding the operations in the
/// given order. `P2p::Send` sends `Group(buf)[0..len]` to `peer`; `P2p::Recv` receives
/// `len` elements from `peer` into `Group(buf)[0..len]`.
///
/// Action `i` of the step is the `i`-th operation whose peer is not `rank` (zero-length ones
/// included); sends to and receives from `rank` itself are paired in order and become local
/// copies after the transfers. An empty group (or one of self copies only) has no transfers.
///
/// # Errors
///
/// [`Error::InvalidArgument`] when a peer is out of range or the self sends and self
/// receives do not pair up with equal lengths.
pub fn plan_send_recv(rank: Rank, nranks: usize, ops: &[P2p]) -> Result<Schedule> {
    validate_world(rank, nranks)?;
    send_recv::plan(rank, nranks, ops)
}

/// The number of elements of `buf` a schedule touches (the largest slice end), so the
/// engine can check the caller's buffers are large enough before running it.
pub fn extent(schedule: &Schedule, buf: BufId) -> usize {
    schedule
        .steps
        .iter()
        .flat_map(|s| &s.actions)
        .flat_map(|a| a.reads().chain(a.writes()))
        .filter(|s| s.buf == buf)
        .map(|s| s.offset.saturating_add(s.len))
        .max()
        .unwrap_or(0)
}

fn validate_world(rank: Rank, nranks: usize) -> Result<()> {
    if nranks == 0 {
        return Err(Error::invalid("nranks must be at least 1, got 0"));
    }
    if rank >= nranks {
        return Err(Error::invalid(format!(
            "rank {rank} is out of range for {nranks} ranks"
        )));
    }
    Ok(())
}

fn validate(desc: &CollDesc, rank: Rank, nranks: usize, cfg: &PlanConfig) -> Result<()> {
    validate_world(rank, nranks)?;
    buffer_elems(desc, nranks)?;
    if desc.count.checked_mul(desc.dtype.size()).is_none() {
        return Err(Error::invalid(format!(
            "count {} of {} overflows the address space",
            desc.count, desc.dtype
        )));
    }
    if matches!(desc.kind, CollKind::Broadcast | CollKind::Reduce) && desc.root >= nranks {
        return Err(Error::invalid(format!(
            "root {} is out of range for {nranks} ranks",
            desc.root
        )));
    }
    if cfg.segment_bytes == 0 {
        return Err(Error::invalid("segment_bytes must be positive"));
    }
    Ok(())
}

/// One rank alone: copy input to output (a no-op in place) and divide for `Avg`.
fn single_rank(desc: &CollDesc, inplace: bool) -> Schedule {
    let c = desc.count;
    let mut s = Schedule::default();
    if !inplace {
        s.push(vec![Action::Copy {
            src: Slice::new(BufId::Input, 0, c),
            dst: Slice::new(BufId::Output, 0, c),
        }]);
    }
    let reduces = matches!(
        desc.kind,
        CollKind::AllReduce | CollKind::ReduceScatter | CollKind::Reduce
    );
    if reduces && desc.op == ReduceOp::Avg {
        s.push(vec![Action::Scale {
            dst: Slice::new(BufId::Output, 0, c),
        }]);
    }
    s
}

/// Block `i` of `count` elements split as evenly as possible into `n` blocks (the first
/// `count % n` blocks are one element longer): `(offset, len)`.
pub(crate) fn block(count: usize, n: usize, i: usize) -> (usize, usize) {
    let (base, rem) = (count / n, count % n);
    (i * base + i.min(rem), base + usize::from(i < rem))
}

/// Segment `k` of the range `[start, start + len)` cut into pieces of `seg` elements.
pub(crate) fn segment(start: usize, len: usize, seg: usize, k: usize) -> Slice2 {
    let off = k * seg;
    (start + off, seg.min(len - off))
}

/// `(offset, len)` in elements.
pub(crate) type Slice2 = (usize, usize);

/// `rank + d` modulo `n`, for `d` of any size.
pub(crate) fn add(rank: Rank, d: usize, n: usize) -> Rank {
    (rank + d % n) % n
}

/// `rank - d` modulo `n`.
pub(crate) fn sub(rank: Rank, d: usize, n: usize) -> Rank {
    (rank + n - d % n) % n
}

pub(crate) fn sl(buf: BufId, (offset, len): Slice2) -> Slice {
    Slice::new(buf, offset, len)
}
