//! From C arguments to a validated [`Op`]: decodes types and operators, checks pointers,
//! counts (with overflow checks), ranks and overlaps, and recognises NCCL's in-place layouts
//! (`sendbuff == recvbuff`; for all-gather `sendbuff == recvbuff + rank * sendcount`
//! elements, for reduce-scatter `recvbuff == sendbuff + rank * recvcount` elements), which
//! become dmsc's in-place form (no separate input). Shared by the blocking calls, the
//! `*Async` calls and group recording, so all three check arguments identically.

use crate::args::{byte_len, disjoint, rank_arg, span, Span};
use crate::guard::{FfiError, Res};
use crate::op::{Op, P2pOp};
use crate::types::{data_type, red_op, RawDataType, RawRedOp};
use dmsc_rs::{CollKind, Communicator, DataType, ReduceOp};
use std::ffi::{c_int, c_void};

/// True if the send and receive buffers start at the same address (in place).
fn same(sendbuff: *const c_void, recvbuff: *mut c_void) -> bool {
    std::ptr::eq(sendbuff, recvbuff)
}

/// Distinct send and receive buffers must not overlap (in place is `sendbuff == recvbuff`).
fn apart(f: &str, send: Span, recv: Span) -> Res<()> {
    disjoint(
        f,
        ("sendbuff", send),
        ("recvbuff", recv),
        "sendbuff == recvbuff",
    )
}

fn coll(kind: CollKind, input: Option<Span>, output: Span, count: usize, dtype: DataType) -> Op {
    Op::Coll {
        kind,
        input,
        output,
        count,
        dtype,
        op: ReduceOp::Sum,
        root: 0,
    }
}

fn with(mut o: Op, red: ReduceOp, at: usize) -> Op {
    if let Op::Coll { op, root, .. } = &mut o {
        *op = red;
        *root = at;
    }
    o
}

/// `dmscAllReduce` arguments.
pub(crate) fn all_reduce(
    f: &str,
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    op: RawRedOp,
) -> Res<Op> {
    let (dtype, op) = (data_type(f, datatype)?, red_op(f, op)?);
    let len = byte_len(f, "count", count, 1, dtype)?;
    let recv = span(f, "recvbuff", recvbuff, len, dtype)?;
    let input = if same(sendbuff, recvbuff) {
        None
    } else {
        let send = span(f, "sendbuff", sendbuff, len, dtype)?;
        apart(f, send, recv)?;
        Some(send)
    };
    Ok(with(
        coll(CollKind::AllReduce, input, recv, count, dtype),
        op,
        0,
    ))
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
) -> Res<Op> {
    let dtype = data_type(f, datatype)?;
    let root = rank_arg(f, "root", root, comm.size())?;
    let len = byte_len(f, "count", count, 1, dtype)?;
    let recv = span(f, "recvbuff", recvbuff, len, dtype)?;
    let input = if same(sendbuff, recvbuff) {
        None
    } else if comm.rank() == root {
        let send = span(f, "sendbuff", sendbuff, len, dtype)?;
        apart(f, send, recv)?;
        Some(send)
    } else {
        Some(Span::EMPTY)
    };
    let o = coll(CollKind::Broadcast, input, recv, count, dtype);
    Ok(with(o, ReduceOp::Sum, root))
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
) -> Res<Op> {
    let (dtype, op) = (data_type(f, datatype)?, red_op(f, op)?);
    let root = rank_arg(f, "root", root, comm.size())?;
    let len = byte_len(f, "count", count, 1, dtype)?;
    let send = span(f, "sendbuff", sendbuff, len, dtype)?;
    let o = if same(sendbuff, recvbuff) {
        coll(CollKind::Reduce, None, send, count, dtype)
    } else if comm.rank() == root {
        let recv = span(f, "recvbuff", recvbuff, len, dtype)?;
        apart(f, send, recv)?;
        coll(CollKind::Reduce, Some(send), recv, count, dtype)
    } else {
        coll(CollKind::Reduce, Some(send), Span::EMPTY, count, dtype)
    };
    Ok(with(o, op, root))
}

/// `dmscAllGather` arguments.
pub(crate) fn all_gather(
    f: &str,
    comm: &Communicator,
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    sendcount: usize,
    datatype: RawDataType,
) -> Res<Op> {
    let dtype = data_type(f, datatype)?;
    let block = byte_len(f, "sendcount", sendcount, 1, dtype)?;
    let total = byte_len(f, "sendcount", sendcount, comm.size(), dtype)?;
    let recv = span(f, "recvbuff", recvbuff, total, dtype)?;
    let mine = (recvbuff as *const u8).wrapping_add(comm.rank() * block);
    let input = if sendbuff as *const u8 == mine {
        None
    } else {
        let send = span(f, "sendbuff", sendbuff, block, dtype)?;
        let hint = "sendbuff == recvbuff + rank * sendcount elements";
        disjoint(f, ("sendbuff", send), ("recvbuff", recv), hint)?;
        Some(send)
    };
    Ok(coll(CollKind::AllGather, input, recv, sendcount, dtype))
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
) -> Res<Op> {
    let (dtype, op) = (data_type(f, datatype)?, red_op(f, op)?);
    let block = byte_len(f, "recvcount", recvcount, 1, dtype)?;
    let total = byte_len(f, "recvcount", recvcount, comm.size(), dtype)?;
    let send = span(f, "sendbuff", sendbuff, total, dtype)?;
    let mine = (sendbuff as *const u8).wrapping_add(comm.rank() * block);
    let o = if recvbuff as *const u8 == mine {
        coll(CollKind::ReduceScatter, None, send, recvcount, dtype)
    } else {
        let recv = span(f, "recvbuff", recvbuff, block, dtype)?;
        let hint = "recvbuff == sendbuff + rank * recvcount elements";
        disjoint(f, ("sendbuff", send), ("recvbuff", recv), hint)?;
        coll(CollKind::ReduceScatter, Some(send), recv, recvcount, dtype)
    };
    Ok(with(o, op, 0))
}

/// `dmscAllToAll` arguments; `count` elements go to each peer.
pub(crate) fn all_to_all(
    f: &str,
    comm: &Communicator,
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
) -> Res<Op> {
    let dtype = data_type(f, datatype)?;
    let total = byte_len(f, "count", count, comm.size(), dtype)?;
    let recv = span(f, "recvbuff", recvbuff, total, dtype)?;
    let input = if same(sendbuff, recvbuff) {
        None
    } else {
        let send = span(f, "sendbuff", sendbuff, total, dtype)?;
        apart(f, send, recv)?;
        Some(send)
    };
    Ok(coll(CollKind::AllToAll, input, recv, count, dtype))
}

/// Copy the per-rank array argument `name`.
///
/// # Safety
/// `p` is NULL or points to `n` readable `size_t`s.
unsafe fn per_rank(f: &str, name: &str, p: *const usize, n: usize) -> Res<Vec<usize>> {
    if p.is_null() {
        return Err(FfiError::invalid(f, format_args!("{name} is NULL")));
    }
    // SAFETY: non-NULL, and the caller passes one entry per rank.
    Ok(unsafe { std::slice::from_raw_parts(p, n) }.to_vec())
}

/// Elements spanned by counts `c` at displacements `d` (arguments `cn`, `dn`).
fn extent(f: &str, c: &[usize], d: &[usize], cn: &str, dn: &str) -> Res<usize> {
    c.iter()
        .zip(d)
        .enumerate()
        .try_fold(0usize, |m, (i, (&c, &d))| match c.checked_add(d) {
            Some(e) => Ok(if c == 0 { m } else { m.max(e) }),
            None => Err(FfiError::invalid(
                f,
                format_args!("{cn}[{i}] + {dn}[{i}] = {c} + {d} overflows size_t"),
            )),
        })
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
) -> Res<Op> {
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
    let s_end = extent(f, &v[0], &v[1], "sendcounts", "sdispls")?;
    let r_end = extent(f, &v[2], &v[3], "recvcounts", "rdispls")?;
    // A displacement without data means nothing; dmsc would still bound the buffer by it.
    let [sc, mut sd, rc, mut rd] = v;
    for (counts, displs) in [(&sc, &mut sd), (&rc, &mut rd)] {
        for (d, _) in displs.iter_mut().zip(counts).filter(|(_, &c)| c == 0) {
            *d = 0;
        }
    }
    let v = [sc, sd, rc, rd];
    let s_len = byte_len(f, "sendcounts + sdispls", s_end, 1, dtype)?;
    let r_len = byte_len(f, "recvcounts + rdispls", r_end, 1, dtype)?;
    let (input, output) = if same(sendbuff, recvbuff) {
        (
            None,
            span(f, "recvbuff", recvbuff, s_len.max(r_len), dtype)?,
        )
    } else {
        let send = span(f, "sendbuff", sendbuff, s_len, dtype)?;
        let recv = span(f, "recvbuff", recvbuff, r_len, dtype)?;
        apart(f, send, recv)?;
        (Some(send), recv)
    };
    Ok(Op::AllToAllV {
        dtype,
        input,
        output,
        v: Box::new(v),
    })
}

/// `dmscBarrier`.
pub(crate) fn barrier() -> Op {
    coll(
        CollKind::Barrier,
        Some(Span::EMPTY),
        Span::EMPTY,
        0,
        DataType::Uint8,
    )
}

/// `dmscSend` (`send`) or `dmscRecv` arguments.
pub(crate) fn p2p(
    f: &str,
    comm: &Communicator,
    send: bool,
    buff: *const c_void,
    count: usize,
    datatype: RawDataType,
    peer: c_int,
) -> Res<Op> {
    let dtype = data_type(f, datatype)?;
    let peer = rank_arg(f, "peer", peer, comm.size())?;
    let len = byte_len(f, "count", count, 1, dtype)?;
    let name = if send { "sendbuff" } else { "recvbuff" };
    let buf = span(f, name, buff, len, dtype)?;
    Ok(Op::P2p(P2pOp { send, buf, peer }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_reduce_in_place_and_overlap() {
        let mut b = [0f32; 8];
        let p = b.as_mut_ptr() as *mut c_void;
        let o = all_reduce("f", p, p, 8, 7, 0).unwrap();
        assert!(matches!(o, Op::Coll { input: None, .. }));
        let half = (p as *mut f32).wrapping_add(2) as *mut c_void;
        let e = all_reduce("dmscAllReduce", p, half, 4, 7, 0).unwrap_err();
        assert!(e.msg.contains("overlap"), "{}", e.msg);
        let e = all_reduce("dmscAllReduce", p, std::ptr::null_mut(), 4, 7, 0).unwrap_err();
        assert_eq!(e.msg, "dmscAllReduce: recvbuff is NULL");
        let e = all_reduce("dmscAllReduce", std::ptr::null(), p, 4, 7, 0).unwrap_err();
        assert_eq!(e.msg, "dmscAllReduce: sendbuff is NULL");
        let e = all_reduce("dmscAllReduce", p, p, usize::MAX, 7, 0).unwrap_err();
        assert!(e.msg.starts_with("dmscAllReduce: count"), "{}", e.msg);
        // NULL buffers are fine for a count of 0.
        assert!(all_reduce("f", std::ptr::null(), std::ptr::null_mut(), 0, 7, 4).is_ok());
    }

    #[test]
    fn extents_of_all_to_all_v() {
        assert_eq!(extent("f", &[2, 0, 3], &[0, 100, 2], "c", "d").unwrap(), 5);
        let e = extent("f", &[1, usize::MAX], &[0, 1], "sendcounts", "sdispls").unwrap_err();
        assert!(e.msg.contains("sendcounts[1] + sdispls[1]"), "{}", e.msg);
    }
}
