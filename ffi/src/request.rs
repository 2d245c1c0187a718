//! Requests of non-blocking operations (`dmscRequest_t`) and `dmscTest`, `dmscWait`,
//! `dmscRequestFree`, modelled on `MPI_Test` / `MPI_Wait` / `MPI_Request_free` (NCCL has no
//! request objects: its operations are asynchronous on CUDA streams). A request holds a
//! detached `dmsc::Request`; the C contract keeps the buffers alive instead of a borrow.

use crate::args::out;
use crate::guard::{guard, FfiError, Res};
use crate::handle::{dmscRequest_t, handle_of, id_of, Registry};
use crate::result::dmscResult_t;
use dmsc_rs::{Request, Result};
use std::ffi::c_int;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// A registered request: the operation's state and the function that started it (for
/// messages).
pub(crate) struct RequestEntry {
    f: &'static str,
    state: Mutex<State>,
}

enum State {
    Pending(Request<'static>),
    Done(Result<()>),
}

/// Live requests by handle id.
static REQUESTS: Registry<RequestEntry> = Registry::new("request");

/// Register the request of an operation started by function `f`, returning its handle.
pub(crate) fn register(f: &'static str, req: Request<'static>) -> dmscRequest_t {
    handle_of(REQUESTS.insert(RequestEntry {
        f,
        state: Mutex::new(State::Pending(req)),
    }))
}

impl RequestEntry {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The result, if finished; never blocks.
    fn poll(&self) -> Option<Result<()>> {
        let mut st = self.lock();
        if let State::Pending(r) = &*st {
            if !r.test() {
                return None;
            }
            // Finished: collect the result without waiting.
            let res = r.wait_timeout(Duration::ZERO);
            *st = State::Done(res);
        }
        match &*st {
            State::Done(r) => Some(r.clone()),
            State::Pending(_) => None,
        }
    }

    /// The result, waiting for it if needed.
    fn wait(&self) -> Result<()> {
        let mut st = self.lock();
        if let State::Pending(_) = &*st {
            let State::Pending(r) = std::mem::replace(&mut *st, State::Done(Ok(()))) else {
                unreachable!("matched Pending above")
            };
            *st = State::Done(r.wait());
        }
        match &*st {
            State::Done(r) => r.clone(),
            State::Pending(_) => unreachable!("set to Done above"),
        }
    }

    /// Map the operation's result to the call's.
    fn outcome(&self, r: Result<()>) -> Res<()> {
        r.map_err(|e| FfiError::dmsc(self.f, &e))
    }
}

/// Check whether the operation of `request` has finished, without blocking (`MPI_Test`):
/// `*done` becomes 1 if it has, else 0. Once done, the call returns the operation's result:
/// `dmscSuccess`, or its error (with `dmscGetLastError` naming the `dmsc*Async` call), and
/// the operation's buffers are the caller's again. The request stays valid, and later
/// `dmscTest`/`dmscWait` calls return the same result, until `dmscRequestFree`.
///
/// Errors: `dmscInvalidArgument` if `request` or `done` is NULL; `dmscInvalidUsage` if
/// `request` was freed or never made; otherwise the operation's error once done.
/// Thread safety: a request may be used by one thread at a time.
#[no_mangle]
pub unsafe extern "C" fn dmscTest(request: dmscRequest_t, done: *mut c_int) -> dmscResult_t {
    const F: &str = "dmscTest";
    guard(F, || {
        let done = out(F, "done", done)?;
        // SAFETY: non-NULL; the caller passes a writable int.
        unsafe { done.write(0) };
        let req = REQUESTS.lookup(F, "request", id_of(request))?;
        match req.poll() {
            None => Ok(()),
            Some(r) => {
                // SAFETY: as above.
                unsafe { done.write(1) };
                req.outcome(r)
            }
        }
    })
}

/// Block until the operation of `request` has finished (`MPI_Wait`) and return its result:
/// `dmscSuccess` or its error (with `dmscGetLastError` naming the `dmsc*Async` call). The
/// operation's own deadline (`DMSC_TIMEOUT` or the config's `timeoutMs`) bounds the wait.
/// Afterwards the buffers are the caller's again. The request stays valid, and repeated
/// calls return the same result, until `dmscRequestFree`.
///
/// Errors: `dmscInvalidArgument` if `request` is NULL; `dmscInvalidUsage` if it was freed
/// or never made; otherwise the operation's error.
/// Thread safety: a request may be used by one thread at a time.
#[no_mangle]
pub extern "C" fn dmscWait(request: dmscRequest_t) -> dmscResult_t {
    const F: &str = "dmscWait";
    guard(F, || {
        let req = REQUESTS.lookup(F, "request", id_of(request))?;
        let r = req.wait();
        req.outcome(r)
    })
}

/// Release `request`. If its operation has not finished, this first waits for it (its
/// buffers are in use until then), so freeing never leaves dmsc writing into released
/// memory. The operation's result is not reported: call `dmscWait` first to get it. The
/// handle is dead afterwards (`dmscInvalidUsage`). Every request must be freed, finished or
/// not.
///
/// Errors: `dmscInvalidArgument` if `request` is NULL; `dmscInvalidUsage` if it was already
/// freed or never made.
/// Thread safety: no other thread may be using `request`.
#[no_mangle]
pub extern "C" fn dmscRequestFree(request: dmscRequest_t) -> dmscResult_t {
    const F: &str = "dmscRequestFree";
    guard(F, || {
        let req = REQUESTS.take(F, "request", id_of(request))?;
        // Dropping a pending dmsc::Request waits for its operation.
        let _ = req.wait();
        Ok(())
    })
}
