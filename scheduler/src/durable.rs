//! A scheduler whose every decision is in the store before the call returns.

use crate::error::Result;
use crate::scheduler::Scheduler;
use crate::store::{Replayed, Store};
use crate::task::{Assignment, AssignmentId, TaskId, TaskSpec, TaskStatus};
use serde_json::Value;

/// [`Scheduler`] plus [`Store`]: each mutating call writes the events it caused in one
/// transaction before returning, so a result acknowledged by [`Durable::complete`] is never
/// lost, and a restarted scheduler ([`Durable::open`]) never runs a committed task again.
pub struct Durable {
    /// The scheduler.
    pub sched: Scheduler,
    /// Its store.
    pub store: Store,
}

impl Durable {
    /// Replay `store` into `sched` (which should be new) and keep both.
    pub fn open(mut sched: Scheduler, store: Store) -> Result<(Durable, Replayed)> {
        let r = store.replay(&mut sched)?;
        sched.take_events();
        Ok((Durable { sched, store }, r))
    }

    fn flush(&mut self) -> Result<()> {
        let ev = self.sched.take_events();
        self.store.append(&ev)
    }

    /// Submit and persist.
    pub fn submit(&mut self, spec: TaskSpec) -> Result<TaskId> {
        let id = self.sched.submit(spec)?;
        self.flush()?;
        Ok(id)
    }

    /// Submit several tasks in one transaction (all or none are persisted).
    pub fn submit_all(&mut self, specs: Vec<TaskSpec>) -> Result<Vec<TaskId>> {
        let ids = specs
            .into_iter()
            .map(|s| self.sched.submit(s))
            .collect::<Result<Vec<_>>>()?;
        self.flush()?;
        Ok(ids)
    }

    /// Tick and persist.
    pub fn tick(&mut self) -> Result<()> {
        self.sched.tick();
        self.flush()
    }

    /// Dispatch and persist.
    pub fn dispatch(&mut self) -> Result<Vec<Assignment>> {
        let a = self.sched.dispatch();
        self.flush()?;
        Ok(a)
    }

    /// Complete and persist (the commit point of a task's result).
    pub fn complete(&mut self, a: AssignmentId, result: Value) -> Result<Option<TaskStatus>> {
        let s = self.sched.complete(a, result);
        self.flush()?;
        s
    }

    /// Fail and persist.
    pub fn fail(&mut self, a: AssignmentId, reason: &str) -> Result<Option<TaskStatus>> {
        let s = self.sched.fail(a, reason);
        self.flush()?;
        s
    }
}
