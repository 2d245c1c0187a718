//! The crate's one error type: every variant names what was wrong.

use std::fmt;

/// Everything that can go wrong in the control layer.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A description (model, cluster, task, request) has a bad field.
    Invalid {
        /// Path of the field, e.g. `layers[3].fwd_flops`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No plan satisfies the constraints (memory, stage count).
    Infeasible(String),
    /// A file or socket operation failed.
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// JSON could not be parsed.
    Json {
        /// What was being parsed.
        what: String,
        /// The parser's message (with line and column).
        source: serde_json::Error,
    },
    /// The persistent store failed.
    Store(String),
    /// A dmsc communication call failed.
    Comm(dmsc::Error),
    /// A task or worker id that the scheduler does not know.
    Unknown(String),
    /// A service registry backend (etcd) refused or failed a call.
    Registry {
        /// The call and what it was about, e.g. `lease grant at http://127.0.0.1:2379`.
        what: String,
        /// The backend's message, or the transport's error.
        reason: String,
    },
}

impl Error {
    /// An [`Error::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Io`] saying what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid { field, reason } => write!(f, "invalid field `{field}`: {reason}"),
            Error::Infeasible(why) => write!(f, "no feasible plan: {why}"),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Json { what, source } => write!(f, "parsing {what}: {source}"),
            Error::Store(why) => write!(f, "store: {why}"),
            Error::Comm(e) => write!(f, "communication: {e}"),
            Error::Unknown(what) => write!(f, "unknown {what}"),
            Error::Registry { what, reason } => write!(f, "service registry: {what}: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Json { source, .. } => Some(source),
            Error::Comm(e) => Some(e),
            _ => None,
        }
    }
}

impl From<dmsc::Error> for Error {
    fn from(e: dmsc::Error) -> Error {
        Error::Comm(e)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Store(e.to_string())
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
