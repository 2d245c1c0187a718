//! The init banner: the `INFO` lines (subsystem `INIT`) a communicator logs once it is
//! connected, as NCCL logs its version, transports and tuning at init. They name the version,
//! the transport that serves each peer, the interfaces and the algorithm choices.

use crate::comm::Communicator;
use dmsc_core::subsys::INIT;

impl Communicator {
    /// Log the banner: version, the transport serving each peer, interfaces, topology and
    /// algorithm choices. Costs nothing unless `INIT` lines at `INFO` are enabled.
    pub(crate) fn log_banner(&self) {
        log_banner(self);
    }
}

fn log_banner(comm: &Communicator) {
    let (rank, nranks) = (comm.rank(), comm.size());
    let (peer_transports, bind_ip, config) = (comm.peer_transports(), comm.bind_ip, comm.config());
    if !log::log_enabled!(target: INIT, log::Level::Info) {
        return;
    }
    log::info!(target: INIT, "dmsc version {}: rank {rank} of {nranks}", crate::VERSION);
    let peers: Vec<String> = peer_transports
        .iter()
        .enumerate()
        .filter(|(r, _)| *r != rank)
        .map(|(r, t)| format!("{r} {t}"))
        .collect();
    log::info!(
        target: INIT,
        "peer transports (rank transport): {}",
        if peers.is_empty() {
            "none (a single rank)".to_string()
        } else {
            peers.join(", ")
        }
    );
    log::info!(
        target: INIT,
        "interfaces: listening on {bind_ip} (DMSC_SOCKET_IFNAME={}), {} path(s) per peer",
        config.socket_ifname.as_deref().unwrap_or("unset"),
        config.paths.unwrap_or(1)
    );
    // One log line per host and link: every line of a log file keeps the prefix
    // (host, pid, rank) that tools parse.
    for line in comm.topology().to_string().lines() {
        log::info!(target: INIT, "topology: {}", line.trim_start());
    }
    let algo = match config.plan.algo {
        Some(a) => format!("{} (forced by DMSC_ALGO)", format!("{a:?}").to_lowercase()),
        None => "cost model".to_string(),
    };
    log::info!(
        target: INIT,
        "algorithms: all_reduce, broadcast and reduce: {algo}; chunk {} B, window {}, \
         pipeline segment {} B",
        config.engine.chunk_bytes,
        config.engine.window,
        config.plan.segment_bytes
    );
}
