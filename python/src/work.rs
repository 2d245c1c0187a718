//! `dmsc.Work`: the handle of an operation started with `async_op=True`.

use crate::buffer::Buf;
use crate::errors::to_py;
use pyo3::prelude::*;
use std::sync::Mutex;
use std::time::Duration;

/// A wait that has no deadline of its own is cut into slices of this length.
const SLICE: Duration = Duration::from_secs(3600);

/// An operation in progress, returned by calls made with `async_op=True` (like
/// `torch.distributed.Work`). It keeps the operation's buffers alive (and exported) until the
/// operation has completed; do not touch them before `wait()` returns or `is_completed()` is
/// True. Operations run in the order they were issued, blocking calls included. Dropping an
/// unfinished Work waits for it.
#[pyclass(frozen, module = "dmsc")]
pub struct Work {
    req: dmsc::Request<'static>,
    /// The buffers, released once the operation is known to be complete.
    bufs: Mutex<Vec<Buf>>,
}

impl Work {
    /// Wrap a detached request with the buffers it uses.
    pub fn new(req: dmsc::Request<'static>, bufs: Vec<Buf>) -> Work {
        Work {
            req,
            bufs: Mutex::new(bufs),
        }
    }

    fn release(&self) {
        // Only ever locked briefly while attached, so this never waits on a detached thread.
        let bufs = std::mem::take(&mut *self.bufs.lock().unwrap_or_else(|p| p.into_inner()));
        drop(bufs);
    }

    /// Wait for the operation (detached from the interpreter, by the caller) and return its
    /// result; the buffers are released when the Work drops.
    pub fn wait_done(&self) -> dmsc::Result<()> {
        self.wait_forever()
    }

    /// Wait without a deadline of our own (the operation has its own: DMSC_TIMEOUT).
    fn wait_forever(&self) -> dmsc::Result<()> {
        loop {
            if let Some(r) = self.wait_for(SLICE) {
                return r;
            }
        }
    }

    /// Wait at most `d`: the operation's result, or `None` if it is still in progress.
    fn wait_for(&self, d: Duration) -> Option<dmsc::Result<()>> {
        let _ = self.req.wait_timeout(d);
        // Once finished, a zero wait returns the operation's own result at once.
        self.req
            .test()
            .then(|| self.req.wait_timeout(Duration::ZERO))
    }
}

#[pymethods]
impl Work {
    /// Block until the operation completes; return True, or raise its error (a
    /// `dmsc.DmscError` subclass). With `timeout` (seconds), raise `dmsc.Timeout` if it has not
    /// completed by then; the operation then stays in progress and may be waited on again.
    /// The GIL is released while waiting.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let limit = match timeout {
            None => None,
            Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t.min(1e9))),
            Some(t) => {
                return Err(crate::errors::invalid(format!(
                    "timeout must be a non-negative number of seconds, got {t}"
                )))
            }
        };
        let r = py.detach(|| match limit {
            None => Some(self.wait_forever()),
            Some(d) => self.wait_for(d),
        });
        match r {
            Some(r) => {
                self.release();
                r.map(|()| true).map_err(to_py)
            }
            None => Err(to_py(dmsc::Error::Timeout {
                op: "Work.wait".into(),
                waited_s: limit.map_or(0.0, |d| d.as_secs_f64()),
                missing: vec![],
                detail: "the operation is still in progress (wait again, or abort the \
                         communicator)"
                    .into(),
            })),
        }
    }

    /// True once the operation has finished, successfully or not (`wait()` then returns at
    /// once). Never blocks.
    fn is_completed(&self) -> bool {
        let done = self.req.test();
        if done {
            self.release();
        }
        done
    }

    fn __repr__(&self) -> String {
        format!(
            "<dmsc.Work {}>",
            if self.req.test() {
                "completed"
            } else {
                "in progress"
            }
        )
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if !self.req.test() {
            // Wait with the GIL released: the operation never needs it to finish.
            Python::attach(|py| {
                py.detach(|| {
                    let _ = self.wait_forever();
                })
            });
        }
        // `bufs` are dropped next, still attached (pyclass objects drop while attached).
    }
}
