//! The one path by which init, split and shrink connect a new communicator: the transport
//! options built from its [`Config`], the transports connected over a rendezvous exchange
//! (`dmsc_transports::connect`), and the engine started on them.

use crate::config::Config;
use dmsc_core::engine::Engine;
use dmsc_core::topology::Topology;
use dmsc_core::{Rank, Result};
use dmsc_transports::connect::{connect, ConnectOptions, RdmaSetup};
use dmsc_transports::ifaddr;
use dmsc_transports::rdma::{sys::SysVerbs, RdmaOptions};
use dmsc_transports::tcp::{Exchange, MeshOptions};
use std::net::IpAddr;

/// The connect options of a communicator, and its configuration with the window widened for
/// paths over several interfaces (unless `DMSC_WINDOW` fixed it).
fn options(
    mut config: Config,
    rank: Rank,
    nranks: usize,
    bind_ip: IpAddr,
    comm_id: u64,
) -> Result<(ConnectOptions, Config)> {
    let ifaces = if config.socket_ifname.is_some() {
        ifaddr::select_all(config.socket_ifname.as_deref(), bind_ip.is_loopback())?
    } else {
        Vec::new()
    };
    let paths = config.paths.unwrap_or(ifaces.len().max(1));
    let path_ips = if ifaces.len() > 1 {
        ifaces.iter().map(|i| i.addr).collect()
    } else {
        Vec::new()
    };
    // Paths over distinct interfaces need enough chunks in flight to keep each busy; paths
    // sharing one interface (loopback) gain nothing from a wider window, and lose to cache
    // misses on the extra staging memory.
    if paths > 1 && path_ips.len() > 1 && !config.window_set {
        config.engine.window = config.engine.window.max(4 * paths).min(64);
    }
    let mut mesh = MeshOptions::new(rank, nranks, bind_ip, config.engine.timeout, comm_id);
    mesh.backend = config.backend;
    mesh.cma = config.cma;
    mesh.secret = config.secret.clone();
    mesh.paths = paths;
    mesh.path_ips = path_ips;
    mesh.spray = config.spray;
    let opts = ConnectOptions {
        mesh,
        choice: config.transport,
        // Ranks of one host meet in shared memory whatever DMSC_PATHS says: paths are a TCP
        // feature, and several of them on one interface only cost (as NCCL's socket count
        // applies to its network transport only).
        shm: config.shm,
        shm_ring: config.shm_ring,
        // RDMA is tried for `DMSC_TRANSPORT=auto` and `rdma`; without a usable port the
        // ranks fall back to TCP and say why once.
        rdma: Some(RdmaSetup {
            options: RdmaOptions::from_env(
                &|k: &str| std::env::var(k).ok(),
                config.engine.chunk_bytes,
            )?,
            provider: config.verbs.as_ref().map_or_else(
                || std::sync::Arc::new(SysVerbs) as _,
                |v| v.provider.clone(),
            ),
            dmabuf: config.verbs.as_ref().and_then(|v| v.dmabuf.clone()),
        }),
    };
    Ok((opts, config))
}

/// Connect rank `rank` of `nranks` of communicator `comm_id` and start its engine.
/// `exchange` publishes this rank's connection bytes and returns every rank's. Returns the
/// engine, the configuration it runs with, and the hosts of the ranks (links unmeasured).
pub(crate) fn connect_engine(
    config: Config,
    rank: Rank,
    nranks: usize,
    bind_ip: IpAddr,
    comm_id: u64,
    exchange: Exchange<'_>,
) -> Result<(Engine, Config, Topology)> {
    // What is logged while connecting names this communicator's rank, whatever others the
    // process holds.
    let _rank = dmsc_core::log_rank::scope(rank);
    let (opts, mut config) = options(config, rank, nranks, bind_ip, comm_id)?;
    let connected = connect(&opts, exchange)?;
    let transport = connected.transport;
    config.engine.spin_yield = oversubscribed(transport.name(), nranks);
    if transport.name().starts_with("shm") {
        // The plan must be the same on every rank, so it follows the host's online CPUs, which
        // every rank of the host reads alike, not this process's affinity mask.
        if nranks > host_cpus() {
            // With more ranks than cores a step costs a context switch, not a ring hand-off:
            // the default (TCP) model's larger alpha fits that better, and fewer steps win
            // up to a few MiB.
            config.plan.halving_doubling_max_bytes = OVERSUBSCRIBED_HALVING_DOUBLING_MAX;
            config.plan.halving_doubling_min_bytes = OVERSUBSCRIBED_HALVING_DOUBLING_MIN;
        } else {
            config.plan.model = dmsc_core::model::CostModel::shared_memory();
        }
        // A chunk size the user chose stays: through DMSC_CHUNK_BYTES or the C ABI
        // (`chunk_set`), or set in code to anything but the default.
        let default = dmsc_core::engine::EngineConfig::default().chunk_bytes;
        if !config.chunk_set && config.engine.chunk_bytes == default {
            config.engine.chunk_bytes = SHM_CHUNK;
        }
    }
    if !config.spin_set {
        // Spin long enough that a peer a little behind is caught without sleeping. With a
        // core per rank: waking a sleeping vCPU took ~120 us on the development VM, and two
        // ranks that each sleep while the other wakes settle into that rhythm for good (8 B
        // all-reduce: 1.2 us with a 2 ms spin, 118 us in half the runs with 50 us). With more
        // ranks than cores the spin yields the core at every turn (`spin_yield`), so the
        // peer it waits for runs, and sleeping only adds the wake-up: 4 ranks on 2 cores,
        // 1 MiB all-reduce, 717-941 us with a 2 ms spin against 1430-2175 us with 50 us
        // (interleaved runs, 2026-12-02; 8 B and 64 KiB within the noise of either).
        config.engine.spin = SPIN;
    }
    let engine = Engine::new(transport, rank, nranks, config.engine.clone());
    Ok((engine, config, connected.topology))
}

/// All-reduces up to this size run halving-doubling on a host with more ranks than cores
/// ([`dmsc_core::plan::PlanConfig::halving_doubling_max_bytes`]). Measured on the
/// development VM, 4 ranks on 2 cores, interleaved runs on 2026-12-06 (three rounds, the two
/// vCPUs sharing a cache), against the cost model's choice (recursive doubling up to
/// 64 KiB, then ring or tree): 8 B 11.6-12.7 us against 13.2-20.6 us, 64 KiB 37-48 us
/// against 46-70 us, 256 KiB 97-116 us against 172-255 us, 1 MiB 365-385 us against
/// 385-430 us; at 4 MiB the model's choice wins (1.24-1.32 ms against 1.35-2.03 ms).
const OVERSUBSCRIBED_HALVING_DOUBLING_MAX: usize = 2 << 20;

/// All-reduces up to this size keep the model's recursive doubling on a host with more
/// ranks than cores ([`dmsc_core::plan::PlanConfig::halving_doubling_min_bytes`]): two
/// whole-vector exchanges at 4 ranks against halving-doubling's four steps. Measured on the
/// development VM, 4 ranks on 2 cores, interleaved runs on 2026-12-07 (four rounds, the
/// vCPUs in both placements): 8 B 10.2-17.6 us against 15.3-17.4 us, 256 B 10.5-18.4 against
/// 18.8-20.1, 2 KiB 11.7-20.0 against 15.2-21.7; 8 and 16 KiB alike (14-23 us either way);
/// from 32 KiB halving-doubling wins (64 KiB 20.4-23.1 us against 25.9-27.2).
const OVERSUBSCRIBED_HALVING_DOUBLING_MIN: usize = 8 << 10;

/// Chunk size over shared memory (unless `DMSC_CHUNK_BYTES` says otherwise): frames this
/// small go through the pairs' rings (below `cma::SHM_REF_MIN`), pipelined a chunk at a time,
/// where the default 512 KiB chunks pass by reference one chunk per step. Measured on the
/// development VM on 2026-12-07, interleaved runs, both placements of the two vCPUs, all-reduce
/// time against the 512 KiB default: 2 ranks, 1 MiB 46-67 us against 89-193 (Open MPI's vader
/// 88-228), 16 MiB 1.11-1.16 ms against 1.43-2.42 (vader 1.34-1.92), 64 MiB 5.8-6.4 ms against
/// 6.1-6.3; 4 ranks, 1 MiB 156-161 us against 279-509, 16 MiB 3.9-4.8 ms against 4.4-4.8;
/// 64 KiB, 64 and 256 MiB alike within the noise (256 MiB at 2 ranks 25.6-29.9 ms against
/// 22.6-27.7). 64 KiB chunks lose at 16 MiB (1.21-1.27 ms, 4 ranks 5.1-5.4).
const SHM_CHUNK: usize = 128 << 10;

/// How long a rank spins (yielding its core when ranks outnumber cores) before blocking.
const SPIN: std::time::Duration = std::time::Duration::from_millis(2);

/// The CPUs online on this host (`sysconf(_SC_NPROCESSORS_ONLN)`), the same for every process
/// of the host whatever its affinity mask or cgroup.
fn host_cpus() -> usize {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
}

/// Whether this host runs more ranks of the communicator than it has cores for this process:
/// all of them when they meet in shared memory, else as many as the launcher says
/// (`LOCAL_WORLD_SIZE`, `OMPI_COMM_WORLD_LOCAL_SIZE`, `SLURM_NTASKS_PER_NODE`), else assume so.
fn oversubscribed(transport: &str, nranks: usize) -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local = if transport.starts_with("shm") {
        Some(nranks)
    } else {
        [
            "LOCAL_WORLD_SIZE",
            "OMPI_COMM_WORLD_LOCAL_SIZE",
            "SLURM_NTASKS_PER_NODE",
        ]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse::<usize>().ok())
    };
    local.is_none_or(|l| l > cores)
}
