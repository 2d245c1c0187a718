//! Grouped point-to-point operations (NCCL's `ncclGroupStart` ... `ncclGroupEnd` around
//! `ncclSend` / `ncclRecv`).
//!
//! A group becomes a single step holding all its transfers, so they proceed concurrently
//! and two ranks that send to each other cannot deadlock, whatever the order in which each
//! listed its operations. Messages between a pair are matched in the order the operations
//! were listed.
//!
//! Layout of the step, which the engine relies on to label frames per operation: action `i`
//! is the `i`-th operation whose peer is not the rank itself, in the given order (zero-length
//! operations included: they are messages the caller asked for, and the peer has the
//! matching one). Sends to and receives from the rank itself are paired in order and become
//! local copies, placed after all transfers.

use crate::error::{Error, Result};
use crate::schedule::{Action, BufId, Schedule, Slice};
use crate::types::Rank;

/// One operation of a send/recv group; `buf` names the group buffer `BufId::Group(buf)`,
/// whose first `len` elements are sent or received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum P2p {
    /// Send `Group(buf)[0..len]` to `peer`.
    Send {
        /// Destination rank.
        peer: Rank,
        /// Group buffer index.
        buf: u32,
        /// Elements.
        len: usize,
    },
    /// Receive `len` elements from `peer` into `Group(buf)[0..len]`.
    Recv {
        /// Source rank.
        peer: Rank,
        /// Group buffer index.
        buf: u32,
        /// Elements.
        len: usize,
    },
}

/// The one-step schedule of a group (arguments `rank`, `n` already validated).
pub(crate) fn plan(rank: Rank, n: usize, ops: &[P2p]) -> Result<Schedule> {
    let mut actions = Vec::with_capacity(ops.len());
    let (mut self_sends, mut self_recvs) = (Vec::new(), Vec::new());
    for (i, op) in ops.iter().enumerate() {
        let (P2p::Send { peer, buf, len } | P2p::Recv { peer, buf, len }) = *op;
        if peer >= n {
            return Err(Error::invalid(format!(
                "peer {peer} of send/recv operation #{i} is out of range for {n} ranks"
            )));
        }
        let slice = Slice::new(BufId::Group(buf), 0, len);
        match *op {
            P2p::Send { .. } if peer == rank => self_sends.push(slice),
            P2p::Recv { .. } if peer == rank => self_recvs.push(slice),
            P2p::Send { .. } => actions.push(Action::Send { peer, src: slice }),
            P2p::Recv { .. } => actions.push(Action::Recv { peer, dst: slice }),
        }
    }
    if self_sends.len() != self_recvs.len() {
        return Err(Error::invalid(format!(
            "rank {rank} sends itself {} message(s) but receives {} from itself",
            self_sends.len(),
            self_recvs.len()
        )));
    }
    for (i, (src, dst)) in self_sends.into_iter().zip(self_recvs).enumerate() {
        if src.len != dst.len {
            return Err(Error::invalid(format!(
                "self send #{i} of rank {rank} has {} elements but the matching self receive \
                 has {}",
                src.len, dst.len
            )));
        }
        if src.len > 0 {
            actions.push(Action::Copy { src, dst });
        }
    }
    let mut s = Schedule::default();
    s.push(actions);
    Ok(s)
}
