//! Establishing the connections of a communicator: every rank listens, publishes its address
//! through the rendezvous exchange, connects to each lower rank (one data and one control
//! connection) and accepts the connections of the higher ranks. The first frame on each
//! connection is a `Hello` naming the sender's rank, the connection's role and the
//! communicator's id, so that a connection from an unrelated process or another communicator
//! is refused instead of being mistaken for a peer. Before the hello, each connection proves
//! in both directions that its ends know the job's secret ([`super::greet`]).

use super::greet::{greet_all, Pending};
use super::paths::SprayMesh;
use super::{make_transport, Backend, Mesh};
use crate::cma;
use crate::conn::{Conn, Role};
use dmsc_core::auth::Secret;
use dmsc_core::engine::Transport;
use dmsc_core::error::{Error, Result};
use dmsc_core::spray::wire::MAX_PATHS;
use dmsc_core::spray::SprayConfig;
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
    /// Paths per pair of ranks (`DMSC_PATHS`). 1: one data and one control connection. More:
    /// that many connections, over which chunks are sprayed (`dmsc_core::spray`) and control
    /// messages travel too.
    pub paths: usize,
    /// The local address of each path, used in turn (`DMSC_SOCKET_IFNAME` naming several
    /// interfaces); empty: every path uses `bind_ip`.
    pub path_ips: Vec<IpAddr>,
    /// How chunks are sprayed over the paths.
    pub spray: SprayConfig,
    /// Log path state changes (`DMSC_DEBUG=INFO`).
    pub debug: bool,
    /// The peers this mesh connects, indexed by rank (`None`: all of them). Peers another
    /// transport serves (shared memory on this host) are left out on both ends.
    pub serve: Option<Vec<bool>>,
}

impl MeshOptions {
    /// Options for rank `rank` of `nranks` with one path per peer, no secret, no memory
    /// attach, the automatic backend, listening on `bind_ip`.
    pub fn new(
        rank: Rank,
        nranks: usize,
        bind_ip: IpAddr,
        timeout: Duration,
        comm_id: u64,
    ) -> Self {
        MeshOptions {
            rank,
            nranks,
            bind_ip,
            timeout,
            backend: Backend::Auto,
            comm_id,
            cma: false,
            secret: None,
            paths: 1,
            path_ips: Vec::new(),
            spray: SprayConfig::default(),
            debug: false,
            serve: None,
        }
    }

    /// Whether this mesh connects to `peer`.
    pub fn serves(&self, peer: Rank) -> bool {
        self.serve
            .as_ref()
            .is_none_or(|s| s.get(peer).copied().unwrap_or(false))
    }

    /// The local address path `p` listens and connects on.
    pub(crate) fn path_ip(&self, p: usize) -> IpAddr {
        if self.path_ips.is_empty() {
            self.bind_ip
        } else {
            self.path_ips[p % self.path_ips.len()]
        }
    }
}

/// The first frame on a new TCP connection: identifies the sender (a transport frame kind,
/// [`dmsc_core::wire::TRANSPORT_KINDS`]).
pub(crate) const HELLO: FrameKind = FrameKind::Transport(0x80);

/// Role code of path 0 in a hello (path `p`: this plus `p`).
const PATH_ROLE_BASE: u32 = 16;

pub(crate) fn hello(opts: &MeshOptions, role: Role) -> [u8; HEADER_LEN] {
    let mut h = FrameHeader::plain(HELLO, opts.rank as u32, 0);
    h.seq = opts.comm_id;
    h.chunk = match role {
        Role::Data => 0,
        Role::Control => 1,
        Role::Path(p, epoch) => {
            h.offset = epoch as u64;
            PATH_ROLE_BASE + p as u32
        }
    };
    let mut b = [0u8; HEADER_LEN];
    h.encode(&mut b);
    b
}

pub(crate) fn tune_stream(s: &TcpStream) -> Result<()> {
    tune(s)
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
    if h.kind != HELLO {
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
        r if (PATH_ROLE_BASE..PATH_ROLE_BASE + MAX_PATHS as u32).contains(&r) => {
            let epoch = u32::try_from(h.offset)
                .ok()
                .filter(|&e| e >= 1)
                .ok_or_else(|| {
                    Error::protocol(format!("hello for a path with incarnation {}", h.offset))
                })?;
            Role::Path((r - PATH_ROLE_BASE) as u8, epoch)
        }
        r => return Err(Error::protocol(format!("hello with unknown role {r}"))),
    };
    if !matches!(role, Role::Path(..)) && h.offset != 0 {
        return Err(Error::protocol("hello with an offset"));
    }
    Ok((peer, role))
}

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
        match role {
            Role::Data => data_of[*peer] = Some(i),
            Role::Control => control_of[*peer] = Some(i),
            Role::Path(p, _) => {
                super::paths::limit_unsent(s);
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
            paths: 1,
            path_ips: Vec::new(),
            spray: Default::default(),
            debug: false,
            serve: None,
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
        c[5] = FrameKind::Control.code();
        assert!(e(&c, 1, 0xc0ff_ee00_1234)
            .to_string()
            .contains("not a hello"));
        // A rank beyond any usize arithmetic still gets an error, not an overflow.
        assert!(parse_hello(&b, usize::MAX, usize::MAX, 0xc0ff_ee00_1234).is_err());
    }
}
