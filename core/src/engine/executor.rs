//! The progress thread of a communicator and its job queue, shared by every front end
//! (blocking and non-blocking Rust calls, the C ABI's async calls, Python's `async_op`).
//!
//! An [`Executor`] owns the [`Engine`]. Jobs run in submission order, which is the order
//! every rank must call them in. A blocking call runs its job on the calling thread when
//! nothing is queued or running (no thread hand-off on the latency path); otherwise it
//! queues behind the others and waits. A thread waiting for a request ([`Helper::wait`])
//! may likewise run queued jobs itself, its own and those queued ahead of it, in order. One
//! thread at a time holds the turn to run a job (`running` in the queue), whichever thread
//! it is. While idle, the progress thread serves the engine
//! every [`EngineConfig::idle_period`](super::EngineConfig::idle_period): heartbeats go out,
//! a lost peer or a peer's error is recorded so that the next call fails at once, and peers'
//! status queries are answered, which is what lets a timed-out rank name the ranks that
//! never arrived.
//!
//! Every job's [`JobSlot`] gets a result, whatever happens (a panic in the engine included),
//! so a waiter never hangs.

use super::{Engine, OpMemory};
use crate::error::{Error, Result};
use crate::plan::P2p;
use crate::schedule::Schedule;
use crate::sync::MutexGuard;
use crate::sync::{Condvar, Mutex};
use crate::types::{CollDesc, DataType};
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One unit of work for the engine.
pub enum Job {
    /// A collective.
    Collective {
        /// The call.
        desc: CollDesc,
        /// This rank's schedule for it (shared: a front end may reuse it for the same call).
        sched: Arc<Schedule>,
        /// Its buffers.
        mem: OpMemory,
        /// This rank's factor of a `PreMulSum` (then `sched` is out of place): the input is
        /// multiplied when the job runs ([`Engine::run_collective_premul`]).
        premul: Option<f64>,
    },
    /// A group of point-to-point operations.
    P2p {
        /// Element type of every message.
        dtype: DataType,
        /// The sends and receives, in call order.
        ops: Vec<P2p>,
        /// Their tags.
        tags: Vec<u32>,
        /// The group's schedule.
        sched: Arc<Schedule>,
        /// Its buffers.
        mem: OpMemory,
    },
}

impl Job {
    /// Run the job on `e`.
    ///
    /// # Safety
    /// The job's memory regions must stay valid, and not be accessed by anyone else, until
    /// this returns (as for [`Engine::run_collective`]).
    unsafe fn run(self, e: &mut Engine) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe {
            match self {
                Job::Collective {
                    desc,
                    sched,
                    mem,
                    premul,
                } => match premul {
                    None => e.run_collective(desc, sched, mem),
                    Some(f) => e.run_collective_premul(desc, sched, mem, f),
                },
                Job::P2p {
                    dtype,
                    ops,
                    tags,
                    sched,
                    mem,
                } => e.run_p2p(dtype, &ops, &tags, sched, mem),
            }
        }
    }
}

/// Where a queued job leaves its result.
#[derive(Default)]
pub struct JobSlot {
    result: Mutex<Option<Result<()>>>,
    cond: Condvar,
}

impl JobSlot {
    /// A slot that already holds `r` (a call rejected before it was queued).
    pub fn finished(r: Result<()>) -> Arc<JobSlot> {
        let s = Arc::new(JobSlot::default());
        s.finish(r);
        s
    }

    /// Deliver the job's result and wake its waiters (the executor does this for every job
    /// it runs).
    pub fn finish(&self, r: Result<()>) {
        let mut g = self.result.lock().unwrap_or_else(|p| p.into_inner());
        *g = Some(r);
        self.cond.notify_all();
    }

    /// The result, if the job has finished.
    pub fn peek(&self) -> Option<Result<()>> {
        self.result
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Wait until the job finished or `deadline` passed; `None` on timeout.
    pub fn wait_until(&self, deadline: Option<Instant>) -> Option<Result<()>> {
        let mut g = self.result.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = g.as_ref() {
                return Some(r.clone());
            }
            match deadline {
                None => g = self.cond.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    g = self
                        .cond
                        .wait_timeout(g, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<(Job, Arc<JobSlot>)>,
    running: bool,
    shutdown: bool,
}

struct Shared {
    engine: Mutex<Engine>,
    queue: Mutex<Queue>,
    cond: Condvar,
}

impl Shared {
    /// The thread that set `running` (the one owner of the turn to run a job) gives the turn
    /// up, and wakes the progress thread when a job waits for it or it should shut down.
    /// Only then: a wake-up per blocking call costs a futex call and, with more ranks than
    /// cores, a context switch onto a core a rank needs (measured on 2026-12-02: the 8 B
    /// all-reduce of 4 ranks on 2 cores took 62-83 us with a wake-up on every call, 14-16 us
    /// without, in the same state of the machine).
    fn done_running(&self) {
        let mut q = lock(&self.queue);
        q.running = false;
        if !q.jobs.is_empty() || q.shutdown {
            self.cond.notify_all();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A communicator's engine, its job queue and its progress thread.
pub struct Executor {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl Executor {
    /// Start the progress thread (named `dmsc-progress-<rank>`) for `engine`.
    pub fn start(engine: Engine) -> Result<Executor> {
        let period = engine.config().idle_period();
        let rank = engine.rank();
        let name = format!("dmsc-progress-{rank}");
        let shared = Arc::new(Shared {
            engine: Mutex::new(engine),
            queue: Mutex::new(Queue::default()),
            cond: Condvar::new(),
        });
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _rank = crate::log_rank::scope(rank);
                worker_loop(&s, period)
            })
            .map_err(|e| Error::io("starting the communicator's progress thread", &e))?;
        Ok(Executor {
            shared,
            worker: Some(worker),
        })
    }

    /// Run `job` to completion, on this thread when nothing is queued ahead of it.
    ///
    /// # Safety
    /// The job's memory must stay valid and unaliased until this returns.
    pub unsafe fn run_blocking(&self, job: Job) -> Result<()> {
        let mut q = lock(&self.shared.queue);
        if q.jobs.is_empty() && !q.running {
            q.running = true;
            drop(q);
            let r = run_caught(job, &mut lock(&self.shared.engine));
            self.shared.done_running();
            return r;
        }
        drop(q);
        let slot = self.enqueue(job);
        slot.wait_until(None).unwrap_or(Ok(()))
    }

    /// Run `f` on the engine between two jobs: it waits for the job running, if any, but is
    /// not ordered with the jobs queued. For what no job depends on, such as attaching a
    /// device for a kind of memory that no queued job uses ([`Engine::add_device`]).
    pub fn with_engine<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        f(&mut lock(&self.shared.engine))
    }

    /// Queue `job` for the progress thread; its result arrives in the slot.
    ///
    /// # Safety
    /// The job's memory must stay valid and unaliased until the slot holds a result.
    pub unsafe fn submit(&self, job: Job) -> Arc<JobSlot> {
        self.enqueue(job)
    }

    fn enqueue(&self, job: Job) -> Arc<JobSlot> {
        let slot = Arc::new(JobSlot::default());
        let mut q = lock(&self.shared.queue);
        q.jobs.push_back((job, slot.clone()));
        self.shared.cond.notify_all();
        slot
    }
}

/// A waiter's access to the queue of an [`Executor`]: [`Helper::wait`] runs the queued jobs
/// on the waiting thread instead of waking the progress thread and sleeping until it is done,
/// which costs two thread hand-offs per operation (about 8 µs on the development VM against
/// 1.6 µs for a blocking 8 B all-reduce).
///
/// A helper does not keep the communicator alive: it holds the executor weakly, so that a
/// request kept after its communicator was dropped pins no engine, sockets or segments. Once
/// the executor is gone, every job it had has its result (its drop runs or fails each one
/// before it returns), and waiting is reading the slot.
#[derive(Clone)]
pub struct Helper(Weak<Shared>);

/// How long a waiter looks for the result of a job that another thread runs before it
/// sleeps.
const WAITER_SPIN: Duration = Duration::from_micros(50);

impl Executor {
    /// A handle for waiters of this executor's jobs.
    pub fn helper(&self) -> Helper {
        Helper(Arc::downgrade(&self.shared))
    }
}

impl Helper {
    /// Wait for `slot`'s job without a deadline. While no job runs, the front job of the
    /// queue runs here (jobs keep their order: the queue is taken front first, and only one
    /// job runs at a time, here or on the progress thread); once `slot` is done, or another
    /// thread runs a job, this waits as [`JobSlot::wait_until`] does.
    pub fn wait(&self, slot: &JobSlot) -> Result<()> {
        let Some(shared) = self.0.upgrade() else {
            return slot.wait_until(None).unwrap_or(Ok(()));
        };
        loop {
            if let Some(r) = slot.peek() {
                return r;
            }
            let mut q = lock(&shared.queue);
            if q.running {
                drop(q);
                // Another thread runs a job (often the progress thread with this one): look
                // for the result a little before sleeping, so that its end costs no wake-up
                // of this thread. Each look yields, so a thread on this core can finish it.
                let until = Instant::now() + WAITER_SPIN;
                while Instant::now() < until {
                    if let Some(r) = slot.peek() {
                        return r;
                    }
                    if !lock(&shared.queue).running {
                        break;
                    }
                    std::thread::yield_now();
                }
                if lock(&shared.queue).running || slot.peek().is_some() {
                    return slot.wait_until(None).unwrap_or(Ok(()));
                }
                continue;
            }
            let Some((job, done)) = q.jobs.pop_front() else {
                drop(q);
                return slot.wait_until(None).unwrap_or(Ok(()));
            };
            q.running = true;
            drop(q);
            let r = run_caught(job, &mut lock(&shared.engine));
            done.finish(r);
            shared.done_running();
        }
    }
}

/// Run `job`, turning a panic into an error: the job's slot must get a result.
fn run_caught(job: Job, e: &mut Engine) -> Result<()> {
    let _rank = crate::log_rank::scope(e.rank());
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: whoever submitted the job keeps its memory valid until the slot holds a
        // result (`Executor::submit`'s contract), which the caller delivers right after.
        unsafe { job.run(e) }
    }))
    .unwrap_or_else(|_| Err(Error::internal("panic while running a queued operation")))
}

/// Run queued jobs; while idle, serve the engine every `period` (heartbeats, peers' status
/// queries and errors) without ever waiting for it.
fn worker_loop(s: &Shared, period: Duration) {
    let mut q = lock(&s.queue);
    loop {
        if !q.running {
            if let Some((job, slot)) = q.jobs.pop_front() {
                q.running = true;
                drop(q);
                // Whatever happens, the slot gets a result: a waiter must never hang.
                let r = run_caught(job, &mut lock(&s.engine));
                slot.finish(r);
                s.done_running();
                q = lock(&s.queue);
                continue;
            }
            // Shut down only once nothing runs or waits, on any thread.
            if q.shutdown {
                return;
            }
        }
        let (g, t) = s
            .cond
            .wait_timeout(q, period)
            .unwrap_or_else(|p| p.into_inner());
        q = g;
        if t.timed_out() && q.jobs.is_empty() && !q.running {
            // Idle: serve the engine unless a caller holds it (then that caller's operation
            // does the same). The queue stays unlocked meanwhile, so that no caller waits on
            // it; a job queued in between is seen at the top of the loop.
            drop(q);
            if let Ok(mut e) = s.engine.try_lock() {
                let _ = e.service(Duration::ZERO);
            }
            q = lock(&s.queue);
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        {
            let mut q = lock(&self.shared.queue);
            q.shutdown = true;
            self.shared.cond.notify_all();
        }
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
