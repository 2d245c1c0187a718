//! [`Call`]: one checked operation with its buffers, run blocking (GIL released) or started
//! in the background as a [`Work`].

use crate::buffer::Buf;
use crate::errors::{no_panic, to_py};
use crate::work::Work;
use dmsc::{CollKind, Communicator, DataType, ReduceOp};
use pyo3::prelude::*;

/// What to run.
pub enum Op {
    /// A collective with NCCL's per-call `count`.
    Coll {
        /// The collective.
        kind: CollKind,
        /// NCCL's per-rank element count for `kind`.
        count: usize,
        /// Reduction operator (`Sum` where none applies).
        op: ReduceOp,
        /// Root rank of broadcast and reduce.
        root: usize,
    },
    /// All-to-all-v: send counts, send displacements, receive counts, receive displacements.
    AllToAllV([Vec<usize>; 4]),
    /// Barrier (no buffers).
    Barrier,
    /// Send `input` to `peer` with `tag`.
    Send {
        /// Destination rank.
        peer: usize,
        /// Message tag.
        tag: u32,
    },
    /// Receive `output` from `peer` with `tag`.
    Recv {
        /// Source rank.
        peer: usize,
        /// Message tag.
        tag: u32,
    },
    /// Send `input` to `to` and receive `output` from `from`, as one group.
    SendRecv {
        /// Destination rank.
        to: usize,
        /// Source rank.
        from: usize,
        /// Tag of both messages.
        tag: u32,
    },
}

/// An operation and its buffers. `input == None` with an output means in place.
pub struct Call {
    /// What to run.
    pub op: Op,
    /// Element type of the buffers.
    pub dtype: DataType,
    /// The buffer read (None: in place, or no input).
    pub input: Option<Buf>,
    /// The buffer written (None: no output).
    pub output: Option<Buf>,
}

impl Call {
    /// Slices of the buffers, borrowed from `self`. The output is mutable through `&self`
    /// because it is Python-owned memory that `Buf` only points to.
    #[allow(clippy::mut_from_ref)]
    fn slices(&self) -> (Option<&[u8]>, &mut [u8]) {
        // SAFETY: the buffers live in `self`, which outlives the slices; the input and output
        // were checked not to overlap (same memory is passed as in place, input None); the
        // Python program must not touch them during the call (documented contract).
        let input = self.input.as_ref().map(|b| unsafe { b.bytes() });
        // SAFETY: as above; outputs were taken writable.
        let output = match &self.output {
            Some(b) => unsafe { b.bytes_mut() },
            None => &mut [],
        };
        (input, output)
    }

    /// Run to completion on this thread.
    fn run_blocking(&self, comm: &Communicator) -> dmsc::Result<()> {
        let (input, output) = self.slices();
        match &self.op {
            Op::Coll {
                kind,
                count,
                op,
                root,
            } => comm.collective_bytes(*kind, input, output, *count, self.dtype, *op, *root),
            Op::AllToAllV(v) => {
                comm.all_to_all_v_bytes(self.dtype, input, output, [&v[0], &v[1], &v[2], &v[3]])
            }
            Op::Barrier => comm.barrier(),
            Op::Send { peer, tag } => {
                let mut g = comm.group();
                g.send_bytes(input.unwrap_or(&[]), *peer, *tag, self.dtype)?;
                g.end()
            }
            Op::Recv { peer, tag } => {
                let mut g = comm.group();
                g.recv_bytes(output, *peer, *tag, self.dtype)?;
                g.end()
            }
            Op::SendRecv { to, from, tag } => {
                let mut g = comm.group();
                g.send_bytes(input.unwrap_or(&[]), *to, *tag, self.dtype)?;
                g.recv_bytes(output, *from, *tag, self.dtype)?;
                g.end()
            }
        }
    }

    /// Start in the background.
    fn start(&self, comm: &Communicator) -> dmsc::Result<dmsc::Request<'static>> {
        let (input, output) = self.slices();
        let req = match &self.op {
            Op::Coll {
                kind,
                count,
                op,
                root,
            } => comm
                .immediate_collective_bytes(*kind, input, output, *count, self.dtype, *op, *root),
            Op::AllToAllV(v) => comm.immediate_all_to_all_v_bytes(
                self.dtype,
                input,
                output,
                [&v[0], &v[1], &v[2], &v[3]],
            ),
            Op::Barrier => comm.immediate_collective_bytes(
                CollKind::Barrier,
                Some(&[]),
                &mut [],
                0,
                DataType::Uint8,
                ReduceOp::Sum,
                0,
            ),
            Op::Send { peer, tag } => {
                let mut g = comm.group();
                g.send_bytes(input.unwrap_or(&[]), *peer, *tag, self.dtype)?;
                g.immediate_end()
            }
            Op::Recv { peer, tag } => {
                let mut g = comm.group();
                g.recv_bytes(output, *peer, *tag, self.dtype)?;
                g.immediate_end()
            }
            Op::SendRecv { to, from, tag } => {
                let mut g = comm.group();
                g.send_bytes(input.unwrap_or(&[]), *to, *tag, self.dtype)?;
                g.recv_bytes(output, *from, *tag, self.dtype)?;
                g.immediate_end()
            }
        };
        // SAFETY: the buffers move into the Work that owns this request; it keeps them alive
        // and exported until the request has completed (its Drop waits for that).
        Ok(unsafe { req.detach() })
    }

    /// Run the call: blocking with the GIL released (returns None), or in the background
    /// (returns a Work).
    pub fn run(self, py: Python<'_>, comm: &Communicator, async_op: bool) -> PyResult<Py<PyAny>> {
        if async_op {
            let req = no_panic(|| self.start(comm)).map_err(to_py)?;
            let bufs = self.input.into_iter().chain(self.output).collect();
            return Ok(Py::new(py, Work::new(req, bufs))?.into_any());
        }
        let r = py.detach(|| no_panic(|| self.run_blocking(comm)));
        drop(self);
        r.map_err(to_py)?;
        Ok(py.None())
    }
}
