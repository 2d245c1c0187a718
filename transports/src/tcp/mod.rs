//! TCP transport: one data and one control connection per peer, driven through io_uring
//! (crate `io-uring`) or, when io_uring is refused, plain nonblocking sockets and `poll(2)`.
//!
//! Backend choice: `DMSC_TRANSPORT=uring|socket` forces one; otherwise io_uring is tried and
//! the socket backend is taken when creating a ring fails with `EPERM` (a container's
//! seccomp policy) or `ENOSYS` (a kernel without io_uring), logged once per process.

mod greet;
pub(crate) mod mesh;
mod paths;
mod redial;
mod socket;
mod uring;

pub use mesh::{connect_listening, connect_mesh, listen, Exchange, Listening, MeshOptions};
pub use socket::SocketTransport;
pub use uring::UringTransport;

use crate::conn::{Conn, NoPaths, PathSink};
use dmsc_core::engine::{Completion, Token, Transport};
use dmsc_core::error::{Error, Result};
use dmsc_core::wire::FrameHeader;
use dmsc_core::Rank;
use std::sync::Once;

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

/// The connections of one rank to all its peers.
pub(crate) struct Mesh {
    /// Boxed so that each connection's `msghdr`/iovecs keep their address while the kernel
    /// holds them, whatever happens to the vector. A slot is emptied when a path connection
    /// is gone and the kernel holds nothing of it; new path connections fill empty slots.
    conns: Vec<Option<Box<Conn>>>,
    data_of: Vec<Option<usize>>,
    control_of: Vec<Option<usize>>,
    /// Several paths per peer (`DMSC_PATHS` > 1).
    spray: Option<paths::SprayMesh>,
    /// Sockets are nonblocking (the plain-socket backend).
    nonblocking: bool,
}

impl Mesh {
    /// Account `n` bytes received on connection `i`.
    fn on_received(&mut self, i: usize, n: usize, out: &mut Vec<Completion>) {
        let sink: &mut dyn PathSink = match self.spray.as_mut() {
            Some(s) => s,
            None => &mut NoPaths,
        };
        if let Some(c) = self.conns[i].as_deref_mut() {
            c.on_received(n, out, sink);
        }
    }

    /// Between I/O rounds (spraying); returns when it next needs to run.
    fn progress(&mut self, out: &mut Vec<Completion>) -> Option<std::time::Instant> {
        if self.spray.is_some() {
            self.spray_progress(out)
        } else {
            None
        }
    }

    fn cancel(&mut self) {
        if self.spray.is_some() {
            self.spray_cancel();
        } else {
            for c in self.conns.iter_mut().flatten() {
                c.clear();
            }
        }
    }

    fn describe_peer(&self, peer: Rank) -> Option<String> {
        self.spray.as_ref().and_then(|s| s.describe(peer))
    }

    fn path_metrics(&self) -> Option<dmsc_core::engine::PathMetricsHandle> {
        self.spray.as_ref().map(|s| s.metrics_handle())
    }

    fn set_waker(&self, w: std::sync::Arc<dyn dmsc_core::engine::Waker>) {
        if let Some(s) = &self.spray {
            s.set_waker(w);
        }
    }

    /// Queue a data frame to `peer` (the body of every backend's `Transport::post_send`).
    fn post_send(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        token: Token,
    ) -> Result<()> {
        if self.spray.is_some() {
            return self.spray_send(peer, header, data, token);
        }
        self.data(peer)?.push_send(header, data, token);
        Ok(())
    }

    /// Queue a receive from `peer` (the body of every backend's `Transport::post_recv`).
    fn post_recv(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        token: Token,
    ) -> Result<()> {
        if self.spray.is_some() {
            return self.spray_recv(peer, expect, dst, token);
        }
        self.data(peer)?.push_recv(expect, dst, token);
        Ok(())
    }

    /// Queue a control message to `peer`; a peer without a control connection is ignored.
    fn send_control(&mut self, peer: Rank, payload: &[u8]) {
        if self.spray.is_some() {
            return self.spray_control(peer, payload);
        }
        if let Ok(c) = self.control(peer) {
            c.push_control(payload);
        }
    }

    fn data(&mut self, peer: Rank) -> Result<&mut Conn> {
        let i = self
            .data_of
            .get(peer)
            .copied()
            .flatten()
            .ok_or_else(|| Error::internal(format!("no data connection to rank {peer}")))?;
        self.conns[i]
            .as_deref_mut()
            .ok_or_else(|| Error::internal(format!("no data connection to rank {peer}")))
    }

    fn control(&mut self, peer: Rank) -> Result<&mut Conn> {
        let i = self
            .control_of
            .get(peer)
            .copied()
            .flatten()
            .ok_or_else(|| Error::internal(format!("no control connection to rank {peer}")))?;
        self.conns[i]
            .as_deref_mut()
            .ok_or_else(|| Error::internal(format!("no control connection to rank {peer}")))
    }
}

static FALLBACK_LOGGED: Once = Once::new();

/// Wrap an established mesh into the chosen backend.
pub(crate) fn make_transport(mesh: Mesh, backend: Backend) -> Result<Box<dyn Transport>> {
    let entries = ((mesh.conns.len() * 2 + 16) as u32).next_power_of_two();
    match backend {
        Backend::Socket => Ok(Box::new(SocketTransport::new(mesh)?)),
        Backend::Uring => {
            let ring = uring::probe_ring(entries).map_err(|e| {
                Error::io("creating an io_uring (DMSC_TRANSPORT=uring forces it)", &e)
            })?;
            Ok(Box::new(UringTransport::new(mesh, ring)?))
        }
        Backend::Auto => {
            match uring::probe_ring(entries) {
                Ok(ring) => Ok(Box::new(UringTransport::new(mesh, ring)?)),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOSYS)) => {
                    FALLBACK_LOGGED.call_once(|| {
                    eprintln!("dmsc: io_uring is not available ({e}); using plain sockets with poll(2)");
                });
                    Ok(Box::new(SocketTransport::new(mesh)?))
                }
                Err(e) => Err(Error::io("creating an io_uring", &e)),
            }
        }
    }
}
