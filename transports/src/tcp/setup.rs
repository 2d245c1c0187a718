//! Establishing the connections of a communicator: every rank listens, publishes its address
//! through the rendezvous exchange, connects to each lower rank (one data and one control
//! connection) and accepts the connections of the higher ranks. The first frame on each
//! connection is a `Hello` naming the sender's rank, the connection's role and the
//! communicator's id, so that a connection from an unrelated process or another communicator
//! is refused instead of being mistaken for a peer ([`super::hello`]). Before the hello, each
//! connection proves in both directions that its ends know the job's secret
//! ([`super::greet`]).

use super::conns::Mesh;
use super::dial::connect_retry;
use super::greet::{greet_all, Pending};
use super::options::MeshOptions;
use super::paths::SprayMesh;
use super::sockopt::{limit_unsent, tune};
use super::transport::make_transport;
use crate::cma;
use crate::conn::{Conn, Role};
use dmsc_core::engine::Transport;
use dmsc_core::error::{Error, Result};
use dmsc_core::spray::wire::MAX_PATHS;
use dmsc_core::Rank;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::Instant;

/// Publishes this rank's listening address and returns every rank's, indexed by rank.
pub type Exchange<'a> = &'a mut dyn FnMut(&[u8]) -> Result<Vec<Vec<u8>>>;

/// This rank's bound listeners, made before the rendezvous exchange.
pub struct Listening {
    listeners: Vec<TcpListener>,
    addrs: String,
}

impl Listening {
    /// The listening addresses to publish (one per path, comma-separated).
    pub fn addresses(&self) -> &str {
        &self.addrs
    }
}

/// Bind the listeners of `opts.rank` (one per path) on the local addresses of its paths.
pub fn listen(opts: &MeshOptions) -> Result<Listening> {
    let npaths = opts.paths.max(1);
    if npaths > MAX_PATHS {
        return Err(Error::invalid(format!(
            "DMSC_PATHS={npaths}: at most {MAX_PATHS} paths per peer"
        )));
    }
    let spray = npaths > 1;
    let mut listeners = Vec::with_capacity(npaths);
    for p in 0..if spray { npaths } else { 1 } {
        let ip = if spray { opts.path_ip(p) } else { opts.bind_ip };
        listeners.push(
            TcpListener::bind((ip, 0))
                .map_err(|e| Error::io(format!("listening on {ip} (path {p})"), &e))?,
        );
    }
    let mine: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("reading the listening address", &e))?;
    log::info!(
        target: dmsc_core::subsys::NET,
        "rank {}: listening on {}",
        opts.rank,
        mine.join(",")
    );
    Ok(Listening {
        listeners,
        addrs: mine.join(","),
    })
}

/// Build the full mesh for `opts.rank`. `exchange` publishes this rank's listening address
/// (one per path, comma-separated) and returns every rank's (indexed by rank), e.g. through
/// the rendezvous store.
pub fn connect_mesh(opts: &MeshOptions, exchange: Exchange<'_>) -> Result<Box<dyn Transport>> {
    let l = listen(opts)?;
    let all = exchange(l.addrs.as_bytes())?;
    connect_listening(opts, l, &all)
}

/// Build the full mesh for `opts.rank` from its listeners and every rank's published
/// addresses (indexed by rank).
pub fn connect_listening(
    opts: &MeshOptions,
    l: Listening,
    all: &[Vec<u8>],
) -> Result<Box<dyn Transport>> {
    let deadline = Instant::now() + opts.timeout;
    let npaths = opts.paths.max(1);
    let spray = npaths > 1;
    let listeners = l.listeners;
    if all.len() != opts.nranks {
        return Err(Error::internal(format!(
            "address exchange returned {} entries for {} ranks",
            all.len(),
            opts.nranks
        )));
    }
    let mut addrs: Vec<Vec<SocketAddr>> = Vec::with_capacity(all.len());
    for (r, a) in all.iter().enumerate() {
        let s = std::str::from_utf8(a)
            .map_err(|_| Error::protocol(format!("rank {r} published a non-UTF-8 address")))?;
        let list = s
            .split(',')
            .map(|x| {
                x.parse::<SocketAddr>()
                    .map_err(|_| Error::protocol(format!("rank {r} published a bad address {x:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        if list.len() != listeners.len() {
            return Err(Error::invalid(format!(
                "rank {r} listens on {} path(s) and this rank (rank {}) on {}: DMSC_PATHS \
                 must be the same on every rank",
                list.len(),
                opts.rank,
                listeners.len()
            )));
        }
        addrs.push(list);
    }
    let roles: Vec<Role> = if spray {
        (0..npaths).map(|p| Role::Path(p as u8, 1)).collect()
    } else {
        vec![Role::Data, Role::Control]
    };
    let mut outgoing = Vec::with_capacity(roles.len() * opts.rank);
    for (peer, list) in addrs
        .iter()
        .enumerate()
        .take(opts.rank)
        .filter(|(p, _)| opts.serves(*p))
    {
        for &role in &roles {
            let addr = match role {
                Role::Path(p, _) => list[p as usize],
                _ => list[0],
            };
            let s = connect_retry(addr, deadline, peer)?;
            outgoing.push(Pending::outgoing(s, addr, peer, role, opts, deadline)?);
        }
    }
    let mut conns = greet_all(&listeners, outgoing, opts, deadline)?;
    let mut data_of = vec![None; opts.nranks];
    let mut control_of = vec![None; opts.nranks];
    let mut path_of = vec![vec![None; npaths]; opts.nranks];
    for (i, (s, peer, role)) in conns.iter_mut().enumerate() {
        tune(s)?;
        log::trace!(
            target: dmsc_core::subsys::NET,
            "rank {}: {role:?} connection with rank {peer} up ({} to {})",
            opts.rank,
            s.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            s.peer_addr().map_or_else(|e| e.to_string(), |a| a.to_string())
        );
        match role {
            Role::Data => data_of[*peer] = Some(i),
            Role::Control => control_of[*peer] = Some(i),
            Role::Path(p, _) => {
                limit_unsent(s);
                path_of[*peer][*p as usize] = Some(i)
            }
        }
    }
    // Which peers can pass chunks by reference (same host, memory readable both ways).
    let epoch = cma::new_epoch();
    let (peers, mut streams): (Vec<Rank>, Vec<&mut TcpStream>) = conns
        .iter_mut()
        .filter(|(_, _, role)| matches!(role, Role::Data | Role::Path(0, _)))
        .map(|(s, peer, _)| (*peer, s))
        .unzip();
    let verdicts = cma::negotiate(
        &mut streams,
        &peers,
        opts.cma,
        cma::epoch_address(epoch),
        deadline,
    )?;
    let mut memory = vec![None; opts.nranks];
    for (&peer, v) in peers.iter().zip(verdicts) {
        memory[peer] = v;
    }
    let conns = conns
        .into_iter()
        .map(|(s, peer, role)| Some(Conn::new(OwnedFd::from(s), peer, role)))
        .collect();
    let spray = if spray {
        Some(SprayMesh::new(opts, addrs, path_of, listeners)?)
    } else {
        None
    };
    let inner = make_transport(
        Mesh {
            conns,
            data_of,
            control_of,
            spray,
            nonblocking: false,
        },
        opts.backend,
    )?;
    log::info!(
        target: dmsc_core::subsys::NET,
        "rank {}: connected to {} peer(s) over {}",
        opts.rank,
        peers.len(),
        inner.name()
    );
    if memory.iter().any(Option::is_some) {
        Ok(Box::new(cma::CmaTransport::new(
            inner,
            memory,
            epoch,
            cma::REF_MIN,
        )))
    } else {
        Ok(inner)
    }
}

// The authentication of every connection at setup (`super::greet`), seen from outside: whole
// meshes built with strangers at their doors, or with a rank that has another secret.
#[cfg(test)]
mod tests {
    use super::super::backend::Backend;
    use super::*;
    use crate::auth::{self, ACCEPT_DEADLINE};
    use dmsc_core::auth::{Purpose, Secret, Side};
    use dmsc_core::wire::HEADER_LEN;
    use std::io::{self, Read, Write};
    use std::net::IpAddr;
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread;
    use std::time::Duration;

    /// An in-process address exchange: every rank publishes, all wait for all, then each
    /// rank passes `gate` (opened by the test) before it connects.
    #[derive(Default)]
    struct Board {
        addrs: Mutex<(Vec<Option<Vec<u8>>>, bool)>,
        cv: Condvar,
    }

    impl Board {
        fn new(n: usize) -> Arc<Board> {
            let b = Board::default();
            b.addrs.lock().unwrap().0 = vec![None; n];
            Arc::new(b)
        }

        fn publish(&self, rank: Rank, mine: &[u8], gated: bool) -> Vec<Vec<u8>> {
            let mut g = self.addrs.lock().unwrap();
            g.0[rank] = Some(mine.to_vec());
            self.cv.notify_all();
            while g.0.iter().any(Option::is_none) || (gated && !g.1) {
                g = self.cv.wait(g).unwrap();
            }
            g.0.iter().map(|a| a.clone().unwrap()).collect()
        }

        /// Every rank's address, once all are published.
        fn all(&self) -> Vec<SocketAddr> {
            let mut g = self.addrs.lock().unwrap();
            while g.0.iter().any(Option::is_none) {
                g = self.cv.wait(g).unwrap();
            }
            g.0.iter()
                .map(|a| {
                    std::str::from_utf8(a.as_ref().unwrap())
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect()
        }

        fn open(&self) {
            self.addrs.lock().unwrap().1 = true;
            self.cv.notify_all();
        }
    }

    fn opts(rank: Rank, nranks: usize, secret: Option<&str>, timeout: Duration) -> MeshOptions {
        MeshOptions {
            rank,
            nranks,
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            timeout,
            backend: Backend::Socket,
            comm_id: 0xfeed_0001,
            cma: false,
            secret: secret.map(|s| Secret::new(s.as_bytes()).unwrap()),
            paths: 1,
            path_ips: Vec::new(),
            spray: Default::default(),
            serve: None,
        }
    }

    /// Start `n` ranks; rank r uses `secrets[r]`. Ranks above 0 wait for the board's gate
    /// before connecting. Returns each rank's result as text (`Ok` or the error).
    fn start(
        board: &Arc<Board>,
        secrets: Vec<Option<&'static str>>,
        timeout: Duration,
    ) -> Vec<thread::JoinHandle<std::result::Result<(), String>>> {
        let n = secrets.len();
        secrets
            .into_iter()
            .enumerate()
            .map(|(r, secret)| {
                let board = board.clone();
                thread::spawn(move || {
                    let o = opts(r, n, secret, timeout);
                    connect_mesh(&o, &mut |mine: &[u8]| Ok(board.publish(r, mine, r > 0)))
                        .map(drop)
                        .map_err(|e| e.to_string())
                })
            })
            .collect()
    }

    /// Whether the peer closes `s` within 10 s (reading and skipping what it sends first).
    fn closed(s: &mut TcpStream) -> bool {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 256];
        loop {
            match s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => return e.kind() == io::ErrorKind::ConnectionReset,
            }
        }
    }

    fn handshake_as_stranger(addr: SocketAddr, secret: Option<&str>) -> TcpStream {
        let mut s = TcpStream::connect(addr).unwrap();
        let secret = secret.map(|x| Secret::new(x.as_bytes()).unwrap());
        let deadline = Instant::now() + Duration::from_secs(5);
        let side = Side::Connector;
        let r = auth::handshake(
            &mut s,
            secret.as_ref(),
            Purpose::Mesh,
            side,
            0xfeed_0001,
            deadline,
        );
        assert!(r.is_err(), "a stranger passed the authentication");
        s
    }

    #[test]
    fn strangers_are_refused_and_the_mesh_still_comes_up() {
        let board = Board::new(3);
        let key = "mesh test secret, 32 bytes long!";
        let t0 = Instant::now();
        let ranks = start(&board, vec![Some(key); 3], Duration::from_secs(30));
        let addrs = board.all();
        // Strangers at the doors of ranks 0 and 1, before the real peers connect. Each
        // active one runs on its own thread until it is thrown out.
        let mut silent = Vec::new();
        let mut active = vec![Vec::new(), Vec::new()];
        for (r, &addr) in addrs[..2].iter().enumerate() {
            silent.push(TcpStream::connect(addr).unwrap());
            let mut h = [0u8; HEADER_LEN];
            // A data frame header announcing a 4 GiB payload, without authenticating.
            h[..6].copy_from_slice(b"DMSC\x01\x01");
            h[44..48].copy_from_slice(&u32::MAX.to_le_bytes());
            for junk in [vec![0x5a; 4096], h.to_vec()] {
                active[r].push(thread::spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.write_all(&junk).unwrap();
                    closed(&mut s)
                }));
            }
            for secret in [Some("a wrong guess at the secret"), None] {
                active[r].push(thread::spawn(move || {
                    closed(&mut handshake_as_stranger(addr, secret))
                }));
            }
        }
        // Rank 0 is already accepting; rank 1 starts once its peers may connect.
        let [zero, one] = <[_; 2]>::try_from(active).ok().unwrap();
        for t in zero {
            assert!(
                t.join().unwrap(),
                "an active stranger was not closed by rank 0"
            );
        }
        board.open();
        for t in one {
            assert!(
                t.join().unwrap(),
                "an active stranger was not closed by rank 1"
            );
        }
        for (r, t) in ranks.into_iter().enumerate() {
            assert_eq!(t.join().unwrap(), Ok(()), "rank {r}");
        }
        let took = t0.elapsed();
        // The silent strangers were still connected: they delayed nobody.
        assert!(took < ACCEPT_DEADLINE, "setup took {took:?}");
        eprintln!("mesh with strangers set up in {took:?}");
        drop(silent);
    }

    #[test]
    fn a_rank_with_another_secret_is_named() {
        for (odd, want) in [
            (
                Some("another secret, also 32 bytes!!"),
                "did not prove knowledge",
            ),
            (None, "secret mismatch"),
        ] {
            let board = Board::new(3);
            board.open();
            let key = Some("mesh test secret, 32 bytes long!");
            let ranks = start(&board, vec![key, key, odd], Duration::from_secs(2));
            let results: Vec<_> = ranks.into_iter().map(|t| t.join().unwrap()).collect();
            let e = results[2].as_ref().unwrap_err();
            assert!(
                e.contains("failed authentication") && e.contains(want),
                "{e}"
            );
            assert!(e.contains("rank 0") || e.contains("rank 1"), "{e}");
            // Rank 0 and 1 wait for rank 2 in vain, and say so.
            for r in &results[..2] {
                let e = r.as_ref().unwrap_err();
                assert!(e.contains("timeout") && e.contains("rank(s) 2"), "{e}");
            }
        }
    }
}
