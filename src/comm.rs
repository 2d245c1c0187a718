//! The [`Communicator`]: joining a job, and handing its operations to the engine's
//! executor in core (`dmsc_core::engine::executor`), which runs them in call order on the
//! calling thread or the communicator's progress thread and serves heartbeats while idle.

use crate::config::Config;
use crate::device_call::stager::DeviceCalls;
use crate::plan_cache::PlanCache;
use crate::request::Request;
use crate::store_link::StoreLink;
use dmsc_core::bootstrap::env::{detect_from_process_env, LaunchInfo, Launcher};
use dmsc_core::bootstrap::UniqueId;
use dmsc_core::engine::executor::Executor;
use dmsc_core::engine::{AbortHandle, Engine, PathMetricsHandle, PeerPaths};
use dmsc_core::topology::Topology;
use dmsc_core::{Error, Rank, Result};
use dmsc_transports::ifaddr;
use dmsc_transports::store::{random_nonce, serve_or_connect, StoreClient, StoreServer};
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub(crate) use dmsc_core::engine::executor::Job;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A group of ranks that run collectives together (NCCL's `ncclComm_t`, torch's
/// `ProcessGroup`). Create one per process with [`Communicator::from_env`] or
/// [`Communicator::init`]; every rank must then call the same collectives in the same order.
pub struct Communicator {
    rank: Rank,
    nranks: usize,
    pub(crate) config: Config,
    /// The staging of device calls, once the first one came (before `exec`: it is dropped,
    /// and its thread stopped, before the executor it submits to).
    pub(crate) device: Mutex<Option<Arc<dyn DeviceCalls>>>,
    /// The engine, its job queue and its progress thread.
    pub(crate) exec: Arc<Executor>,
    /// Schedules of recent collectives, reused by repeated calls.
    pub(crate) plans: PlanCache,
    abort: Arc<AbortHandle>,
    pub(crate) failure: Arc<Mutex<Option<Error>>>,
    transport_name: &'static str,
    peer_transports: Vec<&'static str>,
    /// Per-path metrics the transport publishes (several paths per peer).
    path_metrics: Option<PathMetricsHandle>,
    /// Which ranks share a host, and the links measured between hosts.
    pub(crate) topology: Topology,
    /// Local address the mesh listens on; communicators split from this one use it too.
    pub(crate) bind_ip: IpAddr,
    /// The rendezvous store, for [`Communicator::shrink`] (none after a split).
    pub(crate) store_link: Option<StoreLink>,
    _store: Option<StoreServer>,
}

/// How to reach the other ranks.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// This rank.
    pub rank: Rank,
    /// Number of ranks.
    pub nranks: usize,
    /// `host:port` of the rendezvous store.
    pub store_addr: String,
    /// Rank 0 serves the store itself (false: a standalone `dmsc-store` is running there).
    pub serve_store: bool,
    /// Settings.
    pub config: Config,
}

impl Communicator {
    /// Join the communicator described by the environment: dmscrun and torchrun (`RANK`,
    /// `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), Open MPI (`OMPI_COMM_WORLD_*`) or PMI
    /// (`PMI_RANK`, `PMI_SIZE`) with `DMSC_STORE_ADDR` or `MASTER_ADDR`/`MASTER_PORT`, or Slurm
    /// (`SLURM_PROCID`, `SLURM_NTASKS`), where the store's address may also be derived from the
    /// job (see `dmsc_core::bootstrap::env`).
    pub fn from_env() -> Result<Communicator> {
        let info = detect_from_process_env()?;
        let config = Config::from_env()?;
        Communicator::init(options_from_launch(&info, config))
    }

    /// Join the communicator described by the environment, like [`Communicator::from_env`],
    /// but with the given settings instead of reading the `DMSC_*` variables (front ends
    /// whose callers pass a configuration, e.g. the C API's `dmscCommInitFromEnv`).
    pub fn from_env_with_config(config: Config) -> Result<Communicator> {
        let info = detect_from_process_env()?;
        Communicator::init(options_from_launch(&info, config))
    }

    /// Join with explicit settings.
    pub fn init(opts: InitOptions) -> Result<Communicator> {
        check_world(opts.rank, opts.nranks)?;
        crate::logger::install(&opts.config.log, Some(opts.rank))?;
        crate::config::warn_short_secret(opts.config.secret.as_ref());
        let timeout = opts.config.engine.timeout;
        let (host, port) = split_host_port(&opts.store_addr)?;
        let secret = opts.config.secret.as_ref();
        let (server, client) = if opts.serve_store {
            serve_or_connect(opts.rank, &host, port, timeout, secret)?
        } else {
            (
                None,
                StoreClient::connect(&opts.store_addr, timeout, secret)?,
            )
        };
        let store_ip = resolve(&opts.store_addr)?;
        join(
            opts.rank,
            opts.nranks,
            client,
            server,
            store_ip,
            "dmsc/world",
            opts.config,
        )
    }

    /// Join through a [`UniqueId`] made by [`new_unique_id`] on one process and passed to
    /// every rank by the program itself (like `ncclCommInitRank`). Connections authenticate
    /// with the secret the id carries, whatever `config.secret` says.
    pub fn init_with_id(
        id: &UniqueId,
        rank: Rank,
        nranks: usize,
        mut config: Config,
    ) -> Result<Communicator> {
        check_world(rank, nranks)?;
        crate::logger::install(&config.log, Some(rank))?;
        config.secret = Some(dmsc_core::auth::Secret::new(id.secret())?);
        let timeout = config.engine.timeout;
        let client = StoreClient::connect(id.store_addr(), timeout, config.secret.as_ref())?;
        // The process that made the id hands its store to the communicator it joins, so the
        // store lives exactly as long as that communicator.
        let server = {
            let mut servers = lock(&ID_SERVERS);
            servers
                .iter()
                .position(|(n, _)| *n == id.nonce())
                .map(|i| servers.swap_remove(i).1)
        };
        let prefix = format!("dmsc/id-{:016x}", id.nonce());
        join(
            rank,
            nranks,
            client,
            server,
            id.store_addr().ip(),
            &prefix,
            config,
        )
    }

    /// The communicator around a connected `engine`, with its links measured when it spans
    /// hosts, and its banner logged.
    pub(crate) fn with_engine(
        engine: Engine,
        config: Config,
        topology: Topology,
        store: Option<StoreServer>,
        bind_ip: IpAddr,
    ) -> Result<Communicator> {
        let (rank, nranks) = (engine.rank(), engine.nranks());
        let abort = engine.abort_handle();
        let failure = engine.failure_slot();
        let transport_name = engine.transport_name();
        let peer_transports = engine.peer_transports();
        let path_metrics = engine.path_metrics();
        let _rank = dmsc_core::log_rank::scope(rank);
        let exec = Arc::new(Executor::start(engine)?);
        let mut comm = Communicator {
            rank,
            nranks,
            config,
            device: Mutex::new(None),
            exec,
            plans: PlanCache::default(),
            abort,
            failure,
            transport_name,
            peer_transports,
            path_metrics,
            topology,
            bind_ip,
            store_link: None,
            _store: store,
        };
        comm.measure_topology()?;
        comm.log_banner();
        Ok(comm)
    }

    /// Which ranks share a host, each host's name, and the links measured within and
    /// between hosts (none when the communicator runs on one host or `DMSC_TOPO_PROBE=0`).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// This process's rank, `0..size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.nranks
    }

    /// The settings this communicator runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Name of the transport in use: `shm` (shared memory, all ranks on this host),
    /// `tcp-uring` or `tcp-socket`, with `+cma` when some pairs pass large chunks by
    /// cross-memory attach.
    pub fn transport_name(&self) -> &'static str {
        self.transport_name
    }

    /// The transport that serves each rank, indexed by rank (`"self"` for this one), e.g.
    /// `["self", "shm+cma", "shm+cma"]`; the same names as [`Communicator::transport_name`].
    pub fn peer_transports(&self) -> &[&'static str] {
        &self.peer_transports
    }

    /// Metrics of the paths to each peer: state, measured rate and round trip, bytes in
    /// flight, sent, acknowledged, re-queued and duplicated, failures and their reasons,
    /// and when each state changed. Empty unless the communicator has several paths per
    /// peer (`DMSC_PATHS`). A snapshot refreshed every few milliseconds by the progress
    /// thread; reading it takes no engine lock.
    pub fn path_metrics(&self) -> Vec<PeerPaths> {
        self.path_metrics
            .as_ref()
            .and_then(|h| h.lock().ok().map(|m| m.clone()))
            .unwrap_or_default()
    }

    /// Abort: every call in flight on this communicator returns [`Error::Aborted`] within
    /// 100 ms (even while peers are dead or stopped), later calls fail at once, and the other
    /// ranks' calls fail with an error naming this rank. Safe to call from any thread, any
    /// number of times.
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// The error that failed this communicator, if any (`ncclCommGetAsyncError`). Once set,
    /// every later call fails with it at once. Never waits for an operation in progress.
    pub fn async_error(&self) -> Option<Error> {
        if let Some(e) = lock(&self.failure).clone() {
            return Some(e);
        }
        if self.abort.is_aborted() {
            return Some(Error::Aborted {
                detail: "the communicator was aborted".into(),
            });
        }
        None
    }

    /// A handle that can abort this communicator from another thread.
    pub fn abort_handle(&self) -> Arc<AbortHandle> {
        self.abort.clone()
    }

    /// Run a job to completion, on this thread when nothing is queued ahead of it.
    pub(crate) fn run_blocking(&self, job: Job) -> Result<()> {
        // SAFETY: the job's regions come from borrows the caller holds for this call.
        unsafe { self.exec.run_blocking(job) }
    }

    /// Queue a job for the progress thread.
    pub(crate) fn run_async<'a>(&self, job: Job) -> Request<'a> {
        // SAFETY: the job's regions come from borrows that the returned request holds for
        // 'a, and a request waits for its job when dropped.
        Request::new(unsafe { self.exec.submit(job) }, Some(self.exec.helper()))
    }
}

/// Stores started by [`new_unique_id`], waiting for this process to join with their id.
static ID_SERVERS: Mutex<Vec<(u64, StoreServer)>> = Mutex::new(Vec::new());

/// Make a unique id (like `ncclGetUniqueId`): starts a rendezvous store in this process on the
/// interface `DMSC_SOCKET_IFNAME` selects (default: the first non-loopback IPv4 interface).
/// Pass the id's 128 bytes ([`UniqueId::to_bytes`]) to every rank, then call
/// [`Communicator::init_with_id`] on each.
pub fn new_unique_id() -> Result<UniqueId> {
    let spec = std::env::var("DMSC_SOCKET_IFNAME")
        .ok()
        .filter(|s| !s.is_empty());
    make_unique_id(spec.as_deref(), false)
}

/// [`new_unique_id`] with the store on the loopback interface, for a job whose ranks are all
/// in this process (`dmscCommInitAll`): nothing off the host can reach the store, and a host
/// with no other interface works too.
pub fn new_local_unique_id() -> Result<UniqueId> {
    make_unique_id(None, true)
}

fn make_unique_id(spec: Option<&str>, loopback: bool) -> Result<UniqueId> {
    // The store this process serves logs the connections it refuses.
    crate::logger::install(&crate::config::log_settings_from_env()?, None)?;
    let iface = ifaddr::select(spec, loopback)?;
    let (id, server) = dmsc_transports::store::new_unique_id(iface.addr)?;
    lock(&ID_SERVERS).push((id.nonce(), server));
    Ok(id)
}

/// Stop the store of `id` if this process still serves it for no communicator: every join
/// with it failed before one could take it over (dmscCommInitAll cleans up so).
pub fn release_unique_id(id: &UniqueId) {
    lock(&ID_SERVERS).retain(|(n, _)| *n != id.nonce());
}

fn check_world(rank: Rank, nranks: usize) -> Result<()> {
    if nranks == 0 {
        return Err(Error::invalid("nranks must be at least 1"));
    }
    if rank >= nranks {
        return Err(Error::invalid(format!(
            "rank {rank} is out of range for {nranks} ranks"
        )));
    }
    Ok(())
}

/// Agree on a communicator id, connect the mesh and start the engine.
fn join(
    rank: Rank,
    nranks: usize,
    mut client: StoreClient,
    server: Option<StoreServer>,
    store_ip: IpAddr,
    prefix: &str,
    config: Config,
) -> Result<Communicator> {
    let timeout = config.engine.timeout;
    let iface = ifaddr::select(config.socket_ifname.as_deref(), store_ip.is_loopback())?;
    let comm_id = agree_on_id(&mut client, prefix, rank, timeout)?;
    let key = format!("{prefix}/{comm_id:016x}/addr");
    let (engine, config, topology) =
        crate::connect::connect_engine(config, rank, nranks, iface.addr, comm_id, &mut |mine| {
            client.exchange(&key, rank, nranks, mine, timeout)
        })?;
    let mut comm = Communicator::with_engine(engine, config, topology, server, iface.addr)?;
    let link = StoreLink::new(
        Arc::new(Mutex::new(client)),
        format!("{prefix}/{comm_id:016x}"),
    );
    comm.store_link = Some(link);
    Ok(comm)
}

fn split_host_port(addr: &str) -> Result<(String, u16)> {
    dmsc_core::bootstrap::env::parse_host_port("store address", addr)
}

fn resolve(addr: &str) -> Result<IpAddr> {
    addr.to_socket_addrs()
        .map_err(|e| Error::io(format!("resolving the store address {addr}"), &e))?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| Error::invalid(format!("store address {addr} resolves to nothing")))
}

/// Rank 0 draws a random communicator id and publishes it; the others read it.
fn agree_on_id(
    client: &mut StoreClient,
    prefix: &str,
    rank: Rank,
    timeout: Duration,
) -> Result<u64> {
    let key = &format!("{prefix}/id");
    if rank == 0 {
        let id = random_nonce()?;
        client.set(key, &id.to_le_bytes())?;
        Ok(id)
    } else {
        let v = client.get(key, timeout)?;
        let b: [u8; 8] = v
            .as_slice()
            .try_into()
            .map_err(|_| Error::protocol("communicator id in the store is not 8 bytes"))?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Map a detected launch to init options. Under torchrun the agent's own TCPStore holds
/// MASTER_PORT, so dmsc's store takes the next port.
fn options_from_launch(info: &LaunchInfo, config: Config) -> InitOptions {
    let (host, mut port) = info.store.clone();
    let torchrun_agent = info.launcher == Launcher::Torchrun
        && std::env::var_os("TORCHELASTIC_RUN_ID").is_some()
        && std::env::var_os("DMSC_STORE_ADDR").is_none();
    if torchrun_agent {
        port = port.wrapping_add(1);
    }
    InitOptions {
        rank: info.rank,
        nranks: info.world_size,
        store_addr: dmsc_core::bootstrap::env::join_host_port(&host, port),
        serve_store: std::env::var_os("DMSC_STORE_EXTERNAL").is_none(),
        config,
    }
}
