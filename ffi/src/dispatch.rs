//! The common path of every operation call: look up the communicator, check the stream
//! (only device buffers take one), validate the arguments into a [`Call`], then run it now, record it into the
//! thread's group, or post it and return a request.

use crate::args::{out, stream_arg};
use crate::comm::comm_for_op;
use crate::group;
use crate::guard::{guard, Ctx, FfiError, Res};
use crate::handle::{dmscComm_t, dmscRequest_t};
use crate::op;
use crate::request;
use crate::result::dmscResult_t;
use dmsc_rs::call::Call;
use dmsc_rs::Communicator;
use std::ffi::c_void;

/// A blocking call of function `f`: inside a group the operation is recorded, otherwise it
/// runs to completion on this thread; a call on CUDA device buffers is ordered on `stream`
/// instead and returns at once (NCCL's semantics; failures go to `dmscCommGetAsyncError`).
/// A group's recorded calls run at `dmscGroupEnd` on the default stream, waited for.
///
/// # Safety
/// The buffers that `build` captures are valid for the call, or until `dmscGroupEnd`
/// returns when recorded.
pub(crate) unsafe fn blocking(
    f: &'static str,
    comm: dmscComm_t,
    stream: *mut c_void,
    build: impl FnOnce(&Communicator) -> Res<Call>,
) -> dmscResult_t {
    guard(f, || {
        let (id, c) = comm_for_op(f, comm)?;
        let call = build(&c)?;
        stream_arg(f, stream, call.memory())?;
        if let Some(call) = group::record(f, id, &c, call) {
            // SAFETY: the caller's contract: the buffers are valid for this call (until the
            // stream has passed it, for device buffers); `stream` is NULL or a live stream.
            unsafe { op::run_on_stream(&c, &call, stream) }.ctx(f)?;
        }
        Ok(())
    })
}

/// A non-blocking call of function `f`: posts the operation and stores its request in
/// `*request` (NULL on failure).
///
/// # Safety
/// `request` is NULL or writable; the buffers that `build` captures stay valid until the
/// request completes (dmscTest reports done, dmscWait returns, or dmscRequestFree).
pub(crate) unsafe fn nonblocking(
    f: &'static str,
    comm: dmscComm_t,
    stream: *mut c_void,
    request: *mut dmscRequest_t,
    build: impl FnOnce(&Communicator) -> Res<Call>,
) -> dmscResult_t {
    guard(f, || {
        let slot = out(f, "request", request)?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { slot.write(std::ptr::null_mut()) };
        let (_, c) = comm_for_op(f, comm)?;
        if group::depth() > 0 {
            return Err(FfiError::usage(
                f,
                "non-blocking calls cannot be made between dmscGroupStart and dmscGroupEnd \
                 (the group records the blocking calls and runs them together)",
            ));
        }
        let call = build(&c)?;
        stream_arg(f, stream, call.memory())?;
        // SAFETY: the caller's contract keeps the buffers valid until the request completes,
        // and `stream` NULL or live.
        let req = unsafe { op::post_on_stream(&c, &call, stream) }.ctx(f)?;
        // SAFETY: as above, slot is writable.
        unsafe { slot.write(request::register(f, req)) };
        Ok(())
    })
}
