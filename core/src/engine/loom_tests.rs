//! Loom models of the engine's one cross-thread hand-off: [`AbortHandle`] against a thread
//! that checks the flag and then blocks in the transport.

use super::{AbortHandle, Waker};
use crate::sync::{AtomicBool, Condvar, Mutex};
use loom::thread;
use std::sync::Arc;

/// The transports' eventfd: a wake-up is a counter that the next (or current) blocking poll
/// consumes, whether it came before or during the poll.
#[derive(Default)]
struct EventFd {
    count: Mutex<u64>,
    cond: Condvar,
}

impl Waker for EventFd {
    fn wake(&self) {
        *self.count.lock().unwrap() += 1;
        self.cond.notify_all();
    }
}

impl EventFd {
    /// `poll` on the eventfd without a timeout, then drain it.
    fn block(&self) {
        let mut n = self.count.lock().unwrap();
        while *n == 0 {
            n = self.cond.wait(n).unwrap();
        }
        *n = 0;
    }
}

fn handle(waker: Arc<EventFd>) -> Arc<AbortHandle> {
    Arc::new(AbortHandle {
        aborted: AtomicBool::new(false),
        waker,
    })
}

/// The engine's wait (`drive`): check the flag, block until woken, repeat. Whatever the
/// interleaving with `abort`, the engine wakes up and sees the abort; a lost wake-up would
/// leave it blocked forever, which loom reports as a deadlock. (The real poll also times out
/// after 100 ms; the model leaves that out so that only the wake-up can end the wait.)
#[test]
fn loom_abort_wakes_a_blocked_engine_and_is_seen() {
    loom::model(|| {
        let fd = Arc::new(EventFd::default());
        let h = handle(fd.clone());
        let aborter = {
            let h = h.clone();
            thread::spawn(move || h.abort())
        };
        while !h.is_aborted() {
            fd.block();
        }
        aborter.join().unwrap();
    });
}

/// Two threads abort at once (a user thread and a signal-handling one): both return, and the
/// engine sees the abort.
#[test]
fn loom_concurrent_aborts() {
    loom::model(|| {
        let fd = Arc::new(EventFd::default());
        let h = handle(fd.clone());
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let h = h.clone();
                thread::spawn(move || h.abort())
            })
            .collect();
        while !h.is_aborted() {
            fd.block();
        }
        for t in ts {
            t.join().unwrap();
        }
        assert!(h.is_aborted());
    });
}
