//! Tasks: what is submitted, and the identifiers the scheduler hands out.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// A task's identifier, unique within one scheduler (and its store).
pub type TaskId = u64;
/// A worker's identifier.
pub type WorkerId = u64;
/// One dispatch of one replica of a task to a gang of workers.
pub type AssignmentId = u64;

/// How redundant results become one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// The value a strict majority of replicas returned.
    #[default]
    Vote,
    /// The average of numbers (or arrays of numbers) weighted by each worker's weight.
    WeightedAverage,
}

/// A task as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// A name for logs.
    pub name: String,
    /// The share class for weighted fair share (a tenant, a job).
    #[serde(default = "default_class")]
    pub class: String,
    /// Higher runs first under the priority policy.
    #[serde(default)]
    pub priority: i32,
    /// The class's weight under weighted fair share.
    #[serde(default = "one")]
    pub weight: u32,
    /// Workers one replica needs at once (admitted all or nothing).
    #[serde(default = "one")]
    pub gang: u32,
    /// Milliseconds a replica may run before it counts as failed (0: no limit).
    #[serde(default)]
    pub timeout_ms: u64,
    /// Failures tolerated before the task goes to the exception queue.
    #[serde(default)]
    pub retries: u32,
    /// Replicas run on distinct workers; their results are aggregated.
    #[serde(default = "one")]
    pub redundancy: u32,
    /// How replicas' results are combined.
    #[serde(default)]
    pub aggregate: Aggregate,
    /// What the workers are to do.
    #[serde(default)]
    pub payload: serde_json::Value,
}

fn default_class() -> String {
    "default".into()
}

fn one() -> u32 {
    1
}

impl TaskSpec {
    /// A task with the defaults: class `default`, priority 0, weight 1, gang 1, no timeout,
    /// no retries, no redundancy.
    pub fn new(name: impl Into<String>) -> TaskSpec {
        TaskSpec {
            name: name.into(),
            class: default_class(),
            priority: 0,
            weight: 1,
            gang: 1,
            timeout_ms: 0,
            retries: 0,
            redundancy: 1,
            aggregate: Aggregate::Vote,
            payload: serde_json::Value::Null,
        }
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        if self.class.trim().is_empty() {
            return Err(Error::invalid("class", "must not be empty"));
        }
        if self.weight == 0 {
            return Err(Error::invalid("weight", "must be at least 1"));
        }
        if self.gang == 0 || self.gang > 4096 {
            return Err(Error::invalid(
                "gang",
                format!("{} is not in 1..=4096", self.gang),
            ));
        }
        if self.redundancy == 0 || self.redundancy > 64 {
            return Err(Error::invalid(
                "redundancy",
                format!("{} is not in 1..=64", self.redundancy),
            ));
        }
        if self.retries > 1000 {
            return Err(Error::invalid("retries", "at most 1000"));
        }
        Ok(())
    }
}

/// Where a task stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TaskStatus {
    /// Waiting for workers (or for its retry time).
    Queued,
    /// Some replicas are running.
    Running,
    /// Done; the aggregated result is committed.
    Done {
        /// The result.
        result: serde_json::Value,
    },
    /// Failed for good; it is in the exception queue.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A task that failed for good.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exception {
    /// The task.
    pub task: TaskId,
    /// Its name.
    pub name: String,
    /// Why it failed.
    pub reason: String,
}

/// One replica of a task handed to a gang of workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// This dispatch.
    pub id: AssignmentId,
    /// The task.
    pub task: TaskId,
    /// The workers, all at once; the first reports the result.
    pub workers: Vec<WorkerId>,
    /// What to do.
    pub payload: serde_json::Value,
}
