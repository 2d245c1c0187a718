//! The engine: executes schedules over a [`Transport`], with deadlines, mismatch detection,
//! error propagation to every rank, and abort.
//!
//! One [`Engine`] belongs to one communicator and is driven by whichever thread holds it
//! (the caller of a blocking collective, or the one testing a request); it is never shared
//! between threads at the same time. Operations run one after another in submission order,
//! which is the order every rank must call them in. Waiting is spin-then-block: the engine
//! polls the transport without blocking for a short while after the last progress (low
//! latency for back-to-back calls), then blocks in the transport with a timeout, so that
//! many ranks share a few cores without burning them.
//!
//! Errors are sticky: once an operation fails, the engine cancels all posted work (no
//! pointer into caller memory survives the failed call), tells every other rank why through
//! a control message, and fails every later call with the same error.
//!
//! [`executor::Executor`] owns an engine and runs the job queue and progress thread that
//! every front end shares.
//!
//! Peers are watched with heartbeats while the engine runs and while it idles (see
//! `liveness.rs`): a killed, stopped or unreachable peer fails the operation in progress, or
//! the next one, with [`Error::PeerLost`] naming it, and an engine being dropped says goodbye.

mod config;
pub mod control;
mod devices;
mod diagnose;
mod drive;
mod exec;
pub mod executor;
mod failure;
mod liveness;
pub mod memory;
pub mod regcache;
mod registration;
mod staging;
pub mod transport;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod registration_tests;
#[cfg(all(test, not(loom)))]
mod tests;

pub use config::EngineConfig;
pub use memory::{MemKind, OpMemory, RegHandle, Region};
pub use regcache::{RegCache, RegCacheConfig, RegLease, RegStats, Registrar};
pub use transport::{Completion, PathMetricsHandle, PeerPaths, Token, Transport, Waker};

use crate::device::{Device, DeviceBuffer, HostDevice};
use crate::error::{Error, Result};
use crate::plan::P2p;
use crate::schedule::Schedule;
use crate::sync::{AtomicBool, Ordering};
use crate::types::{CollDesc, CollKind, DataType, Rank, ReduceOp};
use devices::DeviceSlot;
use exec::Labels;
use liveness::{Liveness, State};
use registration::Registration;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// State shared with other threads: the abort flag and the transport's waker.
pub struct AbortHandle {
    aborted: AtomicBool,
    waker: Arc<dyn Waker>,
}

impl AbortHandle {
    /// Abort: every call in flight on the communicator returns [`Error::Aborted`] promptly,
    /// and later calls fail at once.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// True once [`AbortHandle::abort`] was called.
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }
}

/// Executes operations of one communicator over one transport.
pub struct Engine {
    transport: Box<dyn Transport>,
    rank: Rank,
    nranks: usize,
    cfg: EngineConfig,
    /// Sequence number of the last collective started.
    started: u64,
    /// Sequence number of the last collective completed.
    completed: u64,
    /// Point-to-point messages sent to / received from each peer so far.
    p2p_sent: Vec<u64>,
    p2p_recv: Vec<u64>,
    failed: Option<Error>,
    /// A copy of `failed` readable from other threads without the engine's lock.
    published: Arc<Mutex<Option<Error>>>,
    abort: Arc<AbortHandle>,
    /// What copies, reduces and checksums payload bytes, and allocates staging and scratch:
    /// one device per kind of memory, the first the one the engine was built with (see
    /// `devices.rs`).
    devices: Vec<DeviceSlot>,
    /// The registration cache (see `registration.rs`).
    reg: Registration,
    epoch: u32,
    completions: Vec<Completion>,
    /// The vectors of the last operation, reused by the next.
    exec_bufs: exec::ExecBufs,
    /// Status replies gathered while reporting a timeout: (peer, started, completed, current).
    statuses: Vec<(Rank, u64, u64, Option<CollDesc>)>,
    current: Option<CollDesc>,
    /// Heartbeats and what is known of each peer.
    live: Liveness,
    /// The last error built from a peer's `Failed` message: not to be broadcast again.
    remote_failure: bool,
}

impl Engine {
    /// An engine for `rank` of `nranks` over `transport`, working on host memory.
    pub fn new(
        transport: Box<dyn Transport>,
        rank: Rank,
        nranks: usize,
        cfg: EngineConfig,
    ) -> Engine {
        Engine::with_device(transport, Box::new(HostDevice), rank, nranks, cfg)
    }

    /// An engine whose payload bytes are handled by `device`.
    pub fn with_device(
        transport: Box<dyn Transport>,
        device: Box<dyn Device>,
        rank: Rank,
        nranks: usize,
        cfg: EngineConfig,
    ) -> Engine {
        let abort = Arc::new(AbortHandle {
            aborted: AtomicBool::new(false),
            waker: transport.waker(),
        });
        let slots = devices::staging_slots(&cfg, nranks);
        let live = Liveness::new(rank, nranks, cfg.heartbeat_timeout, Instant::now());
        let first = DeviceSlot::new(device, &*transport, rank, nranks, cfg.chunk_bytes, slots);
        Engine {
            reg: Registration::new(cfg.registration),
            devices: vec![first],
            transport,
            rank,
            nranks,
            cfg,
            started: 0,
            completed: 0,
            p2p_sent: vec![0; nranks],
            p2p_recv: vec![0; nranks],
            failed: None,
            published: Arc::new(Mutex::new(None)),
            abort,
            epoch: 0,
            completions: Vec::new(),
            exec_bufs: exec::ExecBufs::default(),
            statuses: Vec::new(),
            current: None,
            live,
            remote_failure: false,
        }
    }

    /// The handle that aborts this engine from any thread.
    pub fn abort_handle(&self) -> Arc<AbortHandle> {
        self.abort.clone()
    }

    /// This rank.
    pub fn rank(&self) -> Rank {
        self.rank
    }

    /// Number of ranks.
    pub fn nranks(&self) -> usize {
        self.nranks
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The transport's name.
    pub fn transport_name(&self) -> &'static str {
        self.transport.name()
    }

    /// The transport serving each rank (this rank's own entry is `"self"`).
    pub fn peer_transports(&self) -> Vec<&'static str> {
        (0..self.nranks)
            .map(|p| {
                if p == self.rank {
                    "self"
                } else {
                    self.transport.peer_transport(p)
                }
            })
            .collect()
    }

    /// Where the transport publishes per-path metrics (several paths per peer only).
    pub fn path_metrics(&self) -> Option<PathMetricsHandle> {
        self.transport.path_metrics()
    }

    /// Sequence number of the last collective started on this rank.
    pub fn seq(&self) -> u64 {
        self.started
    }

    /// The error that failed this engine, if any.
    pub fn failure(&self) -> Option<&Error> {
        self.failed.as_ref()
    }

    /// A shared copy of [`Engine::failure`], updated when the engine fails, for readers on
    /// other threads that must not wait for an operation in progress
    /// (`ncclCommGetAsyncError`).
    pub fn failure_slot(&self) -> Arc<Mutex<Option<Error>>> {
        self.published.clone()
    }

    fn set_failed(&mut self, e: Error) {
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
        self.failed = Some(e);
    }

    fn check_usable(&mut self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.abort.is_aborted() {
            // Peers may be waiting for this rank in a collective: tell them.
            let e = Error::Aborted {
                detail: "the communicator was aborted".into(),
            };
            self.fail_seq(e.clone(), self.started);
            return Err(e);
        }
        Ok(())
    }

    /// [`Engine::run_collective`] of a `PreMulSum`: `mem.input` is first multiplied by this
    /// rank's `factor` into a buffer of the device of its memory, and the collective runs
    /// out of place from there (`sched` must be an out-of-place schedule), so the caller's
    /// input is only read. Done here, when the operation's turn comes, so that the input is
    /// read in issue order, after every operation queued before it.
    ///
    /// # Safety
    /// As [`Engine::run_collective`].
    pub unsafe fn run_collective_premul(
        &mut self,
        desc: CollDesc,
        sched: impl Into<Arc<Schedule>>,
        mut mem: OpMemory,
        factor: f64,
    ) -> Result<()> {
        self.check_usable()?;
        let n = mem.input.len;
        let dev = self.device_for(&mem)?;
        self.ensure_buffer(dev, n, |d| &mut d.premul)?;
        let d = &mut self.devices[dev];
        let scaled = d
            .premul
            .as_ref()
            .map_or(std::ptr::null_mut(), DeviceBuffer::ptr);
        if n > 0 {
            // SAFETY: the caller guarantees that `mem.input` is readable for `n` bytes, in the
            // memory of the device `device_for` chose by its kind; `scaled` is that device's
            // premultiplication buffer, at least `n` bytes, aligned to 8, used by nothing else
            // while this operation runs.
            unsafe {
                d.device
                    .scale_mul(desc.dtype, scaled, mem.input.ptr, n, factor)?
            };
        }
        mem.input = Region {
            kind: d.device.kind(),
            ..Region::host(scaled, n)
        };
        // SAFETY: forwarded contract; the premultiplication buffer stays until the engine
        // goes (or a larger one replaces it, between operations).
        unsafe { self.run_collective(desc, sched, mem) }
    }

    /// Run one collective to completion.
    ///
    /// # Safety
    /// The regions of `mem` must be valid (input for reads, output and group buffers for
    /// writes) for the whole call and not be accessed by anyone else meanwhile.
    pub unsafe fn run_collective(
        &mut self,
        desc: CollDesc,
        sched: impl Into<Arc<Schedule>>,
        mem: OpMemory,
    ) -> Result<()> {
        let sched = sched.into();
        self.check_usable()?;
        self.started += 1;
        let seq = self.started;
        let labels = Labels::Collective { seq, desc };
        let r = self.execute(labels, desc, sched, mem);
        if r.is_ok() {
            self.completed = seq;
        }
        r
    }

    /// Run a group of point-to-point operations (its schedule from
    /// [`crate::plan::plan_send_recv`]) to completion.
    ///
    /// # Safety
    /// As for [`Engine::run_collective`].
    pub unsafe fn run_p2p(
        &mut self,
        dtype: DataType,
        ops: &[P2p],
        tags: &[u32],
        sched: impl Into<Arc<Schedule>>,
        mem: OpMemory,
    ) -> Result<()> {
        let sched = sched.into();
        self.check_usable()?;
        let mut per_action = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let tag = tags.get(i).copied().unwrap_or(0);
            match *op {
                P2p::Send { peer, .. } => {
                    self.p2p_sent[peer] += 1;
                    per_action.push((self.p2p_sent[peer], tag));
                }
                P2p::Recv { peer, .. } => {
                    self.p2p_recv[peer] += 1;
                    per_action.push((self.p2p_recv[peer], tag));
                }
            }
        }
        let desc = CollDesc {
            kind: CollKind::SendRecv,
            count: 0,
            dtype,
            op: ReduceOp::Sum,
            root: 0,
        };
        self.execute(Labels::P2p { per_action }, desc, sched, mem)
    }

    /// Serve control traffic while no operation runs: answer status queries, send
    /// heartbeats, and record (and pass on) errors from peers, lost peers and an abort, so
    /// that the next call fails at once. Never blocks longer than `wait`. Goes on after a
    /// failure too: a failed rank is still alive and keeps telling its peers so.
    pub fn service(&mut self, wait: Duration) -> Result<()> {
        let mut comps = Vec::new();
        let r = self.poll_io(&mut comps, wait);
        for c in comps {
            let e = match &c {
                Completion::Control { peer, payload } => self.on_control(*peer, payload),
                // After a goodbye nothing is pending on the peer: its resets do not matter.
                Completion::PeerFailed { peer, .. }
                    if self.live.state(*peer) == Some(&State::Left) =>
                {
                    Ok(())
                }
                Completion::PeerFailed { peer, error } => Err(Error::PeerLost {
                    peer: *peer,
                    detail: format!("while rank {} was idle: {error}", self.rank),
                }),
                _ => Ok(()),
            };
            if let Err(e) = e {
                self.fail_idle(e);
            }
        }
        if self.abort.is_aborted() {
            self.fail_idle(Error::Aborted {
                detail: "the communicator was aborted".into(),
            });
        }
        if let Err(e) = self.check_peers(None) {
            self.fail_idle(e);
        }
        r
    }
}
