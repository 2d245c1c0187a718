//! Communicator handles: the registry of live communicators, and the calls that query or
//! release one (`ncclCommDestroy`, `ncclCommAbort`, `ncclCommCount`, `ncclCommUserRank`,
//! `ncclCommGetAsyncError` in NCCL's `nccl.h`).

use crate::args::out;
use crate::group;
use crate::guard::{guard, FfiError, Res};
use crate::handle::{id_of, Registry};
use crate::last_error;
use crate::result::{code_of, dmscResult_t};
use dmsc_rs::Communicator;
use std::collections::HashSet;
use std::ffi::{c_char, c_int};
use std::sync::{Arc, Mutex};

pub use crate::handle::dmscComm_t;

/// Live communicators by handle id.
pub(crate) static COMMS: Registry<Communicator> = Registry::new("communicator");

/// Ids of live communicators that `dmscCommFinalize` finished: they take no operation any
/// more, only queries and `dmscCommDestroy`.
static FINALIZED: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

/// The communicator argument `comm` of function `f`, with its id.
pub(crate) fn comm_arg(f: &str, comm: dmscComm_t) -> Res<(usize, Arc<Communicator>)> {
    let id = id_of(comm);
    Ok((id, COMMS.lookup(f, "comm", id)?))
}

/// As [`comm_arg`], for a function that starts an operation: a finalized communicator is
/// refused.
pub(crate) fn comm_for_op(f: &str, comm: dmscComm_t) -> Res<(usize, Arc<Communicator>)> {
    let (id, c) = comm_arg(f, comm)?;
    if is_finalized(id) {
        return Err(FfiError::usage(
            f,
            format_args!(
                "comm ({id:#x}) was finalized by dmscCommFinalize: it takes no operation any \
                 more; destroy it with dmscCommDestroy"
            ),
        ));
    }
    Ok((id, c))
}

fn finalized() -> std::sync::MutexGuard<'static, Option<HashSet<usize>>> {
    FINALIZED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether communicator `id` was finalized.
pub(crate) fn is_finalized(id: usize) -> bool {
    finalized().as_ref().is_some_and(|s| s.contains(&id))
}

/// Mark communicator `id` finalized (until it is destroyed).
pub(crate) fn mark_finalized(id: usize) {
    finalized().get_or_insert_with(HashSet::new).insert(id);
}

/// Forget communicator `id` (it was destroyed or aborted).
fn forget(id: usize) {
    if let Some(s) = finalized().as_mut() {
        s.remove(&id);
    }
}

/// Destroy `comm` (`ncclCommDestroy`): wait for the operations still in flight on it
/// (non-blocking requests included), close its connections and free it. The handle is dead
/// afterwards: every call with it returns `dmscInvalidUsage`. Like every rank's
/// operations, destroy is expected on all ranks; a rank that destroys while its peers still
/// run operations with it makes those fail with `dmscPeerLost` or `dmscRemoteError`.
///
/// Requests made on `comm` stay valid (their operations have completed) until
/// `dmscRequestFree`. To make in-flight operations fail promptly instead of waiting for
/// them, use `dmscCommAbort`.
///
/// Errors: `dmscInvalidArgument` if `comm` is NULL; `dmscInvalidUsage` if it is not a live
/// communicator, or if called between `dmscGroupStart` and `dmscGroupEnd`.
/// Thread safety: no other thread may be using `comm`.
#[no_mangle]
pub extern "C" fn dmscCommDestroy(comm: dmscComm_t) -> dmscResult_t {
    const F: &str = "dmscCommDestroy";
    guard(F, || {
        if group::depth() > 0 {
            return Err(FfiError::usage(
                F,
                "cannot destroy a communicator between dmscGroupStart and dmscGroupEnd",
            ));
        }
        let c = COMMS.take(F, "comm", id_of(comm))?;
        forget(id_of(comm));
        crate::premul::forget_comm(&c);
        // The last reference's drop drains the queue of operations and joins the
        // communicator's progress thread.
        drop(c);
        Ok(())
    })
}

/// Abort `comm` and free it (`ncclCommAbort`): every operation in flight on it, in any
/// thread or request, returns promptly with `dmscAborted`, peers learn of the abort, and
/// the handle is released as by `dmscCommDestroy` (dead afterwards: `dmscInvalidUsage`).
/// Memory of requests still pending is safe: their operations fail instead of completing,
/// and `dmscWait` reports it.
///
/// Errors: `dmscInvalidArgument` if `comm` is NULL; `dmscInvalidUsage` if it is not a live
/// communicator.
/// Thread safety: callable from any thread, also while another thread is blocked in an
/// operation on `comm` (that call returns `dmscAborted`).
#[no_mangle]
pub extern "C" fn dmscCommAbort(comm: dmscComm_t) -> dmscResult_t {
    const F: &str = "dmscCommAbort";
    guard(F, || {
        let c = COMMS.take(F, "comm", id_of(comm))?;
        forget(id_of(comm));
        crate::premul::forget_comm(&c);
        c.abort();
        // Freed here, or by the last thread still inside an operation on it.
        drop(c);
        Ok(())
    })
}

/// Store the number of ranks of `comm` in `*count` (`ncclCommCount`).
///
/// Errors: `dmscInvalidArgument` if `comm` or `count` is NULL; `dmscInvalidUsage` if
/// `comm` is not a live communicator.
/// Thread safety: callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn dmscCommCount(comm: dmscComm_t, count: *mut c_int) -> dmscResult_t {
    const F: &str = "dmscCommCount";
    guard(F, || {
        let (_, c) = comm_arg(F, comm)?;
        let count = out(F, "count", count)?;
        // SAFETY: non-NULL; the caller passes a writable int. Sizes fit: ranks are ints in C.
        unsafe { count.write(c.size() as c_int) };
        Ok(())
    })
}

/// Store in `*name` the name of the transport that serves rank `peer` of `comm`: `"shm"`
/// (shared memory), `"tcp-uring"` or `"tcp-socket"`, with `"+cma"` when large chunks pass by
/// cross-memory attach, or `"self"` for the calling rank. The string is static: never free
/// it. No NCCL equivalent.
///
/// Errors: `dmscInvalidArgument` if `comm` or `name` is NULL or `peer` is out of range;
/// `dmscInvalidUsage` if `comm` is not a live communicator.
/// Thread safety: callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn dmscCommPeerTransport(
    comm: dmscComm_t,
    peer: c_int,
    name: *mut *const c_char,
) -> dmscResult_t {
    const F: &str = "dmscCommPeerTransport";
    guard(F, || {
        let (_, c) = comm_arg(F, comm)?;
        let name = out(F, "name", name)?;
        let t = usize::try_from(peer)
            .ok()
            .and_then(|p| c.peer_transports().get(p).copied())
            .ok_or_else(|| {
                FfiError::invalid(
                    F,
                    format_args!(
                        "peer {peer} is not a rank of this {}-rank communicator",
                        c.size()
                    ),
                )
            })?;
        let s = static_c_str(t);
        // SAFETY: non-NULL; the caller passes a writable pointer; the string is static.
        unsafe { name.write(s.as_ptr()) };
        Ok(())
    })
}

/// A NUL-terminated copy of a transport name, made once per distinct name (a handful) and
/// kept for the process's life.
fn static_c_str(name: &'static str) -> &'static std::ffi::CStr {
    use std::collections::HashMap;
    use std::ffi::CString;
    use std::sync::Mutex;
    static NAMES: Mutex<Option<HashMap<&'static str, &'static std::ffi::CStr>>> = Mutex::new(None);
    let mut g = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(HashMap::new)
        .entry(name)
        .or_insert_with(|| {
            let c = CString::new(name.replace('\0', "")).unwrap_or_default();
            Box::leak(c.into_boxed_c_str())
        })
}

/// Store this process's rank in `comm`, `0 ... count-1`, in `*rank` (`ncclCommUserRank`).
///
/// Errors: `dmscInvalidArgument` if `comm` or `rank` is NULL; `dmscInvalidUsage` if `comm`
/// is not a live communicator.
/// Thread safety: callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn dmscCommUserRank(comm: dmscComm_t, rank: *mut c_int) -> dmscResult_t {
    const F: &str = "dmscCommUserRank";
    guard(F, || {
        let (_, c) = comm_arg(F, comm)?;
        let rank = out(F, "rank", rank)?;
        // SAFETY: non-NULL; the caller passes a writable int.
        unsafe { rank.write(c.rank() as c_int) };
        Ok(())
    })
}

/// Store the error that failed `comm` in `*asyncError` (`ncclCommGetAsyncError`):
/// `dmscSuccess` while healthy, else the code every later operation on `comm` will return
/// (a communicator stays failed after an error, e.g. `dmscMismatch`, `dmscTimeout`,
/// `dmscPeerLost`, `dmscAborted`). When there is an error, its message becomes this
/// thread's `dmscGetLastError`. Does not wait for an operation in progress: while one runs,
/// this reports the state before it.
///
/// Errors (of the call itself): `dmscInvalidArgument` if `comm` or `asyncError` is NULL;
/// `dmscInvalidUsage` if `comm` is not a live communicator.
/// Thread safety: callable from any thread, also while another thread runs an operation on
/// `comm`.
#[no_mangle]
pub unsafe extern "C" fn dmscCommGetAsyncError(
    comm: dmscComm_t,
    asyncError: *mut dmscResult_t,
) -> dmscResult_t {
    const F: &str = "dmscCommGetAsyncError";
    guard(F, || {
        let (_, c) = comm_arg(F, comm)?;
        let slot = out(F, "asyncError", asyncError)?;
        let code = match c.async_error() {
            None => dmscResult_t::dmscSuccess,
            Some(e) => {
                last_error::set(&format!("{F}: {e}"));
                code_of(&e)
            }
        };
        // SAFETY: non-NULL; the caller passes a writable dmscResult_t.
        unsafe { slot.write(code) };
        Ok(())
    })
}
