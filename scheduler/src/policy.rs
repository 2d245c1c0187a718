//! Queue policies: first come first served, priority, and weighted fair share.
//!
//! The ready queue yields candidates in policy order; the scheduler admits them (gang
//! admission, all or nothing). Weighted fair share keeps per class the worker slots it has
//! used; the next candidate comes from the class with the least `usage / weight` (a virtual
//! time, as in start-time fair queueing). A class that was idle re-enters at the smallest
//! virtual time among the active classes, so it cannot claim back the time it was idle.

use crate::task::TaskId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The order in which ready tasks are admitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Submission order.
    #[default]
    Fcfs,
    /// Highest priority first, then submission order.
    Priority,
    /// Weighted fair share between classes, submission order within a class.
    WeightedFair,
}

impl std::str::FromStr for Policy {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Policy> {
        match s {
            "fcfs" | "fifo" => Ok(Policy::Fcfs),
            "priority" => Ok(Policy::Priority),
            "fair" | "weighted_fair" => Ok(Policy::WeightedFair),
            _ => Err(crate::Error::invalid(
                "policy",
                format!("`{s}` is not fcfs, priority or fair"),
            )),
        }
    }
}

/// What the queue needs to know of a task.
#[derive(Clone, Debug)]
pub struct QueueKey {
    /// The task.
    pub id: TaskId,
    /// Submission order.
    pub seq: u64,
    /// Priority.
    pub priority: i32,
    /// Share class.
    pub class: String,
    /// The class's weight.
    pub weight: u32,
}

#[derive(Debug, Default)]
struct Class {
    weight: f64,
    usage: f64,
    queue: BTreeMap<u64, TaskId>,
}

impl Class {
    fn vtime(&self) -> f64 {
        self.usage / self.weight
    }
}

/// Ready tasks in policy order.
#[derive(Debug)]
pub struct ReadyQueue {
    policy: Policy,
    main: BTreeMap<(i64, u64), TaskId>,
    classes: BTreeMap<String, Class>,
    len: usize,
}

impl ReadyQueue {
    /// An empty queue.
    pub fn new(policy: Policy) -> ReadyQueue {
        ReadyQueue {
            policy,
            main: BTreeMap::new(),
            classes: BTreeMap::new(),
            len: 0,
        }
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Tasks queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no task is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn main_key(&self, k: &QueueKey) -> (i64, u64) {
        match self.policy {
            Policy::Priority => (-(k.priority as i64), k.seq),
            _ => (0, k.seq),
        }
    }

    /// Queue a task (no effect if it is queued already).
    pub fn push(&mut self, k: &QueueKey) {
        if self.policy == Policy::WeightedFair {
            let floor = self
                .classes
                .values()
                .filter(|c| !c.queue.is_empty())
                .map(Class::vtime)
                .fold(f64::INFINITY, f64::min);
            let c = self.classes.entry(k.class.clone()).or_default();
            c.weight = k.weight.max(1) as f64;
            if c.queue.is_empty() && floor.is_finite() {
                c.usage = c.usage.max(floor * c.weight);
            }
            if c.queue.insert(k.seq, k.id).is_none() {
                self.len += 1;
            }
        } else if self.main.insert(self.main_key(k), k.id).is_none() {
            self.len += 1;
        }
    }

    /// Remove a task.
    pub fn remove(&mut self, k: &QueueKey) {
        let removed = if self.policy == Policy::WeightedFair {
            self.classes
                .get_mut(&k.class)
                .and_then(|c| c.queue.remove(&k.seq))
                .is_some()
        } else {
            let key = self.main_key(k);
            self.main.remove(&key).is_some()
        };
        if removed {
            self.len -= 1;
        }
    }

    /// Record that `class` was given `slots` worker slots (weighted fair share).
    pub fn charge(&mut self, class: &str, slots: f64) {
        if let Some(c) = self.classes.get_mut(class) {
            c.usage += slots;
        }
    }

    /// Up to `limit` candidates, in policy order.
    pub fn candidates(&self, limit: usize) -> Vec<TaskId> {
        match self.policy {
            Policy::WeightedFair => {
                let mut active: Vec<&Class> = self
                    .classes
                    .values()
                    .filter(|c| !c.queue.is_empty())
                    .collect();
                active.sort_by(|a, b| a.vtime().total_cmp(&b.vtime()));
                active
                    .into_iter()
                    .flat_map(|c| c.queue.values().copied())
                    .take(limit)
                    .collect()
            }
            _ => self.main.values().copied().take(limit).collect(),
        }
    }

    /// Worker slots each class has used (weighted fair share).
    pub fn usage(&self) -> BTreeMap<String, f64> {
        self.classes
            .iter()
            .map(|(k, c)| (k.clone(), c.usage))
            .collect()
    }
}
