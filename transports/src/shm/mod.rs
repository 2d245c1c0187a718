//! Shared-memory transport between ranks of one host.
//!
//! Each pair of ranks shares one segment ([`segment`]) holding four single-producer
//! single-consumer rings of stamped records ([`ring`]): data and control, one each way. A
//! record's stamp sits in its own first line, so a small frame reaches the peer as one line
//! pair that the peer polls directly. Frames travel
//! through the rings exactly as they travel through a TCP connection: the same framing state
//! machine ([`crate::conn::Conn`]) turns byte counts into completions, checks every header
//! against the receive it matches and never writes a payload before its header was checked,
//! so matching, mismatch reports, checksums and control messages behave as over TCP. Only
//! the byte mover differs: a copy into the ring instead of `sendmsg`, a copy out instead of
//! `recvmsg`. Small frames are one copy of header and payload in, one copy out; large ones
//! are cut by the ring's free space and pipelined (the producer fills while the consumer
//! drains), or pass by reference through cross-memory attach when the pair agreed on it
//! (`crate::cma`, wrapped around this transport by the connector).
//!
//! Waiting (Open MPI vader and NCCL's SHM transport spin; on an oversubscribed host that
//! burns the core the peer needs): the engine spins briefly with non-blocking polls, then
//! this transport blocks in `ppoll` on the pairs' Unix sockets ([`sock`]). Before blocking, a
//! rank raises its doorbell word in each segment, re-checks its rings, and sleeps; a peer
//! that then moves bytes for it sees the word and writes one byte to the socket. The word is
//! raised and the rings re-checked with sequentially consistent fences on both sides
//! (Dekker's pattern), so a wake-up is never lost. The same sockets end the moment a peer's
//! process dies, which is how a killed peer is noticed at once; a stopped peer is noticed by
//! the engine's heartbeats, as over TCP.

mod card;
mod connect;
mod ring;
mod segment;
mod sock;

pub use card::{host_name, Card, CARD_LEN};
pub use connect::{connect, Listening, ShmOptions};

use crate::conn::{Conn, NoPaths, Role};
use crate::wake::EventFd;
use dmsc_core::engine::{Completion, Token, Transport, Waker};
use dmsc_core::error::{Error, Result};
use dmsc_core::wire::FrameHeader;
use dmsc_core::Rank;
use ring::Ring;
use segment::{Channel, Segment};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often, in ms, a polling rank looks at its sockets for a peer's end (a rank that
/// sleeps looks at them whenever it wakes): well inside the second within which a lost peer
/// is named, idle or not.
const SOCKET_CHECK_MS: u64 = 2;

/// Milliseconds of `CLOCK_MONOTONIC_COARSE` (read from the vDSO without a system call).
fn coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// One peer on this host: its segment's rings, the framing of each channel, and the socket.
struct Peer {
    rank: Rank,
    data: Box<Conn>,
    control: Box<Conn>,
    data_tx: Ring,
    data_rx: Ring,
    control_tx: Ring,
    control_rx: Ring,
    /// Declared after the rings, which point into it, so it is unmapped after them.
    seg: Segment,
    sock: UnixStream,
    /// The socket ended: the peer closed it or died.
    ended: bool,
    /// The end was passed to the framing state machines (after the rings were drained).
    end_reported: bool,
    /// The ring holds bytes the peer did not frame correctly, or its positions are corrupt.
    broken: bool,
}

impl Peer {
    fn new(rank: Rank, seg: Segment, sock: UnixStream) -> Result<Peer> {
        sock.set_nonblocking(true)
            .map_err(|e| Error::io("setting a same-host socket nonblocking", &e))?;
        // The framing state machines never touch their descriptor here (bytes move through
        // the rings); each gets a duplicate of the socket's to own.
        let dup = |what| -> Result<OwnedFd> {
            std::os::fd::AsFd::as_fd(&sock)
                .try_clone_to_owned()
                .map_err(|e| Error::io(format!("duplicating a socket for {what}"), &e))
        };
        Ok(Peer {
            rank,
            data: Conn::new(dup("data")?, rank, Role::Data),
            control: Conn::new(dup("control")?, rank, Role::Control),
            data_tx: seg.tx(Channel::Data),
            data_rx: seg.rx(Channel::Data),
            control_tx: seg.tx(Channel::Control),
            control_rx: seg.rx(Channel::Control),
            seg,
            sock,
            ended: false,
            end_reported: false,
            broken: false,
        })
    }

    /// Move bytes both ways on both channels. Returns true when this side produced or
    /// consumed bytes (the peer may be waiting for them, or for the space).
    fn progress(&mut self, out: &mut Vec<Completion>) -> bool {
        if self.broken {
            return false;
        }
        let step = |conn: &mut Conn, tx: &mut Ring, rx: &mut Ring, out: &mut Vec<Completion>| {
            Ok::<bool, ring::Corrupt>(push(conn, tx, out)? | pull(conn, rx, out)?)
        };
        let r = step(
            &mut self.control,
            &mut self.control_tx,
            &mut self.control_rx,
            out,
        )
        .and_then(|a| Ok(a | step(&mut self.data, &mut self.data_tx, &mut self.data_rx, out)?));
        let moved = match r {
            Ok(m) => m,
            Err(ring::Corrupt(why)) => {
                self.broken = true;
                let rank = self.rank;
                self.data.fail_with(
                    out,
                    Error::protocol(format!(
                        "rank {rank} corrupted the shared-memory ring between us: {why}"
                    )),
                );
                return true;
            }
        };
        if self.ended
            && !self.end_reported
            && !self.data_rx.readable()
            && !self.control_rx.readable()
        {
            // Everything the peer wrote before it went is framed; now the end of stream
            // decides, as on a socket: quiet when nothing was expected, a failure otherwise.
            self.end_reported = true;
            self.data.on_received(0, out, &mut NoPaths);
            self.control.on_received(0, out, &mut NoPaths);
        }
        moved
    }

    /// Whether a `progress` call could do something now (checked after raising the
    /// doorbell, before sleeping).
    fn ready(&mut self) -> bool {
        if self.broken {
            return false;
        }
        let can_send = |c: &Conn, r: &mut Ring| c.has_send() && r.free().map_or(true, |n| n > 0);
        (self.ended && !self.end_reported)
            || (self.data.wants_recv() && self.data_rx.readable())
            || self.control_rx.readable()
            || can_send(&self.data, &mut self.data_tx)
            || can_send(&self.control, &mut self.control_tx)
    }

    /// After moving bytes: wake the peer if it sleeps.
    fn notify(&self) {
        fence(Ordering::SeqCst);
        let theirs = self.seg.doorbell(1 - self.seg.side());
        if theirs.load(Ordering::Relaxed) != 0 && theirs.swap(0, Ordering::SeqCst) != 0 {
            sock::ring(self.sock.as_raw_fd());
        }
    }

    /// Raise (`true`) or lower this side's doorbell word.
    fn arm(&self, on: bool) {
        self.seg
            .doorbell(self.seg.side())
            .store(u32::from(on), Ordering::SeqCst);
    }
}

/// Copy the connection's pending output into `tx`. Returns whether bytes moved.
fn push(
    conn: &mut Conn,
    tx: &mut Ring,
    out: &mut Vec<Completion>,
) -> std::result::Result<bool, ring::Corrupt> {
    let mut moved = false;
    while conn.has_send() && conn.prepare_send() {
        let k = conn.send_msg.msg_iovlen.min(2);
        let mut iov = [(std::ptr::null::<u8>(), 0usize); 2];
        for (d, v) in iov.iter_mut().zip(&conn.send_iov[..k]) {
            *d = (v.iov_base as *const u8, v.iov_len);
        }
        // SAFETY: the iovecs were just filled by the state machine from its queued frames:
        // its own header buffers and payloads the engine keeps valid until their completion.
        let n = unsafe { tx.write(&iov[..k]) }?;
        if n == 0 {
            break;
        }
        moved = true;
        conn.on_sent(n, out);
    }
    Ok(moved)
}

/// Copy what `rx` holds into the places the connection names. Returns whether bytes moved.
fn pull(
    conn: &mut Conn,
    rx: &mut Ring,
    out: &mut Vec<Completion>,
) -> std::result::Result<bool, ring::Corrupt> {
    let mut moved = false;
    while conn.wants_recv() {
        if !conn.prepare_recv().0 {
            break;
        }
        let k = conn.recv_msg.msg_iovlen.min(2);
        let mut iov = [(std::ptr::null_mut::<u8>(), 0usize); 2];
        for (d, v) in iov.iter_mut().zip(&conn.recv_iov[..k]) {
            *d = (v.iov_base as *mut u8, v.iov_len);
        }
        // SAFETY: the iovecs name the state machine's header buffer, its control buffer or
        // the destination of the receive they match, which the engine keeps valid and
        // unaliased until its completion; none lies inside the ring.
        let n = unsafe { rx.read(&iov[..k]) }?;
        if n == 0 {
            break;
        }
        moved = true;
        conn.on_received(n, out, &mut NoPaths);
    }
    Ok(moved)
}

/// A transport whose peers all share this rank's host.
pub struct ShmTransport {
    rank: Rank,
    /// When the sockets were last checked for doorbells and ends, in [`coarse_ms`] (a
    /// system call per peer, so not on every spin of the engine).
    checked_ms: u64,
    /// The last wait returned: check the sockets at the next round.
    woke: bool,
    /// Indexed by rank; `None` for this rank (and peers another transport serves).
    peers: Vec<Option<Peer>>,
    wake: Arc<EventFd>,
    pollfds: Vec<libc::pollfd>,
}

impl ShmTransport {
    fn new(rank: Rank, nranks: usize, links: Vec<(Rank, Segment, UnixStream)>) -> Result<Self> {
        let mut peers: Vec<Option<Peer>> = (0..nranks).map(|_| None).collect();
        for (r, seg, sock) in links {
            peers[r] = Some(Peer::new(r, seg, sock)?);
        }
        Ok(ShmTransport {
            rank,
            checked_ms: coarse_ms(),
            woke: true,
            peers,
            wake: Arc::new(EventFd::new()?),
            pollfds: Vec::new(),
        })
    }

    fn peer(&mut self, peer: Rank) -> Result<&mut Peer> {
        let me = self.rank;
        self.peers
            .get_mut(peer)
            .and_then(Option::as_mut)
            .ok_or_else(|| {
                Error::internal(format!(
                    "rank {me} has no shared-memory link to rank {peer}"
                ))
            })
    }

    /// One round over every peer; returns true when bytes moved anywhere.
    fn round(&mut self, out: &mut Vec<Completion>) -> bool {
        let mut any = false;
        // The coarse clock (a few ns, ms resolution) decides: the precise one would cost a
        // spinning rank a good share of each round.
        let now = coarse_ms();
        let check = self.woke || now.wrapping_sub(self.checked_ms) >= SOCKET_CHECK_MS;
        if check {
            self.woke = false;
            self.checked_ms = now;
        }
        for p in self.peers.iter_mut().flatten() {
            if check && !p.ended && sock::drain(p.sock.as_raw_fd()) {
                p.ended = true;
            }
            if p.progress(out) {
                p.notify();
                any = true;
            }
        }
        any
    }

    /// Raise every doorbell; true when something is ready anyway (then do not sleep).
    fn arm_all(&mut self) -> bool {
        for p in self.peers.iter().flatten() {
            p.arm(true);
        }
        fence(Ordering::SeqCst);
        self.peers.iter_mut().flatten().any(|p| p.ready())
    }

    /// Lower every doorbell; the sockets are looked at in the next round.
    fn disarm_all(&mut self) {
        for p in self.peers.iter().flatten() {
            p.arm(false);
        }
        self.woke = true;
    }

    /// The pairs' sockets (the doorbells ring there, and they end when a peer dies).
    fn sockets(&self) -> impl Iterator<Item = std::os::fd::RawFd> + '_ {
        self.peers
            .iter()
            .flatten()
            .map(|p| if p.ended { -1 } else { p.sock.as_raw_fd() })
    }

    /// Sleep until a peer rings, a socket ends, the waker fires or `timeout` passes, unless
    /// something is ready after raising the doorbells.
    fn sleep(&mut self, timeout: Duration) -> Result<()> {
        if !self.arm_all() {
            let mut fds = std::mem::take(&mut self.pollfds);
            fds.clear();
            fds.push(libc::pollfd {
                fd: self.wake.raw(),
                events: libc::POLLIN,
                revents: 0,
            });
            fds.extend(self.sockets().map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }));
            let r = sock::wait(&mut fds, timeout);
            self.pollfds = fds;
            r?;
            self.wake.drain();
        }
        self.disarm_all();
        Ok(())
    }
}

impl Transport for ShmTransport {
    fn name(&self) -> &'static str {
        "shm"
    }

    unsafe fn post_send(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        token: Token,
    ) -> Result<()> {
        let p = self.peer(peer)?;
        p.data.push_send(header, data, token);
        Ok(())
    }

    unsafe fn post_recv(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        token: Token,
    ) -> Result<()> {
        let p = self.peer(peer)?;
        p.data.push_recv(expect, dst, token);
        Ok(())
    }

    fn send_control(&mut self, peer: Rank, payload: &[u8]) {
        if let Ok(p) = self.peer(peer) {
            p.control.push_control(payload);
        }
    }

    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<()> {
        let before = out.len();
        self.round(out);
        if out.len() > before || timeout.is_zero() {
            return Ok(());
        }
        self.sleep(timeout)?;
        // A wake-up that brings no completion returns too: the engine re-checks its
        // deadlines and calls again.
        self.round(out);
        Ok(())
    }

    fn cancel_all(&mut self) {
        // Bytes move only inside `poll`, on this thread: once the queues are cleared no
        // pointer into engine memory is held anywhere.
        for p in self.peers.iter_mut().flatten() {
            p.data.clear();
            p.control.clear();
        }
    }

    fn waker(&self) -> Arc<dyn Waker> {
        self.wake.clone()
    }

    fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.sockets().filter(|&fd| fd >= 0).collect()
    }

    fn prepare_wait(&mut self) -> bool {
        self.arm_all()
    }

    fn end_wait(&mut self) {
        self.disarm_all();
    }

    fn describe_peer(&self, peer: Rank) -> Option<String> {
        let p = self.peers.get(peer)?.as_ref()?;
        Some(if p.ended {
            format!("shared memory with rank {peer}: its socket ended (the process exited or died)")
        } else if p.broken {
            format!("shared memory with rank {peer}: the ring was corrupted")
        } else {
            format!("shared memory with rank {peer}")
        })
    }
}
