//! A validated operation, ready to run on a communicator now (blocking), to post (non-blocking
//! request), or to record inside a group. It holds the caller's buffers as raw spans: the C
//! contract, not a borrow, keeps them valid (NCCL's rule: until the call returns, the request
//! completes, or the group ends).

use crate::args::Span;
use dmsc_rs::{CollKind, Communicator, DataType, Group, ReduceOp, Request, Result};

/// One send or receive of a point-to-point operation (tag 0, like NCCL's untagged calls).
#[derive(Clone, Copy, Debug)]
pub(crate) struct P2pOp {
    /// Send (true) or receive.
    pub send: bool,
    /// The buffer, in bytes.
    pub buf: Span,
    /// The peer rank.
    pub peer: usize,
}

/// A validated operation.
#[derive(Debug)]
pub(crate) enum Op {
    /// A collective in dmsc's byte form (`Communicator::collective_bytes`); `input == None`
    /// is in place, with `output` the whole buffer in NCCL's layout.
    Coll {
        kind: CollKind,
        input: Option<Span>,
        output: Span,
        count: usize,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
    },
    /// All-to-all-v; `v` holds send counts, send displacements, receive counts and receive
    /// displacements, in elements.
    AllToAllV {
        dtype: DataType,
        input: Option<Span>,
        output: Span,
        v: Box<[Vec<usize>; 4]>,
    },
    /// A send or a receive.
    P2p(P2pOp),
}

/// Point-to-point buffers travel as bytes: a group may mix element types, as NCCL allows;
/// sender and receiver must agree on the byte count (and order), not on the type.
const P2P_WIRE_TYPE: DataType = DataType::Uint8;

impl Op {
    /// Run to completion on the calling thread.
    ///
    /// # Safety
    /// The spans are valid for the whole call: inputs readable, outputs writable, and not
    /// accessed by anyone else in a conflicting way.
    pub unsafe fn run(&self, comm: &Communicator) -> Result<()> {
        match self {
            Op::Coll {
                kind,
                input,
                output,
                count,
                dtype,
                op,
                root,
            } => {
                // SAFETY: the caller's contract covers the spans for this call.
                let (i, o) = unsafe { (input.map(|s| s.bytes()), output.bytes_mut()) };
                comm.collective_bytes(*kind, i, o, *count, *dtype, *op, *root)
            }
            Op::AllToAllV {
                dtype,
                input,
                output,
                v,
            } => {
                // SAFETY: as above.
                let (i, o) = unsafe { (input.map(|s| s.bytes()), output.bytes_mut()) };
                comm.all_to_all_v_bytes(*dtype, i, o, [&v[0], &v[1], &v[2], &v[3]])
            }
            // SAFETY: forwarded contract.
            Op::P2p(p) => unsafe { p2p_group(comm, &[*p]) }?.end(),
        }
    }

    /// Start the operation and return its request; the buffers are in use until the request
    /// completes.
    ///
    /// # Safety
    /// As [`Op::run`], until the returned request has completed (test true, wait returned,
    /// or dropped).
    pub unsafe fn post(&self, comm: &Communicator) -> Result<Request<'static>> {
        let req = match self {
            Op::Coll {
                kind,
                input,
                output,
                count,
                dtype,
                op,
                root,
            } => {
                // SAFETY: the caller's contract covers the spans until the request completes.
                let (i, o) = unsafe { (input.map(|s| s.bytes()), output.bytes_mut()) };
                comm.immediate_collective_bytes(*kind, i, o, *count, *dtype, *op, *root)
            }
            Op::AllToAllV {
                dtype,
                input,
                output,
                v,
            } => {
                // SAFETY: as above.
                let (i, o) = unsafe { (input.map(|s| s.bytes()), output.bytes_mut()) };
                comm.immediate_all_to_all_v_bytes(*dtype, i, o, [&v[0], &v[1], &v[2], &v[3]])
            }
            // SAFETY: forwarded contract.
            Op::P2p(p) => return unsafe { post_p2p(comm, &[*p]) },
        };
        rejected_at_once(&req)?;
        // SAFETY: the C contract keeps the buffers valid until the request completes, which
        // is what `detach` requires.
        Ok(unsafe { req.detach() })
    }
}

/// A receive buffer that overlaps another buffer of the same batch would be written while
/// the other operation reads or writes it (and, between ranks of one host, while a peer
/// copies from it): an argument error, never a race.
fn check_receive_overlaps(ops: &[P2pOp]) -> Result<()> {
    let what = |p: &P2pOp| {
        if p.send {
            format!("the send to rank {}", p.peer)
        } else {
            format!("the receive from rank {}", p.peer)
        }
    };
    for (i, a) in ops.iter().enumerate() {
        if a.send || a.buf.len == 0 {
            continue;
        }
        for (j, b) in ops.iter().enumerate() {
            if i != j && b.buf.len != 0 && a.buf.overlaps(&b.buf) {
                return Err(dmsc_rs::Error::invalid(format!(
                    "the buffer of {} overlaps the buffer of {} in the same group",
                    what(a),
                    what(b)
                )));
            }
        }
    }
    Ok(())
}

/// An operation the core rejected before starting (bad arguments it checks itself) is an
/// error of the call, not of a request the caller must wait for.
fn rejected_at_once(req: &Request<'_>) -> Result<()> {
    if req.test() {
        req.wait_timeout(std::time::Duration::ZERO)?;
    }
    Ok(())
}

/// Sends and receives as one dmsc group: they progress concurrently, so two ranks that both
/// send first do not deadlock.
///
/// # Safety
/// As [`Op::post`], for every buffer in `ops`, until the group's operation completes.
unsafe fn p2p_group<'c>(comm: &'c Communicator, ops: &[P2pOp]) -> Result<Group<'c, 'c>> {
    let mut g = comm.group();
    for p in ops {
        // SAFETY: the caller's contract covers the buffers until the operation completes.
        unsafe {
            if p.send {
                g.send_bytes(p.buf.bytes(), p.peer, 0, P2P_WIRE_TYPE)?;
            } else {
                g.recv_bytes(p.buf.bytes_mut(), p.peer, 0, P2P_WIRE_TYPE)?;
            }
        }
    }
    Ok(g)
}

/// Start sends and receives together and return the request of the whole batch.
///
/// # Safety
/// As [`Op::post`], for every buffer in `ops`.
pub(crate) unsafe fn post_p2p(comm: &Communicator, ops: &[P2pOp]) -> Result<Request<'static>> {
    check_receive_overlaps(ops)?;
    // SAFETY: forwarded contract.
    let req = unsafe { p2p_group(comm, ops) }?.immediate_end();
    rejected_at_once(&req)?;
    // SAFETY: the C contract keeps the buffers valid until the request completes, which is
    // what `detach` requires.
    Ok(unsafe { req.detach() })
}

#[cfg(test)]
mod overlap_tests {
    use super::*;

    fn op(send: bool, buf: &mut [u8], off: usize, len: usize, peer: usize) -> P2pOp {
        P2pOp {
            send,
            buf: Span::at(buf.as_mut_ptr() as *const _, off, len),
            peer,
        }
    }

    #[test]
    fn a_receive_overlapping_another_buffer_is_rejected() {
        let mut b = vec![0u8; 64];
        let swap = [op(true, &mut b, 0, 32, 1), op(false, &mut b, 16, 32, 1)];
        let e = check_receive_overlaps(&swap).unwrap_err().to_string();
        assert!(
            e.contains("receive from rank 1") && e.contains("send to rank 1"),
            "{e}"
        );
        // Disjoint halves, and one buffer sent to two peers, are fine.
        let ok = [
            op(true, &mut b, 0, 32, 1),
            op(true, &mut b, 0, 32, 2),
            op(false, &mut b, 32, 32, 1),
        ];
        check_receive_overlaps(&ok).unwrap();
    }
}
