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
mod exec;
pub mod executor;
mod liveness;
pub mod memory;
mod staging;
pub mod transport;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

pub use config::EngineConfig;
pub use memory::{MemKind, OpMemory, RegHandle, Region};
pub use transport::{Completion, PathMetricsHandle, PeerPaths, Token, Transport, Waker};

use crate::device::{Device, DeviceBuffer, HostDevice};
use crate::error::{Error, Result};
use crate::plan::P2p;
use crate::schedule::Schedule;
use crate::sync::{AtomicBool, Ordering};
use crate::types::{CollDesc, CollKind, DataType, Rank, ReduceOp};
use control::{ControlMsg, ErrorClass};
use exec::{Exec, Labels};
use liveness::{Liveness, State};
use staging::StagingPool;
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
    /// What copies, reduces and checksums payload bytes, and allocates staging and scratch.
    device: Box<dyn Device>,
    pool: StagingPool,
    scratch: Option<DeviceBuffer>,
    epoch: u32,
    completions: Vec<Completion>,
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
        let slots = (cfg.window * nranks.max(2)).max(4);
        let live = Liveness::new(rank, nranks, cfg.heartbeat_timeout, Instant::now());
        Engine {
            pool: StagingPool::new(cfg.chunk_bytes, slots),
            device,
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
            scratch: None,
            epoch: 0,
            completions: Vec::new(),
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

    /// Run one collective to completion.
    ///
    /// # Safety
    /// The regions of `mem` must be valid (input for reads, output and group buffers for
    /// writes) for the whole call and not be accessed by anyone else meanwhile.
    pub unsafe fn run_collective(
        &mut self,
        desc: CollDesc,
        sched: Schedule,
        mem: OpMemory,
    ) -> Result<()> {
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
        sched: Schedule,
        mem: OpMemory,
    ) -> Result<()> {
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

    fn execute(
        &mut self,
        labels: Labels,
        desc: CollDesc,
        sched: Schedule,
        mem: OpMemory,
    ) -> Result<()> {
        let started_at = Instant::now();
        self.check_memory(&mem)?;
        let need = sched.scratch_elems.saturating_mul(desc.dtype.size());
        if self.scratch.as_ref().is_none_or(|b| b.len() < need) {
            self.scratch = Some(self.device.alloc(need)?);
        }
        let scratch = self.scratch.as_ref().map_or(Region::EMPTY, |b| Region {
            kind: b.kind(),
            ..Region::host(b.ptr(), b.len())
        });
        if self.cfg.debug {
            eprintln!(
                "dmsc: rank {} start {} {desc}",
                self.rank,
                self.op_name(&labels, &desc)
            );
        }
        self.current = Some(desc);
        let mut ex = Exec::new(
            labels,
            desc,
            self.nranks,
            sched,
            mem,
            scratch,
            self.cfg.chunk_bytes,
            self.cfg.window,
            self.cfg.checksum,
            self.epoch,
        );
        // A panic must not unwind past posted operations: the transport would keep pointers
        // into memory the caller frees. Treat it as a failure like any other.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.drive(&mut ex, started_at)
        }))
        .unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::internal(format!("panic in the engine: {what}")))
        });
        self.epoch = ex.epoch();
        self.current = None;
        if let Err(e) = &r {
            if self.cfg.debug {
                eprintln!(
                    "dmsc: rank {} failed {} after {:.1} us: {e}",
                    self.rank,
                    self.op_name(&ex.labels, &desc),
                    started_at.elapsed().as_secs_f64() * 1e6
                );
            }
            self.transport.cancel_all();
            ex.release(&mut self.pool);
            self.fail(e.clone(), &ex.labels);
        } else if self.cfg.debug {
            eprintln!(
                "dmsc: rank {} end {} in {:.1} us",
                self.rank,
                self.op_name(&ex.labels, &desc),
                started_at.elapsed().as_secs_f64() * 1e6
            );
        }
        r
    }

    /// Every buffer of the operation must be memory this engine's device works on and its
    /// transport accepts.
    fn check_memory(&self, mem: &OpMemory) -> Result<()> {
        let named = [("input", &mem.input), ("output", &mem.output)];
        let groups = mem.group.iter().map(|r| ("group buffer", r));
        for (what, r) in named.into_iter().chain(groups) {
            if r.len == 0 {
                continue;
            }
            if r.kind != self.device.kind() {
                return Err(Error::invalid(format!(
                    "the {what} is {} but this communicator's device ({}) works on {}",
                    r.kind,
                    self.device.name(),
                    self.device.kind()
                )));
            }
            if !self.transport.accepts(r.kind) {
                return Err(Error::invalid(format!(
                    "the {what} is {}, which the {} transport does not accept",
                    r.kind,
                    self.transport.name()
                )));
            }
        }
        Ok(())
    }

    fn op_name(&self, labels: &Labels, desc: &CollDesc) -> String {
        match labels {
            Labels::Collective { seq, .. } => format!("{} #{seq}", desc.kind),
            Labels::P2p { .. } => "send/recv group".to_string(),
        }
    }

    /// Record a failure and tell every peer (unless it came from a peer).
    fn fail(&mut self, e: Error, labels: &Labels) {
        let seq = match labels {
            Labels::Collective { seq, .. } => *seq,
            Labels::P2p { .. } => 0,
        };
        self.fail_seq(e, seq);
    }

    /// [`Engine::fail`] at operation `seq`.
    fn fail_seq(&mut self, e: Error, seq: u64) {
        if let Error::PeerLost { peer, .. } = &e {
            self.live.lost(*peer);
        }
        let msg = match &e {
            Error::Mismatch { ranks, detail, .. } => Some(ControlMsg::Failed {
                seq,
                class: ErrorClass::Mismatch,
                ranks: ranks.iter().map(|&r| r as u32).collect(),
                text: detail.clone(),
            }),
            Error::Aborted { .. } => Some(ControlMsg::Failed {
                seq,
                class: ErrorClass::Aborted,
                ranks: vec![self.rank as u32],
                text: format!("rank {} aborted", self.rank),
            }),
            // Every rank hears of a lost peer from the first rank that noticed.
            Error::PeerLost { peer, detail } if !self.remote_failure => Some(ControlMsg::Failed {
                seq,
                class: ErrorClass::PeerLost,
                ranks: vec![*peer as u32],
                text: detail.clone(),
            }),
            Error::Remote { .. } | Error::Timeout { .. } | Error::PeerLost { .. } => None,
            other => Some(ControlMsg::Failed {
                seq,
                class: ErrorClass::Other,
                ranks: vec![self.rank as u32],
                text: other.to_string(),
            }),
        };
        if let Some(m) = msg {
            let bytes = m.encode();
            for p in (0..self.nranks).filter(|&p| p != self.rank) {
                self.transport.send_control(p, &bytes);
            }
            // Flush the control messages out before returning to the caller.
            let mut sink = Vec::new();
            let _ = self.transport.poll(&mut sink, Duration::ZERO);
        }
        self.set_failed(e);
    }

    fn drive(&mut self, ex: &mut Exec, started_at: Instant) -> Result<()> {
        let deadline = started_at + self.cfg.timeout;
        ex.start(&mut *self.transport, &mut self.pool, &mut *self.device)?;
        let mut last_progress = Instant::now();
        while !ex.finished() {
            if self.abort.is_aborted() {
                return Err(Error::Aborted {
                    detail: format!("{} on rank {} was aborted", self.describe(ex), self.rank),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timeout_error(ex, started_at));
            }
            let wait = if now.duration_since(last_progress) < self.cfg.spin {
                Duration::ZERO
            } else {
                (deadline - now).min(Duration::from_millis(100))
            };
            let mut comps = std::mem::take(&mut self.completions);
            comps.clear();
            let r = self.poll_io(&mut comps, wait);
            let mut progressed = false;
            let mut result = r;
            // The peer whose connection failed, while that is the error.
            let mut lost_link = None;
            for c in comps.drain(..) {
                if result.is_err() {
                    // A peer's report of what went wrong first may be in the same batch:
                    // prefer it to the bare loss of a connection.
                    if let (Some(_), Completion::Control { peer, payload }) = (lost_link, &c) {
                        if let Err(e) = self.on_control(*peer, payload) {
                            result = Err(e);
                            lost_link = None;
                        }
                    }
                    continue;
                }
                match ex.complete(&c, &mut self.pool, &mut *self.device) {
                    Ok(true) => progressed = true,
                    Ok(false) => {
                        if let Completion::PeerFailed { peer, .. } = &c {
                            lost_link = Some(*peer);
                        }
                        result = self.on_other(&c, ex);
                    }
                    Err(e) => result = Err(e),
                }
            }
            self.completions = comps;
            if let (Some(peer), Err(_)) = (lost_link, &result) {
                // A peer that failed first tells everyone why, then exits: wait a little
                // for its reason (or another rank's).
                if let Some(cause) = self.root_cause(peer, Duration::from_millis(100)) {
                    result = Err(cause);
                }
            }
            result?;
            self.check_peers(Some(&*ex))?;
            if progressed {
                ex.pump(&mut *self.transport, &mut self.pool, &mut *self.device)?;
                last_progress = Instant::now();
            } else if wait.is_zero() {
                if self.cfg.spin_yield {
                    // Spinning with more ranks than cores: let another runnable rank on this
                    // core go first, so the peer we wait for can make the progress we need.
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        Ok(())
    }

    /// Wait up to `grace` for a peer's `Failed` control message and return it as an error.
    /// Stops early, after a few more polls to drain messages already arrived, once `peer`'s
    /// control stream has ended (nothing more can come from it), and on abort.
    fn root_cause(&mut self, peer: Rank, grace: Duration) -> Option<Error> {
        let until = Instant::now() + grace;
        let mut comps = Vec::new();
        // After `peer`'s stream ended, keep draining for a while: another rank's report may
        // need several polls to arrive (header and payload complete separately), and on a
        // busy host this rank may have been descheduled while it came in.
        const DRAIN: u32 = 20;
        let mut drain = DRAIN;
        loop {
            comps.clear();
            let wait = if drain < DRAIN {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(5)
            };
            if self.poll_io(&mut comps, wait).is_err() {
                return None;
            }
            for c in comps.drain(..) {
                if let Completion::Control { peer, payload } = c {
                    if let Err(e) = self.on_control(peer, &payload) {
                        return Some(e);
                    }
                }
            }
            if self.live.state(peer) != Some(&State::Live) {
                drain -= 1;
            }
            if drain == 0 || self.abort.is_aborted() || Instant::now() >= until {
                return None;
            }
        }
    }

    fn describe(&self, ex: &Exec) -> String {
        match &ex.labels {
            Labels::Collective { seq, desc } => format!("{desc} #{seq}"),
            Labels::P2p { .. } => "send/recv group".into(),
        }
    }

    /// Completions that are not chunk completions of the current operation.
    fn on_other(&mut self, c: &Completion, ex: &Exec) -> Result<()> {
        match c {
            Completion::BadHeader { peer, got, .. } => Err(self.bad_header(*peer, got, ex)),
            Completion::PeerFailed { peer, error } => Err(Error::PeerLost {
                peer: *peer,
                detail: format!(
                    "during {} on rank {}: {error}",
                    self.describe(ex),
                    self.rank
                ),
            }),
            // Noted by `poll_io`; `check_peers` decides whether the operation still needs it.
            Completion::Closed { .. } => Ok(()),
            Completion::Control { peer, payload } => self.on_control(*peer, payload),
            Completion::Sent { token } | Completion::Received { token, .. } => {
                Err(Error::internal(format!(
                    "completion for token {token:#x} of no operation in progress"
                )))
            }
        }
    }

    fn bad_header(&self, peer: Rank, got: &crate::wire::FrameHeader, ex: &Exec) -> Error {
        if got.crc.is_some() != self.cfg.checksum {
            let (on, off) = if self.cfg.checksum {
                (self.rank, peer)
            } else {
                (peer, self.rank)
            };
            return Error::usage(format!(
                "rank {on} checksums its chunks (DMSC_CHECKSUM=1) and rank {off} does not; DMSC_CHECKSUM must be the same on every rank"
            ));
        }
        match &ex.labels {
            Labels::Collective { seq, desc } => {
                let detail = if got.desc.kind == CollKind::SendRecv {
                    format!(
                        "rank {} called {desc} (#{seq}) while rank {peer} sent a point-to-point message",
                        self.rank
                    )
                } else if got.seq != *seq {
                    format!(
                        "rank {} is at operation #{seq} ({desc}) while rank {peer} sent data of operation #{} ({}); the ranks called different numbers of collectives",
                        self.rank, got.seq, got.desc
                    )
                } else if let Some(d) = desc.difference(&got.desc) {
                    format!(
                        "{d}: rank {} called {desc}, rank {peer} called {}",
                        self.rank, got.desc
                    )
                } else {
                    format!(
                        "rank {peer} sent a message of {} bytes (message {}, chunk {}) where rank {} expected a different layout; per-rank counts or displacements disagree",
                        got.len, got.msg, got.chunk, self.rank
                    )
                };
                Error::Mismatch {
                    seq: *seq,
                    ranks: sorted(self.rank, peer),
                    detail,
                }
            }
            Labels::P2p { .. } => {
                let detail = if got.desc.kind != CollKind::SendRecv {
                    format!(
                        "rank {} posted a receive from rank {peer}, which sent data of collective #{} ({})",
                        self.rank, got.seq, got.desc
                    )
                } else {
                    format!(
                        "rank {peer} sent message #{} with tag {} and {} bytes ({}), which does not match rank {}'s receive (same order, tag, size and type are required)",
                        got.seq, got.aux, got.len, got.desc.dtype, self.rank
                    )
                };
                Error::Mismatch {
                    seq: 0,
                    ranks: sorted(self.rank, peer),
                    detail,
                }
            }
        }
    }

    fn on_control(&mut self, peer: Rank, payload: &[u8]) -> Result<()> {
        match ControlMsg::decode(payload)? {
            ControlMsg::Failed {
                seq,
                class,
                ranks,
                text,
            } => {
                self.remote_failure = true;
                Err(match class {
                    ErrorClass::Mismatch => Error::Mismatch {
                        seq,
                        ranks: ranks.into_iter().map(|r| r as usize).collect(),
                        detail: text,
                    },
                    ErrorClass::Aborted => Error::Remote {
                        from: peer,
                        detail: format!("rank {peer} aborted the communicator"),
                    },
                    ErrorClass::Other => Error::Remote {
                        from: peer,
                        detail: text,
                    },
                    ErrorClass::PeerLost => Error::PeerLost {
                        peer: ranks.first().map_or(peer, |&r| r as usize),
                        detail: format!("{text} (reported by rank {peer})"),
                    },
                })
            }
            ControlMsg::Heartbeat => Ok(()),
            ControlMsg::Bye => {
                self.live.left(peer);
                Ok(())
            }
            ControlMsg::StatusQuery => {
                let reply = ControlMsg::Status {
                    started: self.started,
                    completed: self.completed,
                    current: self.current,
                };
                self.transport.send_control(peer, &reply.encode());
                Ok(())
            }
            ControlMsg::Status {
                started,
                completed,
                current,
            } => {
                // One entry per peer: a repeated or unrequested reply replaces the last one,
                // so a chatty peer cannot grow this list.
                let entry = (peer, started, completed, current);
                match self.statuses.iter_mut().find(|s| s.0 == peer) {
                    Some(s) => *s = entry,
                    None => self.statuses.push(entry),
                }
                Ok(())
            }
        }
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

    /// Record an error found while idle (the first one only) and tell the peers.
    fn fail_idle(&mut self, e: Error) {
        if self.failed.is_none() {
            self.fail_seq(e, self.completed);
        }
    }

    /// Build the timeout error: ask every peer where it is and name the ones not in this
    /// operation.
    fn timeout_error(&mut self, ex: &Exec, started_at: Instant) -> Error {
        let (seq, op) = match &ex.labels {
            Labels::Collective { seq, desc } => (*seq, format!("{desc} #{seq}")),
            Labels::P2p { .. } => (0, "send/recv group".to_string()),
        };
        self.statuses.clear();
        let q = ControlMsg::StatusQuery.encode();
        for p in (0..self.nranks).filter(|&p| p != self.rank) {
            self.transport.send_control(p, &q);
        }
        let grace = Instant::now() + self.cfg.status_grace;
        let mut comps = Vec::new();
        let remote = self.remote_failure;
        while self.statuses.len() + 1 < self.nranks
            && Instant::now() < grace
            && !self.abort.is_aborted()
        {
            comps.clear();
            if self.poll_io(&mut comps, Duration::from_millis(10)).is_err() {
                break;
            }
            for c in comps.drain(..) {
                if let Completion::Control { peer, payload } = c {
                    let _ = self.on_control(peer, &payload);
                }
            }
        }
        // Errors met while gathering statuses are not this timeout's.
        self.remote_failure = remote;
        let now = Instant::now();
        let waiting = ex.waiting_on();
        let mut missing = Vec::new();
        let mut lines = Vec::new();
        for p in (0..self.nranks).filter(|&p| p != self.rank) {
            match self.statuses.iter().find(|s| s.0 == p) {
                None => {
                    missing.push(p);
                    lines.push(format!(
                        "rank {p}: no answer ({})",
                        self.live.describe(p, now)
                    ));
                }
                Some(&(_, started, completed, current)) => {
                    let in_this = seq != 0 && started == seq && current.is_some();
                    if seq != 0 && !in_this {
                        missing.push(p);
                    }
                    lines.push(match current {
                        Some(d) => format!("rank {p}: in {d} #{started}"),
                        None => format!("rank {p}: idle after #{completed}"),
                    });
                }
            }
        }
        if seq == 0 {
            missing = waiting.clone();
        }
        Error::Timeout {
            op: format!("{op} on rank {}", self.rank),
            waited_s: started_at.elapsed().as_secs_f64(),
            missing,
            detail: format!(
                "rank {} is at {} waiting on rank(s) {:?}; {}",
                self.rank,
                ex.where_am_i(),
                waiting,
                lines.join("; ")
            ),
        }
    }
}

fn sorted(a: Rank, b: Rank) -> Vec<Rank> {
    if a < b {
        vec![a, b]
    } else {
        vec![b, a]
    }
}
