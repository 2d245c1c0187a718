//! The scheduler: a state machine without I/O of its own, driven by calls and an injected
//! clock (the quinn-proto style: inputs through methods, outputs as assignments and events).
//!
//! - **Submission** goes through an asynchronous queue ([`Submitter`], cloneable and `Send`):
//!   ids are handed out at once, the tasks enter the scheduler at its next [`Scheduler::tick`].
//! - **Admission** takes ready tasks in [`Policy`] order. A replica needs `gang` free workers
//!   at once and gets all of them or none. Without backfill the first task that does not fit
//!   blocks the ones behind it (strict order); with backfill smaller tasks may pass it.
//! - **Redundancy**: `redundancy` replicas run on distinct workers; when all have returned,
//!   their results are combined by vote or weighted average ([`crate::aggregate`]).
//! - **Faults**: a replica that fails or exceeds its timeout is retried after an exponential
//!   backoff (`base · 2^(failures−1)`, capped) until `retries` is spent; then the task goes to
//!   the exception queue with the reason. A worker whose heartbeats stop is removed and its
//!   replica reassigned at once (not counted as a failure). Results of an assignment that is
//!   no longer current (timed out, reassigned) are refused.
//! - **Events** record every decision ([`Event`]); the persistent layer writes them and
//!   replays them after a restart. Decisions are also logged through `tracing`.

use crate::aggregate;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::policy::{Policy, QueueKey, ReadyQueue};
use crate::task::{Assignment, AssignmentId, Exception, TaskId, TaskSpec, TaskStatus, WorkerId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

/// Scheduler settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// Admission order.
    pub policy: Policy,
    /// Let tasks that fit pass one that does not.
    pub backfill: bool,
    /// A worker silent this long is dead.
    pub heartbeat_timeout_ms: u64,
    /// Backoff before the first retry.
    pub backoff_base_ms: u64,
    /// Longest backoff.
    pub backoff_max_ms: u64,
    /// Candidates examined per dispatch with backfill.
    pub scan_limit: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            policy: Policy::Fcfs,
            backfill: false,
            heartbeat_timeout_ms: 3000,
            backoff_base_ms: 100,
            backoff_max_ms: 10_000,
            scan_limit: 64,
        }
    }
}

/// A decision, in the order made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// A task entered the scheduler.
    Submitted {
        /// The task.
        task: TaskId,
        /// What it is.
        spec: TaskSpec,
    },
    /// A replica went to a gang of workers.
    Dispatched {
        /// The task.
        task: TaskId,
        /// The dispatch.
        assignment: AssignmentId,
        /// The gang.
        workers: Vec<WorkerId>,
    },
    /// A replica returned its result.
    Returned {
        /// The task.
        task: TaskId,
        /// The dispatch.
        assignment: AssignmentId,
    },
    /// A replica failed and will be retried.
    Retry {
        /// The task.
        task: TaskId,
        /// Failures so far.
        failures: u32,
        /// When it may run again.
        at_ms: u64,
        /// Why it failed.
        reason: String,
    },
    /// A replica's worker died; it was queued again.
    Reassigned {
        /// The task.
        task: TaskId,
        /// The dispatch that was lost.
        assignment: AssignmentId,
        /// The dead worker.
        worker: WorkerId,
    },
    /// The task is done: its aggregated result (the commit point).
    Committed {
        /// The task.
        task: TaskId,
        /// The result.
        result: Value,
    },
    /// The task failed for good.
    Exception {
        /// The task.
        task: TaskId,
        /// Why.
        reason: String,
    },
}

/// The handle of the asynchronous submission queue.
#[derive(Clone, Debug)]
pub struct Submitter {
    tx: mpsc::Sender<(TaskId, TaskSpec)>,
    ids: Arc<AtomicU64>,
}

impl Submitter {
    /// Validate and queue a task; its id is valid at once, it enters the scheduler at the
    /// next tick.
    pub fn submit(&self, spec: TaskSpec) -> Result<TaskId> {
        spec.validate()?;
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send((id, spec))
            .map_err(|_| Error::invalid("scheduler", "is gone"))?;
        Ok(id)
    }
}

#[derive(Debug)]
enum State {
    Active,
    Done(Value),
    Failed(String),
}

#[derive(Debug)]
struct Entry {
    spec: TaskSpec,
    seq: u64,
    state: State,
    /// Replicas waiting for workers.
    pending: u32,
    running: Vec<AssignmentId>,
    results: Vec<(Value, f64)>,
    /// Workers that ran or run a replica (replicas go to distinct workers).
    used: Vec<WorkerId>,
    failures: u32,
    queued: bool,
}

impl Entry {
    fn key(&self, id: TaskId) -> QueueKey {
        QueueKey {
            id,
            seq: self.seq,
            priority: self.spec.priority,
            class: self.spec.class.clone(),
            weight: self.spec.weight,
        }
    }
}

#[derive(Debug)]
struct Running {
    task: TaskId,
    workers: Vec<WorkerId>,
    deadline: Option<u64>,
}

#[derive(Debug)]
struct Worker {
    last_seen: u64,
    weight: f64,
    busy: Option<AssignmentId>,
}

/// Counters for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Replicas dispatched.
    pub dispatched: u64,
    /// Tasks committed.
    pub committed: u64,
    /// Replica failures (timeouts included).
    pub failures: u64,
    /// Replicas reassigned after a worker died.
    pub reassigned: u64,
    /// Tasks sent to the exception queue.
    pub exceptions: u64,
}

/// The scheduler.
pub struct Scheduler {
    clock: Arc<dyn Clock>,
    cfg: Config,
    tasks: HashMap<TaskId, Entry>,
    ready: ReadyQueue,
    delayed: BTreeSet<(u64, TaskId)>,
    running: HashMap<AssignmentId, Running>,
    workers: BTreeMap<WorkerId, Worker>,
    free: BTreeSet<WorkerId>,
    next_assignment: AssignmentId,
    seq: u64,
    ids: Arc<AtomicU64>,
    tx: mpsc::Sender<(TaskId, TaskSpec)>,
    rx: mpsc::Receiver<(TaskId, TaskSpec)>,
    exceptions: VecDeque<Exception>,
    events: Vec<Event>,
    stats: Stats,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(cfg: Config, clock: Arc<dyn Clock>) -> Scheduler {
        let (tx, rx) = mpsc::channel();
        Scheduler {
            clock,
            ready: ReadyQueue::new(cfg.policy),
            cfg,
            tasks: HashMap::new(),
            delayed: BTreeSet::new(),
            running: HashMap::new(),
            workers: BTreeMap::new(),
            free: BTreeSet::new(),
            next_assignment: 1,
            seq: 0,
            ids: Arc::new(AtomicU64::new(1)),
            tx,
            rx,
            exceptions: VecDeque::new(),
            events: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// A handle to the asynchronous submission queue.
    pub fn submitter(&self) -> Submitter {
        Submitter {
            tx: self.tx.clone(),
            ids: self.ids.clone(),
        }
    }

    /// Submit directly (validated; enters at once).
    pub fn submit(&mut self, spec: TaskSpec) -> Result<TaskId> {
        spec.validate()?;
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        self.admit(id, spec);
        Ok(id)
    }

    /// Re-enter a task known from a log (replay), keeping its id and its failures.
    pub fn restore(&mut self, id: TaskId, spec: TaskSpec, failures: u32) {
        self.ids.fetch_max(id + 1, Ordering::Relaxed);
        self.admit_quiet(id, spec, failures);
    }

    /// Record a task as done with `result` (replay): it is never dispatched again.
    pub fn restore_done(&mut self, id: TaskId, spec: TaskSpec, result: Value) {
        self.ids.fetch_max(id + 1, Ordering::Relaxed);
        self.seq += 1;
        self.tasks.insert(
            id,
            Entry {
                spec,
                seq: self.seq,
                state: State::Done(result),
                pending: 0,
                running: vec![],
                results: vec![],
                used: vec![],
                failures: 0,
                queued: false,
            },
        );
    }

    /// Record a task as failed for good (replay).
    pub fn restore_failed(&mut self, id: TaskId, spec: TaskSpec, reason: String) {
        self.ids.fetch_max(id + 1, Ordering::Relaxed);
        self.seq += 1;
        self.exceptions.push_back(Exception {
            task: id,
            name: spec.name.clone(),
            reason: reason.clone(),
        });
        self.tasks.insert(
            id,
            Entry {
                spec,
                seq: self.seq,
                state: State::Failed(reason),
                pending: 0,
                running: vec![],
                results: vec![],
                used: vec![],
                failures: 0,
                queued: false,
            },
        );
    }

    fn admit(&mut self, id: TaskId, spec: TaskSpec) {
        tracing::debug!(task = id, name = %spec.name, class = %spec.class, priority = spec.priority, gang = spec.gang, redundancy = spec.redundancy, "submitted");
        self.events.push(Event::Submitted {
            task: id,
            spec: spec.clone(),
        });
        self.admit_quiet(id, spec, 0);
    }

    fn admit_quiet(&mut self, id: TaskId, spec: TaskSpec, failures: u32) {
        self.seq += 1;
        let e = Entry {
            pending: spec.redundancy,
            spec,
            seq: self.seq,
            state: State::Active,
            running: Vec::new(),
            results: Vec::new(),
            used: Vec::new(),
            failures,
            queued: true,
        };
        self.ready.push(&e.key(id));
        self.tasks.insert(id, e);
    }

    /// Add a worker (or revive one) with a weight for weighted averages.
    pub fn add_worker(&mut self, id: WorkerId, weight: f64) {
        let now = self.clock.now_ms();
        let w = self.workers.entry(id).or_insert(Worker {
            last_seen: now,
            weight,
            busy: None,
        });
        w.last_seen = now;
        w.weight = weight;
        if w.busy.is_none() {
            self.free.insert(id);
        }
        tracing::debug!(worker = id, weight, "worker joined");
    }

    /// A heartbeat from a worker.
    pub fn heartbeat(&mut self, id: WorkerId) -> Result<()> {
        let now = self.clock.now_ms();
        let w = self
            .workers
            .get_mut(&id)
            .ok_or_else(|| Error::Unknown(format!("worker {id}")))?;
        w.last_seen = now;
        Ok(())
    }

    /// Workers known and alive.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Workers without a replica.
    pub fn free_workers(&self) -> usize {
        self.free.len()
    }

    /// Tasks waiting for workers (retry delays included).
    pub fn queued(&self) -> usize {
        self.ready.len() + self.delayed.len()
    }

    /// Replicas running.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Worker slots each class has used (weighted fair share).
    pub fn usage(&self) -> BTreeMap<String, f64> {
        self.ready.usage()
    }

    /// The decisions made since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Tasks that failed for good, oldest first.
    pub fn exceptions(&self) -> impl Iterator<Item = &Exception> {
        self.exceptions.iter()
    }

    /// Where `task` stands.
    pub fn status(&self, task: TaskId) -> Option<TaskStatus> {
        let e = self.tasks.get(&task)?;
        Some(match &e.state {
            State::Done(v) => TaskStatus::Done { result: v.clone() },
            State::Failed(r) => TaskStatus::Failed { reason: r.clone() },
            State::Active if e.running.is_empty() => TaskStatus::Queued,
            State::Active => TaskStatus::Running,
        })
    }

    /// Every task's id, in order.
    pub fn task_ids(&self) -> Vec<TaskId> {
        let mut v: Vec<TaskId> = self.tasks.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The workers of a running assignment.
    pub fn assignment_workers(&self, a: AssignmentId) -> Option<&[WorkerId]> {
        self.running.get(&a).map(|r| r.workers.as_slice())
    }

    /// Take submissions, release retries whose time has come, expire timeouts and dead workers.
    pub fn tick(&mut self) {
        while let Ok((id, spec)) = self.rx.try_recv() {
            self.admit(id, spec);
        }
        let now = self.clock.now_ms();
        while let Some(&(at, id)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.delayed.pop_first();
            if let Some(e) = self.tasks.get_mut(&id) {
                if matches!(e.state, State::Active) && !e.queued {
                    e.queued = true;
                    self.ready.push(&e.key(id));
                }
            }
        }
        let expired: Vec<AssignmentId> = self
            .running
            .iter()
            .filter(|(_, r)| r.deadline.is_some_and(|d| d <= now))
            .map(|(&a, _)| a)
            .collect();
        for a in expired {
            let _ = self.fail(a, "timed out");
        }
        let dead: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.last_seen) > self.cfg.heartbeat_timeout_ms)
            .map(|(&id, _)| id)
            .collect();
        for w in dead {
            self.worker_lost(w, "heartbeats stopped");
        }
    }

    /// Remove a worker (dead or leaving); its replica, if any, is reassigned.
    pub fn worker_lost(&mut self, id: WorkerId, why: &str) {
        let Some(w) = self.workers.remove(&id) else {
            return;
        };
        self.free.remove(&id);
        tracing::warn!(worker = id, why, "worker lost");
        let Some(a) = w.busy else { return };
        let Some(r) = self.running.remove(&a) else {
            return;
        };
        self.release(&r.workers);
        self.stats.reassigned += 1;
        self.events.push(Event::Reassigned {
            task: r.task,
            assignment: a,
            worker: id,
        });
        if let Some(e) = self.tasks.get_mut(&r.task) {
            e.running.retain(|&x| x != a);
            e.used.retain(|u| !r.workers.contains(u));
            if matches!(e.state, State::Active) {
                e.pending += 1;
                tracing::info!(
                    task = r.task,
                    assignment = a,
                    worker = id,
                    "reassigning the replica of a dead worker"
                );
                if !e.queued {
                    e.queued = true;
                    self.ready.push(&e.key(r.task));
                }
            }
        }
    }

    fn release(&mut self, workers: &[WorkerId]) {
        for w in workers {
            if let Some(x) = self.workers.get_mut(w) {
                x.busy = None;
                self.free.insert(*w);
            }
        }
    }

    /// Admit what fits, in policy order; returns the new assignments.
    pub fn dispatch(&mut self) -> Vec<Assignment> {
        self.tick();
        let mut out = Vec::new();
        let limit = if self.cfg.backfill {
            self.cfg.scan_limit.max(1)
        } else {
            1
        };
        loop {
            if self.free.is_empty() || self.ready.is_empty() {
                break;
            }
            let candidates = self.ready.candidates(limit);
            let mut progressed = false;
            for id in candidates {
                let admitted = self.admit_replicas(id, &mut out);
                if admitted {
                    progressed = true;
                    // Policy order may have changed (fair share): look again.
                    break;
                }
                if !self.cfg.backfill {
                    break;
                }
            }
            if !progressed {
                break;
            }
        }
        out
    }

    /// Admit one replica of `id` if a whole gang of distinct workers is free.
    fn admit_replicas(&mut self, id: TaskId, out: &mut Vec<Assignment>) -> bool {
        let Some(e) = self.tasks.get_mut(&id) else {
            return false;
        };
        let need = e.spec.gang as usize;
        if e.pending == 0 || self.free.len() < need {
            return false;
        }
        let gang: Vec<WorkerId> = self
            .free
            .iter()
            .copied()
            .filter(|w| !e.used.contains(w))
            .take(need)
            .collect();
        if gang.len() < need {
            return false;
        }
        let a = self.next_assignment;
        self.next_assignment += 1;
        let now = self.clock.now_ms();
        for w in &gang {
            self.free.remove(w);
            if let Some(x) = self.workers.get_mut(w) {
                x.busy = Some(a);
            }
        }
        e.pending -= 1;
        e.running.push(a);
        e.used.extend_from_slice(&gang);
        let deadline = (e.spec.timeout_ms > 0).then(|| now + e.spec.timeout_ms);
        let payload = e.spec.payload.clone();
        let class = e.spec.class.clone();
        let key = e.key(id);
        if e.pending == 0 {
            e.queued = false;
            self.ready.remove(&key);
        }
        self.ready.charge(&class, need as f64);
        self.running.insert(
            a,
            Running {
                task: id,
                workers: gang.clone(),
                deadline,
            },
        );
        self.stats.dispatched += 1;
        tracing::debug!(task = id, assignment = a, workers = ?gang, policy = ?self.cfg.policy, "dispatched");
        self.events.push(Event::Dispatched {
            task: id,
            assignment: a,
            workers: gang.clone(),
        });
        out.push(Assignment {
            id: a,
            task: id,
            workers: gang,
            payload,
        });
        true
    }

    /// The result of assignment `a`. Returns the task's status when it changed (done or
    /// failed after aggregation). Refuses an assignment that is not current.
    pub fn complete(&mut self, a: AssignmentId, result: Value) -> Result<Option<TaskStatus>> {
        let r = self.running.remove(&a).ok_or_else(|| {
            Error::Unknown(format!(
                "assignment {a} (not running: finished, timed out or reassigned)"
            ))
        })?;
        self.release(&r.workers);
        let weight = r
            .workers
            .first()
            .and_then(|w| self.workers.get(w))
            .map_or(1.0, |w| w.weight);
        let e = self
            .tasks
            .get_mut(&r.task)
            .expect("a running assignment's task exists");
        e.running.retain(|&x| x != a);
        e.results.push((result, weight));
        self.events.push(Event::Returned {
            task: r.task,
            assignment: a,
        });
        if (e.results.len() as u32) < e.spec.redundancy {
            return Ok(None);
        }
        match aggregate::combine(e.spec.aggregate, &e.results) {
            Ok(v) => {
                e.state = State::Done(v.clone());
                e.results.clear();
                self.stats.committed += 1;
                tracing::info!(task = r.task, name = %e.spec.name, "committed");
                self.events.push(Event::Committed {
                    task: r.task,
                    result: v.clone(),
                });
                Ok(Some(TaskStatus::Done { result: v }))
            }
            Err(err) => {
                // Disagreeing replicas: run them all again (a failure).
                let task = r.task;
                let e = self.tasks.get_mut(&task).expect("exists");
                e.results.clear();
                e.used.clear();
                e.pending = e.spec.redundancy - 1;
                Ok(self.replica_failed(task, &err.to_string()))
            }
        }
    }

    /// Assignment `a` failed with `reason`: retried with backoff, or the task fails for good.
    pub fn fail(&mut self, a: AssignmentId, reason: &str) -> Result<Option<TaskStatus>> {
        let r = self
            .running
            .remove(&a)
            .ok_or_else(|| Error::Unknown(format!("assignment {a}")))?;
        self.release(&r.workers);
        if let Some(e) = self.tasks.get_mut(&r.task) {
            e.running.retain(|&x| x != a);
            // The retry may use the same workers (there may be no others).
            e.used.retain(|u| !r.workers.contains(u));
        }
        Ok(self.replica_failed(r.task, reason))
    }

    fn replica_failed(&mut self, task: TaskId, reason: &str) -> Option<TaskStatus> {
        let now = self.clock.now_ms();
        self.stats.failures += 1;
        let e = self.tasks.get_mut(&task)?;
        e.failures += 1;
        if e.failures > e.spec.retries {
            let why = format!(
                "failed {} time(s), {} retries allowed; last: {reason}",
                e.failures, e.spec.retries
            );
            tracing::warn!(task, name = %e.spec.name, reason = %why, "task failed for good");
            e.state = State::Failed(why.clone());
            e.pending = 0;
            let running = std::mem::take(&mut e.running);
            let key = e.key(task);
            let name = e.spec.name.clone();
            if e.queued {
                e.queued = false;
                self.ready.remove(&key);
            }
            for a in running {
                if let Some(r) = self.running.remove(&a) {
                    self.release(&r.workers);
                }
            }
            self.stats.exceptions += 1;
            self.exceptions.push_back(Exception {
                task,
                name,
                reason: why.clone(),
            });
            self.events.push(Event::Exception {
                task,
                reason: why.clone(),
            });
            return Some(TaskStatus::Failed { reason: why });
        }
        let backoff = self
            .cfg
            .backoff_base_ms
            .saturating_mul(1u64 << (e.failures - 1).min(30))
            .min(self.cfg.backoff_max_ms);
        let at = now + backoff;
        e.pending += 1;
        let failures = e.failures;
        tracing::info!(task, failures, backoff_ms = backoff, reason, "retrying");
        if e.queued {
            // Other replicas are still queued: this one waits with them.
        } else {
            self.delayed.insert((at, task));
        }
        self.events.push(Event::Retry {
            task,
            failures,
            at_ms: at,
            reason: reason.to_string(),
        });
        None
    }
}
