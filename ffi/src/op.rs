//! Running a checked [`Call`] for C: now (blocking), or posted as a request. The caller's
//! buffers are raw spans: the C contract, not a borrow, keeps them valid (NCCL's rule: until
//! the call returns, the request completes, or the group ends).

use dmsc_rs::call::{Call, P2pCall};
use dmsc_rs::{Communicator, Request, Result};

/// Run `call` ordered on the CUDA stream `stream` when its buffers are device memory
/// (returning at once), or to completion when they are host memory (`stream` NULL).
///
/// # Safety
/// The spans are valid, and not accessed by anyone else in a conflicting way, for the whole
/// call (until the stream has passed it, for device buffers); `stream` is NULL or a live stream of
/// the buffers' device.
pub(crate) unsafe fn run_on_stream(
    comm: &Communicator,
    call: &Call,
    stream: *mut std::ffi::c_void,
) -> Result<()> {
    // SAFETY: forwarded contract.
    unsafe { comm.run_call_on_stream(call, stream as usize) }
}

/// Start `call` and return its request; the buffers are in use until it completes.
///
/// # Safety
/// As [`run_on_stream`] for host buffers, until the returned request has completed (test
/// true, wait returned, or freed).
pub(crate) unsafe fn post(comm: &Communicator, call: &Call) -> Result<Request<'static>> {
    // SAFETY: forwarded contract.
    unsafe { post_on_stream(comm, call, std::ptr::null_mut()) }
}

/// Start `call`, ordered on the CUDA stream `stream` for device buffers (NULL: the default
/// stream), and return its request, complete once the device buffers hold the results.
///
/// # Safety
/// As [`post`]; `stream` is NULL or a live stream of the buffers' device until then.
pub(crate) unsafe fn post_on_stream(
    comm: &Communicator,
    call: &Call,
    stream: *mut std::ffi::c_void,
) -> Result<Request<'static>> {
    // SAFETY: forwarded contract: the C caller keeps the buffers valid until the request
    // completes, whatever the request's lifetime says.
    let req = unsafe { comm.start_call_on_stream(call, stream as usize) };
    rejected_at_once(&req)?;
    Ok(req)
}

/// Start sends and receives recorded one by one (inside a group) as one group call.
///
/// # Safety
/// As [`post`], for every buffer in `ops`.
pub(crate) unsafe fn post_p2p(comm: &Communicator, ops: Vec<P2pCall>) -> Result<Request<'static>> {
    let call = Call::p2p(comm.shape(), ops)?;
    // SAFETY: forwarded contract.
    unsafe { post(comm, &call) }
}

/// An operation the core rejected before starting (bad arguments it checks itself) is an
/// error of the call, not of a request the caller must wait for.
fn rejected_at_once(req: &Request<'_>) -> Result<()> {
    if req.test() {
        req.wait_timeout(std::time::Duration::ZERO)?;
    }
    Ok(())
}
