//! The TCP rendezvous store: a small key-value server with blocking reads, and its client.
//!
//! Modelled on torch.distributed's `TCPStore` (one server, usually inside rank 0; `set`,
//! blocking `get`, atomic `add`, `wait`; clients retry their connection until the server is
//! up) and used the way NCCL's bootstrap uses its root: every rank publishes its address under
//! `prefix/rank` and reads everyone else's ([`StoreClient::exchange`]). The wire protocol
//! and its bounds are in [`dmsc_core::bootstrap::protocol`].
//!
//! * [`serve_or_connect`]: the `env://` path. Rank 0 serves the store at the launcher's
//!   `host:port` and connects to it like everyone else.
//! * [`new_unique_id`]: the NCCL path. Start a store on an ephemeral port and get a
//!   [`UniqueId`] naming it, to hand to the other ranks out of band.
//!
//! Every connection starts with the authentication exchange of [`dmsc_core::auth`]: client
//! and server prove to each other that they know the job's secret (`DMSC_SECRET`, or the
//! one a unique id carries) before a single request is read.

mod client;
mod gate;
mod server;

pub use client::StoreClient;
pub use server::{ServerConfig, StoreServer};

use dmsc_core::auth::Secret;
use dmsc_core::bootstrap::env::join_host_port;
use dmsc_core::bootstrap::protocol::{frame_len, HEADER_LEN};
use dmsc_core::bootstrap::UniqueId;
use dmsc_core::error::{Error, Result};
use dmsc_core::Rank;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Rendezvous through a store at `host:port`: rank 0 starts the store there and connects to
/// it; every other rank connects, retrying until `timeout` (rank 0 may start later). Server
/// and clients authenticate with `secret` (`None`: unauthenticated, on every rank).
///
/// Rank 0 binds the given address when `host` is a loopback address or `localhost` (a
/// single-host job stays off the network), and otherwise all interfaces (`0.0.0.0`, or `::`
/// for an IPv6 literal), since `host` may be a name that resolves differently on rank 0.
/// Port 0 gives rank 0 an ephemeral port, which only a one-rank job can use.
pub fn serve_or_connect(
    rank: Rank,
    host: &str,
    port: u16,
    timeout: Duration,
    secret: Option<&Secret>,
) -> Result<(Option<StoreServer>, StoreClient)> {
    if rank != 0 {
        let client = StoreClient::connect(join_host_port(host, port), timeout, secret)?;
        return Ok((None, client));
    }
    let bind_ip = match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => ip,
        Ok(IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        Ok(IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Err(_) if host.eq_ignore_ascii_case("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Err(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let server = StoreServer::bind(SocketAddr::new(bind_ip, port), secret.cloned());
    let server = server.map_err(|e| match e {
        Error::System {
            errno: Some(libc::EADDRINUSE),
            context,
            detail,
        } => Error::System {
            context,
            errno: Some(libc::EADDRINUSE),
            detail: format!(
                "{detail}; is another job (or torch's TCPStore on MASTER_PORT) using port \
                 {port}? Set DMSC_STORE_ADDR=host:port to use another"
            ),
        },
        e => e,
    })?;
    let client = StoreClient::connect(reachable(server.local_addr()), timeout, secret)?;
    Ok((Some(server), client))
}

/// An address this host can connect to for a server bound to `bound` (loopback for an
/// unspecified bind address).
fn reachable(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

/// Start a store on an ephemeral port of `bind_ip` and return a [`UniqueId`] naming it, with
/// a fresh random nonce and a fresh random secret that the store (and later the job's data
/// connections) require; NCCL's `ncclGetUniqueId`. Keep the server alive until every rank
/// has connected (in practice: for the communicator's life).
///
/// With an unspecified `bind_ip` (`0.0.0.0`, `::`), the id carries the address of the default
/// interface ([`crate::ifaddr::select`] with no spec), since other hosts cannot connect to
/// `0.0.0.0`.
pub fn new_unique_id(bind_ip: IpAddr) -> Result<(UniqueId, StoreServer)> {
    let secret = crate::auth::random_bytes::<32>()?;
    let server = StoreServer::bind(SocketAddr::new(bind_ip, 0), Some(Secret::new(&secret)?))?;
    let ip = if bind_ip.is_unspecified() {
        crate::ifaddr::select(None, false)?.addr
    } else {
        bind_ip
    };
    let id = UniqueId::new(
        SocketAddr::new(ip, server.local_addr().port()),
        random_nonce()?,
        secret,
    )?;
    Ok((id, server))
}

/// Eight random bytes from `/dev/urandom`.
pub fn random_nonce() -> Result<u64> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io("reading /dev/urandom for a job nonce", &e))?;
    Ok(u64::from_le_bytes(b))
}

/// Why a frame could not be read.
#[derive(Debug)]
enum ReadError {
    /// The peer closed the connection.
    Eof,
    /// The deadline passed.
    TimedOut,
    /// The socket failed.
    Io(io::Error),
    /// The bytes are not a valid frame header.
    Protocol(Error),
}

/// Most bytes read per `read` call while a body arrives, so memory follows the bytes that
/// actually came rather than the length a peer announced.
const READ_CHUNK: usize = 64 << 10;

/// Read one whole frame into `buf` (cleared first). The header is validated byte by byte as
/// it arrives (`request` selects which kinds are acceptable), so garbage is rejected early.
/// With a `deadline`, each read is bounded by the time left.
fn read_frame(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: bool,
    deadline: Option<Instant>,
) -> std::result::Result<(), ReadError> {
    buf.clear();
    let mut total = HEADER_LEN;
    while buf.len() < total {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadError::TimedOut);
            }
            stream.set_read_timeout(Some(left)).map_err(ReadError::Io)?;
        }
        let have = buf.len();
        let want = if have < HEADER_LEN {
            HEADER_LEN - have
        } else {
            (total - have).min(READ_CHUNK)
        };
        buf.resize(have + want, 0);
        let n = match stream.read(&mut buf[have..]) {
            Ok(0) => return Err(ReadError::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadError::TimedOut)
            }
            Err(e) => return Err(ReadError::Io(e)),
        };
        buf.truncate(have + n);
        if total == HEADER_LEN && n > 0 {
            if let Some(len) = frame_len(buf, request).map_err(ReadError::Protocol)? {
                total = len;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmsc_core::bootstrap::protocol::{Request, Response};
    use std::io::Write;
    use std::net::TcpListener;
    use std::thread;

    const LONG: Duration = Duration::from_secs(20);

    fn server() -> StoreServer {
        StoreServer::bind("127.0.0.1:0".parse().unwrap(), None).unwrap()
    }

    fn client(s: &StoreServer) -> StoreClient {
        StoreClient::connect(s.local_addr(), LONG, None).unwrap()
    }

    /// A raw connection that has passed the authentication exchange.
    fn authed(addr: SocketAddr, secret: Option<&Secret>) -> TcpStream {
        let mut raw = TcpStream::connect(addr).unwrap();
        let deadline = Instant::now() + LONG;
        let side = dmsc_core::auth::Side::Connector;
        let store = dmsc_core::auth::Purpose::Store;
        crate::auth::handshake(&mut raw, secret, store, side, 0, deadline).unwrap();
        raw
    }

    /// Whether the server closes `raw` (rather than answering or leaving it open) within 10 s.
    fn closed_by_server(raw: &mut TcpStream) -> bool {
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 256];
        loop {
            match raw.read(&mut b) {
                Ok(0) => return true,
                // The server's own challenge comes first: skip it.
                Ok(_) => continue,
                Err(e) => return e.kind() == io::ErrorKind::ConnectionReset,
            }
        }
    }

    /// Poll `f` for up to 10 s.
    fn eventually(what: &str, f: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < end, "{what} never happened");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn set_get_add_wait_across_threads() {
        let s = server();
        let addr = s.local_addr();
        let waiter = thread::spawn(move || {
            let mut c = StoreClient::connect(addr, LONG, None).unwrap();
            c.wait(&["a", "b"], LONG).unwrap();
            c.get("b", LONG).unwrap()
        });
        let adders: Vec<_> = (0..4)
            .map(|_| {
                thread::spawn(move || {
                    let mut c = StoreClient::connect(addr, LONG, None).unwrap();
                    (0..25).map(|_| c.add("n", 1).unwrap()).max().unwrap()
                })
            })
            .collect();
        let mut c = client(&s);
        c.set("a", b"1").unwrap();
        assert!(!c.check(&["a", "b"]).unwrap());
        c.set("b", b"two").unwrap();
        assert!(c.check(&["a", "b"]).unwrap());
        assert_eq!(waiter.join().unwrap(), b"two");
        let top = adders.into_iter().map(|t| t.join().unwrap()).max();
        assert_eq!(top, Some(100));
        assert_eq!(c.get("n", LONG).unwrap(), b"100");
        assert_eq!(c.add("n", -101).unwrap(), -1);
        assert!(c.delete("a").unwrap());
        assert!(!c.delete("a").unwrap());
        assert!(c.check::<&str>(&[]).unwrap());
    }

    #[test]
    fn blocking_get_times_out_naming_the_key() {
        let s = server();
        let mut c = client(&s);
        let t = Instant::now();
        match c.get("never/set", Duration::from_millis(300)) {
            Err(Error::Timeout {
                op,
                waited_s,
                detail,
                ..
            }) => {
                assert!(op.contains("get"), "{op}");
                assert!(detail.contains("\"never/set\""), "{detail}");
                assert!(waited_s >= 0.29, "{waited_s}");
            }
            other => panic!("{other:?}"),
        }
        assert!(t.elapsed() >= Duration::from_millis(300));
        // A timeout is an answer, not a broken connection.
        c.set("k", b"v").unwrap();
        let e = c.wait(&["k", "x", "y"], Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("\"x\", \"y\" never appeared"), "{e}");
    }

    #[test]
    fn exchange_gathers_and_names_missing_ranks() {
        let s = server();
        let addr = s.local_addr();
        let run = |ranks: Vec<usize>, timeout: Duration| {
            let threads: Vec<_> = ranks
                .into_iter()
                .map(|r| (r, StoreClient::connect(addr, LONG, None).unwrap()))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|(r, mut c)| {
                    thread::spawn(move || c.exchange("ex", r, 4, &[r as u8; 3], timeout))
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        };
        let ok = run(vec![3, 2, 1, 0], LONG);
        for values in ok {
            let want: Vec<Vec<u8>> = (0..4u8).map(|r| vec![r; 3]).collect();
            assert_eq!(values.unwrap(), want);
        }
        let mut c = client(&s);
        for r in 0..4 {
            c.delete(&format!("ex/{r}")).unwrap();
        }
        for res in run(vec![0, 1, 3], Duration::from_secs(1)) {
            match res {
                Err(Error::Timeout { missing, .. }) => assert_eq!(missing, vec![2]),
                other => panic!("{other:?}"),
            }
        }
        assert!(c.exchange("ex", 4, 4, b"", LONG).is_err());
    }

    #[test]
    fn garbage_does_not_disturb_other_clients() {
        let s = server();
        let addr = s.local_addr();
        let blocked = thread::spawn(move || {
            let mut c = StoreClient::connect(addr, LONG, None).unwrap();
            c.get("later", LONG)
        });
        let mut valid = Request::Set {
            key: "x".into(),
            value: vec![1],
        }
        .encode()
        .unwrap();
        valid[6..10].copy_from_slice(&[0xff; 4]); // a body longer than the protocol allows
        let huge_len = valid[..10].to_vec();
        let noise: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        for junk in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            &huge_len[..],
            &noise[..],
            &b"DMSS\x01\x01\x03\x00\x00\x00\xff\xff\xff"[..],
        ] {
            // Before authentication, junk just gets the connection closed.
            let mut raw = TcpStream::connect(addr).unwrap();
            raw.write_all(junk).unwrap();
            assert!(closed_by_server(&mut raw));
            // After it, a malformed request gets an error reply, then the close.
            let mut raw = authed(addr, None);
            raw.set_read_timeout(Some(LONG)).unwrap();
            raw.write_all(junk).unwrap();
            let mut buf = Vec::new();
            match read_frame(&mut raw, &mut buf, false, None) {
                Ok(()) => match Response::decode(&buf).unwrap().unwrap().0 {
                    Response::Error(m) => assert!(m.contains("protocol error"), "{m}"),
                    other => panic!("{other:?}"),
                },
                Err(e) => panic!("{e:?}"),
            }
        }
        // A client that sends half a frame and leaves.
        let mut raw = authed(addr, None);
        raw.write_all(&valid[..5]).unwrap();
        drop(raw);
        let mut c = client(&s);
        c.set("later", b"fine").unwrap();
        assert_eq!(blocked.join().unwrap().unwrap(), b"fine");
        eventually("junk connections closed", || s.connections() == 1);
    }

    #[test]
    fn refusals_keep_the_connection_usable() {
        let config = ServerConfig {
            max_connections: 1,
            max_pending: 256,
            max_store_bytes: 100,
        };
        let s = StoreServer::bind_with("127.0.0.1:0".parse().unwrap(), config, None).unwrap();
        let mut c = client(&s);
        c.set("word", b"abc").unwrap();
        let e = c.add("word", 1).unwrap_err().to_string();
        assert!(e.contains("not a counter"), "{e}");
        let e = c.set("big", &[0; 200]).unwrap_err().to_string();
        assert!(e.contains("store is full"), "{e}");
        let e = c.set(&"k".repeat(2000), b"").unwrap_err().to_string();
        assert!(e.contains("longer than the limit"), "{e}");
        assert_eq!(c.get("word", LONG).unwrap(), b"abc");
        let e = StoreClient::connect(s.local_addr(), Duration::from_millis(300), None).unwrap_err();
        assert!(e.to_string().contains("too many connections"), "{e}");
    }

    #[test]
    fn connect_retries_until_the_store_starts() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let late = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            serve_or_connect(0, "127.0.0.1", port, LONG, None).unwrap()
        });
        let (none, mut c1) = serve_or_connect(1, "127.0.0.1", port, LONG, None).unwrap();
        assert!(none.is_none());
        let (server, mut c0) = late.join().unwrap();
        assert!(server.is_some());
        let t0 = thread::spawn(move || c0.exchange("p", 0, 2, b"zero", LONG));
        assert_eq!(c1.exchange("p", 1, 2, b"one", LONG).unwrap()[0], b"zero");
        assert_eq!(t0.join().unwrap().unwrap()[1], b"one");
        drop(server);
        let e = StoreClient::connect(
            format!("127.0.0.1:{port}"),
            Duration::from_millis(200),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!(
                "could not reach the store at 127.0.0.1:{port} within 0.2s"
            )),
            "{e}"
        );
    }

    #[test]
    fn other_services_are_recognised() {
        for garbage in [true, false] {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let t = thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                if garbage {
                    let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
                }
                thread::sleep(Duration::from_millis(800));
            });
            let e = StoreClient::connect(addr, Duration::from_millis(200), None).unwrap_err();
            assert!(
                e.to_string().contains("did not answer as a dmsc store"),
                "{e}"
            );
            t.join().unwrap();
        }
    }

    #[test]
    fn shutdown_wakes_waiters_and_hung_up_waits_end() {
        let s = server();
        let addr = s.local_addr();
        // A client that asks for a long wait, sends one more request and hangs up: its
        // server thread must notice, though an unread request precedes the FIN.
        let mut raw = authed(addr, None);
        let wait = Request::Wait {
            keys: vec!["never".into()],
            timeout_ms: 3_600_000,
        };
        raw.write_all(&wait.encode().unwrap()).unwrap();
        let check = Request::Check { keys: vec![] };
        raw.write_all(&check.encode().unwrap()).unwrap();
        eventually("connection counted", || s.connections() == 1);
        drop(raw);
        eventually("hung-up wait ended", || s.connections() == 0);

        let blocked = thread::spawn(move || {
            let mut c = StoreClient::connect(addr, LONG, None).unwrap();
            c.get("never", Duration::from_secs(3600))
        });
        eventually("client connected", || s.connections() == 1);
        thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        s.shutdown();
        assert!(blocked.join().unwrap().is_err());
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn unique_id_names_a_live_store() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (id, server) = new_unique_id(ip).unwrap();
        let (id2, _server2) = new_unique_id(ip).unwrap();
        assert_ne!(id.nonce(), id2.nonce());
        assert_eq!(id.store_addr(), server.local_addr());
        let back = UniqueId::from_bytes(&id.to_bytes()).unwrap();
        assert_ne!(id.secret(), id2.secret());
        let secret = Secret::new(back.secret()).unwrap();
        let mut c = StoreClient::connect(back.store_addr(), LONG, Some(&secret)).unwrap();
        c.set("k", b"v").unwrap();
        // Without the id's secret, the store is closed to us.
        let e = StoreClient::connect(back.store_addr(), LONG, None).unwrap_err();
        assert!(e.to_string().contains("secret mismatch"), "{e}");
    }

    #[test]
    fn only_clients_with_the_secret_get_in() {
        let key = Secret::new(b"the job's secret").unwrap();
        let s = StoreServer::bind("127.0.0.1:0".parse().unwrap(), Some(key.clone())).unwrap();
        let addr = s.local_addr();
        let mut c = StoreClient::connect(addr, LONG, Some(&key)).unwrap();
        c.set("k", b"v").unwrap();
        let wrong = Secret::new(b"a guess").unwrap();
        for (secret, want) in [
            (Some(&wrong), "did not prove knowledge of the job's secret"),
            (None, "secret mismatch: the peer has a job secret"),
        ] {
            let t = Instant::now();
            let e = StoreClient::connect(addr, LONG, secret)
                .unwrap_err()
                .to_string();
            assert!(e.contains("authentication with the store at"), "{e}");
            assert!(e.contains(want), "{e}");
            // A failed proof is final: no retrying until the deadline.
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        }
        // A raw stranger with the wrong secret is closed before it can send a request.
        let mut raw = TcpStream::connect(addr).unwrap();
        let side = dmsc_core::auth::Side::Connector;
        let store = dmsc_core::auth::Purpose::Store;
        let deadline = Instant::now() + LONG;
        assert!(crate::auth::handshake(&mut raw, Some(&wrong), store, side, 0, deadline).is_err());
        let _ = raw.write_all(&Request::Check { keys: vec![] }.encode().unwrap());
        assert!(closed_by_server(&mut raw));
        // And a client that skips authentication and sends a request is closed too.
        let mut raw = TcpStream::connect(addr).unwrap();
        raw.write_all(&Request::Check { keys: vec![] }.encode().unwrap())
            .unwrap();
        assert!(closed_by_server(&mut raw));
        assert_eq!(c.get("k", LONG).unwrap(), b"v");
        eventually("strangers closed", || s.connections() == 1);
    }

    #[test]
    fn silent_strangers_cannot_hold_the_store() {
        let config = ServerConfig {
            max_connections: 64,
            max_pending: 4,
            max_store_bytes: 1 << 20,
        };
        let s = StoreServer::bind_with("127.0.0.1:0".parse().unwrap(), config, None).unwrap();
        let addr = s.local_addr();
        // Four silent strangers fill the authentication slots...
        let silent: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        eventually("strangers counted", || s.connections() == 4);
        // ...so a fifth connection is told so and closed at once...
        let mut raw = TcpStream::connect(addr).unwrap();
        raw.set_read_timeout(Some(LONG)).unwrap();
        let mut b = [0u8; dmsc_core::auth::MSG_LEN];
        raw.read_exact(&mut b).unwrap();
        assert_eq!(
            dmsc_core::auth::decode(&b).unwrap(),
            dmsc_core::auth::Message::Refused(dmsc_core::auth::Refusal::TooManyPending(4))
        );
        // ...while a real client keeps retrying and gets in once the strangers time out.
        let t = Instant::now();
        let mut c = StoreClient::connect(addr, LONG, None).unwrap();
        let waited = t.elapsed();
        assert!(
            waited < crate::auth::ACCEPT_DEADLINE + Duration::from_secs(3),
            "{waited:?}"
        );
        c.set("k", b"v").unwrap();
        drop(silent);
    }
}
