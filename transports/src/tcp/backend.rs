//! Which I/O backend drives a mesh's sockets (`DMSC_TRANSPORT`): io_uring, plain sockets, or
//! io_uring when the kernel allows it.

use dmsc_core::error::{Error, Result};

/// Which I/O backend drives the sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring if the kernel allows it, else plain sockets.
    Auto,
    /// io_uring only (an error when refused).
    Uring,
    /// Plain nonblocking sockets with poll(2).
    Socket,
}

impl Backend {
    /// Parse `DMSC_TRANSPORT` (`uring`, `socket`, `auto`; `tcp` means auto).
    pub fn parse(s: &str) -> Result<Backend> {
        match s.to_ascii_lowercase().as_str() {
            "" | "auto" | "tcp" => Ok(Backend::Auto),
            "uring" | "io_uring" | "iouring" => Ok(Backend::Uring),
            "socket" | "sockets" | "poll" => Ok(Backend::Socket),
            other => Err(Error::invalid(format!(
                "DMSC_TRANSPORT={other} is not one of uring, socket, auto"
            ))),
        }
    }
}
