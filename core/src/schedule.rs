//! The schedule: what one rank does for one collective, as data.
//!
//! A [`Schedule`] is a list of [`Step`]s executed in order. Within a step, every
//! [`Action`] may run concurrently with the others; the step ends when all of them are done.
//! A step therefore must not contain two actions where one writes elements another reads or
//! writes (the simulator checks this). Local actions (`Copy`, `Reduce`, `Scale`) of a step
//! run before its transfers begin.
//!
//! Messages between a pair of ranks are matched in order: the n-th `Send` from `a` to `b`
//! (in step order, then action order) is received by the n-th `Recv`/`RecvReduce` from `a`
//! at `b`, and both must have the same length. An action of length 0 still sends one empty
//! message (used by barriers), so planners emit no action at all where nothing must move.
//!
//! The engine splits each message into chunks, keeps several in flight per peer and reduces
//! received chunks while later ones are still on the wire; the schedule itself knows nothing
//! of chunks, sockets or time. This is the sans-IO shape of quinn-proto.

use crate::types::Rank;

/// Which buffer a [`Slice`] refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufId {
    /// The caller's input (send) buffer; never written by a schedule unless in place.
    Input,
    /// The caller's output (receive) buffer.
    Output,
    /// Engine-owned temporary memory of [`Schedule::scratch_elems`] elements.
    Scratch,
    /// The i-th caller buffer of a grouped send/recv call (`dmscGroupStart`/`End`).
    Group(u32),
}

/// A range of elements `[offset, offset + len)` of one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slice {
    /// The buffer.
    pub buf: BufId,
    /// First element.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

impl Slice {
    /// Construct a slice.
    pub const fn new(buf: BufId, offset: usize, len: usize) -> Slice {
        Slice { buf, offset, len }
    }

    /// One past the last element.
    pub const fn end(&self) -> usize {
        self.offset + self.len
    }
}

/// One action of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the elements of `src` to `peer`.
    Send {
        /// Destination rank.
        peer: Rank,
        /// Data to send.
        src: Slice,
    },
    /// Receive a message from `peer` into `dst`.
    Recv {
        /// Source rank.
        peer: Rank,
        /// Where the message lands.
        dst: Slice,
    },
    /// Receive a message `m` from `peer` and store `dst[i] = local[i] ⊕ m[i]` with the
    /// collective's combining operator. `local` and `dst` have the same length and may be the
    /// same slice.
    RecvReduce {
        /// Source rank.
        peer: Rank,
        /// The local operand.
        local: Slice,
        /// Where the result lands.
        dst: Slice,
    },
    /// Local copy `dst = src` (same length). Skipped by the engine when both name the same
    /// memory (in-place calls).
    Copy {
        /// Source.
        src: Slice,
        /// Destination.
        dst: Slice,
    },
    /// Local reduction `dst[i] = dst[i] ⊕ src[i]`.
    Reduce {
        /// Operand.
        src: Slice,
        /// Accumulator and result.
        dst: Slice,
    },
    /// Divide every element of `dst` by the number of ranks (the last step of `Avg`).
    Scale {
        /// Elements to divide.
        dst: Slice,
    },
}

impl Action {
    /// The peer of a transfer, `None` for a local action.
    pub fn peer(&self) -> Option<Rank> {
        match *self {
            Action::Send { peer, .. }
            | Action::Recv { peer, .. }
            | Action::RecvReduce { peer, .. } => Some(peer),
            _ => None,
        }
    }

    /// True for `Copy`, `Reduce` and `Scale`.
    pub fn is_local(&self) -> bool {
        self.peer().is_none()
    }

    /// The slices this action reads.
    pub fn reads(&self) -> impl Iterator<Item = Slice> {
        let (a, b) = match *self {
            Action::Send { src, .. } => (Some(src), None),
            Action::Recv { .. } => (None, None),
            Action::RecvReduce { local, .. } => (Some(local), None),
            Action::Copy { src, .. } => (Some(src), None),
            Action::Reduce { src, dst } => (Some(src), Some(dst)),
            Action::Scale { dst } => (Some(dst), None),
        };
        a.into_iter().chain(b)
    }

    /// The slice this action writes, if any.
    pub fn writes(&self) -> Option<Slice> {
        match *self {
            Action::Send { .. } => None,
            Action::Recv { dst, .. }
            | Action::RecvReduce { dst, .. }
            | Action::Copy { dst, .. }
            | Action::Reduce { dst, .. }
            | Action::Scale { dst } => Some(dst),
        }
    }
}

/// Actions that may run concurrently.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// The actions; local ones run first, in order.
    pub actions: Vec<Action>,
}

/// One rank's part of one collective.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Steps, executed in order.
    pub steps: Vec<Step>,
    /// Elements of scratch memory the schedule uses (`BufId::Scratch`).
    pub scratch_elems: usize,
}

impl Schedule {
    /// Append a step unless it is empty.
    pub fn push(&mut self, actions: Vec<Action>) {
        if !actions.is_empty() {
            self.steps.push(Step { actions });
        }
    }

    /// Number of transfer actions (sends plus receives) in the whole schedule.
    pub fn transfers(&self) -> usize {
        self.steps
            .iter()
            .flat_map(|s| &s.actions)
            .filter(|a| !a.is_local())
            .count()
    }
}
