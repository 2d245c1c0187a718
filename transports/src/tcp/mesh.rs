//! Establishing the connections of a communicator: every rank listens, publishes its address
//! through the rendezvous exchange, connects to each lower rank (one data and one control
//! connection) and accepts the connections of the higher ranks. The first frame on each
//! connection is a `Hello` naming the sender's rank, the connection's role and the
//! communicator's id, so that a connection from an unrelated process or another communicator
//! is refused instead of being mistaken for a peer. Before the hello, each connection proves
//! in both directions that its ends know the job's secret ([`super::greet`]).

use super::conn::{Conn, Role};
use super::greet::{greet_all, Pending};
use super::{make_transport, Backend, Mesh};
use crate::cma;
use dmsc_core::auth::Secret;
use dmsc_core::engine::Transport;
use dmsc_core::error::{Error, Result};
use dmsc_core::wire::{FrameHeader, FrameKind, HEADER_LEN};
use dmsc_core::Rank;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
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
    /// The job's secret, which every connection must prove knowledge of (`None`: connections
    /// are not authenticated, and every rank must have none).
    pub secret: Option<Secret>,
}

pub(crate) fn hello(opts: &MeshOptions, role: Role) -> [u8; HEADER_LEN] {
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

pub(super) fn connect_retry(addr: SocketAddr, deadline: Instant, peer: Rank) -> Result<TcpStream> {
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

/// Check the hello bytes `b` that arrived at rank `rank` of `nranks` in communicator
/// `comm_id`: a valid header of kind `Hello`, the same communicator, a higher rank and a known
/// role. Returns (peer rank, role); never panics on any input (a fuzz target).
pub(crate) fn parse_hello(
    b: &[u8],
    rank: Rank,
    nranks: usize,
    comm_id: u64,
) -> Result<(Rank, Role)> {
    let h = FrameHeader::decode(b)?;
    if h.kind != FrameKind::Hello {
        return Err(Error::protocol("first frame is not a hello"));
    }
    if h.seq != comm_id {
        return Err(Error::protocol(format!(
            "hello for communicator {:#x}, this is {comm_id:#x}",
            h.seq
        )));
    }
    let peer = h.aux as usize;
    if peer <= rank || peer >= nranks {
        return Err(Error::protocol(format!(
            "hello from rank {peer}, expected a rank in {}..{nranks}",
            rank.saturating_add(1)
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
    let mut outgoing = Vec::with_capacity(2 * opts.rank);
    for (peer, &addr) in addrs.iter().enumerate().take(opts.rank) {
        for role in [Role::Data, Role::Control] {
            let s = connect_retry(addr, deadline, peer)?;
            outgoing.push(Pending::outgoing(s, addr, peer, role, opts, deadline)?);
        }
    }
    let mut conns = greet_all(&listener, outgoing, opts, deadline)?;
    let mut data_of = vec![None; opts.nranks];
    let mut control_of = vec![None; opts.nranks];
    for (i, (s, peer, role)) in conns.iter_mut().enumerate() {
        tune(s)?;
        match role {
            Role::Data => data_of[*peer] = Some(i),
            Role::Control => control_of[*peer] = Some(i),
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
        cma::epoch_address(epoch),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(rank: Rank) -> MeshOptions {
        MeshOptions {
            rank,
            nranks: 4,
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            timeout: Duration::from_secs(1),
            backend: Backend::Socket,
            comm_id: 0xc0ff_ee00_1234,
            cma: false,
            secret: None,
        }
    }

    #[test]
    fn hellos_are_checked() {
        let b = hello(&opts(3), Role::Control);
        assert_eq!(
            parse_hello(&b, 1, 4, 0xc0ff_ee00_1234).unwrap(),
            (3, Role::Control)
        );
        let e = |b: &[u8], rank: Rank, id: u64| parse_hello(b, rank, 4, id).unwrap_err();
        assert!(e(&b, 1, 7).to_string().contains("communicator"));
        assert!(e(&b, 3, 0xc0ff_ee00_1234).to_string().contains("rank 3"));
        assert!(e(&b[..63], 1, 0xc0ff_ee00_1234)
            .to_string()
            .contains("truncated"));
        let mut c = b;
        c[40] = 2; // role
        assert!(e(&c, 1, 0xc0ff_ee00_1234).to_string().contains("role"));
        let mut c = b;
        c[5] = FrameKind::Control as u8;
        assert!(e(&c, 1, 0xc0ff_ee00_1234)
            .to_string()
            .contains("not a hello"));
        // A rank beyond any usize arithmetic still gets an error, not an overflow.
        assert!(parse_hello(&b, usize::MAX, usize::MAX, 0xc0ff_ee00_1234).is_err());
    }
}
