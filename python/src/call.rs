//! [`Call`]: a checked `dmsc::call::Call` with the Python buffers that keep its memory alive
//! and exported, run blocking (GIL released) or started in the background as a [`Work`].

use crate::buffer::Buf;
use crate::errors::{no_panic, to_py};
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
}
