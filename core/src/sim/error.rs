//! What the simulator finds wrong with a set of schedules.

use crate::schedule::{Action, Slice};
use crate::types::Rank;
use std::fmt;

/// A defect in the schedules of a simulated run, with the rank, step and action that show
/// it. Every variant is a bug in a planner (or in hand-written test schedules).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SimError {
    /// A slice reaches past the end of its buffer, or names a buffer the rank lacks.
    OutOfBounds {
        /// Rank whose schedule holds the action.
        rank: Rank,
        /// Step index.
        step: usize,
        /// Action index within the step.
        action: usize,
        /// The offending slice.
        slice: Slice,
        /// Elements the buffer has (`None`: no such buffer).
        available: Option<usize>,
    },
    /// A transfer names a peer outside the world.
    BadPeer {
        /// Rank whose schedule holds the action.
        rank: Rank,
        /// Step index.
        step: usize,
        /// Action index within the step.
        action: usize,
        /// The peer named.
        peer: Rank,
        /// World size.
        nranks: usize,
    },
    /// One action is malformed on its own: operands of different lengths, or a copy or
    /// reduction whose source partly overlaps its destination.
    Malformed {
        /// Rank whose schedule holds the action.
        rank: Rank,
        /// Step index.
        step: usize,
        /// The action.
        action: Action,
        /// What is wrong.
        detail: String,
    },
    /// Two actions of one step touch overlapping memory and at least one writes it.
    Conflict {
        /// Rank whose schedule holds the step.
        rank: Rank,
        /// Step index.
        step: usize,
        /// The first action.
        first: Box<Action>,
        /// The second action.
        second: Box<Action>,
    },
    /// The n-th message from `from` to `to` has a different length at the two ends.
    LengthMismatch {
        /// Sender.
        from: Rank,
        /// Receiver.
        to: Rank,
        /// Message number of the pair (0-based).
        seq: usize,
        /// Elements sent.
        sent: usize,
        /// Elements the receive expects.
        expected: usize,
        /// Sender's step.
        send_step: usize,
        /// Receiver's step.
        recv_step: usize,
    },
    /// No rank can make progress.
    Deadlock {
        /// The ranks that have not finished.
        ranks: Vec<Rank>,
        /// What each of them waits for.
        detail: String,
    },
    /// Every schedule finished but messages were never received: `(from, to, seq, elements)`.
    Unreceived {
        /// The messages left over.
        messages: Vec<(Rank, Rank, usize, usize)>,
    },
    /// A schedule declares more scratch memory than the simulator allocates (1 GiB).
    ScratchTooLarge {
        /// The rank.
        rank: Rank,
        /// Elements declared.
        elems: usize,
    },
    /// A reduction kernel refused its operands.
    Reduce {
        /// Rank whose schedule holds the action.
        rank: Rank,
        /// Step index.
        step: usize,
        /// The kernel's complaint.
        detail: String,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::OutOfBounds {
                rank,
                step,
                action,
                slice,
                available,
            } => {
                write!(
                    f,
                    "rank {rank} step {step} action {action}: slice {:?}[{}..{}] ",
                    slice.buf,
                    slice.offset,
                    slice.offset.saturating_add(slice.len)
                )?;
                match available {
                    Some(n) => write!(f, "is out of bounds of a buffer of {n} elements"),
                    None => f.write_str("names a buffer the rank does not have"),
                }
            }
            SimError::BadPeer {
                rank,
                step,
                action,
                peer,
                nranks,
            } => write!(
                f,
                "rank {rank} step {step} action {action}: peer {peer} is out of range for \
                 {nranks} ranks"
            ),
            SimError::Malformed {
                rank,
                step,
                action,
                detail,
            } => write!(f, "rank {rank} step {step}: {action:?}: {detail}"),
            SimError::Conflict {
                rank,
                step,
                first,
                second,
            } => write!(
                f,
                "rank {rank} step {step}: conflicting actions in one step (a write overlaps \
                 another action's memory): {first:?} and {second:?}"
            ),
            SimError::LengthMismatch {
                from,
                to,
                seq,
                sent,
                expected,
                send_step,
                recv_step,
            } => write!(
                f,
                "message #{seq} from rank {from} (step {send_step}) to rank {to} (step \
                 {recv_step}) has {sent} elements but the receive expects {expected}"
            ),
            SimError::Deadlock { ranks, detail } => {
                write!(f, "deadlock: ranks {ranks:?} cannot progress: {detail}")
            }
            SimError::Unreceived { messages } => {
                write!(f, "{} message(s) were never received:", messages.len())?;
                for (from, to, seq, len) in messages {
                    write!(f, " #{seq} {from}->{to} ({len} elements);")?;
                }
                Ok(())
            }
            SimError::ScratchTooLarge { rank, elems } => write!(
                f,
                "rank {rank}: a scratch buffer of {elems} elements is too large to simulate"
            ),
            SimError::Reduce { rank, step, detail } => {
                write!(f, "rank {rank} step {step}: reduction failed: {detail}")
            }
        }
    }
}

impl std::error::Error for SimError {}

impl From<SimError> for crate::Error {
    fn from(e: SimError) -> Self {
        crate::Error::internal(format!("simulated schedule: {e}"))
    }
}
