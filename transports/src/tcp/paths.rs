//! Several TCP paths per peer with chunks sprayed over them: the glue between the sockets
//! and the sans-IO spraying layer of core (`dmsc_core::spray`).
//!
//! Per peer, a [`Sender`] decides which path carries each segment and a [`Receiver`] places
//! what arrives; this module turns their decisions into queued units on path connections,
//! feeds them what the connections read, closes paths they suspect, and connects failed
//! paths again through [`PathService`]. Control messages go on the two best live paths,
//! numbered so that the receiver delivers each once; a peer is reported closed only when
//! every one of its paths is down.

use super::options::MeshOptions;
use super::redial::PathService;
use super::sockopt::{limit_unsent, set_nonblocking, tune};
use super::warn_limit::WarnLimit;
use crate::conn::{Conn, PathSink, Role};
use dmsc_core::engine::{Completion, PeerPaths, Waker};
use dmsc_core::error::{Error, Result};
use dmsc_core::spray::wire::{Ack, UnitHeader, UnitKind};
use dmsc_core::spray::{PathState, Placement, Receiver, Sender};
use dmsc_core::subsys::SPRAY;
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
    /// Reconnection of each path (the dialing side only).
    redial: Vec<Redial>,
    /// Why each path last failed.
    failure: Vec<String>,
    addrs: Vec<SocketAddr>,
    dialer: bool,
    ctrl_next: u64,
    closed: bool,
    ack_path: usize,
    /// When something last arrived on each path.
    last_rx: Vec<Option<Instant>>,
    /// Per path, the latest incarnation the peer said it took down (a `Down` unit; 0: none).
    peer_downed: Vec<u32>,
    /// Per path, the rate limits of the warnings that it was suspected, closed and down.
    suspect_warn: Vec<WarnLimit>,
    close_warn: Vec<WarnLimit>,
    down_warn: Vec<WarnLimit>,
}

/// Where the reconnection of one path stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Redial {
    /// Connected, or this rank does not dial.
    Idle,
    /// Dial at `when`; `attempt` attempts failed before.
    Wait { when: Instant, attempt: u32 },
    /// A dial is under way; `attempt` attempts failed before.
    Dialing { attempt: u32 },
}

/// The spraying state of a mesh.
pub(crate) struct SprayMesh {
    rank: Rank,
    npaths: usize,
    pub(crate) peers: Vec<Option<PeerState>>,
    service: PathService,
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
                (peer != opts.rank && opts.serves(peer)).then(|| PeerState {
                    tx: Sender::new(opts.spray, npaths, now),
                    rx: Receiver::new(npaths),
                    conn,
                    epoch: vec![1; npaths],
                    redial: vec![Redial::Idle; npaths],
                    failure: vec![String::new(); npaths],
                    addrs,
                    dialer: opts.rank > peer,
                    ctrl_next: 0,
                    closed: false,
                    ack_path: 0,
                    last_rx: vec![None; npaths],
                    peer_downed: vec![0; npaths],
                    suspect_warn: vec![WarnLimit::default(); npaths],
                    close_warn: vec![WarnLimit::default(); npaths],
                    down_warn: vec![WarnLimit::default(); npaths],
                })
            })
            .collect();
        Ok(SprayMesh {
            rank: opts.rank,
            npaths,
            peers,
            service: PathService::new(opts, listeners)?,
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
            UnitKind::Down => {
                if let Some(d) = p.peer_downed.get_mut(unit.transfer as usize) {
                    *d = (*d).max(unit.seg);
                }
            }
            UnitKind::Segment => {}
        }
    }
}

/// Close a path connection: no further reads or writes are issued, and the kernel's are
/// woken (they complete with an error or end of stream).
fn kill(c: &mut Conn, why: &str) {
    // SAFETY: shutdown on a socket this connection owns; it stays open until dropped.
    unsafe { libc::shutdown(c.fd(), libc::SHUT_RDWR) };
    c.fail_path(why.to_string());
}

/// What a mesh in spray mode asks of its [`SprayMesh`]; `conns` are the mesh's connections.
impl SprayMesh {
    /// Spray mode: queue a transfer to `peer`.
    pub(crate) fn send(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        token: u64,
    ) -> Result<()> {
        self.peer(peer)?.tx.push(token, *header, data as usize);
        Ok(())
    }

    /// Spray mode: post a receive from `peer`.
    pub(crate) fn recv(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        token: u64,
    ) -> Result<()> {
        self.peer(peer)?.rx.post(*expect, dst as usize, token)
    }

    /// Spray mode: a control message on the two best live paths.
    pub(crate) fn control(&mut self, conns: &mut Conns, peer: Rank, payload: &[u8]) {
        let now = Instant::now();
        let Ok(p) = self.peer(peer) else { return };
        let n = p.ctrl_next;
        p.ctrl_next += 1;
        let len = payload.len().min(dmsc_core::wire::MAX_CONTROL as usize);
        let mut sent = 0;
        for path in p.tx.healthy_paths(now) {
            let Some(ci) = p.conn[path] else { continue };
            let Some(c) = conns[ci].as_deref_mut() else {
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

    /// Spray mode: everything between I/O rounds (`nonblocking`: the mesh's sockets are).
    /// Returns when it next needs to run.
    pub(crate) fn progress(
        &mut self,
        conns: &mut Conns,
        nonblocking: bool,
        out: &mut Vec<Completion>,
    ) -> Option<Instant> {
        let now = Instant::now();
        self.take_dialed(conns, now);
        self.close_suspected(conns, now);
        self.reap_dead(conns, now, out);
        self.install_pending(conns, nonblocking, now);
        self.start_dials(now);
        let mut next: Option<Instant> = None;
        for (peer, p) in self.peers.iter_mut().enumerate() {
            let Some(p) = p.as_mut() else { continue };
            p.flush(peer, conns, now, out);
            let wait = p.redial.iter().filter_map(|r| match r {
                Redial::Wait { when, .. } => Some(*when),
                _ => None,
            });
            for t in [p.tx.poll_timeout(now), p.rx.poll_timeout()]
                .into_iter()
                .flatten()
                .chain(wait)
            {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        }
        self.publish_metrics(now);
        next
    }

    /// Spray mode: withdraw every transfer and receive. Paths with bytes of a withdrawn
    /// transfer half written or half read are closed (their streams lost their framing).
    pub(crate) fn cancel(&mut self, conns: &mut Conns) {
        for p in self.peers.iter_mut().flatten() {
            p.tx.clear();
            p.rx.clear();
        }
        for c in conns.iter_mut().flatten() {
            if c.mid_segment() {
                kill(c, "withdrawn in the middle of a segment");
            }
            c.clear();
        }
    }
}

type Conns = Vec<Option<Box<Conn>>>;

fn conn_mut(conns: &mut Conns, ci: Option<usize>) -> Option<&mut Conn> {
    ci.and_then(|ci| conns[ci].as_deref_mut())
}

impl SprayMesh {
    /// Connections made again (or attempts that failed), from the path service.
    fn take_dialed(&mut self, conns: &mut Conns, now: Instant) {
        for d in self.service.poll() {
            let Some(p) = self.peers.get_mut(d.peer).and_then(Option::as_mut) else {
                continue;
            };
            let attempt = match p.redial[d.path] {
                Redial::Dialing { attempt } | Redial::Wait { attempt, .. } => attempt,
                Redial::Idle => 0,
            };
            match d.result {
                Ok(stream) => {
                    p.redial[d.path] = Redial::Idle;
                    if p.closed {
                        continue;
                    }
                    // A new incarnation replaces whatever is left of the old one; it is
                    // installed once the old one is drained (`install_pending`).
                    if let Some(c) = conn_mut(conns, p.conn[d.path]) {
                        kill(c, "replaced by a new connection");
                    }
                    self.pending.push((d.peer, d.path, d.epoch, stream));
                }
                Err(e) => {
                    let attempt = attempt + 1;
                    let when = now + p.tx.redial_delay(d.path, attempt);
                    p.redial[d.path] = Redial::Wait { when, attempt };
                    p.failure[d.path] = format!("reconnecting: {e}");
                }
            }
        }
    }

    /// Close the paths the sender gave up on or the receiver found stuck, and tell each
    /// peer which paths were suspected just now.
    fn close_suspected(&mut self, conns: &mut Conns, now: Instant) {
        let rank = self.rank;
        for (peer, p) in self.peers.iter_mut().enumerate() {
            let Some(p) = p.as_mut() else { continue };
            let mut victims = p.tx.handle_timeout(now);
            while let Some(bad) = p.tx.poll_suspected() {
                let what = format!(
                    "rank {rank}: path {bad} to rank {peer} suspected, its chunks re-sent on the others"
                );
                p.suspect_warn[bad].log(now, SPRAY, &what);
                p.notify(conns, bad, now, |q, e| {
                    UnitHeader::plain(UnitKind::Suspect, q, e, bad as u64, 0)
                });
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
            // Incarnations the peer took down: its end is closed, so this one is useless.
            for path in 0..p.peer_downed.len() {
                let e = std::mem::take(&mut p.peer_downed[path]);
                if e != 0 && e == p.epoch[path] && p.conn[path].is_some() {
                    victims.push((path, format!("rank {peer} took incarnation {e} down")));
                }
            }
            for (path, why) in victims {
                if let Some(c) = conn_mut(conns, p.conn[path]) {
                    let what = format!("rank {rank}: closing path {path} to rank {peer}: {why}");
                    p.close_warn[path].log(now, SPRAY, &what);
                    kill(c, &why);
                }
            }
        }
    }

    /// Take down the paths whose connection is dead and no longer in the kernel's hands;
    /// schedule their reconnection, and report a peer whose every path is down.
    fn reap_dead(&mut self, conns: &mut Conns, now: Instant, out: &mut Vec<Completion>) {
        let mut downed = Vec::new();
        for (ci, slot) in conns.iter_mut().enumerate() {
            let Some(c) = slot.as_deref() else {
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
            *slot = None;
            let Some(p) = self.peers.get_mut(peer).and_then(Option::as_mut) else {
                continue;
            };
            if p.conn[path] != Some(ci) {
                continue;
            }
            p.conn[path] = None;
            p.tx.on_path_down(path, &why, now);
            p.rx.on_path_down(path);
            let what = format!(
                "rank {}: path {path} (incarnation {epoch}) to rank {peer} down: {why}",
                self.rank
            );
            p.down_warn[path].log(now, SPRAY, &what);
            p.failure[path] = why;
            downed.push((peer, path, epoch));
            if p.dialer && !p.closed {
                let when = now + p.tx.redial_delay(path, 0);
                p.redial[path] = Redial::Wait { when, attempt: 0 };
            }
            if !p.closed && p.conn.iter().all(Option::is_none) {
                p.closed = true;
                let detail = format!(
                    "every path to rank {peer} is down: {}",
                    self.describe(peer).unwrap_or_default()
                );
                out.push(Completion::Closed { peer, detail });
            }
        }
        // Tell each peer at once: the dialing side cannot connect the path again before it
        // knows, and TCP alone may take seconds to tell it (a FIN or reset lost on a cut
        // link waits for retransmission timeouts).
        for (peer, path, epoch) in downed {
            if let Some(p) = self.peers.get_mut(peer).and_then(Option::as_mut) {
                if !p.closed {
                    p.notify(conns, path, now, |q, e| {
                        UnitHeader::down(q, e, path as u8, epoch)
                    });
                }
            }
        }
    }

    /// Install the new connections whose predecessor is gone, in a free slot.
    fn install_pending(&mut self, conns: &mut Conns, nonblocking: bool, now: Instant) {
        let mut later = Vec::new();
        for (peer, path, epoch, stream) in std::mem::take(&mut self.pending) {
            let Some(p) = self.peers.get_mut(peer).and_then(Option::as_mut) else {
                continue;
            };
            if p.closed {
                continue;
            }
            if p.conn[path].is_some() {
                later.push((peer, path, epoch, stream));
                continue;
            }
            let _ = tune(&stream);
            limit_unsent(&stream);
            let fd = OwnedFd::from(stream);
            if set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&fd), nonblocking).is_err() {
                continue;
            }
            let conn = Some(Conn::new(fd, peer, Role::Path(path as u8, epoch)));
            let ci = match conns.iter().position(Option::is_none) {
                Some(i) => {
                    conns[i] = conn;
                    i
                }
                None => {
                    conns.push(conn);
                    conns.len() - 1
                }
            };
            p.conn[path] = Some(ci);
            p.epoch[path] = epoch;
            p.redial[path] = Redial::Idle;
            p.tx.on_path_up(path, epoch, now);
            p.rx.on_path_up(path, epoch);
            log::info!(
                target: SPRAY,
                "rank {}: path {path} to rank {peer} up again (incarnation {epoch})",
                self.rank
            );
        }
        self.pending = later;
    }

    /// Start the dials that are due.
    fn start_dials(&mut self, now: Instant) {
        for (peer, p) in self.peers.iter_mut().enumerate() {
            let Some(p) = p.as_mut() else { continue };
            for path in 0..self.npaths {
                if let Redial::Wait { when, attempt } = p.redial[path] {
                    if when <= now && p.conn[path].is_none() && !p.closed {
                        // The next attempt is scheduled when this one fails.
                        p.redial[path] = Redial::Dialing { attempt };
                        self.service
                            .dial(peer, path, p.epoch[path] + 1, p.addrs[path]);
                    }
                }
            }
        }
    }

    /// Publish the metrics snapshot, every [`METRICS_EVERY`].
    fn publish_metrics(&mut self, now: Instant) {
        if now < self.metrics_at {
            return;
        }
        self.metrics_at = now + METRICS_EVERY;
        let taken = std::time::SystemTime::now();
        let snapshot: Vec<PeerPaths> = self
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
        if let Ok(mut m) = self.metrics.lock() {
            *m = snapshot;
        }
    }
}

impl PeerState {
    /// Send the peer a notice about path `about` on the best healthy path other than it;
    /// `unit` builds the header from the carrying path's index and incarnation. Nothing is
    /// sent when no other path is healthy.
    fn notify(
        &mut self,
        conns: &mut Conns,
        about: usize,
        now: Instant,
        unit: impl FnOnce(u8, u32) -> UnitHeader,
    ) {
        let via = self
            .tx
            .healthy_paths(now)
            .into_iter()
            .find(|&q| q != about && self.conn[q].is_some());
        if let Some(q) = via {
            if let Some(c) = conn_mut(conns, self.conn[q]) {
                c.push_unit(&unit(q as u8, self.epoch[q]), &[]);
            }
        }
    }

    /// Completions, the ack that is due, and segments onto paths.
    fn flush(&mut self, peer: Rank, conns: &mut Conns, now: Instant, out: &mut Vec<Completion>) {
        while let Some((token, id)) = self.tx.poll_completed() {
            out.push(Completion::Sent { token });
            for (path, &ci) in self.conn.iter().enumerate() {
                if let Some(c) = conn_mut(conns, ci) {
                    for seg in c.drop_unsent(id) {
                        self.tx.forget(path, id, seg);
                    }
                }
            }
        }
        while let Some((token, crc)) = self.rx.poll_completed() {
            out.push(Completion::Received { token, crc });
        }
        while let Some((token, got)) = self.rx.poll_mismatch() {
            out.push(Completion::BadHeader { token, peer, got });
        }
        if let Some(error) = self.rx.poll_fault() {
            out.push(Completion::PeerFailed { peer, error });
        }
        if self.rx.ack_due() {
            let bytes = self.rx.ack().encode();
            let mut sent = 0;
            for path in self.ack_paths(now) {
                let Some(c) = conn_mut(conns, self.conn[path]).filter(|c| !c.dead) else {
                    continue;
                };
                let u = UnitHeader::plain(
                    UnitKind::Ack,
                    path as u8,
                    self.epoch[path],
                    0,
                    bytes.len() as u32,
                );
                c.push_unit(&u, &bytes);
                sent += 1;
                // A second copy only when the first did not go where data last came from
                // (a path known to work).
                if sent == 2 || path == self.ack_path {
                    break;
                }
            }
        }
        while let Some(t) = self.tx.poll_transmit(now) {
            let Some(c) = conn_mut(conns, self.conn[t.path]) else {
                // The sender thinks the path is up but it has no connection: take it down.
                self.tx.on_path_down(t.path, "no connection", now);
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
    }

    /// Where an ack may go, best first (the caller sends it on the first two live ones): paths something
    /// arrived on in the last [`ACK_RECENT`] (a path cut towards the peer usually is cut both
    /// ways, and an ack lost in it would make the peer suspect its good paths), the quickest
    /// first (the ack's own direction is loaded with this rank's data), and the one data last
    /// arrived on.
    fn ack_paths(&self, now: Instant) -> Vec<usize> {
        let recent = |q: usize| {
            self.last_rx[q].is_some_and(|t| now.saturating_duration_since(t) < ACK_RECENT)
        };
        let mut by_speed: Vec<usize> = self.tx.quickest_path(now).into_iter().collect();
        by_speed.extend(self.tx.healthy_paths(now));
        let candidates = by_speed
            .iter()
            .copied()
            .filter(|&q| recent(q))
            .take(1)
            .chain([self.ack_path])
            .chain(by_speed.iter().copied().filter(|&q| recent(q)))
            .chain(by_speed.iter().copied());
        let mut paths: Vec<usize> = Vec::new();
        for q in candidates {
            if !paths.contains(&q) {
                paths.push(q);
            }
        }
        paths
    }
}

impl Drop for SprayMesh {
    /// With `DMSC_DEBUG=INFO`, each path's metrics when the communicator closes.
    fn drop(&mut self) {
        if !log::log_enabled!(target: SPRAY, log::Level::Info) {
            return;
        }
        for (peer, p) in self.peers.iter().enumerate() {
            let Some(p) = p else { continue };
            for m in p.tx.metrics() {
                log::info!(
                    target: SPRAY,
                    "rank {}: path {} to rank {peer}: {}, incarnation {}, {:.1} MB/s, srtt {:.1} ms, \
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
