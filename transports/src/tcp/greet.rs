//! Authenticating and identifying the connections of a mesh, all at once.
//!
//! Every connection, in both directions, first runs the challenge–response of
//! [`dmsc_core::auth`] (purpose `Mesh`, context: the communicator id); only then does the
//! connecting rank send its `Hello` (so it never names itself, let alone sends data, to an
//! impostor), and only then does the accepting rank read it. A connection that fails, sends
//! garbage or stays silent for [`ACCEPT_DEADLINE`] is closed and logged with its address,
//! and the rank keeps waiting for its real peers.
//!
//! All handshakes of a rank progress together in one `poll(2)` loop, the outgoing ones and
//! the accepted ones alike, so a silent stranger delays nobody and no rank waits for a lower
//! rank to finish its own connections. The sockets stay blocking; the loop reads only from
//! sockets `poll` reports readable, and never more than the message it expects, so the bytes
//! that follow the handshake (the memory-attach negotiation, then frames) stay in the
//! socket for their owners.

use super::dial::connect_retry;
use super::hello::{hello, parse_hello};
use super::options::MeshOptions;
use crate::auth::{self, ACCEPT_DEADLINE};
use crate::conn::Role;
use dmsc_core::auth::{Handshake, Purpose, Side, MSG_LEN};
use dmsc_core::error::{Error, Result};
use dmsc_core::wire::HEADER_LEN;
use dmsc_core::Rank;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Most accepted connections still authenticating; beyond it the listener is left alone
/// (new connections wait in its backlog) until some finish or time out.
const MAX_PENDING: usize = 128;
/// Longest single `poll` wait, so deadlines are checked regularly.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// How far a connection's handshake has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Waiting for the peer's challenge.
    Challenge,
    /// Waiting for the peer's proof.
    Proof,
    /// Authenticated; waiting for the peer's hello (accepted connections only).
    Hello,
}

/// Why a handshake stopped.
enum Fail {
    /// The connection closed or failed under it: an outgoing one is made again.
    Closed(Error),
    /// The peer sent something wrong or failed the proof.
    Bad(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Bad(e)
    }
}

/// One connection on its way into the mesh.
pub(super) struct Pending {
    stream: TcpStream,
    addr: SocketAddr,
    hs: Handshake,
    /// The peer and role of a connection this rank made; `None` for an accepted one.
    outgoing: Option<(Rank, Role)>,
    stage: Stage,
    buf: [u8; HEADER_LEN],
    have: usize,
    deadline: Instant,
}

impl Pending {
    /// A connection this rank made to `peer` at `addr`, for `role`: sends its challenge.
    pub(super) fn outgoing(
        stream: TcpStream,
        addr: SocketAddr,
        peer: Rank,
        role: Role,
        opts: &MeshOptions,
        deadline: Instant,
    ) -> Result<Pending> {
        Pending::start(stream, addr, Some((peer, role)), opts, deadline).map_err(|e| {
            Error::protocol(format!(
                "rank {}: starting the authentication of the {role:?} connection to rank \
                 {peer} at {addr}: {e}",
                opts.rank
            ))
        })
    }

    fn start(
        stream: TcpStream,
        addr: SocketAddr,
        outgoing: Option<(Rank, Role)>,
        opts: &MeshOptions,
        deadline: Instant,
    ) -> Result<Pending> {
        let side = match outgoing {
            Some(_) => Side::Connector,
            None => Side::Acceptor,
        };
        let nonce = auth::random_bytes::<32>()?;
        let secret = opts.secret.as_ref();
        if secret.is_none() {
            auth::warn_unauthenticated();
        }
        let hs = Handshake::new(secret, Purpose::Mesh, side, opts.comm_id, nonce);
        let mut p = Pending {
            stream,
            addr,
            hs,
            outgoing,
            stage: Stage::Challenge,
            buf: [0; HEADER_LEN],
            have: 0,
            deadline,
        };
        let _ = p.stream.set_nodelay(true);
        let challenge = p.hs.challenge();
        p.send(&challenge)?;
        Ok(p)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let left = self
            .deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.stream
            .set_write_timeout(Some(left))
            .and_then(|()| self.stream.write_all(bytes))
            .map_err(|e| Error::io("sending an authentication message", &e))
    }

    /// [`send`](Self::send) during [`progress`](Self::progress).
    fn reply(&mut self, bytes: &[u8]) -> std::result::Result<(), Fail> {
        self.send(bytes).map_err(Fail::Closed)
    }

    /// Read what the peer sent (call only when `poll` reports the socket readable) and
    /// advance. Returns the peer and role once the connection is authenticated and
    /// identified.
    fn progress(&mut self, opts: &MeshOptions) -> std::result::Result<Option<(Rank, Role)>, Fail> {
        let need = match self.stage {
            Stage::Challenge | Stage::Proof => MSG_LEN,
            Stage::Hello => HEADER_LEN,
        };
        let n = match self.stream.read(&mut self.buf[self.have..need]) {
            Ok(0) => {
                return Err(Fail::Closed(Error::protocol(
                    "the peer closed the connection",
                )))
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => return Ok(None),
            Err(e) => return Err(Fail::Closed(Error::io("reading during authentication", &e))),
        };
        self.have += n;
        if self.stage != Stage::Hello {
            dmsc_core::auth::check_prefix(&self.buf[..self.have])?;
        }
        if self.have < need {
            return Ok(None);
        }
        self.have = 0;
        let mut msg = [0u8; MSG_LEN];
        msg.copy_from_slice(&self.buf[..MSG_LEN]);
        match self.stage {
            Stage::Challenge => match self.hs.on_challenge(&msg)? {
                Some(proof) => {
                    self.reply(&proof)?;
                    self.stage = Stage::Proof;
                    Ok(None)
                }
                None => self.authenticated(opts),
            },
            Stage::Proof => {
                self.hs.on_proof(&msg)?;
                self.authenticated(opts)
            }
            Stage::Hello => Ok(Some(parse_hello(
                &self.buf,
                opts.rank,
                opts.nranks,
                opts.comm_id,
            )?)),
        }
    }

    /// The peer has proved itself: an outgoing connection names itself now and is done; an
    /// accepted one waits for the peer's hello.
    fn authenticated(
        &mut self,
        opts: &MeshOptions,
    ) -> std::result::Result<Option<(Rank, Role)>, Fail> {
        match self.outgoing {
            Some((peer, role)) => {
                self.reply(&hello(opts, role))?;
                Ok(Some((peer, role)))
            }
            None => {
                self.stage = Stage::Hello;
                Ok(None)
            }
        }
    }
}

/// Drive the handshakes of the connections this rank made (`outgoing`) and accept, then
/// authenticate and identify, one connection of each role from each higher rank. Returns
/// every connection with its peer and role. A failed outgoing handshake is an error (the
/// peer is a rank of this job, or should be); a failed incoming one is logged and dropped.
pub(super) fn greet_all(
    listeners: &[TcpListener],
    mut pending: Vec<Pending>,
    opts: &MeshOptions,
    deadline: Instant,
) -> Result<Vec<(TcpStream, Rank, Role)>> {
    for listener in listeners {
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("setting the listener nonblocking", &e))?;
    }
    let roles = roles_per_peer(opts);
    let mut done = Vec::with_capacity(roles * opts.nranks.saturating_sub(1));
    // Incoming connections still expected, by peer and role slot.
    let mut want = vec![vec![false; roles]; opts.nranks];
    let mut expected = 0;
    for (p, w) in want.iter_mut().enumerate().skip(opts.rank + 1) {
        if opts.serves(p) {
            w.fill(true);
            expected += roles;
        }
    }
    let mut outgoing = pending.len();
    let mut fds = Vec::new();
    while expected > 0 || outgoing > 0 {
        let now = Instant::now();
        if now >= deadline {
            return Err(timed_out(opts, &want, &pending));
        }
        pending.retain(|p| {
            let late = p.outgoing.is_none() && now >= p.deadline;
            if late {
                refused(opts, p.addr, "it did not authenticate in time");
            }
            !late
        });
        let incoming = pending.len() - outgoing;
        let accepting = expected > 0 && incoming < MAX_PENDING;
        fds.clear();
        fds.extend(pending.iter().map(|p| pollfd(p.stream.as_raw_fd())));
        if accepting {
            fds.extend(listeners.iter().map(|l| pollfd(l.as_raw_fd())));
        }
        let next = pending
            .iter()
            .map(|p| p.deadline)
            .chain([deadline])
            .min()
            .unwrap_or(deadline);
        let wait = next.saturating_duration_since(now).min(POLL_SLICE);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds whose descriptors belong to
        // sockets alive for the whole call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis(wait)) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("polling the mesh's connections", &e));
        }
        // Highest index first, so `swap_remove` only moves entries already looked at.
        for i in (0..pending.len()).rev() {
            if fds[i].revents == 0 {
                continue;
            }
            match pending[i].progress(opts) {
                Ok(None) => {}
                Ok(Some((peer, role))) => {
                    let p = pending.swap_remove(i);
                    if p.outgoing.is_some() {
                        outgoing -= 1;
                    } else if !want[peer]
                        .get_mut(slot(role))
                        .map(std::mem::take)
                        .unwrap_or(false)
                    {
                        refused(
                            opts,
                            p.addr,
                            &format!("a duplicate {role:?} from rank {peer}"),
                        );
                        continue;
                    } else {
                        expected -= 1;
                    }
                    done.push((p.stream, peer, role));
                }
                Err(fail) => {
                    let p = pending.swap_remove(i);
                    match (p.outgoing, fail) {
                        // Closed under us (say the peer, busy, dropped it after its deadline
                        // for strangers): connect again.
                        (Some((peer, role)), Fail::Closed(e)) => {
                            log::warn!(
                                target: dmsc_core::subsys::NET,
                                "rank {}: the {role:?} connection to rank {peer} at {} \
                                 closed during authentication ({e}); connecting again",
                                opts.rank, p.addr
                            );
                            let s = connect_retry(p.addr, deadline, peer)?;
                            pending.push(Pending::outgoing(s, p.addr, peer, role, opts, deadline)?);
                        }
                        (Some((peer, role)), Fail::Bad(e)) => {
                            return Err(Error::protocol(format!(
                                "rank {}: the {role:?} connection to rank {peer} at {} failed \
                                 authentication: {e}",
                                opts.rank, p.addr
                            )));
                        }
                        (None, Fail::Closed(e) | Fail::Bad(e)) => {
                            refused(opts, p.addr, &e.to_string())
                        }
                    }
                }
            }
        }
        if accepting {
            let base = fds.len() - listeners.len();
            for (k, listener) in listeners.iter().enumerate() {
                let room = MAX_PENDING.saturating_sub(pending.len() - outgoing);
                if fds[base + k].revents != 0 && room > 0 {
                    accept_some(listener, &mut pending, opts, room)?;
                }
            }
        }
    }
    Ok(done)
}

/// Accept up to `room` waiting connections and start their handshakes.
fn accept_some(
    listener: &TcpListener,
    pending: &mut Vec<Pending>,
    opts: &MeshOptions,
    room: usize,
) -> Result<()> {
    for _ in 0..room {
        let (s, from) = match listener.accept() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            // A connection reset before it was accepted, or out of descriptors for now.
            Err(e) if is_transient(&e) => return Ok(()),
            Err(e) => return Err(Error::io("accepting a connection", &e)),
        };
        let deadline = Instant::now() + ACCEPT_DEADLINE;
        let started = s
            .set_nonblocking(false)
            .map_err(|e| Error::io("setting a socket blocking", &e))
            .and_then(|()| Pending::start(s, from, None, opts, deadline));
        match started {
            Ok(p) => pending.push(p),
            Err(e) => refused(opts, from, &e.to_string()),
        }
    }
    Ok(())
}

/// Connections per pair of ranks: a data and a control connection, or one per path.
fn roles_per_peer(opts: &MeshOptions) -> usize {
    if opts.paths > 1 {
        opts.paths
    } else {
        2
    }
}

/// Index of a role in `want`.
fn slot(role: Role) -> usize {
    match role {
        Role::Data => 0,
        Role::Control => 1,
        Role::Path(p, _) => p as usize,
    }
}

/// Authenticate and identify one connection: one this rank made (`outgoing`: the peer and
/// role) or one it accepted (`None`). Used to connect a path again after it failed.
pub(super) fn greet_one(
    stream: TcpStream,
    addr: SocketAddr,
    outgoing: Option<(Rank, Role)>,
    opts: &MeshOptions,
    deadline: Instant,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<(TcpStream, Rank, Role)> {
    stream
        .set_nonblocking(false)
        .map_err(|e| Error::io("setting a socket blocking", &e))?;
    let mut p = Pending::start(stream, addr, outgoing, opts, deadline)?;
    loop {
        let now = Instant::now();
        if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Acquire)) {
            return Err(Error::Aborted {
                detail: "the transport is closing".into(),
            });
        }
        if now >= deadline {
            return Err(Error::Timeout {
                op: format!("authenticating a connection with {addr}"),
                waited_s: 0.0,
                missing: outgoing.map(|o| vec![o.0]).unwrap_or_default(),
                detail: "the peer did not complete the handshake".into(),
            });
        }
        let mut fds = [pollfd(p.stream.as_raw_fd())];
        let wait = deadline.saturating_duration_since(now).min(POLL_SLICE);
        // SAFETY: one valid pollfd for a socket alive for the whole call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, millis(wait)) };
        if n <= 0 {
            continue;
        }
        match p.progress(opts) {
            Ok(None) => {}
            Ok(Some((peer, role))) => return Ok((p.stream, peer, role)),
            Err(Fail::Closed(e) | Fail::Bad(e)) => return Err(e),
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    ) || e.kind() == io::ErrorKind::Interrupted
}

fn refused(opts: &MeshOptions, from: SocketAddr, why: &str) {
    auth::log_refusal(
        dmsc_core::subsys::NET,
        format_args!(
            "rank {}: refused a connection from {from}: {why}",
            opts.rank
        ),
    );
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1)
}

/// The setup deadline passed: name the ranks whose connections are not complete.
fn timed_out(opts: &MeshOptions, want: &[Vec<bool>], pending: &[Pending]) -> Error {
    let mut missing: Vec<Rank> = (0..opts.nranks)
        .filter(|&p| want[p].iter().any(|&w| w))
        .collect();
    let stuck: Vec<Rank> = pending
        .iter()
        .filter_map(|p| p.outgoing.map(|(peer, _)| peer))
        .collect();
    missing.extend(&stuck);
    missing.sort_unstable();
    missing.dedup();
    let mut detail = String::from("those ranks never connected and authenticated");
    if !stuck.is_empty() {
        detail = format!(
            "{detail}; rank(s) {stuck:?} accepted this rank's connections but did not \
             complete the authentication"
        );
    }
    Error::Timeout {
        op: format!("rank {} waiting for connections", opts.rank),
        waited_s: opts.timeout.as_secs_f64(),
        missing,
        detail,
    }
}
