//! Serving each peer through its own transport: shared memory for the ranks on this host,
//! TCP for the others (RDMA later), as NCCL picks P2P, SHM or NET per pair of ranks.
//!
//! [`RouteTransport`] forwards every posting to the transport that serves the peer and
//! polls them all. To block without spinning it uses the transports' wait seam
//! ([`Transport::wait_fds`] and friends): the primary transport (TCP) blocks in its own
//! `poll` and also watches the descriptors of the others (the shared-memory sockets, where
//! doorbells ring), whose doorbells are raised first with [`Transport::prepare_wait`].
//! Frames to one peer keep their order because one transport carries all of them.

use dmsc_core::engine::{Completion, PathMetricsHandle, Token, Transport, Waker};
use dmsc_core::error::{Error, Result};
use dmsc_core::wire::FrameHeader;
use dmsc_core::Rank;
use std::sync::Arc;
use std::time::Duration;

/// A transport that routes each peer to the transport chosen for it.
pub struct RouteTransport {
    /// The transports; `transports[0]` is the one that blocks (and watches the others).
    transports: Vec<Box<dyn Transport>>,
    /// Per rank: the index of the transport that serves it (`None` for this rank).
    route: Vec<Option<usize>>,
}

/// Wakes every transport of a route.
struct WakeAll(Vec<Arc<dyn Waker>>);

impl Waker for WakeAll {
    fn wake(&self) {
        for w in &self.0 {
            w.wake();
        }
    }
}

impl RouteTransport {
    /// Route rank `r` to `transports[route[r]]`. `transports[0]` must be able to watch the
    /// others' descriptors ([`Transport::watch_fds`]); each other one must have some.
    pub fn new(mut transports: Vec<Box<dyn Transport>>, route: Vec<Option<usize>>) -> Result<Self> {
        if transports.is_empty() || route.iter().flatten().any(|&i| i >= transports.len()) {
            return Err(Error::internal(
                "a route names a transport that does not exist",
            ));
        }
        let fds: Vec<_> = transports[1..].iter().flat_map(|t| t.wait_fds()).collect();
        if transports.len() > 1 && (fds.is_empty() || !transports[0].watch_fds(&fds)) {
            return Err(Error::internal(format!(
                "the {} transport cannot wait for the {} transport",
                transports[0].name(),
                transports[1].name()
            )));
        }
        Ok(RouteTransport { transports, route })
    }

    fn to(&mut self, peer: Rank) -> Result<&mut Box<dyn Transport>> {
        match self.route.get(peer).copied().flatten() {
            Some(i) => Ok(&mut self.transports[i]),
            None => Err(Error::internal(format!("no transport serves rank {peer}"))),
        }
    }
}

impl Transport for RouteTransport {
    fn name(&self) -> &'static str {
        // The name of the whole: what carries most of the traffic off this host.
        self.transports[0].name()
    }

    fn peer_transport(&self, peer: Rank) -> &'static str {
        match self.route.get(peer).copied().flatten() {
            Some(i) => self.transports[i].peer_transport(peer),
            None => "self",
        }
    }

    unsafe fn post_send(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        token: Token,
    ) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.to(peer)?.post_send(peer, header, data, token) }
    }

    unsafe fn post_recv(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        token: Token,
    ) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.to(peer)?.post_recv(peer, expect, dst, token) }
    }

    fn send_control(&mut self, peer: Rank, payload: &[u8]) {
        if let Ok(t) = self.to(peer) {
            t.send_control(peer, payload);
        }
    }

    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<()> {
        let before = out.len();
        for t in self.transports.iter_mut() {
            t.poll(out, Duration::ZERO)?;
        }
        if out.len() > before || timeout.is_zero() {
            return Ok(());
        }
        let mut ready = false;
        for t in self.transports[1..].iter_mut() {
            ready |= t.prepare_wait();
        }
        let r = if ready {
            Ok(())
        } else {
            self.transports[0].poll(out, timeout)
        };
        for t in self.transports[1..].iter_mut() {
            t.end_wait();
            t.poll(out, Duration::ZERO)?;
        }
        r
    }

    fn cancel_all(&mut self) {
        for t in self.transports.iter_mut() {
            t.cancel_all();
        }
    }

    fn waker(&self) -> Arc<dyn Waker> {
        Arc::new(WakeAll(self.transports.iter().map(|t| t.waker()).collect()))
    }

    fn describe_peer(&self, peer: Rank) -> Option<String> {
        let i = self.route.get(peer).copied().flatten()?;
        self.transports[i].describe_peer(peer)
    }

    fn path_metrics(&self) -> Option<PathMetricsHandle> {
        self.transports[0].path_metrics()
    }
}
