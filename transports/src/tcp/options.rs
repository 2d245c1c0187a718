//! How to build a mesh: the options every part of the TCP transport reads (this rank, the
//! ranks it serves, its addresses and paths, the secret, the backend).

use super::backend::Backend;
use dmsc_core::auth::Secret;
use dmsc_core::spray::SprayConfig;
use dmsc_core::Rank;
use std::net::IpAddr;
use std::time::Duration;

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
