//! [`Call`]: a checked `dmsc::call::Call` with the Python buffers that keep its memory alive
//! and exported, run blocking (GIL released) or started in the background as a [`Work`].

use crate::buffer::Buf;
use crate::errors::{invalid, no_panic, to_py};
use crate::work::Work;
use dmsc::Communicator;
use pyo3::prelude::*;

/// An operation and the buffers its spans point into.
pub struct Call {
    call: dmsc::call::Call,
    bufs: Vec<Buf>,
}

impl Call {
    /// `call`, whose spans point into `bufs`.
    pub fn new(call: dmsc::call::Call, bufs: Vec<Buf>) -> Call {
        Call { call, bufs }
    }

    /// A barrier (no buffers).
    pub fn barrier() -> Call {
        Call::new(dmsc::call::Call::barrier(), vec![])
    }

    /// Run the call: blocking with the GIL released (returns None), or in the background
    /// (returns a Work).
    pub fn run(self, py: Python<'_>, comm: &Communicator, async_op: bool) -> PyResult<Py<PyAny>> {
        if self.call.memory() != dmsc::call::MemKind::Host {
            return self.run_on_stream(py, comm, async_op);
        }
        if async_op {
            // SAFETY: the spans point into `self.bufs`, which move into the Work that owns
            // the request; it keeps them alive and exported until the request has completed
            // (its Drop waits for that). The Python program must not touch them meanwhile
            // (documented contract, as with torch.distributed).
            let req = no_panic(|| Ok(unsafe { comm.start_call(&self.call) }));
            let req = req.map_err(to_py)?;
            return Ok(Py::new(py, Work::new(req, self.bufs))?.into_any());
        }
        // SAFETY: the spans point into `self.bufs`, alive until after the call returns; the
        // program must not touch them during the call (documented contract).
        let r = py.detach(|| no_panic(|| unsafe { comm.run_call(&self.call) }));
        drop(self);
        r.map_err(to_py)?;
        Ok(py.None())
    }

    /// The stream a call on CUDA buffers orders on: the one of its buffers (all alike).
    fn stream(&self) -> PyResult<usize> {
        let mut streams = self
            .bufs
            .iter()
            .filter(|b| b.len > 0 && b.kind != dmsc::call::MemKind::Host)
            .map(|b| b.stream);
        let first = streams.next().unwrap_or(0);
        match streams.find(|&s| s != first) {
            None => Ok(first),
            Some(other) => Err(invalid(format!(
                "the call's CUDA tensors are used on different streams ({first:#x} and \
                 {other:#x}); dmsc orders a call on one stream"
            ))),
        }
    }

    /// A call on CUDA buffers: ordered on their stream (the tensors' current stream), as
    /// ProcessGroupNCCL orders its work. With `async_op` the Work completes once the device
    /// buffers hold the results; without it this returns once they do (GIL released).
    fn run_on_stream(
        self,
        py: Python<'_>,
        comm: &Communicator,
        async_op: bool,
    ) -> PyResult<Py<PyAny>> {
        let stream = self.stream()?;
        // SAFETY: the spans point into `self.bufs` (device memory kept exported by them),
        // which move into the Work that owns the request, or live here until it completed;
        // `stream` is the stream the producer handed the tensors over on (its current one).
        let req = no_panic(|| Ok(unsafe { comm.start_call_on_stream(&self.call, stream) }));
        let req = req.map_err(to_py)?;
        let work = Work::new(req, self.bufs);
        if async_op {
            return Ok(Py::new(py, work)?.into_any());
        }
        py.detach(|| no_panic(|| work.wait_done())).map_err(to_py)?;
        Ok(py.None())
    }
}
