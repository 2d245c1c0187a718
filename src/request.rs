//! Handles of non-blocking operations.

use dmsc_core::engine::executor::Helper;
pub(crate) use dmsc_core::engine::executor::JobSlot as Slot;
use dmsc_core::{Error, Result};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A non-blocking operation in progress (like `MPI_Request`, or rsmpi's scoped requests).
///
/// The buffers the operation uses stay borrowed for `'a`; dropping a request that has not
/// completed waits for it, so memory is never released while dmsc still reads or writes it.
#[must_use = "a request must be waited on (dropping it waits too)"]
pub struct Request<'a> {
    slot: Arc<Slot>,
    /// The communicator's queue, so that a waiter runs queued operations itself (`None` for
    /// a request that finished before it was queued).
    helper: Option<Helper>,
    _buffers: PhantomData<&'a mut ()>,
}

impl<'a> Request<'a> {
    pub(crate) fn new(slot: Arc<Slot>, helper: Option<Helper>) -> Request<'a> {
        Request {
            slot,
            helper,
            _buffers: PhantomData,
        }
    }

    /// A request that already finished with `r` (e.g. a call rejected up front).
    pub(crate) fn done(r: Result<()>) -> Request<'a> {
        Request::new(Slot::finished(r), None)
    }

    /// Wait without a deadline, running queued operations on this thread when none runs.
    fn wait_ref(&self) -> Result<()> {
        match &self.helper {
            Some(h) => h.wait(&self.slot),
            None => self.slot.wait_until(None).unwrap_or(Ok(())),
        }
    }

    /// Detach the request from the borrows of its buffers, for front ends (C, Python) whose
    /// callers keep the memory alive by contract instead of by the borrow checker.
    ///
    /// # Safety
    /// Every buffer passed to the operation must stay valid, and must not be accessed in a
    /// way that conflicts with the operation (written while dmsc reads it, or accessed at
    /// all while dmsc writes it), until the returned request has completed: `wait` returned,
    /// `test` returned true, or the request was dropped.
    pub unsafe fn detach(self) -> Request<'static> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so moving its fields out leaves no double drop.
        let (slot, helper) = unsafe { (std::ptr::read(&this.slot), std::ptr::read(&this.helper)) };
        Request::new(slot, helper)
    }

    /// True once the operation has finished (successfully or not); never blocks.
    pub fn test(&self) -> bool {
        self.slot.peek().is_some()
    }

    /// Block until the operation finishes and return its result. The operation's own
    /// deadline (`DMSC_TIMEOUT`) bounds the wait.
    pub fn wait(self) -> Result<()> {
        self.wait_ref()
    }

    /// Wait for every request (each one, even after a failure, so no buffer is left in use)
    /// and return the first error, as `MPI_Waitall` does.
    pub fn wait_all(requests: impl IntoIterator<Item = Request<'a>>) -> Result<()> {
        let mut first = Ok(());
        for r in requests {
            let done = r.wait();
            if first.is_ok() {
                first = done;
            }
        }
        first
    }

    /// Wait at most `timeout`. On expiry returns [`Error::Timeout`] and the request stays
    /// pending (call `wait` again or drop it, which waits).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        match self.slot.wait_until(Some(Instant::now() + timeout)) {
            Some(r) => r,
            None => Err(Error::Timeout {
                op: "waiting on a request".into(),
                waited_s: timeout.as_secs_f64(),
                missing: vec![],
                detail: "the operation is still in progress".into(),
            }),
        }
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        let _ = self.wait_ref();
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::thread;

    /// Memory lent to an operation, written by the worker and read by the caller.
    struct Buffer(UnsafeCell<u64>);

    // SAFETY: the accesses are what the test checks: loom reports any two that the request
    // protocol leaves unordered as a data race.
    unsafe impl Sync for Buffer {}

    /// The worker finishes a slot while a blocked waiter and a polling `test` look at it:
    /// the waiter always wakes with the result (a lost notification would be a deadlock),
    /// and `test` never reports completion before the result is there.
    #[test]
    fn loom_a_finished_slot_wakes_its_waiter_with_the_result() {
        loom::model(|| {
            let slot = Arc::new(Slot::default());
            let worker = {
                let slot = slot.clone();
                thread::spawn(move || slot.finish(Err(Error::usage("boom"))))
            };
            let req = Request::new(slot.clone(), None);
            if req.test() {
                assert!(slot.peek().is_some_and(|r| r.is_err()));
            }
            assert_eq!(req.wait(), Err(Error::usage("boom")));
            worker.join().unwrap();
        });
    }

    /// Dropping a request waits for the operation: the buffer it lent (written by the worker
    /// thread, as the engine writes a receive buffer) is never accessed by the caller
    /// concurrently; loom reports such an access as a data race.
    #[test]
    fn loom_a_dropped_request_waits_before_its_buffer_is_reused() {
        loom::model(|| {
            let buffer = Arc::new(Buffer(UnsafeCell::new(0u64)));
            let slot = Arc::new(Slot::default());
            let worker = {
                let (slot, buffer) = (slot.clone(), buffer.clone());
                thread::spawn(move || {
                    // SAFETY: the request lends the buffer to the operation until finished.
                    buffer.0.with_mut(|p| unsafe { *p = 42 });
                    slot.finish(Ok(()));
                })
            };
            drop(Request::new(slot, None));
            // SAFETY: the request was dropped, which waited for the operation.
            assert_eq!(buffer.0.with(|p| unsafe { *p }), 42);
            worker.join().unwrap();
        });
    }
}
