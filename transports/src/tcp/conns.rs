//! The connections of one rank to all its peers ([`Mesh`]), and what every backend does with
//! them besides the I/O: queueing sends, receives and control messages on the right
//! connection, accounting what arrived, and handing over to the spraying layer
//! ([`SprayMesh`]) when there are several paths per peer.

use super::paths::SprayMesh;
use crate::conn::{Conn, NoPaths, PathSink};
use dmsc_core::engine::{Completion, Token};
use dmsc_core::error::{Error, Result};
use dmsc_core::wire::FrameHeader;
use dmsc_core::Rank;

/// The connections of one rank to all its peers.
pub(crate) struct Mesh {
    /// Boxed so that each connection's `msghdr`/iovecs keep their address while the kernel
    /// holds them, whatever happens to the vector. A slot is emptied when a path connection
    /// is gone and the kernel holds nothing of it; new path connections fill empty slots.
    pub(super) conns: Vec<Option<Box<Conn>>>,
    pub(super) data_of: Vec<Option<usize>>,
    pub(super) control_of: Vec<Option<usize>>,
    /// Several paths per peer (`DMSC_PATHS` > 1).
    pub(super) spray: Option<SprayMesh>,
    /// Sockets are nonblocking (the plain-socket backend).
    pub(super) nonblocking: bool,
}

impl Mesh {
    /// Account `n` bytes received on connection `i`.
    pub(super) fn on_received(&mut self, i: usize, n: usize, out: &mut Vec<Completion>) {
        let sink: &mut dyn PathSink = match self.spray.as_mut() {
            Some(s) => s,
            None => &mut NoPaths,
        };
        if let Some(c) = self.conns[i].as_deref_mut() {
            c.on_received(n, out, sink);
        }
    }

    /// Between I/O rounds (spraying); returns when it next needs to run.
    pub(super) fn progress(&mut self, out: &mut Vec<Completion>) -> Option<std::time::Instant> {
        match self.spray.as_mut() {
            Some(s) => s.progress(&mut self.conns, self.nonblocking, out),
            None => None,
        }
    }

    pub(super) fn cancel(&mut self) {
        match self.spray.as_mut() {
            Some(s) => s.cancel(&mut self.conns),
            None => {
                for c in self.conns.iter_mut().flatten() {
                    c.clear();
                }
            }
        }
    }

    pub(super) fn describe_peer(&self, peer: Rank) -> Option<String> {
        self.spray.as_ref().and_then(|s| s.describe(peer))
    }

    pub(super) fn path_metrics(&self) -> Option<dmsc_core::engine::PathMetricsHandle> {
        self.spray.as_ref().map(|s| s.metrics_handle())
    }

    pub(super) fn set_waker(&self, w: std::sync::Arc<dyn dmsc_core::engine::Waker>) {
        if let Some(s) = &self.spray {
            s.set_waker(w);
        }
    }

    /// Queue a data frame to `peer` (the body of every backend's `Transport::post_send`).
    pub(super) fn post_send(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        token: Token,
    ) -> Result<()> {
        if let Some(s) = self.spray.as_mut() {
            return s.send(peer, header, data, token);
        }
        self.data(peer)?.push_send(header, data, token);
        Ok(())
    }

    /// Queue a receive from `peer` (the body of every backend's `Transport::post_recv`).
    pub(super) fn post_recv(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        token: Token,
    ) -> Result<()> {
        if let Some(s) = self.spray.as_mut() {
            return s.recv(peer, expect, dst, token);
        }
        self.data(peer)?.push_recv(expect, dst, token);
        Ok(())
    }

    /// Queue a control message to `peer`; a peer without a control connection is ignored.
    pub(super) fn send_control(&mut self, peer: Rank, payload: &[u8]) {
        if let Some(s) = self.spray.as_mut() {
            return s.control(&mut self.conns, peer, payload);
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
