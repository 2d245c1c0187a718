//! One measured call: its parameters and buffers, issued blocking or non-blocking over a
//! [`PerfComm`] (`-z`), `-m` at a time.

use super::buf::AlignedBuf;
use super::check::CheckSpec;
use super::comm::PerfComm;
use super::sizes::Layout;
use super::vsplit::VSplit;
use super::PerfOp;
use crate::{Request, Result};

/// The sends and receives of one group.
type P2pLists<'a> = (Vec<(&'a [u8], usize)>, Vec<(&'a mut [u8], usize)>);

/// Cut `buf` into `n` consecutive blocks of `b` bytes (`b` may be 0).
fn blocks_mut(mut buf: &mut [u8], b: usize, n: usize) -> Vec<&mut [u8]> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (head, rest) = std::mem::take(&mut buf).split_at_mut(b);
        out.push(head);
        buf = rest;
    }
    out
}

/// One call's parameters, shared by the timed loop and the checks.
pub(crate) struct Call {
    /// What is called, and how its buffers are filled and checked.
    pub(crate) spec: CheckSpec,
    /// Its buffers' sizes.
    pub(crate) layout: Layout,
}

impl Call {
    pub(crate) fn describe(&self, in_place: bool) -> String {
        let s = &self.spec;
        let mut d = format!("{} of {} bytes ({}", s.op, self.layout.size_bytes, s.dtype);
        if s.op.reduces() {
            d += &format!(", {}", s.redop);
        }
        if s.op.has_root() {
            d += &format!(", root {}", s.root);
        }
        d += if in_place {
            "), in place"
        } else {
            "), out of place"
        };
        d
    }

    /// The groups of gather and scatter, as nccl-tests' gather_perf and scatter_perf issue
    /// them: gather sends every rank's block to the root, which receives block `r` from rank
    /// `r`; scatter the reverse. In place (`input == None`, blocks at `rank * count` of
    /// `output`), the root's own block is already where it belongs and is not sent.
    pub(crate) fn p2p_lists<'a>(
        &self,
        input: Option<&'a [u8]>,
        output: &'a mut [u8],
    ) -> P2pLists<'a> {
        let s = &self.spec;
        let (n, me, root) = (s.nranks, s.rank, s.root);
        let b = s.count * s.dtype.size();
        let (mut sends, mut recvs) = (Vec::new(), Vec::new());
        match (s.op, input) {
            (PerfOp::Gather, Some(input)) => {
                sends.push((input, root));
                if me == root {
                    recvs.extend(blocks_mut(output, b, n).into_iter().zip(0..n));
                }
            }
            (PerfOp::Gather, None) if me == root => {
                let blocks = blocks_mut(output, b, n).into_iter().zip(0..n);
                recvs.extend(blocks.filter(|(_, r)| *r != root));
            }
            (PerfOp::Gather, None) => {
                let out: &'a [u8] = output;
                sends.push((&out[me * b..(me + 1) * b], root));
            }
            (_, Some(input)) => {
                if me == root {
                    sends.extend((0..n).map(|r| (&input[r * b..(r + 1) * b], r)));
                }
                recvs.push((output, root));
            }
            (_, None) if me == root => {
                let out: &'a [u8] = output;
                let blocks = (0..n).map(|r| (&out[r * b..(r + 1) * b], r));
                sends.extend(blocks.filter(|(_, r)| *r != root));
            }
            (_, None) => recvs.push((&mut output[me * b..(me + 1) * b], root)),
        }
        (sends, recvs)
    }

    pub(crate) fn run(
        &self,
        comm: &dyn PerfComm,
        input: Option<&[u8]>,
        output: &mut [u8],
    ) -> Result<()> {
        let s = &self.spec;
        match s.op {
            PerfOp::Gather | PerfOp::Scatter => {
                let (sends, recvs) = self.p2p_lists(input, output);
                comm.group_bytes(sends, recvs)
            }
            PerfOp::AllToAllV => {
                let v = VSplit::for_rank(s.count * s.nranks, s.nranks, s.rank);
                comm.all_to_all_v_bytes(s.dtype, input, output, v.args())
            }
            PerfOp::SendRecv => {
                let (n, r) = (s.nranks, s.rank);
                comm.send_recv_bytes(input.unwrap_or(&[]), (r + 1) % n, output, (r + n - 1) % n)
            }
            op => {
                comm.collective_bytes(op.kind(), input, output, s.count, s.dtype, s.redop, s.root)
            }
        }
    }

    /// Start the call without waiting for it.
    pub(crate) fn start<'a>(
        &self,
        comm: &'a dyn PerfComm,
        input: Option<&'a [u8]>,
        output: &'a mut [u8],
    ) -> Request<'a> {
        let s = &self.spec;
        match s.op {
            PerfOp::Gather | PerfOp::Scatter => {
                let (sends, recvs) = self.p2p_lists(input, output);
                comm.immediate_group_bytes(sends, recvs)
            }
            PerfOp::AllToAllV => {
                let v = VSplit::for_rank(s.count * s.nranks, s.nranks, s.rank);
                comm.immediate_all_to_all_v_bytes(s.dtype, input, output, v.args())
            }
            PerfOp::SendRecv => {
                let (n, r) = (s.nranks, s.rank);
                let send = input.unwrap_or(&[]);
                comm.immediate_send_recv_bytes(send, (r + 1) % n, output, (r + n - 1) % n)
            }
            op => comm.immediate_collective_bytes(
                op.kind(),
                input,
                output,
                s.count,
                s.dtype,
                s.redop,
                s.root,
            ),
        }
    }

    /// One batch: one call per buffer of `outputs`. Blocking: each call completes, then a
    /// barrier, before the next; non-blocking: all are started, then all are waited on (every
    /// request is waited on even after a failure; the first error is returned).
    pub(crate) fn batch(
        &self,
        comm: &dyn PerfComm,
        input: Option<&[u8]>,
        outputs: &mut [AlignedBuf],
        blocking: bool,
    ) -> Result<()> {
        if blocking {
            for out in outputs.iter_mut() {
                self.run(comm, input, out.bytes_mut())?;
                comm.barrier()?;
            }
            return Ok(());
        }
        let requests: Vec<Request<'_>> = outputs
            .iter_mut()
            .map(|out| self.start(comm, input, out.bytes_mut()))
            .collect();
        Request::wait_all(requests)
    }
}
