//! One description of an operation for every front end.
//!
//! The Rust API ([`Communicator`](crate::Communicator)'s typed methods and groups), the C
//! library (`ffi/`) and the Python package (`python/`) all turn their arguments into a
//! [`Call`] through the builders here, so an operation's layouts, counts and argument checks
//! are written once, and its errors read alike whichever door it came through (naming the
//! arguments as that front end calls them, see [`Names`]). A `Call` then runs on a
//! communicator, blocking or as a [`Request`](crate::Request).
//!
//! The buffers are [`Span`]s, raw addresses: the Rust API builds them from borrows it holds
//! for the whole operation, the C and Python front ends from memory their callers keep
//! valid by contract (NCCL's rule: until the call returns or the request completes).

mod all_to_all_v;
mod args;
mod check;
mod collective;
mod p2p;
mod run;
mod span;

pub use all_to_all_v::end_of;
pub use args::{Names, Shape};
pub use check::rank_arg;
pub use collective::CollArgs;
pub use p2p::P2pCall;
pub use span::Span;

pub use dmsc_core::engine::MemKind;
use dmsc_core::{CollDesc, DataType};

/// A checked operation with its buffers.
#[derive(Clone, Debug)]
pub enum Call {
    /// A collective (including the barrier). `input == None` is in place on `output`, the
    /// whole buffer in NCCL's layout. Buffers this rank does not use (a broadcast's input and
    /// a reduction's output off the root) are empty.
    Collective {
        /// What to run, with NCCL's per-call count.
        desc: CollDesc,
        /// The buffer read.
        input: Option<Span>,
        /// The buffer written.
        output: Span,
        /// This rank's factor when `desc.op` is `PreMulSum` (`None` otherwise).
        factor: Option<f64>,
    },
    /// All-to-all-v; `input == None` is in place on `output`.
    AllToAllV {
        /// Element type.
        dtype: DataType,
        /// The buffer read.
        input: Option<Span>,
        /// The buffer written.
        output: Span,
        /// Send counts, send displacements, receive counts, receive displacements, in
        /// elements, one per rank (displacements of empty blocks are 0).
        v: Box<[Vec<usize>; 4]>,
    },
    /// Sends and receives that progress together.
    P2p {
        /// The group's element type (all its operations' elements have this size).
        dtype: DataType,
        /// The operations, in the order they were given.
        ops: Vec<P2pCall>,
    },
}

impl Call {
    /// The kind of memory the call's buffers are in (the builders checked they agree; host
    /// memory when no buffer holds data).
    pub fn memory(&self) -> MemKind {
        // No allocation: this runs on every call's latency path.
        let holds = |s: &Span| s.len > 0;
        let first = match self {
            Call::Collective { input, output, .. } | Call::AllToAllV { input, output, .. } => {
                input.filter(holds).or(Some(*output).filter(holds))
            }
            Call::P2p { ops, .. } => ops.iter().map(|o| o.buf).find(holds),
        };
        first.map_or(MemKind::Host, |s| s.kind)
    }
}
