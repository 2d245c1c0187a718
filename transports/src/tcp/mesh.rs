//! Establishing the connections of a communicator: every rank listens, publishes its address
//! through the rendezvous exchange, connects to each lower rank (one data and one control
//! connection) and accepts the connections of the higher ranks. The first frame on each
//! connection is a `Hello` naming the sender's rank, the connection's role and the
//! communicator's id, so that a connection from an unrelated process or another communicator
//! is refused instead of being mistaken for a peer.

use super::conn::{Conn, Role};
use super::{make_transport, Backend, Mesh};
use crate::cma;
use dmsc_core::engine::Transport;
use dmsc_core::error::{Error, Result};
use dmsc_core::wire::{FrameHeader, FrameKind, HEADER_LEN};
use dmsc_core::Rank;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// How to build the mesh.
#[derive(Clone, Debug)]
pub struct MeshOptions {
    /// This rank.
    pub rank: Rank,
    /// Number of ranks.
    pub nranks: usize,
    /// Local address to listen on (port chosen by the kernel).
    pub bind_ip: IpAddr,
    /// Deadline for the whole setup.
    pub timeout: Duration,
    /// I/O backend.
    pub backend: Backend,
    /// The communicator's id (every rank must pass the same).
    pub comm_id: u64,
    /// Offer single-copy transfer to peers on this host (`DMSC_CMA`, see `crate::cma`).
    pub cma: bool,
}

fn hello(opts: &MeshOptions, role: Role) -> [u8; HEADER_LEN] {
    let mut h = FrameHeader::plain(FrameKind::Hello, opts.rank as u32, 0);
    h.seq = opts.comm_id;
    h.chunk = match role {
        Role::Data => 0,
        Role::Control => 1,
    };
    let mut b = [0u8; HEADER_LEN];
    h.encode(&mut b);
    b
}

fn connect_retry(addr: SocketAddr, deadline: Instant, peer: Rank) -> Result<TcpStream> {
    let mut last = None;
    let mut backoff = Duration::from_millis(5);
    while Instant::now() < deadline {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        match TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(5))) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
    Err(Error::Timeout {
        op: format!("connecting to rank {peer} at {addr}"),
        waited_s: 0.0,
        missing: vec![peer],
        detail: last.map(|e| e.to_string()).unwrap_or_default(),
    })
}

fn tune(s: &TcpStream) -> Result<()> {
    s.set_nodelay(true)
        .map_err(|e| Error::io("setting TCP_NODELAY", &e))?;
    if let Some(bytes) = std::env::var("DMSC_SOCKET_BUF")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        use std::os::fd::AsRawFd;
        for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
            // SAFETY: setsockopt with a pointer to a local int of the size passed.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    &bytes as *const i32 as *const libc::c_void,
                    4,
                )
            };
        }
    }
    Ok(())
}

/// Read and check a peer's hello; returns (peer rank, role).
fn read_hello(s: &mut TcpStream, opts: &MeshOptions, deadline: Instant) -> Result<(Rank, Role)> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10));
    s.set_read_timeout(Some(left.min(Duration::from_secs(5))))
        .map_err(|e| Error::io("setting a read timeout", &e))?;
    let mut b = [0u8; HEADER_LEN];
    s.read_exact(&mut b)
        .map_err(|e| Error::io("reading a peer's hello", &e))?;
    s.set_read_timeout(None)
        .map_err(|e| Error::io("clearing a read timeout", &e))?;
    let h = FrameHeader::decode(&b)?;
    if h.kind != FrameKind::Hello {
        return Err(Error::protocol("first frame is not a hello"));
    }
    if h.seq != opts.comm_id {
        return Err(Error::protocol(format!(
            "hello for communicator {:#x}, this is {:#x}",
            h.seq, opts.comm_id
        )));
    }
    let peer = h.aux as usize;
    if peer <= opts.rank || peer >= opts.nranks {
        return Err(Error::protocol(format!(
            "hello from rank {peer}, expected a rank in {}..{}",
            opts.rank + 1,
            opts.nranks
        )));
    }
    let role = match h.chunk {
        0 => Role::Data,
        1 => Role::Control,
        r => return Err(Error::protocol(format!("hello with unknown role {r}"))),
    };
    Ok((peer, role))
}

/// Publishes this rank's listening address and returns every rank's, indexed by rank.
pub type Exchange<'a> = &'a mut dyn FnMut(&[u8]) -> Result<Vec<Vec<u8>>>;

/// Build the full mesh for `opts.rank`. `exchange` publishes this rank's listening address
/// and returns every rank's (indexed by rank), e.g. through the rendezvous store.
pub fn connect_mesh(opts: &MeshOptions, exchange: Exchange<'_>) -> Result<Box<dyn Transport>> {
    let deadline = Instant::now() + opts.timeout;
    let listener = TcpListener::bind((opts.bind_ip, 0))
        .map_err(|e| Error::io(format!("listening on {}", opts.bind_ip), &e))?;
    let me = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", &e))?;
    let all = exchange(me.to_string().as_bytes())?;
    if all.len() != opts.nranks {
        return Err(Error::internal(format!(
            "address exchange returned {} entries for {} ranks",
            all.len(),
            opts.nranks
        )));
    }
    let mut addrs = Vec::with_capacity(all.len());
    for (r, a) in all.iter().enumerate() {
        let s = std::str::from_utf8(a)
            .map_err(|_| Error::protocol(format!("rank {r} published a non-UTF-8 address")))?;
        let sa: SocketAddr = s
            .parse()
            .map_err(|_| Error::protocol(format!("rank {r} published a bad address {s:?}")))?;
        addrs.push(sa);
    }
    let mut data_of = vec![None; opts.nranks];
    let mut control_of = vec![None; opts.nranks];
    let mut conns: Vec<(TcpStream, Rank, Role)> = Vec::new();
    for (peer, &addr) in addrs.iter().enumerate().take(opts.rank) {
        for role in [Role::Data, Role::Control] {
            let mut s = connect_retry(addr, deadline, peer)?;
            tune(&s)?;
            s.write_all(&hello(opts, role))
                .map_err(|e| Error::io(format!("sending hello to rank {peer}"), &e))?;
            let slot = if role == Role::Data {
                &mut data_of
            } else {
                &mut control_of
            };
            slot[peer] = Some(conns.len());
            conns.push((s, peer, role));
        }
    }
    let mut expected = 2 * (opts.nranks - 1 - opts.rank);
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("setting the listener nonblocking", &e))?;
    while expected > 0 {
        if Instant::now() >= deadline {
            let missing: Vec<Rank> = (opts.rank + 1..opts.nranks)
                .filter(|&p| data_of[p].is_none() || control_of[p].is_none())
                .collect();
            return Err(Error::Timeout {
                op: format!("rank {} waiting for connections", opts.rank),
                waited_s: opts.timeout.as_secs_f64(),
                missing,
                detail: "those ranks never connected".into(),
            });
        }
        match listener.accept() {
            Ok((mut s, from)) => {
                s.set_nonblocking(false)
                    .map_err(|e| Error::io("setting a socket blocking", &e))?;
                match read_hello(&mut s, opts, deadline) {
                    Ok((peer, role)) => {
                        let slot = if role == Role::Data {
                            &mut data_of
                        } else {
                            &mut control_of
                        };
                        if slot[peer].is_some() {
                            eprintln!("dmsc: rank {}: refusing a duplicate {role:?} connection claiming rank {peer} from {from}", opts.rank);
                            continue;
                        }
                        tune(&s)?;
                        slot[peer] = Some(conns.len());
                        conns.push((s, peer, role));
                        expected -= 1;
                    }
                    Err(e) => {
                        eprintln!(
                            "dmsc: rank {}: refused a connection from {from}: {e}",
                            opts.rank
                        );
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(Error::io("accepting a connection", &e)),
        }
    }
    // Which peers can pass chunks by reference (same host, memory readable both ways).
    let epoch = cma::new_epoch();
    let (peers, mut streams): (Vec<Rank>, Vec<&mut TcpStream>) = conns
        .iter_mut()
        .filter(|(_, _, role)| *role == Role::Data)
        .map(|(s, peer, _)| (*peer, s))
        .unzip();
    let verdicts = cma::negotiate(
        &mut streams,
        &peers,
        opts.cma,
        epoch as *const AtomicU64 as u64,
        deadline,
    )?;
    let mut memory = vec![None; opts.nranks];
    for (&peer, v) in peers.iter().zip(verdicts) {
        memory[peer] = v;
    }
    let conns = conns
        .into_iter()
        .map(|(s, peer, role)| Conn::new(OwnedFd::from(s), peer, role))
        .collect();
    let inner = make_transport(
        Mesh {
            conns,
            data_of,
            control_of,
        },
        opts.backend,
    )?;
    if memory.iter().any(Option::is_some) {
        Ok(Box::new(cma::CmaTransport::new(inner, memory, epoch)))
    } else {
        Ok(inner)
    }
}
