//! The staging thread of one communicator's device calls: the stream ordering
//! ([`StreamOrder`]) over a [`DeviceMemory`], and the pipeline of a call's pieces
//! ([`Staging`]): each piece's copy from the device buffers to their pinned twins, its host
//! collective run through the engine's executor as any host job, and its copy back (see the
//! module documentation of `device_call`). Where every rank agreed to use CUDA IPC, the
//! calls it covers run device to device instead (`ipc_and_run`, see `ipc_call`), on the same
//! thread and in the same order, with their host exchanges as the executor's jobs. Where every
//! rank agreed that its engine runs on the device memory itself (`agreement`: the transport
//! carries it, as RDMA with dma-bufs does, and the engine has the device's kernels), a call
//! is one engine job on the device buffers (`direct_and_run`), ordered the same way.
//!
//! One thread per communicator runs the device calls in the order they were submitted, so
//! they finish in order, as [`StreamOrder`] requires. Host calls wait until every device call
//! submitted before them has handed its job to the executor ([`DeviceCalls::drain`]), so all
//! ranks see the same order of jobs. Waits never spin forever: a few yields, then sleeps of
//! up to a millisecond, and every wait has the communicator's deadline.

use super::agreement::Path;
use super::ipc_call::{peer_reads, IpcCall, Moves, Op, Src};
use super::pieces::{part, pieces};
use super::staged::{stage, SelfCopy, Staged, Twin};
use crate::call::Call;
use dmsc_core::engine::executor::{Executor, Job, JobSlot};
use dmsc_core::engine::MemKind;
use dmsc_core::{DataType, Error, ReduceOp, Result};
use dmsc_transports::cuda::device_memory::DeviceMemory;
use dmsc_transports::cuda::ipc_memory::{IpcMemory, MappedPeer};
use dmsc_transports::cuda::staging::{Staging, Step};
use dmsc_transports::cuda::stream_order::{StreamOrder, Ticket};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How the engine job of a call is built: from the call on memory of the given kind (host
/// twins of a staged call, or the device buffers themselves on the direct path), the sends
/// to this rank itself (copied here once the twins hold the data) and the engine job, if any.
pub(crate) type BuildJob<'a> = &'a dyn Fn(&Call, MemKind) -> Result<(Vec<SelfCopy>, Option<Job>)>;

/// A communicator's device calls, whatever the device.
pub(crate) trait DeviceCalls: Send + Sync {
    /// The CUDA device ordinal served.
    fn ordinal(&self) -> u32;

    /// Order `call` after the work queued on the caller's stream `stream` (raw handle, 0 for
    /// the default stream), and the stream's later work after it; queue it for the staging
    /// thread and return its slot at once.
    ///
    /// # Safety
    /// `stream` is 0 or a live stream of the device; the call's buffers stay valid until
    /// the slot holds a result.
    unsafe fn submit(
        &self,
        call: &Call,
        stream: usize,
        build: BuildJob<'_>,
    ) -> Result<Arc<JobSlot>>;

    /// Wait until every device call submitted so far has handed its job to the executor
    /// (or failed), so a host call queued next runs after them.
    fn drain(&self);
}

/// Settings of the staging.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StagingSettings {
    /// Bytes per copy.
    pub chunk: usize,
    /// Copies in flight per buffer.
    pub slots: usize,
    /// The deadline of each wait.
    pub timeout: Duration,
}

struct Work<D: DeviceMemory> {
    ticket: Ticket<D::Event>,
    what: What<D>,
    slot: Arc<JobSlot>,
}

/// How a call runs: staged through host twins, device to device over CUDA IPC, or by the
/// engine on the device buffers.
enum What<D: DeviceMemory> {
    Staged {
        staged: Staged<D::Pinned>,
        self_copies: Vec<SelfCopy>,
        parts: Parts,
    },
    Ipc(Box<IpcCall>),
    Direct(Option<Job>),
}

/// What the submitting threads and the staging thread share.
struct Shared<D: DeviceMemory> {
    /// The ordering and dmsc's own stream.
    order: Mutex<(StreamOrder<D>, D::Stream)>,
    /// Device calls submitted whose job the executor does not have yet.
    pending: Mutex<usize>,
    drained: Condvar,
    /// The communicator's asynchronous error (shared with the engine).
    failure: Arc<Mutex<Option<Error>>>,
    settings: StagingSettings,
}

impl<D: DeviceMemory> Shared<D> {
    fn done_pending(&self) {
        let mut p = lock(&self.pending);
        *p = p.saturating_sub(1);
        self.drained.notify_all();
    }
}

/// The staging thread over device `D`.
pub(crate) struct Stager<D: DeviceMemory> {
    ordinal: u32,
    /// The path every rank agreed on when the device was attached (see `agreement`).
    path: Path,
    /// This rank and the number of ranks.
    me: usize,
    ranks: usize,
    shared: Arc<Shared<D>>,
    tx: Mutex<Option<mpsc::Sender<Work<D>>>>,
    worker: Option<JoinHandle<()>>,
}

impl<D> Stager<D>
where
    D: IpcMemory + 'static,
    D::Stream: Send,
    D::Event: Send,
    D::Gate: Send,
{
    /// Start the staging thread of device `ordinal` over `dev`, with jobs run by `exec`, for
    /// rank `rank` of `ranks`, whose device calls take `path`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        mut dev: D,
        ordinal: u32,
        exec: Arc<Executor>,
        failure: Arc<Mutex<Option<Error>>>,
        settings: StagingSettings,
        rank: usize,
        ranks: usize,
        path: Path,
    ) -> Result<Stager<D>> {
        dev.bind()?;
        let own = dev.create_stream()?;
        let order = StreamOrder::new(dev, own)?;
        let shared = Arc::new(Shared {
            order: Mutex::new((order, own)),
            pending: Mutex::new(0),
            drained: Condvar::new(),
            failure,
            settings,
        });
        let (tx, rx) = mpsc::channel::<Work<D>>();
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name(format!("dmsc-staging-{rank}"))
            .spawn(move || {
                if let Err(e) = lock(&s.order).0.ops().bind() {
                    log::error!("the staging thread cannot use CUDA device {ordinal}: {e}");
                }
                for w in rx {
                    run(&s, &exec, w);
                }
            })
            .map_err(|e| Error::io("starting the communicator's staging thread", &e))?;
        Ok(Stager {
            ordinal,
            path,
            me: rank,
            ranks,
            shared,
            tx: Mutex::new(Some(tx)),
            worker: Some(worker),
        })
    }
}

impl<D> DeviceCalls for Stager<D>
where
    D: IpcMemory + 'static,
    D::Stream: Send,
    D::Event: Send,
    D::Gate: Send,
{
    fn ordinal(&self) -> u32 {
        self.ordinal
    }

    unsafe fn submit(
        &self,
        call: &Call,
        stream: usize,
        build: BuildJob<'_>,
    ) -> Result<Arc<JobSlot>> {
        if let Some(e) = lock(&self.shared.failure).clone() {
            return Err(e);
        }
        // One lock from the ticket to the queue: the staging thread gets the calls in the
        // order of their sequence numbers.
        let mut g = lock(&self.shared.order);
        let order = &mut g.0;
        order.ops().bind()?;
        let (me, n) = (self.me, self.ranks);
        let moves = match self.path {
            Path::Ipc => Moves::of(call, me, n, order.ops().reduces_on_stream()),
            Path::Direct | Path::Staged => None,
        };
        // The direct path takes every call without sends to this rank itself (those are
        // copied by the host, so they stage; a group is one job on either path, so the ranks'
        // jobs still match).
        let direct = match self.path {
            Path::Direct => match build(call, call.memory())? {
                (copies, job) if copies.is_empty() => Some(job),
                _ => None,
            },
            Path::Ipc | Path::Staged => None,
        };
        let what = match (moves, direct) {
            (Some(moves), _) => {
                let jobs = |c: &Call| build(c, MemKind::Host).map(|(_, j)| j);
                What::Ipc(Box::new(IpcCall::new(moves, me, n, &jobs)?))
            }
            (None, Some(job)) => What::Direct(job),
            (None, None) => {
                let staged = stage(call, |n| order.ops().alloc_pinned(n))?;
                let mut self_copies = Vec::new();
                let mut parts = Vec::new();
                for p in pieces(&staged.call, &staged.twins, self.shared.settings.chunk) {
                    let (copies, job) = build(&p.call, MemKind::Host)?;
                    self_copies.extend(copies);
                    parts.push((p.bytes, job));
                }
                What::Staged {
                    staged,
                    self_copies,
                    parts,
                }
            }
        };
        // SAFETY: the caller's contract: 0 or a live stream of this device.
        let caller = unsafe { order.ops().caller_stream(stream) };
        let ticket = order.submit(caller)?;
        let slot = Arc::new(JobSlot::default());
        *lock(&self.shared.pending) += 1;
        let work = Work {
            ticket,
            what,
            slot: slot.clone(),
        };
        let sent = match lock(&self.tx).as_ref() {
            Some(tx) => tx.send(work).map_err(|e| e.0),
            None => Err(work),
        };
        if let Err(work) = sent {
            // The staging thread is gone: release the caller's stream, nothing was copied.
            let _ = order.fail(work.ticket);
            drop(g);
            self.shared.done_pending();
            return Err(Error::internal(
                "the communicator's staging thread has stopped; device calls cannot run",
            ));
        }
        Ok(slot)
    }

    fn drain(&self) {
        let mut p = lock(&self.shared.pending);
        while *p > 0 {
            p = self
                .shared
                .drained
                .wait(p)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl<D: DeviceMemory> Drop for Stager<D> {
    fn drop(&mut self) {
        lock(&self.tx).take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Polls without spinning forever: a few yields, then sleeps doubling up to 1 ms, until the
/// deadline.
struct Backoff {
    start: Instant,
    timeout: Duration,
    idle: u32,
}

impl Backoff {
    fn new(timeout: Duration) -> Backoff {
        Backoff {
            start: Instant::now(),
            timeout,
            idle: 0,
        }
    }

    /// Something moved: the deadline counts from now again.
    fn progressed(&mut self) {
        self.start = Instant::now();
        self.idle = 0;
    }

    fn snooze(&mut self, what: &str) -> Result<()> {
        let waited = self.start.elapsed();
        if waited > self.timeout {
            return Err(Error::Timeout {
                op: what.to_string(),
                waited_s: waited.as_secs_f64(),
                missing: vec![],
                detail: "the device did not complete the copies in time".into(),
            });
        }
        self.idle += 1;
        if self.idle < 32 {
            std::thread::yield_now();
        } else {
            let us = 10u64 << (self.idle - 32).min(7);
            std::thread::sleep(Duration::from_micros(us.min(1000)));
        }
        Ok(())
    }
}

/// The pieces of a call still to run on the network: each one's bytes of the twins, and its
/// host job (none for a piece with nothing to send, e.g. on one rank).
type Parts = Vec<(Range<usize>, Option<Job>)>;

/// Queue on dmsc's stream `own` the copies of piece bytes `r` of every twin in `twins`
/// (device to host when `to_host`, else back).
fn queue_copies<D: DeviceMemory>(
    ops: &mut D,
    own: D::Stream,
    twins: &[Twin],
    r: &Range<usize>,
    to_host: bool,
) -> Result<()> {
    for t in twins {
        let p = part(t, r);
        if p.is_empty() {
            continue;
        }
        let (dev, host) = (t.dev + p.start, t.host.wrapping_add(p.start));
        // SAFETY: the twin and the device buffer hold `t.len` bytes and stay valid until this
        // call's copies have run (the caller's contract; the twins are freed only after the
        // stream has run them, or leaked when it does not drain).
        unsafe {
            if to_host {
                ops.copy_to_host(own, host, dev, p.len())?
            } else {
                ops.copy_to_device(own, dev, host, p.len())?
            }
        }
    }
    Ok(())
}

/// Everything of one call between its start and its finish: the pipeline of its pieces.
/// Stage A of piece `k` ([`Staging`], one "byte" per piece) copies its bytes of every twin
/// device-to-host on dmsc's stream; stage B hands its host job to the executor once that copy
/// has run, and, once the job is done, queues the copy of its written bytes back. So the
/// copy of piece `k + 1` to the host runs while piece `k` is on the network, and the copy
/// back of piece `k` while piece `k + 1` is. Jobs handed to the executor go to `running`,
/// so a failure waits for them before the twins are freed.
#[allow(clippy::too_many_arguments)]
fn stage_and_run<D: DeviceMemory>(
    shared: &Shared<D>,
    exec: &Executor,
    ticket: &mut Ticket<D::Event>,
    staged: &Staged<D::Pinned>,
    self_copies: &[SelfCopy],
    parts: Parts,
    handed: &mut bool,
    running: &mut Vec<Arc<JobSlot>>,
) -> Result<()> {
    let StagingSettings { slots, timeout, .. } = shared.settings;
    let events = {
        let mut g = lock(&shared.order);
        // dmsc's stream now waits for the caller's earlier work; the copies queued on it
        // below come after that work.
        g.0.poll_start(ticket)?;
        (0..slots)
            .map(|_| g.0.ops().create_event())
            .collect::<Result<Vec<_>>>()?
    };
    let n = parts.len();
    let (bytes, mut jobs): (Vec<Range<usize>>, Vec<Option<Job>>) = parts.into_iter().unzip();
    let written: Vec<Twin> = staged.twins.iter().copied().filter(|t| t.written).collect();
    let mut st = Staging::new(n, 1, slots)?;
    let mut copying = vec![false; slots];
    // Pieces on the network, in piece order: (slot, piece, job).
    let mut sending: VecDeque<(usize, usize, Option<Arc<JobSlot>>)> = VecDeque::new();
    let mut backoff = Backoff::new(timeout);
    while !st.is_done() {
        let mut progressed = false;
        {
            let mut g = lock(&shared.order);
            let own = g.1;
            let ops = g.0.ops();
            while let Some(step) = st.poll() {
                progressed = true;
                match step {
                    Step::A { range, slot } => {
                        queue_copies(ops, own, &staged.twins, &bytes[range.start], true)?;
                        ops.record(&events[slot], own)?;
                        copying[slot] = true;
                    }
                    Step::B { range, slot } => {
                        let k = range.start;
                        if k == 0 {
                            // Sends to this rank itself come from a call in one piece: every
                            // twin holds its device data now.
                            for c in self_copies {
                                // SAFETY: both are twins of this call (pinned, `len` bytes,
                                // alive); `copy` allows the overlap a send and receive of one
                                // buffer would have.
                                unsafe { std::ptr::copy(c.src, c.dst, c.len) };
                            }
                        }
                        let job = jobs[k].take().map(|j| {
                            // SAFETY: the job's memory is the twins, alive until its slot
                            // holds a result (waited for here, or after a failure in `run`).
                            unsafe { exec.submit(j) }
                        });
                        if let Some(j) = &job {
                            running.push(j.clone());
                        }
                        if k + 1 == n {
                            *handed = true;
                            shared.done_pending();
                        }
                        sending.push_back((slot, k, job));
                    }
                }
            }
            for (slot, busy) in copying.iter_mut().enumerate() {
                if *busy && ops.query(&events[slot])? {
                    *busy = false;
                    st.a_done(slot)?;
                    progressed = true;
                }
            }
            while let Some((slot, k, job)) = sending.front() {
                match job.as_ref().map(|j| j.peek()) {
                    Some(None) => break,
                    Some(Some(r)) => r?,
                    None => {}
                }
                queue_copies(ops, own, &written, &bytes[*k], false)?;
                st.b_done(*slot)?;
                sending.pop_front();
                progressed = true;
            }
        }
        if progressed {
            backoff.progressed();
        } else {
            backoff.snooze("staging a device call through host memory")?;
        }
    }
    if n == 0 {
        *handed = true;
        shared.done_pending();
    }
    // The request completes once the device holds the results: wait for the copies back.
    {
        let mut g = lock(&shared.order);
        let own = g.1;
        g.0.ops().record(&events[0], own)?;
    }
    let mut backoff = Backoff::new(timeout);
    while !lock(&shared.order).0.ops().query(&events[0])? {
        backoff.snooze("copying host twins back to the device buffers")?;
    }
    Ok(())
}

/// Wait (bounded) until dmsc's stream has run everything queued on it; false if it did not.
fn quiesce<D: DeviceMemory>(shared: &Shared<D>) -> bool {
    let Ok(e) = (|| {
        let mut g = lock(&shared.order);
        let own = g.1;
        let e = g.0.ops().create_event()?;
        g.0.ops().record(&e, own)?;
        Ok::<_, Error>(e)
    })() else {
        return false;
    };
    let mut backoff = Backoff::new(shared.settings.timeout);
    loop {
        match lock(&shared.order).0.ops().query(&e) {
            Ok(true) => return true,
            Ok(false) => {}
            Err(_) => return false,
        }
        if backoff.snooze("draining the staging stream").is_err() {
            return false;
        }
    }
}

/// Wait (bounded by the communicator's deadline) until dmsc's stream has run what is queued
/// on it now.
fn wait_own_stream<D: DeviceMemory>(shared: &Shared<D>, what: &str) -> Result<()> {
    let e = {
        let mut g = lock(&shared.order);
        let own = g.1;
        let e = g.0.ops().create_event()?;
        g.0.ops().record(&e, own)?;
        e
    };
    let mut backoff = Backoff::new(shared.settings.timeout);
    while !lock(&shared.order).0.ops().query(&e)? {
        backoff.snooze(what)?;
    }
    Ok(())
}

/// Hand `job` (if any) to the executor and wait for it, within the deadline; `running` gets
/// its slot, so a failure waits for it before its buffers are freed.
fn run_job(
    shared: &Shared<impl DeviceMemory>,
    exec: &Executor,
    job: Option<Job>,
    running: &mut Vec<Arc<JobSlot>>,
) -> Result<()> {
    let Some(job) = job else { return Ok(()) };
    // SAFETY: the job's memory is the IPC call's boxes, alive until its slot holds a result
    // (waited for here, or after a failure in `run`).
    let slot = unsafe { exec.submit(job) };
    running.push(slot.clone());
    let deadline = Instant::now() + shared.settings.timeout;
    slot.wait_until(Some(deadline)).unwrap_or_else(|| {
        Err(Error::Timeout {
            op: "the host exchange of a CUDA IPC call".into(),
            waited_s: shared.settings.timeout.as_secs_f64(),
            missing: vec![],
            detail: "a peer did not join the exchange in time".into(),
        })
    })
}

/// Order dmsc's stream after the caller's earlier work (the ticket's start) and wait until it
/// has passed it: this rank's buffers then hold the caller's data, for `what` to read.
fn after_callers_work<D: DeviceMemory>(
    shared: &Shared<D>,
    ticket: &mut Ticket<D::Event>,
    what: &str,
) -> Result<()> {
    lock(&shared.order).0.poll_start(ticket)?;
    wait_own_stream(
        shared,
        &format!("waiting for the caller's stream before {what}"),
    )
}

/// A call the engine runs on the device buffers themselves (the transport carries device
/// memory, the engine has the device's kernels): once dmsc's stream has passed the caller's
/// earlier work, the job goes to the executor as any host job, and the call is done when it
/// is (the device's kernels wait for their own work before they return, and the transport
/// completes a frame only once its bytes have landed).
fn direct_and_run<D: DeviceMemory>(
    shared: &Shared<D>,
    exec: &Executor,
    ticket: &mut Ticket<D::Event>,
    job: Option<Job>,
    handed: &mut bool,
) -> Result<()> {
    after_callers_work(shared, ticket, "a call on device buffers")?;
    let Some(job) = job else {
        return Ok(());
    };
    // SAFETY: the job's memory is the caller's device buffers, which the caller keeps until
    // the call's slot holds a result; that result is given only after this job's, waited
    // for below without a deadline of its own (the engine bounds the job by the
    // communicator's deadline, and the executor always fills the slot), so neither the
    // caller's stream nor the buffers are released while the engine may still use them.
    let slot = unsafe { exec.submit(job) };
    *handed = true;
    shared.done_pending();
    slot.wait_until(None)
        .unwrap_or_else(|| Err(Error::internal("a device call's engine job never finished")))
}

/// A call over CUDA IPC (see `ipc_call`): wait for the caller's earlier work, exchange the
/// exports, then per phase run the device operations on this rank's and the peers' buffers
/// and exchange the statuses (the barrier after which no peer reads what the phase read).
fn ipc_and_run<D: IpcMemory>(
    shared: &Shared<D>,
    exec: &Executor,
    ticket: &mut Ticket<D::Event>,
    c: &mut IpcCall,
    handed: &mut bool,
    running: &mut Vec<Arc<JobSlot>>,
) -> Result<()> {
    after_callers_work(shared, ticket, "a CUDA IPC call")?;
    let exports = {
        let mut g = lock(&shared.order);
        let ops = g.0.ops();
        c.moves
            .exports(c.me, c.ranks)
            .into_iter()
            .map(|(ptr, len)| ops.export(ptr, len))
            .collect::<Result<Vec<_>>>()
    };
    c.set_exports(&exports);
    let mut jobs = std::mem::take(&mut c.jobs).into_iter();
    run_job(shared, exec, jobs.next().flatten(), running)?;
    exports?;
    // Every rank sees the same messages: all stop here alike.
    c.exports_failed()?;
    let phases = c.moves.phases(c.me, c.ranks);
    let reads = peer_reads(&phases);
    // A failure from here on is this rank's: it is told to the peers in the status
    // exchanges, which every rank runs once the first exchange has succeeded everywhere.
    let mut mapped = Vec::new();
    let mut failed: Option<Error> = None;
    let wanted = c.peer_exports(&reads).unwrap_or_else(|e| {
        failed = Some(e);
        Vec::new()
    });
    let opened = (|| {
        let mut g = lock(&shared.order);
        let ops = g.0.ops();
        let mut at = Vec::new();
        for (&(r, k, need), e) in reads.iter().zip(&wanted) {
            let m = ops.open_peer(e).map_err(|err| {
                Error::usage(format!(
                    "CUDA IPC {}: opening rank {r}'s buffer failed: {err}",
                    c.kind
                ))
            })?;
            if need > MappedPeer::len(&m) {
                return Err(Error::usage(format!(
                    "CUDA IPC {}: this rank reads {need} bytes of rank {r}'s buffer, which \
                     holds {} bytes (do all ranks pass the same count?)",
                    c.kind,
                    MappedPeer::len(&m)
                )));
            }
            at.push(((r, k), MappedPeer::addr(&m)));
            mapped.push(m);
        }
        Ok(at)
    })();
    let at = match opened {
        Ok(at) => at,
        Err(e) => {
            failed.get_or_insert(e);
            Vec::new()
        }
    };
    let addr = |s: Src| -> usize {
        match s {
            Src::Own(a) => a,
            Src::Peer {
                rank,
                export,
                offset,
            } => at
                .iter()
                .find(|(k, _)| *k == (rank, export))
                .map_or(0, |(_, a)| a + offset),
        }
    };
    let reduce = match c.moves {
        Moves::Reduce { dtype, op, .. } => Some((dtype, op)),
        _ => None,
    };
    run_phases(
        shared, exec, c, &phases, &addr, reduce, jobs, failed, mapped, handed, running,
    )
}

/// The phases of an IPC call after its exchange: each phase's operations queued on dmsc's
/// stream (skipped once anything failed) and waited for, then its status exchange.
#[allow(clippy::too_many_arguments)]
fn run_phases<D: IpcMemory>(
    shared: &Shared<D>,
    exec: &Executor,
    c: &mut IpcCall,
    phases: &[Vec<Op>],
    addr: &dyn Fn(Src) -> usize,
    reduce: Option<(DataType, ReduceOp)>,
    mut jobs: impl Iterator<Item = Option<Job>>,
    mut failed: Option<Error>,
    mapped: Vec<D::Mapped>,
    handed: &mut bool,
    running: &mut Vec<Arc<JobSlot>>,
) -> Result<()> {
    let mut mapped = Some(mapped);
    let mut queued_any = false;
    for (p, ops_of_phase) in phases.iter().enumerate() {
        if failed.is_none() {
            queued_any |= !ops_of_phase.is_empty();
            let r = (|| {
                let mut g = lock(&shared.order);
                let own = g.1;
                let dev = g.0.ops();
                for op in ops_of_phase {
                    // SAFETY: every address is this rank's buffer of the call (valid until
                    // it completes, the caller's contract) or a peer's exported buffer mapped
                    // above and checked to hold the bytes read; the peers keep theirs until
                    // this phase's status exchange, which they reach only after this rank's
                    // operations have run.
                    unsafe {
                        match *op {
                            Op::Copy { dst, src, len } => {
                                dev.copy_device_to_device(own, dst, addr(src), len)?
                            }
                            Op::Reduce { dst, a, b, len } => {
                                let (dtype, o) = reduce.ok_or_else(|| {
                                    Error::internal("a CUDA IPC reduction without operator")
                                })?;
                                dev.reduce_on_stream(own, dtype, o, dst, addr(a), addr(b), len)?
                            }
                            Op::Divide { dst, len } => {
                                let (dtype, _) = reduce.ok_or_else(|| {
                                    Error::internal("a CUDA IPC average without type")
                                })?;
                                dev.divide_on_stream(own, dtype, dst, len, c.ranks)?
                            }
                        }
                    }
                }
                drop(g);
                wait_own_stream(shared, "running device operations over CUDA IPC")
            })();
            failed = r.err();
        }
        c.statuses[p].0[0] = u8::from(failed.is_some());
        if p + 1 == phases.len() {
            // The last exchange releases the peers, whose users may then free the buffers
            // this rank mapped: unmap them first (CUDA: an exported region must not be freed
            // while an importer still has it open), once nothing queued reads them.
            release_mappings(shared, &mut mapped, failed.is_some() && queued_any);
        }
        let exchanged = run_job(shared, exec, jobs.next().flatten(), running);
        if p + 1 == phases.len() {
            *handed = true;
            shared.done_pending();
        }
        if let Err(e) = exchanged {
            failed.get_or_insert(e);
            break;
        }
        if failed.is_none() {
            failed = c.peers_failed(p).err();
        }
    }
    release_mappings(shared, &mut mapped, failed.is_some() && queued_any);
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Unmap the peers' buffers, once nothing queued on dmsc's stream reads them: at once when
/// the stream drained (`must_drain` false: every queued operation ran), else after draining
/// it; a stream that does not drain keeps them mapped for good (leaked, never unmapped under
/// a running copy). Does nothing the second time.
fn release_mappings<D: IpcMemory>(
    shared: &Shared<D>,
    mapped: &mut Option<Vec<D::Mapped>>,
    must_drain: bool,
) {
    let Some(m) = mapped.take() else {
        return;
    };
    if must_drain && !quiesce(shared) {
        log::error!("the staging stream did not drain after a failed CUDA IPC call; leaking");
        std::mem::forget(m);
    }
}

/// Run one call on the staging thread and deliver its result.
fn run<D: IpcMemory>(shared: &Shared<D>, exec: &Executor, w: Work<D>) {
    let Work {
        mut ticket,
        what,
        slot,
    } = w;
    let mut handed = false;
    let mut running = Vec::new();
    let (r, mut keep) = match what {
        What::Staged {
            staged,
            self_copies,
            parts,
        } => {
            let r = stage_and_run(
                shared,
                exec,
                &mut ticket,
                &staged,
                &self_copies,
                parts,
                &mut handed,
                &mut running,
            );
            (r, Keep::Staged(staged))
        }
        What::Ipc(mut c) => {
            let r = ipc_and_run(shared, exec, &mut ticket, &mut c, &mut handed, &mut running);
            (r, Keep::Ipc(c))
        }
        What::Direct(job) => {
            let r = direct_and_run(shared, exec, &mut ticket, job, &mut handed);
            (r, Keep::Nothing)
        }
    };
    if !handed {
        shared.done_pending();
    }
    let r = match r {
        Ok(()) => lock(&shared.order).0.finish(ticket).map(drop),
        Err(e) => {
            // Release the caller's stream whatever happened; the error is the call's.
            let _ = lock(&shared.order).0.fail(ticket);
            Err(e)
        }
    };
    if let Err(e) = &r {
        let mut f = lock(&shared.failure);
        if f.is_none() {
            *f = Some(e.clone());
        }
        drop(f);
        // Jobs handed to the executor may still use the host buffers, and copies may still
        // be queued on them: free them only once both are done.
        let deadline = Instant::now() + shared.settings.timeout;
        let jobs_done = running
            .iter()
            .all(|j| j.wait_until(Some(deadline)).is_some());
        if !jobs_done || !quiesce(shared) {
            log::error!(
                "the staging stream or the host jobs did not drain after a failure; the call's \
                 host buffers are leaked"
            );
            keep = match keep {
                Keep::Staged(mut s) => {
                    std::mem::forget(std::mem::take(&mut s.pinned));
                    Keep::Staged(s)
                }
                Keep::Ipc(c) => {
                    std::mem::forget(c);
                    Keep::Nothing
                }
                Keep::Nothing => Keep::Nothing,
            };
        }
    }
    drop(keep);
    slot.finish(r);
}

/// The host memory of a call, kept until its jobs and copies are done.
enum Keep<P> {
    Staged(Staged<P>),
    Ipc(Box<IpcCall>),
    Nothing,
}
