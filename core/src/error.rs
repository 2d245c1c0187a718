//! The one error type of dmsc, with the context a user needs to act: which rank, which peer,
//! which operation and sequence number.
//!
//! Shaped after rustls' `Error`: a `#[non_exhaustive]` enum with structured fields, whose
//! `Display` is a complete sentence.

use crate::types::Rank;
use std::fmt;

/// Result alias used throughout dmsc.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in dmsc.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A caller passed a bad argument; `what` names it and says why.
    InvalidArgument {
        /// The sentence naming the argument.
        what: String,
    },
    /// The call is not valid in the communicator's current state.
    InvalidUsage {
        /// What was wrong.
        what: String,
    },
    /// A deadline passed. `missing` are the ranks that did not arrive (or did not answer).
    Timeout {
        /// The operation, e.g. `all_reduce #12`.
        op: String,
        /// Seconds waited.
        waited_s: f64,
        /// Ranks that did not arrive.
        missing: Vec<Rank>,
        /// Further detail (what the other ranks were doing).
        detail: String,
    },
    /// Ranks called different collectives (or the same with different arguments).
    Mismatch {
        /// The operation sequence number at which the calls differ.
        seq: u64,
        /// The ranks involved.
        ranks: Vec<Rank>,
        /// The difference, e.g. `count 1000 vs 1001`, with both calls.
        detail: String,
    },
    /// A peer went away (connection closed or reset).
    PeerLost {
        /// The lost rank.
        peer: Rank,
        /// What was observed.
        detail: String,
    },
    /// Another rank reported an error; its message is carried along.
    Remote {
        /// The reporting rank.
        from: Rank,
        /// Its error.
        detail: String,
    },
    /// The communicator was aborted.
    Aborted {
        /// Who or what aborted it.
        detail: String,
    },
    /// A system call failed.
    System {
        /// What was being done.
        context: String,
        /// The OS error number, when there is one.
        errno: Option<i32>,
        /// The OS error text.
        detail: String,
    },
    /// Malformed bytes on the wire or in the store protocol.
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// A bug in dmsc: an invariant did not hold.
    Internal {
        /// The invariant.
        detail: String,
    },
}

impl Error {
    /// Build an [`Error::InvalidArgument`].
    pub fn invalid(what: impl Into<String>) -> Error {
        Error::InvalidArgument { what: what.into() }
    }

    /// Build an [`Error::InvalidUsage`].
    pub fn usage(what: impl Into<String>) -> Error {
        Error::InvalidUsage { what: what.into() }
    }

    /// Build an [`Error::Protocol`].
    pub fn protocol(detail: impl Into<String>) -> Error {
        Error::Protocol {
            detail: detail.into(),
        }
    }

    /// Build an [`Error::Internal`].
    pub fn internal(detail: impl Into<String>) -> Error {
        Error::Internal {
            detail: detail.into(),
        }
    }

    /// Build an [`Error::System`] from an `std::io::Error`.
    pub fn io(context: impl Into<String>, e: &std::io::Error) -> Error {
        Error::System {
            context: context.into(),
            errno: e.raw_os_error(),
            detail: e.to_string(),
        }
    }

    /// Build an [`Error::System`] from an errno value.
    pub fn errno(context: impl Into<String>, errno: i32) -> Error {
        Error::System {
            context: context.into(),
            errno: Some(errno),
            detail: std::io::Error::from_raw_os_error(errno).to_string(),
        }
    }

    /// A short stable name of the variant (`"Timeout"`, `"Mismatch"`, ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "InvalidArgument",
            Error::InvalidUsage { .. } => "InvalidUsage",
            Error::Timeout { .. } => "Timeout",
            Error::Mismatch { .. } => "Mismatch",
            Error::PeerLost { .. } => "PeerLost",
            Error::Remote { .. } => "Remote",
            Error::Aborted { .. } => "Aborted",
            Error::System { .. } => "System",
            Error::Protocol { .. } => "Protocol",
            Error::Internal { .. } => "Internal",
        }
    }
}

fn ranks(r: &[Rank]) -> String {
    r.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument { what } => write!(f, "invalid argument: {what}"),
            Error::InvalidUsage { what } => write!(f, "invalid usage: {what}"),
            Error::Timeout {
                op,
                waited_s,
                missing,
                detail,
            } => {
                write!(f, "timeout: {op} did not complete within {waited_s:.3} s")?;
                if !missing.is_empty() {
                    write!(f, "; rank(s) {} did not arrive", ranks(missing))?;
                }
                if !detail.is_empty() {
                    write!(f, "; {detail}")?;
                }
                Ok(())
            }
            Error::Mismatch {
                seq,
                ranks: r,
                detail,
            } => write!(
                f,
                "mismatch: ranks {} called different collectives at operation #{seq}: {detail}",
                ranks(r)
            ),
            Error::PeerLost { peer, detail } => write!(f, "peer lost: rank {peer}: {detail}"),
            Error::Remote { from, detail } => write!(f, "error reported by rank {from}: {detail}"),
            Error::Aborted { detail } => write!(f, "aborted: {detail}"),
            Error::System {
                context, detail, ..
            } => write!(f, "system error while {context}: {detail}"),
            Error::Protocol { detail } => write!(f, "protocol error: {detail}"),
            Error::Internal { detail } => write!(f, "internal error (a dmsc bug): {detail}"),
        }
    }
}

impl std::error::Error for Error {}
