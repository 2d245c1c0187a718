//! The store client: one blocking connection, every call bounded by a deadline.
//!
//! Like torch's `TCPStore` client, [`StoreClient::connect`] retries with exponential backoff
//! until its deadline, because rank 0 may start its server after the others try to connect.
//! A fresh connection first runs the authentication exchange ([`dmsc_core::auth`]: client
//! and server each prove they know the job's secret) and is then checked with a no-op
//! request, so a port held by some other service (say torch's own `TCPStore` on
//! `MASTER_PORT`) is reported as such instead of hanging, and a store of another job (or
//! one with another secret) as an authentication failure.
//!
//! Every request is bounded: the socket's read and write timeouts follow the request's
//! deadline (its own wait, if any, plus the client's [`timeout`](StoreClient::timeout)). After
//! an I/O failure or a malformed reply the connection's framing is unknown, so the client
//! refuses further calls with the original cause.

use super::{read_frame, ReadError};
use crate::auth::{self, AuthError};
use dmsc_core::auth::{Purpose, Secret, Side};
use dmsc_core::bootstrap::protocol::{Request, Response, MAX_KEYS};
use dmsc_core::error::{Error, Result};
use dmsc_core::Rank;
use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

/// First pause between connection attempts; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Longest single `connect(2)` attempt.
const ATTEMPT: Duration = Duration::from_secs(5);
/// Least time given to the check that a fresh connection speaks the store protocol.
const MIN_PING: Duration = Duration::from_millis(500);
/// Most time given to that check: a dmsc store answers it at once.
const MAX_PING: Duration = Duration::from_secs(30);

/// A connection to a [`StoreServer`](super::StoreServer).
#[derive(Debug)]
pub struct StoreClient {
    stream: TcpStream,
    addr: SocketAddr,
    timeout: Duration,
    /// Why the connection can no longer be used, once it cannot.
    broken: Option<String>,
    buf: Vec<u8>,
}

impl StoreClient {
    /// Connect to the store at `addr` (`host:port`, a `SocketAddr`, ...), retrying with
    /// backoff until `timeout` passes, and authenticate with `secret` (`None`: the store must
    /// have no secret either). `timeout` also becomes the client's
    /// [`timeout`](Self::timeout) for each later request.
    ///
    /// Fails with [`Error::Timeout`] whose detail reads `could not reach the store at ADDR
    /// within Ns: <last error>`, or with [`Error::Protocol`] when something that is not a
    /// dmsc store answers or the authentication fails (another secret, or a secret on one
    /// side only).
    pub fn connect<A: ToSocketAddrs + fmt::Display>(
        addr: A,
        timeout: Duration,
        secret: Option<&Secret>,
    ) -> Result<StoreClient> {
        let start = Instant::now();
        let deadline = after(start, timeout);
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::from("the deadline passed before a connection was tried");
        loop {
            match try_connect(&addr, deadline) {
                Ok(stream) => match StoreClient::greet(stream, timeout, deadline, secret) {
                    Ok(c) => return Ok(c),
                    Err(Greeting::Retry(why)) => last = why,
                    Err(Greeting::NotAStore(e)) => return Err(not_a_store(&addr, e)),
                    Err(Greeting::Rejected(e)) => {
                        return Err(Error::protocol(format!(
                            "authentication with the store at {addr} failed: {e}"
                        )))
                    }
                },
                Err(Some(e)) => last = e,
                Err(None) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                let waited = now.duration_since(start).as_secs_f64();
                return Err(Error::Timeout {
                    op: format!("connecting to the store at {addr}"),
                    waited_s: waited,
                    missing: Vec::new(),
                    detail: format!(
                        "could not reach the store at {addr} within {}s: {last}",
                        timeout.as_secs_f64()
                    ),
                });
            }
            thread::sleep(backoff.min(deadline - now));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Authenticate a fresh connection and check that it leads to a dmsc store, with a no-op
    /// request.
    fn greet(
        mut stream: TcpStream,
        timeout: Duration,
        deadline: Instant,
        secret: Option<&Secret>,
    ) -> std::result::Result<StoreClient, Greeting> {
        let addr = stream
            .peer_addr()
            .map_err(|e| Greeting::Retry(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let now = Instant::now();
        let ping = deadline.min(after(now, MAX_PING)).max(after(now, MIN_PING));
        let side = Side::Connector;
        match auth::handshake(&mut stream, secret, Purpose::Store, side, 0, ping) {
            Ok(()) => {}
            // At capacity, shutting down, or reset: worth another try.
            Err(e @ (AuthError::Refused(_) | AuthError::Closed(_))) => {
                return Err(Greeting::Retry(format!("the store at {addr}: {e}")))
            }
            // Garbage, or silence: something else listens there.
            Err(AuthError::TimedOut) => {
                return Err(Greeting::NotAStore(Error::protocol(
                    "no answer to the authentication challenge",
                )))
            }
            Err(AuthError::Garbled(e)) => return Err(Greeting::NotAStore(e)),
            Err(AuthError::Rejected(e)) => return Err(Greeting::Rejected(e)),
        }
        let mut c = StoreClient {
            stream,
            addr,
            timeout,
            broken: None,
            buf: Vec::new(),
        };
        match c.call_until(&Request::Check { keys: Vec::new() }, ping) {
            Ok(Response::Bool(_)) => Ok(c),
            Ok(other) => Err(Greeting::NotAStore(c.unexpected("check", &other))),
            // Garbage, or silence: something else listens there.
            Err(e @ (Error::Protocol { .. } | Error::Timeout { .. })) => {
                Err(Greeting::NotAStore(e))
            }
            // Refused (e.g. too many connections) or reset: worth another try.
            Err(e) => Err(Greeting::Retry(e.to_string())),
        }
    }

    /// The store's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The time every request may take beyond its own wait (initially the connect timeout).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Set the time every request may take beyond its own wait.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Store `value` under `key`, replacing any previous value.
    pub fn set(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let req = Request::Set {
            key: key.into(),
            value: value.to_vec(),
        };
        match self.call(&req, Duration::ZERO)? {
            Response::Ok => Ok(()),
            other => Err(self.unexpected("set", &other)),
        }
    }

    /// The value of `key`, waiting up to `timeout` for it to be set. On timeout:
    /// [`Error::Timeout`] naming the key.
    pub fn get(&mut self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let start = Instant::now();
        let req = Request::Get {
            key: key.into(),
            timeout_ms: millis(timeout),
        };
        match self.call(&req, timeout)? {
            Response::Value(v) => Ok(v),
            Response::Timeout { missing } => {
                Err(self.timed_out(&format!("store get {key:?}"), start, &missing))
            }
            other => Err(self.unexpected("get", &other)),
        }
    }

    /// Add `delta` to the counter at `key` (absent counts as 0) and return the new value.
    pub fn add(&mut self, key: &str, delta: i64) -> Result<i64> {
        let req = Request::Add {
            key: key.into(),
            delta,
        };
        match self.call(&req, Duration::ZERO)? {
            Response::Counter(n) => Ok(n),
            other => Err(self.unexpected("add", &other)),
        }
    }

    /// Whether every key exists, without waiting.
    pub fn check<K: AsRef<str>>(&mut self, keys: &[K]) -> Result<bool> {
        for chunk in keys.chunks(MAX_KEYS) {
            let req = Request::Check {
                keys: chunk.iter().map(|k| k.as_ref().to_string()).collect(),
            };
            match self.call(&req, Duration::ZERO)? {
                Response::Bool(true) => {}
                Response::Bool(false) => return Ok(false),
                other => return Err(self.unexpected("check", &other)),
            }
        }
        Ok(true)
    }

    /// Wait up to `timeout` for every key to exist. On timeout: [`Error::Timeout`] naming the
    /// keys that never appeared.
    pub fn wait<K: AsRef<str>>(&mut self, keys: &[K], timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let missing = self.wait_missing(keys, after(start, timeout))?;
        if missing.is_empty() {
            return Ok(());
        }
        Err(self.timed_out("store wait", start, &missing))
    }

    /// Remove `key`; returns whether it existed.
    pub fn delete(&mut self, key: &str) -> Result<bool> {
        match self.call(&Request::Delete { key: key.into() }, Duration::ZERO)? {
            Response::Bool(b) => Ok(b),
            other => Err(self.unexpected("delete", &other)),
        }
    }

    /// All-gather through the store: publish `my_value` as `prefix/rank`, wait up to `timeout`
    /// for `prefix/0 .. prefix/nranks-1`, and return every rank's value in rank order.
    ///
    /// On timeout: [`Error::Timeout`] whose `missing` lists the ranks whose keys never
    /// appeared.
    pub fn exchange(
        &mut self,
        prefix: &str,
        rank: Rank,
        nranks: usize,
        my_value: &[u8],
        timeout: Duration,
    ) -> Result<Vec<Vec<u8>>> {
        if rank >= nranks {
            return Err(Error::invalid(format!(
                "store exchange {prefix:?}: rank {rank} >= nranks {nranks}"
            )));
        }
        let start = Instant::now();
        let deadline = after(start, timeout);
        self.set(&format!("{prefix}/{rank}"), my_value)?;
        let keys: Vec<String> = (0..nranks).map(|r| format!("{prefix}/{r}")).collect();
        let missing = self.wait_missing(&keys, deadline)?;
        if !missing.is_empty() {
            let ranks = missing
                .iter()
                .filter_map(|k| k.rsplit('/').next()?.parse::<Rank>().ok())
                .collect();
            return Err(Error::Timeout {
                op: format!("store exchange {prefix:?}"),
                waited_s: start.elapsed().as_secs_f64(),
                missing: ranks,
                detail: format!(
                    "their keys {prefix}/<rank> never appeared in the store at {}",
                    self.addr
                ),
            });
        }
        let mut values = Vec::with_capacity(nranks);
        for k in &keys {
            let left = deadline.saturating_duration_since(Instant::now());
            values.push(self.get(k, left)?);
        }
        Ok(values)
    }

    /// Wait for `keys` (in chunks of the protocol's limit) until `deadline`; returns the keys
    /// still missing then, across all chunks.
    fn wait_missing<K: AsRef<str>>(
        &mut self,
        keys: &[K],
        deadline: Instant,
    ) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for chunk in keys.chunks(MAX_KEYS) {
            // Once one chunk has timed out, the others are only checked, not waited for.
            let left = deadline.saturating_duration_since(Instant::now());
            let req = Request::Wait {
                keys: chunk.iter().map(|k| k.as_ref().to_string()).collect(),
                timeout_ms: millis(left),
            };
            match self.call(&req, left)? {
                Response::Ok => {}
                Response::Timeout { missing: m } => missing.extend(m),
                other => return Err(self.unexpected("wait", &other)),
            }
        }
        Ok(missing)
    }

    /// Send one request and read its response. `wait` is how long the server may
    /// legitimately hold the request; the client's `timeout` is allowed on top.
    fn call(&mut self, req: &Request, wait: Duration) -> Result<Response> {
        let deadline = after(Instant::now(), wait.saturating_add(self.timeout));
        self.call_until(req, deadline)
    }

    /// Send one request and read its response by `deadline`.
    fn call_until(&mut self, req: &Request, deadline: Instant) -> Result<Response> {
        if let Some(why) = &self.broken {
            return Err(Error::usage(format!(
                "the connection to the store at {} is unusable after an earlier error: {why}",
                self.addr
            )));
        }
        let frame = req.encode()?;
        let start = Instant::now();
        let res = self.round_trip(&frame, deadline);
        let resp = match res {
            Ok(r) => r,
            Err(e) => {
                let e = match e {
                    ReadError::TimedOut => Error::Timeout {
                        op: format!("store {}", req.name()),
                        waited_s: start.elapsed().as_secs_f64(),
                        missing: Vec::new(),
                        detail: format!("the store at {} did not answer", self.addr),
                    },
                    ReadError::Eof => Error::io(
                        format!(
                            "waiting for the store at {} to answer {}",
                            self.addr,
                            req.name()
                        ),
                        &io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the store closed the connection",
                        ),
                    ),
                    ReadError::Io(io) => Error::io(
                        format!("talking to the store at {} ({})", self.addr, req.name()),
                        &io,
                    ),
                    ReadError::Protocol(e) => e,
                };
                self.broken = Some(e.to_string());
                return Err(e);
            }
        };
        match resp {
            Response::Error(msg) => Err(Error::usage(format!(
                "the store at {} refused {}: {msg}",
                self.addr,
                req.name()
            ))),
            r => Ok(r),
        }
    }

    fn round_trip(
        &mut self,
        frame: &[u8],
        deadline: Instant,
    ) -> std::result::Result<Response, ReadError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::TimedOut);
        }
        self.stream
            .set_write_timeout(Some(left))
            .map_err(ReadError::Io)?;
        self.stream.write_all(frame).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ReadError::TimedOut,
            _ => ReadError::Io(e),
        })?;
        read_frame(&mut self.stream, &mut self.buf, false, Some(deadline))?;
        match Response::decode(&self.buf) {
            Ok(Some((r, _))) => Ok(r),
            Ok(None) => Err(ReadError::Protocol(Error::internal(
                "a whole store frame did not decode",
            ))),
            Err(e) => Err(ReadError::Protocol(e)),
        }
    }

    /// A reply of the wrong kind: the connection can no longer be trusted.
    fn unexpected(&mut self, op: &str, r: &Response) -> Error {
        let e = Error::protocol(format!(
            "the store at {} answered {op} with {r:?}",
            self.addr
        ));
        self.broken = Some(e.to_string());
        e
    }

    fn timed_out(&self, op: &str, start: Instant, missing: &[String]) -> Error {
        const SHOWN: usize = 16;
        let mut keys: Vec<String> = missing
            .iter()
            .take(SHOWN)
            .map(|k| format!("{k:?}"))
            .collect();
        if missing.len() > SHOWN {
            keys.push(format!("and {} more", missing.len() - SHOWN));
        }
        Error::Timeout {
            op: op.to_string(),
            waited_s: start.elapsed().as_secs_f64(),
            missing: Vec::new(),
            detail: format!(
                "key(s) {} never appeared in the store at {}",
                keys.join(", "),
                self.addr
            ),
        }
    }
}

/// `start + d`, saturating (at a year from `start`) instead of overflowing.
fn after(start: Instant, d: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    start.checked_add(d.min(YEAR)).unwrap_or(start)
}

/// How a fresh connection's check went wrong.
enum Greeting {
    /// Try again after a pause, with this reason.
    Retry(String),
    /// Something that is not a dmsc store answered.
    NotAStore(Error),
    /// A dmsc store answered, but the authentication failed.
    Rejected(Error),
}

/// A duration in whole milliseconds, rounded up so a short positive wait is not zero.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// One round of connection attempts to every address `addr` resolves to; on failure the
/// error text of the last attempt (`None` when the deadline left no time for one).
fn try_connect<A: ToSocketAddrs + fmt::Display>(
    addr: &A,
    deadline: Instant,
) -> std::result::Result<TcpStream, Option<String>> {
    let addrs = addr
        .to_socket_addrs()
        .map_err(|e| Some(format!("resolving {addr}: {e}")))?;
    let mut last = Some(format!("{addr} resolves to no address"));
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(None);
        }
        match TcpStream::connect_timeout(&a, left.min(ATTEMPT)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(format!("connecting to {a}: {e}")),
        }
    }
    Err(last)
}

/// The check on a fresh connection failed: whatever listens there is not a dmsc store.
fn not_a_store<A: fmt::Display>(addr: &A, e: Error) -> Error {
    Error::protocol(format!(
        "{addr} accepted a connection but did not answer as a dmsc store (is another \
         service, e.g. torch's TCPStore on MASTER_PORT, on that port?): {e}"
    ))
}
