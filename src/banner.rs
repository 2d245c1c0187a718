//! The init banner: the `INFO` lines (subsystem `INIT`) a communicator logs once it is
//! connected, as NCCL logs its version, transports and tuning at init. They name the version,
//! the transport that serves each peer, the interfaces and the algorithm choices.

use crate::config::Config;
use dmsc_core::subsys::INIT;
use dmsc_core::Rank;
use std::net::IpAddr;

/// Log the banner of rank `rank` of `nranks`, whose peers are served by `peer_transports`
/// (indexed by rank), listening on `bind_ip`, with `config`. Costs nothing unless `INIT` lines
/// at `INFO` are enabled.
pub(crate) fn log_banner(
    rank: Rank,
    nranks: usize,
    peer_transports: &[&str],
    bind_ip: IpAddr,
    config: &Config,
) {
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
