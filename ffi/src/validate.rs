//! From C arguments to a checked [`Call`]: decodes types, operators, ranks and counts (with
//! overflow checks) and hands the buffers, sized by the count as NCCL sizes them, to the
//! builders of [`dmsc_rs::call`], which recognise NCCL's in-place layouts
//! (`sendbuff == recvbuff`; for all-gather `sendbuff == recvbuff + rank * sendcount`
//! elements, for reduce-scatter `recvbuff == sendbuff + rank * recvcount` elements) and check
//! NULL pointers, alignment and overlaps for every front end alike. Shared by the blocking
//! calls, the `*Async` calls and group recording, so all three check arguments identically.

use crate::args::byte_len;
use crate::guard::{Ctx, Res};
use crate::premul::resolve;
use crate::types::{data_type, RawDataType, RawRedOp};
use dmsc_rs::call::{end_of, rank_arg, Call, CollArgs, Names, P2pCall, Span};
use dmsc_rs::{CollKind, Communicator, DataType, ReduceOp};
use std::ffi::{c_int, c_void};

/// The C names of the arguments.
const C_NAMES: Names = Names {
    input: "sendbuff",
    output: "recvbuff",
    in_place: "recvbuff",
    v: ["sendcounts", "sdispls", "recvcounts", "rdispls"],
};

/// Point-to-point buffers travel as bytes: a group may mix element types, as NCCL allows;
/// sender and receiver must agree on the byte count (and order), not on the type.
const P2P_WIRE_TYPE: DataType = DataType::Uint8;

/// The span of a C buffer: host memory, or with the `cuda` feature the memory the CUDA
/// driver says `p` is in (empty buffers are never touched and not looked up).
fn span(p: *const c_void, len: usize) -> Span {
    #[cfg(feature = "cuda")]
    if len > 0 {
        let kind = dmsc_transports::cuda::pointer::memory_kind(p as *const u8);
        return Span::in_memory(p as *const u8, len, kind);
    }
    Span::new(p as *const u8, len)
}

/// The root argument of `f`.
fn root_arg(f: &str, comm: &Communicator, root: c_int) -> Res<usize> {
    rank_arg("root", root, comm.size()).ctx(f)
}

/// A collective of `f` whose buffers hold `in_blocks` and `out_blocks` times `count`
/// elements (argument `cname`).
fn coll(
    f: &str,
    comm: &Communicator,
    (kind, (op, factor), root): (CollKind, (ReduceOp, Option<f64>), usize),
    (sendbuff, recvbuff): (*const c_void, *mut c_void),
    (cname, count): (&str, usize),
    (in_blocks, out_blocks): (usize, usize),
    dtype: DataType,
) -> Res<Call> {
    let in_len = byte_len(f, cname, count, in_blocks, dtype)?;
    let out_len = byte_len(f, cname, count, out_blocks, dtype)?;
    let args = CollArgs {
        kind,
        dtype,
        op,
        root,
        input: Some(span(sendbuff, in_len)),
        output: span(recvbuff, out_len),
        count: Some(count),
        factor,
    };
    Call::collective(comm.shape(), args, &C_NAMES).ctx(f)
}

/// `dmscAllReduce` arguments.
pub(crate) fn all_reduce(
    f: &str,
    comm: &Communicator,
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    op: RawRedOp,
) -> Res<Call> {
    let (dtype, op) = {
        let dtype = data_type(f, datatype)?;
        (dtype, resolve(f, comm, op, dtype)?)
    };
    let what = (CollKind::AllReduce, op, 0);
    coll(
        f,
        comm,
        what,
        (sendbuff, recvbuff),
        ("count", count),
        (1, 1),
        dtype,
    )
}

/// `dmscBroadcast` arguments; `sendbuff` is read on the root only (NULL elsewhere is fine).
pub(crate) fn broadcast(
    f: &str,
    comm: &Communicator,
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    root: c_int,
) -> Res<Call> {
    let dtype = data_type(f, datatype)?;
    let what = (
        CollKind::Broadcast,
        (ReduceOp::Sum, None),
        root_arg(f, comm, root)?,
    );
    coll(
        f,
        comm,
        what,
        (sendbuff, recvbuff),
        ("count", count),
        (1, 1),
        dtype,
    )
}

/// The one buffer of `dmscBcast`.
const BCAST_NAMES: Names = Names {
    input: "buff",
    output: "buff",
    in_place: "buff",
    v: C_NAMES.v,
};

/// `dmscBcast` arguments: an in-place broadcast of `buff`.
pub(crate) fn bcast(
    f: &str,
    comm: &Communicator,
    buff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    root: c_int,
) -> Res<Call> {
    let dtype = data_type(f, datatype)?;
    let root = root_arg(f, comm, root)?;
    let len = byte_len(f, "count", count, 1, dtype)?;
    let args = CollArgs {
        kind: CollKind::Broadcast,
        dtype,
        op: ReduceOp::Sum,
        root,
        input: Some(span(buff, len)),
        output: span(buff, len),
        count: Some(count),
        factor: None,
    };
    Call::collective(comm.shape(), args, &BCAST_NAMES).ctx(f)
}

/// `dmscReduce` arguments; `recvbuff` is written on the root only (NULL elsewhere is fine).
#[allow(clippy::too_many_arguments)]
pub(crate) fn reduce(
    f: &str,
    comm: &Communicator,
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    op: RawRedOp,
    root: c_int,
) -> Res<Call> {
    let (dtype, op) = {
        let dtype = data_type(f, datatype)?;
        (dtype, resolve(f, comm, op, dtype)?)
    };
    let what = (CollKind::Reduce, op, root_arg(f, comm, root)?);
    coll(
        f,
        comm,
        what,
        (sendbuff, recvbuff),
        ("count", count),
        (1, 1),
        dtype,
    )
}

/// `dmscAllGather` arguments.
pub(crate) fn all_gather(
    f: &str,
    comm: &Communicator,
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    sendcount: usize,
    datatype: RawDataType,
) -> Res<Call> {
    let dtype = data_type(f, datatype)?;
    let what = (CollKind::AllGather, (ReduceOp::Sum, None), 0);
    let blocks = (1, comm.size());
    coll(
        f,
        comm,
        what,
        (sendbuff, recvbuff),
        ("sendcount", sendcount),
        blocks,
        dtype,
    )
}

/// `dmscReduceScatter` arguments.
pub(crate) fn reduce_scatter(
    f: &str,
    comm: &Communicator,
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    recvcount: usize,
    datatype: RawDataType,
    op: RawRedOp,
) -> Res<Call> {
    let (dtype, op) = {
        let dtype = data_type(f, datatype)?;
        (dtype, resolve(f, comm, op, dtype)?)
    };
    let what = (CollKind::ReduceScatter, op, 0);
    let blocks = (comm.size(), 1);
    coll(
        f,
        comm,
        what,
        (sendbuff, recvbuff),
        ("recvcount", recvcount),
        blocks,
        dtype,
    )
}

/// `dmscAllToAll` arguments; `count` elements go to each peer.
pub(crate) fn all_to_all(
    f: &str,
    comm: &Communicator,
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
) -> Res<Call> {
    let dtype = data_type(f, datatype)?;
    let what = (CollKind::AllToAll, (ReduceOp::Sum, None), 0);
    let blocks = (comm.size(), comm.size());
    coll(
        f,
        comm,
        what,
        (sendbuff, recvbuff),
        ("count", count),
        blocks,
        dtype,
    )
}

/// Copy the per-rank array argument `name`.
///
/// # Safety
/// `p` is NULL or points to `n` readable `size_t`s.
unsafe fn per_rank(f: &str, name: &str, p: *const usize, n: usize) -> Res<Vec<usize>> {
    if p.is_null() {
        return Err(crate::guard::FfiError::invalid(
            f,
            format_args!("{name} is NULL"),
        ));
    }
    // SAFETY: non-NULL, and the caller passes one entry per rank.
    Ok(unsafe { std::slice::from_raw_parts(p, n) }.to_vec())
}

/// `dmscAllToAllv` arguments (counts and displacements in elements, one per rank).
///
/// # Safety
/// The four arrays are NULL or hold one `size_t` per rank.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn all_to_all_v(
    f: &str,
    comm: &Communicator,
    sendbuff: *const c_void,
    sendcounts: *const usize,
    sdispls: *const usize,
    recvbuff: *mut c_void,
    recvcounts: *const usize,
    rdispls: *const usize,
    datatype: RawDataType,
) -> Res<Call> {
    let dtype = data_type(f, datatype)?;
    let n = comm.size();
    // SAFETY: forwarded contract: each array is NULL (rejected) or has n entries.
    let v = unsafe {
        [
            per_rank(f, "sendcounts", sendcounts, n)?,
            per_rank(f, "sdispls", sdispls, n)?,
            per_rank(f, "recvcounts", recvcounts, n)?,
            per_rank(f, "rdispls", rdispls, n)?,
        ]
    };
    // The spans reach as far as the counts and displacements do; a length that overflows
    // is left empty, and the builder names the overflow.
    let es = dtype.size();
    let len = |c: &[usize], d: &[usize]| {
        let end = end_of(c, d).ok();
        end.and_then(|e| e.checked_mul(es)).unwrap_or(0)
    };
    let input = span(sendbuff, len(&v[0], &v[1]));
    let output = span(recvbuff, len(&v[2], &v[3]));
    Call::all_to_all_v(comm.shape(), dtype, Some(input), output, v, &C_NAMES).ctx(f)
}

/// `dmscBarrier`.
pub(crate) fn barrier() -> Call {
    Call::barrier()
}

/// `dmscSend` (`send`) or `dmscRecv` arguments, as a group of one.
pub(crate) fn p2p(
    f: &str,
    comm: &Communicator,
    send: bool,
    buff: *const c_void,
    count: usize,
    datatype: RawDataType,
    peer: c_int,
) -> Res<Call> {
    let dtype = data_type(f, datatype)?;
    let peer = rank_arg("peer", peer, comm.size()).ctx(f)?;
    let len = byte_len(f, "count", count, 1, dtype)?;
    let name = if send { "sendbuff" } else { "recvbuff" };
    if len > 0 && buff.is_null() {
        return Err(crate::guard::FfiError::invalid(
            f,
            format_args!("{name} is NULL"),
        ));
    }
    let op = P2pCall {
        send,
        peer,
        tag: 0,
        buf: span(buff, len),
        dtype: P2P_WIRE_TYPE,
    };
    Call::p2p(comm.shape(), vec![op]).ctx(f)
}
