//! The store server: one accept thread, one thread per connection, one map behind a mutex.
//!
//! Like torch's `TCPStore` server, blocking `get` and `wait` park the connection's thread
//! until the keys appear; here on a [`Condvar`] with a deadline, waking every
//! [`PROBE_INTERVAL`] to notice a client that hung up or a server that is stopping. Values
//! written by `set` and `add` wake all waiters, each of which re-checks only the keys it is
//! still missing.
//!
//! Authentication: before any request, each connection runs the challenge–response of
//! [`dmsc_core::auth`] (with the job's secret, or unauthenticated when there is none, which
//! the client must match) within [`ACCEPT_DEADLINE`]. A connection that fails it, sends
//! garbage or stays silent is closed and logged as a warning of subsystem `BOOTSTRAP`,
//! `store refused ADDR: reason` (rate limited); until it passes, only the fixed 40-byte authentication messages are read from
//! it, so a stranger never makes the server allocate or parse anything else.
//!
//! Bounds: at most [`ServerConfig::max_connections`] connections, of which at most
//! [`ServerConfig::max_pending`] still authenticating (more are told so and closed); a frame
//! is at most the protocol's 17 MiB and is read as it arrives; the map holds at most
//! [`ServerConfig::max_store_bytes`] of keys and values. A malformed frame gets an `Error`
//! reply and its connection is closed; other clients never notice.
//!
//! Shutdown ([`StoreServer::shutdown`] or drop): the listener is shut down (which wakes
//! `accept` on Linux), every connection socket is shut down (which wakes its reader), waiters
//! are woken, and every thread is joined.

use super::gate::Gate;
use super::{read_frame, ReadError};
use crate::auth::{self, ACCEPT_DEADLINE};
use dmsc_core::auth::{Purpose, Refusal, Secret, Side};
use dmsc_core::bootstrap::protocol::{Request, Response};
use dmsc_core::error::{Error, Result};
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often a blocked `get` / `wait` checks that its client is still there.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Longest wait a client can ask for (a larger `timeout_ms` is capped to this).
const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a reply may take to leave before its connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Stack of a connection thread: the handler is shallow.
const CONN_STACK: usize = 256 << 10;
/// Longest wait for the connection that wakes the accept thread at shutdown.
const WAKE_TIMEOUT: Duration = Duration::from_millis(100);
/// Receive buffers larger than this are released after their frame.
const KEEP_BUF: usize = 64 << 10;

/// Limits of a [`StoreServer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Most simultaneous client connections (default 4096).
    pub max_connections: usize,
    /// Most connections still authenticating at once (default 256): strangers that connect
    /// and stay silent hold one of these for at most [`ACCEPT_DEADLINE`], never a
    /// connection slot of the job.
    pub max_pending: usize,
    /// Most bytes of keys plus values held (default 1 GiB); a `set` beyond it is refused.
    pub max_store_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_connections: 4096,
            max_pending: 256,
            max_store_bytes: 1 << 30,
        }
    }
}

/// A running store server; stops when shut down or dropped.
#[derive(Debug)]
pub struct StoreServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listener: Arc<TcpListener>,
    accept: Option<JoinHandle<()>>,
}

/// The map and the byte count of its keys and values.
#[derive(Debug, Default)]
struct State {
    map: HashMap<String, Vec<u8>>,
    bytes: usize,
}

/// A live connection: a handle on its socket (to shut it down) and its thread.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    config: ServerConfig,
    /// The job's secret every client must prove (`None`: unauthenticated).
    secret: Option<Secret>,
    /// Connections that have not finished authenticating.
    pending: Gate,
    state: Mutex<State>,
    /// Notified on every `set` and `add`, and on shutdown.
    changed: Condvar,
    stop: AtomicBool,
    /// Live connections by id; a connection's thread removes its entry when it ends.
    conns: Mutex<(u64, HashMap<u64, Conn>)>,
}

/// Lock, ignoring poison: the map stays consistent because no handler panics mid-update.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StoreServer {
    /// Serve a store on `addr` (port 0: an ephemeral port, see [`local_addr`]) with the
    /// default [`ServerConfig`], for clients that prove knowledge of `secret` (`None`: for
    /// clients without a secret, unauthenticated).
    ///
    /// [`local_addr`]: StoreServer::local_addr
    pub fn bind(addr: SocketAddr, secret: Option<Secret>) -> Result<StoreServer> {
        StoreServer::bind_with(addr, ServerConfig::default(), secret)
    }

    /// Serve a store on `addr` with the given limits and secret.
    pub fn bind_with(
        addr: SocketAddr,
        config: ServerConfig,
        secret: Option<Secret>,
    ) -> Result<StoreServer> {
        let ctx = || format!("binding the rendezvous store to {addr}");
        let listener = TcpListener::bind(addr).map_err(|e| Error::io(ctx(), &e))?;
        let local = listener.local_addr().map_err(|e| Error::io(ctx(), &e))?;
        let listener = Arc::new(listener);
        let pending = Gate::new(config.max_pending);
        let shared = Arc::new(Shared {
            config,
            secret,
            pending,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            conns: Mutex::new((0, HashMap::new())),
        });
        let (l, s) = (listener.clone(), shared.clone());
        let accept = thread::Builder::new()
            .name("dmsc-store-accept".into())
            .spawn(move || accept_loop(&l, &s))
            .map_err(|e| Error::io("starting the store's accept thread", &e))?;
        Ok(StoreServer {
            addr: local,
            shared,
            listener,
            accept: Some(accept),
        })
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of connected clients.
    pub fn connections(&self) -> usize {
        lock(&self.shared.conns).1.len()
    }

    /// Stop serving: close the listener and every connection, wake every waiter, and join all
    /// threads. Dropping the server does the same.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // SAFETY: the fd belongs to `self.listener`, which is alive (we hold an Arc).
        // shutdown(2) on a listening socket makes a blocked accept(2) return EINVAL on Linux;
        // it closes nothing, so the fd stays valid for the accept thread.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        // Belt and braces for kernels (or sandboxes) where that does not wake accept: a
        // connection does, and the accept thread then sees `stop`.
        if !accept.is_finished() {
            let _ = TcpStream::connect_timeout(&super::reachable(self.addr), WAKE_TIMEOUT);
        }
        let _ = accept.join();
        // Taking the lock orders this after any waiter's check of `stop`, so none misses the
        // notification.
        drop(lock(&self.shared.state));
        self.shared.changed.notify_all();
        let conns: Vec<Conn> = lock(&self.shared.conns).1.drain().map(|(_, c)| c).collect();
        for c in &conns {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        for c in conns {
            if let Some(t) = c.thread {
                let _ = t.join();
            }
        }
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, from)) => admit(stream, from, shared),
            // Out of fds or memory, or an aborted handshake: pause instead of spinning.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Register a new connection and start its thread, or refuse it when at a limit.
fn admit(mut stream: TcpStream, from: SocketAddr, shared: &Arc<Shared>) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let Ok(handle) = stream.try_clone() else {
        return; // out of file descriptors: close it
    };
    let id = {
        let mut conns = lock(&shared.conns);
        let limit = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let why = if conns.1.len() >= shared.config.max_connections {
            Some(Refusal::TooManyConnections(limit(
                shared.config.max_connections,
            )))
        } else if !shared.pending.try_enter() {
            Some(Refusal::TooManyPending(limit(shared.pending.max())))
        } else {
            None
        };
        if let Some(why) = why {
            drop(conns);
            auth::log_refusal(
                dmsc_core::subsys::BOOTSTRAP,
                format_args!("store refused {from}: {why}"),
            );
            return auth::refuse(&mut stream, why);
        }
        conns.0 += 1;
        let id = conns.0;
        conns.1.insert(
            id,
            Conn {
                stream: handle,
                thread: None,
            },
        );
        id
    };
    let s = shared.clone();
    let spawned = thread::Builder::new()
        .name("dmsc-store-conn".into())
        .stack_size(CONN_STACK)
        .spawn(move || {
            if authenticate(&mut stream, from, &s) {
                serve(stream, &s);
            }
            lock(&s.conns).1.remove(&id);
        });
    let mut conns = lock(&shared.conns);
    match spawned {
        Ok(t) => {
            if let Some(c) = conns.1.get_mut(&id) {
                c.thread = Some(t);
            }
        }
        Err(_) => {
            shared.pending.leave();
            if let Some(c) = conns.1.remove(&id) {
                let _ = c.stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Run the authentication exchange on a new connection; log and refuse it on failure.
fn authenticate(stream: &mut TcpStream, from: SocketAddr, shared: &Shared) -> bool {
    let deadline = Instant::now() + ACCEPT_DEADLINE;
    let secret = shared.secret.as_ref();
    let res = auth::handshake(stream, secret, Purpose::Store, Side::Acceptor, 0, deadline);
    shared.pending.leave();
    match res {
        Ok(()) => true,
        Err(e) => {
            if !shared.stop.load(Ordering::SeqCst) {
                auth::log_refusal(
                    dmsc_core::subsys::BOOTSTRAP,
                    format_args!("store refused {from}: {e}"),
                );
            }
            false
        }
    }
}

/// Enable TCP keepalive so a peer whose host died is noticed (after about two minutes) even
/// while its thread waits for a request. Best effort.
fn keepalive(stream: &TcpStream) {
    let fd = stream.as_raw_fd();
    for (level, opt, val) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 6),
    ] {
        let v: libc::c_int = val;
        // SAFETY: `fd` is an open socket owned by `stream`, alive for this call; the option
        // value is a c_int whose address and size we pass correctly.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Serve one connection until it closes, errs, or the server stops.
fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    keepalive(&stream);
    let mut buf = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let req = match read_frame(&mut stream, &mut buf, true, None) {
            Ok(()) => Request::decode(&buf),
            Err(ReadError::Protocol(e)) => Err(e),
            Err(_) => return,
        };
        let req = req
            .and_then(|r| r.ok_or_else(|| Error::internal("a whole store frame did not decode")));
        let reply = match req {
            Ok((req, _)) => handle(shared, req, &stream),
            Err(e) => {
                // Tell a confused client why, then hang up: its framing is lost.
                let _ = send(&mut stream, &Response::Error(e.to_string()));
                return;
            }
        };
        let Some(reply) = reply else { return };
        if send(&mut stream, &reply).is_err() {
            return;
        }
        if buf.capacity() > KEEP_BUF {
            buf = Vec::new();
        }
    }
}

fn send(stream: &mut TcpStream, r: &Response) -> io::Result<()> {
    let frame = match r.encode() {
        Ok(f) => f,
        Err(e) => Response::Error(e.to_string())
            .encode()
            .map_err(|_| io::Error::other("unencodable reply"))?,
    };
    stream.write_all(&frame)
}

/// Execute one request; `None` when the client hung up while waiting.
fn handle(shared: &Shared, req: Request, stream: &TcpStream) -> Option<Response> {
    let reply = match req {
        Request::Set { key, value } => {
            let mut st = lock(&shared.state);
            let old = st.map.get(&key).map_or(0, |v| key.len() + v.len());
            let bytes = st.bytes - old + key.len() + value.len();
            if bytes > shared.config.max_store_bytes {
                return Some(full(shared, &key));
            }
            st.bytes = bytes;
            st.map.insert(key, value);
            shared.changed.notify_all();
            Response::Ok
        }
        Request::Add { key, delta } => add(shared, key, delta),
        Request::Get { key, timeout_ms } => {
            let keys = [key];
            match wait_for(shared, &keys, timeout_ms, stream) {
                Waited::Ready(st) => match st.map.get(&keys[0]) {
                    Some(v) => Response::Value(v.clone()),
                    None => Response::Timeout {
                        missing: keys.to_vec(),
                    },
                },
                other => other.into_reply()?,
            }
        }
        Request::Check { keys } => {
            let st = lock(&shared.state);
            Response::Bool(keys.iter().all(|k| st.map.contains_key(k)))
        }
        Request::Wait { keys, timeout_ms } => match wait_for(shared, &keys, timeout_ms, stream) {
            Waited::Ready(_) => Response::Ok,
            other => other.into_reply()?,
        },
        Request::Delete { key } => {
            let mut st = lock(&shared.state);
            match st.map.remove(&key) {
                Some(v) => {
                    st.bytes -= key.len() + v.len();
                    Response::Bool(true)
                }
                None => Response::Bool(false),
            }
        }
    };
    Some(reply)
}

fn full(shared: &Shared, key: &str) -> Response {
    Response::Error(format!(
        "the store is full (limit {} bytes of keys and values); refused key {key:?}",
        shared.config.max_store_bytes
    ))
}

/// Atomic add on a counter stored as decimal text; absent counts as 0.
fn add(shared: &Shared, key: String, delta: i64) -> Response {
    let mut st = lock(&shared.state);
    let (current, old) = match st.map.get(&key) {
        None => (0, 0),
        Some(v) => match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            Some(c) => (c, key.len() + v.len()),
            None => {
                return Response::Error(format!(
                    "add on key {key:?}, which holds a value that is not a counter"
                ))
            }
        },
    };
    let Some(new) = current.checked_add(delta) else {
        return Response::Error(format!(
            "add of {delta} to counter {key:?} ({current}) overflows"
        ));
    };
    let text = new.to_string().into_bytes();
    let bytes = st.bytes - old + key.len() + text.len();
    if bytes > shared.config.max_store_bytes {
        return full(shared, &key);
    }
    st.bytes = bytes;
    st.map.insert(key, text);
    shared.changed.notify_all();
    Response::Counter(new)
}

/// How a wait ended.
enum Waited<'a> {
    /// Every key was seen; the lock is still held.
    Ready(MutexGuard<'a, State>),
    /// The deadline passed with these keys never seen.
    Missing(Vec<String>),
    /// The client hung up.
    Closed,
    /// The server is stopping.
    Stopping,
}

impl Waited<'_> {
    /// The reply for an unsuccessful wait (`None`: nobody to reply to).
    fn into_reply(self) -> Option<Response> {
        match self {
            Waited::Ready(_) => Some(Response::Ok),
            Waited::Missing(missing) => Some(Response::Timeout { missing }),
            Waited::Closed => None,
            Waited::Stopping => Some(Response::Error("the store is shutting down".into())),
        }
    }
}

/// Wait until every key has been seen (a key seen once counts even if deleted later), the
/// deadline passes, the client hangs up or the server stops.
fn wait_for<'a>(
    shared: &'a Shared,
    keys: &[String],
    timeout_ms: u64,
    stream: &TcpStream,
) -> Waited<'a> {
    let start = Instant::now();
    let wait = Duration::from_millis(timeout_ms).min(MAX_WAIT);
    let deadline = start + wait;
    let mut last_probe = start;
    let mut seen = 0; // keys[..seen] have been seen
    let mut st = lock(&shared.state);
    loop {
        while seen < keys.len() && st.map.contains_key(&keys[seen]) {
            seen += 1;
        }
        if seen == keys.len() {
            return Waited::Ready(st);
        }
        if shared.stop.load(Ordering::SeqCst) {
            return Waited::Stopping;
        }
        let now = Instant::now();
        if now >= deadline {
            let missing = keys[seen..]
                .iter()
                .filter(|k| !st.map.contains_key(*k))
                .cloned()
                .collect();
            return Waited::Missing(missing);
        }
        if now.duration_since(last_probe) >= PROBE_INTERVAL {
            drop(st);
            if peer_closed(stream) {
                return Waited::Closed;
            }
            last_probe = now;
            st = lock(&shared.state);
            continue;
        }
        let slice = (deadline - now).min(PROBE_INTERVAL);
        st = shared
            .changed
            .wait_timeout(st, slice)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Has the client closed (or reset) its connection? `POLLRDHUP` reports the peer's FIN even
/// when unread bytes are queued before it.
fn peer_closed(stream: &TcpStream) -> bool {
    let mut p = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd whose fd is owned by `stream` for the whole call; a zero
    // timeout makes poll(2) return at once.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    let hung_up = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    n > 0 && p.revents & hung_up != 0
}
