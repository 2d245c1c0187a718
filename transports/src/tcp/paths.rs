//! Several TCP paths per peer with chunks sprayed over them: the glue between the sockets
//! and the sans-IO spraying layer of core (`dmsc_core::spray`).
//!
//! Per peer, a [`Sender`] decides which path carries each segment and a [`Receiver`] places
//! what arrives; this module turns their decisions into queued units on path connections,
//! feeds them what the connections read, closes paths they suspect, and connects failed
//! paths again through [`PathService`]. Control messages go on the two best live paths,
//! numbered so that the receiver delivers each once; a peer is reported closed only when
//! every one of its paths is down.

use super::conn::{Conn, PathSink, Role};
use super::mesh::MeshOptions;
use super::redial::PathService;
use super::Mesh;
use dmsc_core::engine::{Completion, PeerPaths, Waker};
use dmsc_core::error::{Error, Result};
use dmsc_core::spray::wire::{Ack, UnitHeader, UnitKind};
use dmsc_core::spray::{PathState, Placement, Receiver, Sender};
use dmsc_core::wire::FrameHeader;
use dmsc_core::Rank;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A path something arrived on this recently is trusted with acks.
const ACK_RECENT: Duration = Duration::from_millis(100);
/// How often the published metrics are refreshed.
const METRICS_EVERY: Duration = Duration::from_millis(10);

/// One peer's paths.
pub(crate) struct PeerState {
    tx: Sender,
    rx: Receiver,
    /// Connection index of each path.
    conn: Vec<Option<usize>>,
    epoch: Vec<u32>,
    /// Next dial attempt (dialing side): when, and how many failed before.
    redial: Vec<Option<(Instant, u32)>>,
    dialing: Vec<bool>,
    /// Why each path last failed.
    failure: Vec<String>,
    addrs: Vec<SocketAddr>,
    dialer: bool,
    ctrl_next: u64,
    closed: bool,
    ack_path: usize,
    /// When something last arrived on each path.
    last_rx: Vec<Option<Instant>>,
}

/// The spraying state of a mesh.
pub(crate) struct SprayMesh {
    rank: Rank,
    npaths: usize,
    pub(crate) peers: Vec<Option<PeerState>>,
    service: PathService,
    debug: bool,
    metrics: Arc<Mutex<Vec<PeerPaths>>>,
    metrics_at: Instant,
    /// Connections made again, waiting for their predecessor to drain.
    pending: Vec<(Rank, usize, u32, std::net::TcpStream)>,
}

impl SprayMesh {
    pub(crate) fn new(
        opts: &MeshOptions,
        addrs: Vec<Vec<SocketAddr>>,
        path_of: Vec<Vec<Option<usize>>>,
        listeners: Vec<TcpListener>,
    ) -> Result<SprayMesh> {
        let now = Instant::now();
        let npaths = opts.paths;
        let peers = addrs
            .into_iter()
            .zip(path_of)
            .enumerate()
            .map(|(peer, (addrs, conn))| {
                (peer != opts.rank).then(|| PeerState {
                    tx: Sender::new(opts.spray, npaths, now),
                    rx: Receiver::new(npaths),
                    conn,
                    epoch: vec![1; npaths],
                    redial: vec![None; npaths],
                    dialing: vec![false; npaths],
                    failure: vec![String::new(); npaths],
                    addrs,
                    dialer: opts.rank > peer,
                    ctrl_next: 0,
                    closed: false,
                    ack_path: 0,
                    last_rx: vec![None; npaths],
                })
            })
            .collect();
        Ok(SprayMesh {
            rank: opts.rank,
            npaths,
            peers,
            service: PathService::new(opts, listeners)?,
            debug: opts.debug,
            metrics: Arc::new(Mutex::new(Vec::new())),
            metrics_at: now,
            pending: Vec::new(),
        })
    }

    pub(crate) fn set_waker(&self, w: Arc<dyn Waker>) {
        self.service.set_waker(w);
    }

    pub(crate) fn metrics_handle(&self) -> Arc<Mutex<Vec<PeerPaths>>> {
        self.metrics.clone()
    }

    fn peer(&mut self, peer: Rank) -> Result<&mut PeerState> {
        self.peers
            .get_mut(peer)
            .and_then(Option::as_mut)
            .ok_or_else(|| Error::internal(format!("no paths to rank {peer}")))
    }

    /// What to say about `peer`'s paths in an error.
    pub(crate) fn describe(&self, peer: Rank) -> Option<String> {
        let p = self.peers.get(peer)?.as_ref()?;
        let parts: Vec<String> = (0..self.npaths)
            .map(|i| {
                let state = p.tx.path_state(i).map(PathState::name).unwrap_or("?");
                let why = &p.failure[i];
                if why.is_empty() {
                    format!("path {i} ({}) {state}", p.addrs[i])
                } else {
                    format!("path {i} ({}) {state}: {why}", p.addrs[i])
                }
            })
            .collect();
        Some(parts.join("; "))
    }
}

impl PathSink for SprayMesh {
    fn place(
        &mut self,
        peer: Rank,
        path: usize,
        unit: &UnitHeader,
        engine: &FrameHeader,
    ) -> Result<Placement> {
        self.peer(peer)?.rx.place(path, unit, engine)
    }

    fn seg_done(&mut self, peer: Rank, path: usize) {
        if let Ok(p) = self.peer(peer) {
            let now = Instant::now();
            p.rx.seg_done(path, now);
            p.tx.on_heard(path, now);
            p.ack_path = path;
            p.last_rx[path] = Some(now);
        }
    }

    fn unit(
        &mut self,
        peer: Rank,
        path: usize,
        unit: &UnitHeader,
        payload: Vec<u8>,
        out: &mut Vec<Completion>,
    ) {
        let Ok(p) = self.peer(peer) else { return };
        let now = Instant::now();
        p.tx.on_heard(path, now);
        p.last_rx[path] = Some(now);
        match unit.kind {
            UnitKind::Ack => match Ack::decode(&payload) {
                Ok(ack) => p.tx.on_ack(&ack, Instant::now()),
                Err(e) => out.push(Completion::PeerFailed {
                    peer,
                    error: Error::protocol(format!("rank {peer} sent a bad ack: {e}")),
                }),
            },
            UnitKind::Control => {
                if p.rx.control_is_new(unit.transfer) {
                    out.push(Completion::Control { peer, payload });
                }
            }
            UnitKind::Suspect => p.rx.on_peer_suspects(unit.transfer as usize),
            UnitKind::Segment => {}
        }
    }
}

/// Keep at most one segment of unsent bytes in a path socket's send buffer
/// (`TCP_NOTSENT_LOWAT`): the rest waits in the connection's queue, where acks and control
/// messages can go ahead of it, and where the sender's window, not the kernel's buffer,
/// decides how much a path holds.
pub(crate) fn limit_unsent(s: &impl std::os::fd::AsRawFd) {
    let v: libc::c_int = 128 << 10;
    // SAFETY: setsockopt with a pointer to a local int of the size passed.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Close a path connection: no further reads or writes are issued, and the kernel's are
/// woken (they complete with an error or end of stream).
fn kill(c: &mut Conn, why: &str) {
    // SAFETY: shutdown on a socket this connection owns; it stays open until dropped.
    unsafe { libc::shutdown(c.fd(), libc::SHUT_RDWR) };
    c.fail_path(why.to_string());
}

impl Mesh {
    /// Spray mode: queue a transfer to `peer`.
    pub(crate) fn spray_send(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        token: u64,
    ) -> Result<()> {
        let s = self.spray.as_mut().expect("spray mode");
        s.peer(peer)?.tx.push(token, *header, data as usize);
        Ok(())
    }

    /// Spray mode: post a receive from `peer`.
    pub(crate) fn spray_recv(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        token: u64,
    ) -> Result<()> {
        let s = self.spray.as_mut().expect("spray mode");
        s.peer(peer)?.rx.post(*expect, dst as usize, token)
    }

    /// Spray mode: a control message on the two best live paths.
    pub(crate) fn spray_control(&mut self, peer: Rank, payload: &[u8]) {
        let now = Instant::now();
        let Some(s) = self.spray.as_mut() else { return };
        let Ok(p) = s.peer(peer) else { return };
        let n = p.ctrl_next;
        p.ctrl_next += 1;
        let len = payload.len().min(dmsc_core::wire::MAX_CONTROL as usize);
        let mut sent = 0;
        for path in p.tx.healthy_paths(now) {
            let Some(ci) = p.conn[path] else { continue };
            let Some(c) = self.conns[ci].as_deref_mut() else {
                continue;
            };
            if c.dead {
                continue;
            }
            let u = UnitHeader::plain(UnitKind::Control, path as u8, p.epoch[path], n, len as u32);
            c.push_unit(&u, &payload[..len]);
            sent += 1;
            if sent == 2 {
                break;
            }
        }
    }

    /// Spray mode: everything between I/O rounds. Returns when it next needs to run.
    pub(crate) fn spray_progress(&mut self, out: &mut Vec<Completion>) -> Option<Instant> {
        let now = Instant::now();
        let s = self.spray.as_mut()?;
        // Connections made again.
        for d in s.service.poll() {
            let Some(p) = s.peers.get_mut(d.peer).and_then(Option::as_mut) else {
                continue;
            };
            p.dialing[d.path] = false;
            match d.result {
                Ok(stream) => {
                    if p.closed {
                        continue;
                    }
                    // A new incarnation replaces whatever is left of the old one; it is
                    // installed once the old one is drained (below).
                    if let Some(c) = p.conn[d.path].and_then(|ci| self.conns[ci].as_deref_mut()) {
                        kill(c, "replaced by a new connection");
                    }
                    p.redial[d.path] = None;
                    s.pending.push((d.peer, d.path, d.epoch, stream));
                }
                Err(e) => {
                    let attempt = p.redial[d.path].map(|r| r.1 + 1).unwrap_or(1);
                    let delay = p.tx.redial_delay(d.path, attempt);
                    p.redial[d.path] = Some((now + delay, attempt));
                    p.failure[d.path] = format!("reconnecting: {e}");
                }
            }
        }
        // Paths the sender suspects, or the receiver needs closed.
        for (peer, p) in s.peers.iter_mut().enumerate() {
            let Some(p) = p.as_mut() else { continue };
            let mut victims = p.tx.handle_timeout(now);
            // Tell the peer about paths suspected just now, on another live path.
            while let Some(bad) = p.tx.poll_suspected() {
                if s.debug {
                    eprintln!(
                        "dmsc: rank {}: path {bad} to rank {peer} suspected, its chunks re-sent on the others",
                        s.rank
                    );
                }
                let via =
                    p.tx.healthy_paths(now)
                        .into_iter()
                        .find(|&q| q != bad && p.conn[q].is_some());
                if let Some(q) = via {
                    if let Some(c) = p.conn[q].and_then(|ci| self.conns[ci].as_deref_mut()) {
                        let u = UnitHeader::plain(
                            UnitKind::Suspect,
                            q as u8,
                            p.epoch[q],
                            bad as u64,
                            0,
                        );
                        c.push_unit(&u, &[]);
                    }
                }
            }
            p.rx.handle_timeout(now);
            while let Some(k) = p.rx.poll_kill() {
                victims.push((
                    k,
                    format!(
                        "still writing a segment {} ms after a copy arrived on another path",
                        dmsc_core::spray::STUCK_WRITER.as_millis()
                    ),
                ));
            }
            for (path, why) in victims {
                if let Some(ci) = p.conn[path] {
                    if let Some(c) = self.conns[ci].as_deref_mut() {
                        if s.debug {
                            eprintln!(
                                "dmsc: rank {}: path {path} to rank {peer} suspected: {why}",
                                s.rank
                            );
                        }
                        kill(c, &why);
                    }
                }
            }
        }
        // Dead connections the kernel is done with: take the path down.
        for ci in 0..self.conns.len() {
            let Some(c) = self.conns[ci].as_deref() else {
                continue;
            };
            if !c.dead || c.send_busy || c.recv_busy {
                continue;
            }
            let Role::Path(path, epoch) = c.role else {
                continue;
            };
            let (peer, path) = (c.peer, path as usize);
            let why = c.failure.clone().unwrap_or_else(|| "closed".into());
            self.conns[ci] = None;
            let Some(p) = s.peers.get_mut(peer).and_then(Option::as_mut) else {
                continue;
            };
            if p.conn[path] != Some(ci) {
                continue;
            }
            p.conn[path] = None;
            p.tx.on_path_down(path, &why, now);
            p.rx.on_path_down(path);
            p.failure[path] = why.clone();
            if s.debug {
                eprintln!(
                    "dmsc: rank {}: path {path} (incarnation {epoch}) to rank {peer} down: {why}",
                    s.rank
                );
            }
            if p.dialer && !p.closed {
                let delay = p.tx.redial_delay(path, 0);
                p.redial[path] = Some((now + delay, 0));
            }
            if !p.closed && p.conn.iter().all(Option::is_none) {
                p.closed = true;
                let detail = format!(
                    "every path to rank {peer} is down: {}",
                    s.describe(peer).unwrap_or_default()
                );
                out.push(Completion::Closed { peer, detail });
            }
        }
        // New connections whose predecessor is gone.
        let mut later = Vec::new();
        for (peer, path, epoch, stream) in std::mem::take(&mut s.pending) {
            let Some(p) = s.peers.get_mut(peer).and_then(Option::as_mut) else {
                continue;
            };
            if p.closed {
                continue;
            }
            if p.conn[path].is_some() {
                later.push((peer, path, epoch, stream));
                continue;
            }
            let _ = super::mesh::tune_stream(&stream);
            limit_unsent(&stream);
            let fd = OwnedFd::from(stream);
            if super::socket::set_nonblocking(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                self.nonblocking,
            )
            .is_err()
            {
                continue;
            }
            let conn = Conn::new(fd, peer, Role::Path(path as u8, epoch));
            let ci = match self.conns.iter().position(Option::is_none) {
                Some(i) => {
                    self.conns[i] = Some(conn);
                    i
                }
                None => {
                    self.conns.push(Some(conn));
                    self.conns.len() - 1
                }
            };
            p.conn[path] = Some(ci);
            p.epoch[path] = epoch;
            p.redial[path] = None;
            p.tx.on_path_up(path, epoch, now);
            p.rx.on_path_up(path, epoch);
            if s.debug {
                eprintln!(
                    "dmsc: rank {}: path {path} to rank {peer} up again (incarnation {epoch})",
                    s.rank
                );
            }
        }
        s.pending = later;
        // Dials due.
        for (peer, p) in s.peers.iter_mut().enumerate() {
            let Some(p) = p.as_mut() else { continue };
            for path in 0..s.npaths {
                if let Some((at, _)) = p.redial[path] {
                    if at <= now && !p.dialing[path] && p.conn[path].is_none() && !p.closed {
                        p.dialing[path] = true;
                        s.service.dial(peer, path, p.epoch[path] + 1, p.addrs[path]);
                        // The next attempt is scheduled when this one fails.
                        p.redial[path] = Some((
                            now + Duration::from_secs(3600),
                            p.redial[path].map(|r| r.1).unwrap_or(0),
                        ));
                    }
                }
            }
        }
        // Completions, acks, and segments onto paths.
        let mut next: Option<Instant> = None;
        for (peer, p) in s.peers.iter_mut().enumerate() {
            let Some(p) = p.as_mut() else { continue };
            while let Some((token, id)) = p.tx.poll_completed() {
                out.push(Completion::Sent { token });
                for (path, ci) in p.conn.iter().enumerate() {
                    let Some(c) = ci.and_then(|ci| self.conns[ci].as_deref_mut()) else {
                        continue;
                    };
                    for seg in c.drop_unsent(id) {
                        p.tx.forget(path, id, seg);
                    }
                }
            }
            while let Some((token, crc)) = p.rx.poll_completed() {
                out.push(Completion::Received { token, crc });
            }
            while let Some((token, got)) = p.rx.poll_mismatch() {
                out.push(Completion::BadHeader { token, peer, got });
            }
            if p.rx.ack_due() {
                let ack = p.rx.ack();
                let bytes = ack.encode();
                // Acks go on two paths that demonstrably work: ones something arrived on in
                // the last 100 ms (a path cut towards the peer usually is cut both ways,
                // and an ack lost in it would make the peer suspect its good paths), the
                // quickest first (the ack's own direction is loaded with this rank's data),
                // and the one data last arrived on.
                let recent = |q: usize| {
                    p.last_rx[q].is_some_and(|t| now.saturating_duration_since(t) < ACK_RECENT)
                };
                let mut order: Vec<usize> = Vec::new();
                let mut by_speed: Vec<usize> = p.tx.healthy_paths(now);
                if let Some(q) = p.tx.quickest_path(now) {
                    by_speed.insert(0, q);
                }
                order.extend(by_speed.iter().copied().filter(|&q| recent(q)).take(1));
                order.push(p.ack_path);
                order.extend(by_speed.iter().copied().filter(|&q| recent(q)));
                order.extend(by_speed);
                order.dedup();
                let mut sent = 0;
                let mut used = Vec::new();
                for path in order {
                    if used.contains(&path) {
                        continue;
                    }
                    let Some(ci) = p.conn[path] else { continue };
                    let Some(c) = self.conns[ci].as_deref_mut() else {
                        continue;
                    };
                    if c.dead {
                        continue;
                    }
                    let u = UnitHeader::plain(
                        UnitKind::Ack,
                        path as u8,
                        p.epoch[path],
                        0,
                        bytes.len() as u32,
                    );
                    c.push_unit(&u, &bytes);
                    used.push(path);
                    sent += 1;
                    // A second copy only when the first did not go where data last came
                    // from (a path known to work).
                    if sent == 2 || path == p.ack_path {
                        break;
                    }
                }
            }
            while let Some(t) = p.tx.poll_transmit(now) {
                let Some(c) = p.conn[t.path].and_then(|ci| self.conns[ci].as_deref_mut()) else {
                    // The sender thinks the path is up but it has no connection: take it down.
                    p.tx.on_path_down(t.path, "no connection", now);
                    continue;
                };
                let u = UnitHeader {
                    kind: UnitKind::Segment,
                    path: t.path as u8,
                    epoch: t.epoch,
                    transfer: t.transfer,
                    seg: t.seg,
                    nsegs: t.nsegs,
                    offset: t.offset,
                    len: t.len as u32,
                    total: t.total,
                };
                c.push_segment(&u, &t.header, t.data as *const u8);
            }
            for t in [p.tx.poll_timeout(now), p.rx.poll_timeout()]
                .into_iter()
                .chain(p.redial.iter().map(|r| r.map(|r| r.0)))
                .flatten()
            {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        }
        if now >= s.metrics_at {
            s.metrics_at = now + METRICS_EVERY;
            let taken = std::time::SystemTime::now();
            let snapshot: Vec<PeerPaths> = s
                .peers
                .iter()
                .enumerate()
                .filter_map(|(peer, p)| {
                    let p = p.as_ref()?;
                    let (dup, total) = p.tx.duplicate_bytes();
                    Some(PeerPaths {
                        peer,
                        paths: p.tx.metrics(),
                        bytes_duplicated: dup,
                        bytes_sent: total,
                        taken,
                    })
                })
                .collect();
            if let Ok(mut m) = s.metrics.lock() {
                *m = snapshot;
            }
        }
        next
    }

    /// Spray mode: withdraw every transfer and receive. Paths with bytes of a withdrawn
    /// transfer half written or half read are closed (their streams lost their framing).
    pub(crate) fn spray_cancel(&mut self) {
        let Some(s) = self.spray.as_mut() else { return };
        for p in s.peers.iter_mut().flatten() {
            p.tx.clear();
            p.rx.clear();
        }
        for c in self.conns.iter_mut().flatten() {
            if c.mid_segment() {
                kill(c, "withdrawn in the middle of a segment");
            }
            c.clear();
        }
    }
}

impl Drop for SprayMesh {
    /// With `DMSC_DEBUG=INFO`, each path's metrics when the communicator closes.
    fn drop(&mut self) {
        if !self.debug {
            return;
        }
        for (peer, p) in self.peers.iter().enumerate() {
            let Some(p) = p else { continue };
            for m in p.tx.metrics() {
                eprintln!(
                    "dmsc: rank {}: path {} to rank {peer}: {}, incarnation {}, {:.1} MB/s, srtt {:.1} ms, \
                     sent {} B, acked {} B, re-queued {} B, duplicated {} B, {} failure(s){}",
                    self.rank,
                    m.path,
                    m.state.name(),
                    m.epoch,
                    m.rate_bps / 1e6,
                    m.srtt.as_secs_f64() * 1e3,
                    m.bytes_sent,
                    m.bytes_acked,
                    m.bytes_requeued,
                    m.bytes_duplicated,
                    m.failures,
                    if m.last_failure.is_empty() {
                        String::new()
                    } else {
                        format!(" (last: {})", m.last_failure)
                    }
                );
            }
        }
    }
}
