//! The blocking operations: collectives, send and receive, with NCCL's signatures and
//! argument order (`ncclAllReduce` ... `ncclRecv` in NCCL's `nccl.h`), plus dmsc's
//! all-to-all(v) and barrier. "Blocking" means host-synchronous: the call returns when the
//! operation has finished on this rank. Inside a group they are recorded instead (see
//! `dmscGroupStart`).

use crate::dispatch::blocking;
use crate::handle::dmscComm_t;
use crate::result::dmscResult_t;
use crate::types::{RawDataType, RawRedOp};
use crate::validate;
use std::ffi::{c_int, c_void};

/// All-reduce (`ncclAllReduce`): `recvbuff` on every rank becomes the element-wise `op`
/// reduction of the `sendbuff`s of all ranks; `count` elements of `datatype` each. In place
/// when `sendbuff == recvbuff`; any other overlap is `dmscInvalidArgument`.
///
/// Errors: the common ones (see "Conventions" at the top), naming `sendbuff`, `recvbuff`,
/// `count`, `datatype`, `op`, `comm` or `stream`.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscAllReduce(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    op: RawRedOp,
    comm: dmscComm_t,
    stream: *mut c_void,
) -> dmscResult_t {
    const F: &str = "dmscAllReduce";
    // SAFETY: the C contract: the buffers are valid for the call (or the group).
    unsafe {
        blocking(F, comm, stream, |c| {
            validate::all_reduce(F, c, sendbuff, recvbuff, count, datatype, op)
        })
    }
}

/// Broadcast (`ncclBroadcast`): the `count` elements of `sendbuff` on rank `root` land in
/// `recvbuff` on every rank. `sendbuff` is only read on the root (it may be NULL
/// elsewhere). In place when `sendbuff == recvbuff`.
///
/// Errors: the common ones, and `dmscInvalidArgument` if `root` is out of range.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscBroadcast(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    root: c_int,
    comm: dmscComm_t,
    stream: *mut c_void,
) -> dmscResult_t {
    const F: &str = "dmscBroadcast";
    // SAFETY: the C contract: the buffers are valid for the call (or the group).
    unsafe {
        blocking(F, comm, stream, |c| {
            validate::broadcast(F, c, sendbuff, recvbuff, count, datatype, root)
        })
    }
}

/// In-place broadcast (`ncclBcast`, NCCL's legacy form): `buff` of rank `root` is copied
/// into `buff` of every other rank; the same as `dmscBroadcast(buff, buff, ...)`.
///
/// Errors: the common ones (the buffer is named `buff`), and `dmscInvalidArgument` if
/// `root` is out of range.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscBcast(
    buff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    root: c_int,
    comm: dmscComm_t,
    stream: *mut c_void,
) -> dmscResult_t {
    const F: &str = "dmscBcast";
    // SAFETY: the C contract: the buffer is valid for the call (or the group).
    unsafe {
        blocking(F, comm, stream, |c| {
            validate::bcast(F, c, buff, count, datatype, root)
        })
    }
}

/// Reduce (`ncclReduce`): `recvbuff` on rank `root` becomes the element-wise `op` reduction
/// of the `sendbuff`s of all ranks. `recvbuff` is only written on the root (it may be NULL
/// elsewhere). In place when `sendbuff == recvbuff`.
///
/// Errors: the common ones, and `dmscInvalidArgument` if `root` is out of range.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscReduce(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    op: RawRedOp,
    root: c_int,
    comm: dmscComm_t,
    stream: *mut c_void,
) -> dmscResult_t {
    const F: &str = "dmscReduce";
    // SAFETY: the C contract: the buffers are valid for the call (or the group).
    unsafe {
        blocking(F, comm, stream, |c| {
            validate::reduce(F, c, sendbuff, recvbuff, count, datatype, op, root)
        })
    }
}

/// All-gather (`ncclAllGather`): every rank contributes `sendcount` elements; `recvbuff`
/// (`nranks * sendcount` elements) receives rank r's block at offset `r * sendcount`. In
/// place when `sendbuff == recvbuff + rank * sendcount` (NCCL's layout); other overlaps are
/// `dmscInvalidArgument`.
///
/// Errors: the common ones; `sendcount * nranks` overflowing is `dmscInvalidArgument`.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscAllGather(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    sendcount: usize,
    datatype: RawDataType,
    comm: dmscComm_t,
    stream: *mut c_void,
) -> dmscResult_t {
    const F: &str = "dmscAllGather";
    // SAFETY: the C contract: the buffers are valid for the call (or the group).
    unsafe {
        blocking(F, comm, stream, |c| {
            validate::all_gather(F, c, sendbuff, recvbuff, sendcount, datatype)
        })
    }
}

/// Reduce-scatter (`ncclReduceScatter`): `sendbuff` holds `nranks * recvcount` elements;
/// they are reduced element-wise with `op` across ranks and rank r receives block r
/// (`recvcount` elements) in `recvbuff`. In place when
/// `recvbuff == sendbuff + rank * recvcount` (NCCL's layout); other overlaps are
/// `dmscInvalidArgument`.
///
/// Errors: the common ones; `recvcount * nranks` overflowing is `dmscInvalidArgument`.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscReduceScatter(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    recvcount: usize,
    datatype: RawDataType,
    op: RawRedOp,
    comm: dmscComm_t,
    stream: *mut c_void,
) -> dmscResult_t {
    const F: &str = "dmscReduceScatter";
    // SAFETY: the C contract: the buffers are valid for the call (or the group).
    unsafe {
        blocking(F, comm, stream, |c| {
            validate::reduce_scatter(F, c, sendbuff, recvbuff, recvcount, datatype, op)
        })
    }
}

/// All-to-all: block j (`count` elements at offset `j * count`) of `sendbuff` goes to rank
/// j, and block i of `recvbuff` comes from rank i; both buffers hold `nranks * count`
/// elements. In place when `sendbuff == recvbuff`.
///
/// Errors: the common ones; `count * nranks` overflowing is `dmscInvalidArgument`.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscAllToAll(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    comm: dmscComm_t,
    stream: *mut c_void,
) -> dmscResult_t {
    const F: &str = "dmscAllToAll";
    // SAFETY: the C contract: the buffers are valid for the call (or the group).
    unsafe {
        blocking(F, comm, stream, |c| {
            validate::all_to_all(F, c, sendbuff, recvbuff, count, datatype)
        })
    }
}

/// All-to-all with per-rank counts and displacements (`MPI_Alltoallv`), in elements:
/// `sendcounts[j]` elements at `sendbuff + sdispls[j]` go to rank j, and `recvcounts[i]`
/// elements from rank i land at `recvbuff + rdispls[i]`. Each array has one entry per rank
/// and is only read during the call. `recvcounts[i]` must equal rank i's `sendcounts` entry
/// for this rank. In place when `sendbuff == recvbuff`.
///
/// Errors: the common ones, `dmscInvalidArgument` if an array is NULL or a count plus its
/// displacement overflows, and `dmscMismatch` if the counts of two ranks disagree.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscAllToAllv(
    sendbuff: *const c_void,
    sendcounts: *const usize,
    sdispls: *const usize,
    recvbuff: *mut c_void,
    recvcounts: *const usize,
    rdispls: *const usize,
    datatype: RawDataType,
    comm: dmscComm_t,
    stream: *mut c_void,
) -> dmscResult_t {
    const F: &str = "dmscAllToAllv";
    // SAFETY: the C contract: the buffers are valid for the call (or the group), the arrays
    // have one entry per rank.
    unsafe {
        blocking(F, comm, stream, |c| {
            validate::all_to_all_v(
                F, c, sendbuff, sendcounts, sdispls, recvbuff, recvcounts, rdispls, datatype,
            )
        })
    }
}

/// Barrier: returns once every rank of `comm` has entered it.
///
/// Errors: the common ones (`comm`, `stream`, and the errors of any operation).
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscBarrier(comm: dmscComm_t, stream: *mut c_void) -> dmscResult_t {
    // SAFETY: a barrier has no buffers.
    unsafe { blocking("dmscBarrier", comm, stream, |_| Ok(validate::barrier())) }
}

/// Send `count` elements of `sendbuff` to rank `peer` (`ncclSend`, tag 0). Matched in
/// order with `peer`'s `dmscRecv` from this rank, which must receive the same number of
/// bytes. A lone send may block until the peer receives: when two ranks exchange, put the
/// send and the receive in one group (`dmscGroupStart` ... `dmscGroupEnd`), as with NCCL.
/// `peer` may be this rank if the same group holds the matching receive.
///
/// Errors: the common ones, and `dmscInvalidArgument` if `peer` is out of range.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscSend(
    sendbuff: *const c_void,
    count: usize,
    datatype: RawDataType,
    peer: c_int,
    comm: dmscComm_t,
    stream: *mut c_void,
) -> dmscResult_t {
    const F: &str = "dmscSend";
    // SAFETY: the C contract: the buffer is valid for the call (or the group).
    unsafe {
        blocking(F, comm, stream, |c| {
            validate::p2p(F, c, true, sendbuff, count, datatype, peer)
        })
    }
}

/// Receive `count` elements from rank `peer` into `recvbuff` (`ncclRecv`, tag 0); see
/// `dmscSend` for matching and grouping.
///
/// Errors: the common ones, `dmscInvalidArgument` if `peer` is out of range, and
/// `dmscMismatch` if the matching send has a different size.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscRecv(
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    peer: c_int,
    comm: dmscComm_t,
    stream: *mut c_void,
) -> dmscResult_t {
    const F: &str = "dmscRecv";
    // SAFETY: the C contract: the buffer is valid for the call (or the group).
    unsafe {
        blocking(F, comm, stream, |c| {
            validate::p2p(F, c, false, recvbuff, count, datatype, peer)
        })
    }
}
