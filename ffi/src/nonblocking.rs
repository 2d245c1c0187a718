//! The non-blocking operations: `dmscXxxAsync` takes the arguments of `dmscXxx` followed by
//! a `dmscRequest_t*`, starts the operation and returns at once (an MPI-style request; NCCL
//! has none). The buffers belong to dmsc until `dmscTest` reports done, `dmscWait` returns
//! or `dmscRequestFree` returns. Operations on one communicator run one after another in
//! call order, behind the blocking ones issued before them; so a `dmscSendAsync` followed
//! by a `dmscRecvAsync` on a ring deadlocks like two blocking calls would: use a group for
//! exchanges.

use crate::dispatch::nonblocking;
use crate::handle::{dmscComm_t, dmscRequest_t};
use crate::result::dmscResult_t;
use crate::types::{RawDataType, RawRedOp};
use crate::validate;
use std::ffi::{c_int, c_void};

/// Non-blocking `dmscAllReduce`: same arguments, then `request`, which receives the request
/// (NULL on failure; free it with `dmscRequestFree`).
///
/// Errors: argument errors as `dmscAllReduce`, at once; `dmscInvalidArgument` if `request`
/// is NULL; `dmscInvalidUsage` inside a group. Errors of the operation itself come from
/// `dmscTest`/`dmscWait`.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscAllReduceAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    op: RawRedOp,
    comm: dmscComm_t,
    stream: *mut c_void,
    request: *mut dmscRequest_t,
) -> dmscResult_t {
    const F: &str = "dmscAllReduceAsync";
    // SAFETY: the C contract: the buffers stay valid until the request completes.
    unsafe {
        nonblocking(F, comm, stream, request, |c| {
            validate::all_reduce(F, c, sendbuff, recvbuff, count, datatype, op)
        })
    }
}

/// Non-blocking `dmscBroadcast`; see `dmscAllReduceAsync` for `request` and errors.
///
/// Errors: as `dmscAllReduceAsync`, with the argument errors of `dmscBroadcast`.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscBroadcastAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    root: c_int,
    comm: dmscComm_t,
    stream: *mut c_void,
    request: *mut dmscRequest_t,
) -> dmscResult_t {
    const F: &str = "dmscBroadcastAsync";
    // SAFETY: the C contract: the buffers stay valid until the request completes.
    unsafe {
        nonblocking(F, comm, stream, request, |c| {
            validate::broadcast(F, c, sendbuff, recvbuff, count, datatype, root)
        })
    }
}

/// Non-blocking `dmscReduce`; see `dmscAllReduceAsync` for `request` and errors.
///
/// Errors: as `dmscAllReduceAsync`, with the argument errors of `dmscReduce`.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscReduceAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    op: RawRedOp,
    root: c_int,
    comm: dmscComm_t,
    stream: *mut c_void,
    request: *mut dmscRequest_t,
) -> dmscResult_t {
    const F: &str = "dmscReduceAsync";
    // SAFETY: the C contract: the buffers stay valid until the request completes.
    unsafe {
        nonblocking(F, comm, stream, request, |c| {
            validate::reduce(F, c, sendbuff, recvbuff, count, datatype, op, root)
        })
    }
}

/// Non-blocking `dmscAllGather`; see `dmscAllReduceAsync` for `request` and errors.
///
/// Errors: as `dmscAllReduceAsync`, with the argument errors of `dmscAllGather`.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscAllGatherAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    sendcount: usize,
    datatype: RawDataType,
    comm: dmscComm_t,
    stream: *mut c_void,
    request: *mut dmscRequest_t,
) -> dmscResult_t {
    const F: &str = "dmscAllGatherAsync";
    // SAFETY: the C contract: the buffers stay valid until the request completes.
    unsafe {
        nonblocking(F, comm, stream, request, |c| {
            validate::all_gather(F, c, sendbuff, recvbuff, sendcount, datatype)
        })
    }
}

/// Non-blocking `dmscReduceScatter`; see `dmscAllReduceAsync` for `request` and errors.
///
/// Errors: as `dmscAllReduceAsync`, with the argument errors of `dmscReduceScatter`.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscReduceScatterAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    recvcount: usize,
    datatype: RawDataType,
    op: RawRedOp,
    comm: dmscComm_t,
    stream: *mut c_void,
    request: *mut dmscRequest_t,
) -> dmscResult_t {
    const F: &str = "dmscReduceScatterAsync";
    // SAFETY: the C contract: the buffers stay valid until the request completes.
    unsafe {
        nonblocking(F, comm, stream, request, |c| {
            validate::reduce_scatter(F, c, sendbuff, recvbuff, recvcount, datatype, op)
        })
    }
}

/// Non-blocking `dmscAllToAll`; see `dmscAllReduceAsync` for `request` and errors.
///
/// Errors: as `dmscAllReduceAsync`, with the argument errors of `dmscAllToAll`.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscAllToAllAsync(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    comm: dmscComm_t,
    stream: *mut c_void,
    request: *mut dmscRequest_t,
) -> dmscResult_t {
    const F: &str = "dmscAllToAllAsync";
    // SAFETY: the C contract: the buffers stay valid until the request completes.
    unsafe {
        nonblocking(F, comm, stream, request, |c| {
            validate::all_to_all(F, c, sendbuff, recvbuff, count, datatype)
        })
    }
}

/// Non-blocking `dmscAllToAllv`; see `dmscAllReduceAsync` for `request` and errors. The
/// count and displacement arrays are only read during this call.
///
/// Errors: as `dmscAllReduceAsync`, with the argument errors of `dmscAllToAllv`.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscAllToAllvAsync(
    sendbuff: *const c_void,
    sendcounts: *const usize,
    sdispls: *const usize,
    recvbuff: *mut c_void,
    recvcounts: *const usize,
    rdispls: *const usize,
    datatype: RawDataType,
    comm: dmscComm_t,
    stream: *mut c_void,
    request: *mut dmscRequest_t,
) -> dmscResult_t {
    const F: &str = "dmscAllToAllvAsync";
    // SAFETY: the C contract: the buffers stay valid until the request completes, the
    // arrays have one entry per rank.
    unsafe {
        nonblocking(F, comm, stream, request, |c| {
            validate::all_to_all_v(
                F, c, sendbuff, sendcounts, sdispls, recvbuff, recvcounts, rdispls, datatype,
            )
        })
    }
}

/// Non-blocking `dmscBarrier`: the request completes once every rank has entered the
/// barrier; see `dmscAllReduceAsync` for `request` and errors.
///
/// Errors: as `dmscAllReduceAsync`.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscBarrierAsync(
    comm: dmscComm_t,
    stream: *mut c_void,
    request: *mut dmscRequest_t,
) -> dmscResult_t {
    const F: &str = "dmscBarrierAsync";
    // SAFETY: a barrier has no buffers; `request` is NULL or writable.
    unsafe { nonblocking(F, comm, stream, request, |_| Ok(validate::barrier())) }
}

/// Non-blocking `dmscSend`; see `dmscAllReduceAsync` for `request` and errors, and the
/// top of this section for ordering (exchanges belong in a group).
///
/// Errors: as `dmscAllReduceAsync`, with the argument errors of `dmscSend`.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscSendAsync(
    sendbuff: *const c_void,
    count: usize,
    datatype: RawDataType,
    peer: c_int,
    comm: dmscComm_t,
    stream: *mut c_void,
    request: *mut dmscRequest_t,
) -> dmscResult_t {
    const F: &str = "dmscSendAsync";
    // SAFETY: the C contract: the buffer stays valid until the request completes.
    unsafe {
        nonblocking(F, comm, stream, request, |c| {
            validate::p2p(F, c, true, sendbuff, count, datatype, peer)
        })
    }
}

/// Non-blocking `dmscRecv`; see `dmscAllReduceAsync` for `request` and errors.
///
/// Errors: as `dmscAllReduceAsync`, with the argument errors of `dmscRecv`.
/// Thread safety: one thread at a time per communicator.
#[no_mangle]
pub unsafe extern "C" fn dmscRecvAsync(
    recvbuff: *mut c_void,
    count: usize,
    datatype: RawDataType,
    peer: c_int,
    comm: dmscComm_t,
    stream: *mut c_void,
    request: *mut dmscRequest_t,
) -> dmscResult_t {
    const F: &str = "dmscRecvAsync";
    // SAFETY: the C contract: the buffer stays valid until the request completes.
    unsafe {
        nonblocking(F, comm, stream, request, |c| {
            validate::p2p(F, c, false, recvbuff, count, datatype, peer)
        })
    }
}
