//! What a builder of a [`Call`](super::Call) knows besides the buffers: the communicator's
//! shape, and the names the front end gives its arguments, so that every error names the
//! argument as the caller wrote it (`sendbuff` in C, `tensor` in Python, `input` in Rust).

/// This rank and the number of ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
}

/// The front end's names of an operation's arguments.
#[derive(Clone, Copy, Debug)]
pub struct Names {
    /// The buffer read (`sendbuff`, `tensor`, `input`).
    pub input: &'static str,
    /// The buffer written (`recvbuff`, `out`, `output`).
    pub output: &'static str,
    /// The one buffer of an in-place call.
    pub in_place: &'static str,
    /// All-to-all-v's send counts, send displacements, receive counts and receive
    /// displacements.
    pub v: [&'static str; 4],
}

impl Names {
    /// The names of the Rust API's arguments.
    pub const RUST: Names = Names {
        input: "input",
        output: "output",
        in_place: "buffer",
        v: ["send_counts", "send_displs", "recv_counts", "recv_displs"],
    };
}
