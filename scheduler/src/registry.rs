//! The business layer's service registry, in-process: instances announce themselves with
//! heartbeats and are discoverable while their heartbeats are fresh.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A heartbeat, as a worker sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The service (e.g. `worker`).
    pub service: String,
    /// This instance's unique name.
    pub instance: String,
    /// Its process id.
    #[serde(default)]
    pub pid: u32,
    /// The job it serves, if any.
    #[serde(default)]
    pub job: Option<u64>,
    /// Its rank in that job.
    #[serde(default)]
    pub rank: Option<usize>,
}

/// A registered instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Its last heartbeat.
    #[serde(flatten)]
    pub beat: Heartbeat,
    /// When it arrived (registry clock, ms).
    pub last_seen_ms: u64,
}

/// Instances by name.
#[derive(Debug)]
pub struct Registry {
    ttl_ms: u64,
    instances: BTreeMap<String, Instance>,
}

impl Registry {
    /// A registry forgetting instances silent for `ttl_ms`.
    pub fn new(ttl_ms: u64) -> Registry {
        Registry {
            ttl_ms,
            instances: BTreeMap::new(),
        }
    }

    /// Record a heartbeat at `now_ms`; errors name an empty field.
    pub fn heartbeat(&mut self, beat: Heartbeat, now_ms: u64) -> crate::Result<()> {
        if beat.service.trim().is_empty() {
            return Err(crate::Error::invalid("service", "must not be empty"));
        }
        if beat.instance.trim().is_empty() {
            return Err(crate::Error::invalid("instance", "must not be empty"));
        }
        let name = beat.instance.clone();
        self.instances.insert(
            name,
            Instance {
                beat,
                last_seen_ms: now_ms,
            },
        );
        Ok(())
    }

    /// Live instances of `service` (all services when `None`); stale ones are dropped.
    pub fn discover(&mut self, service: Option<&str>, now_ms: u64) -> Vec<Instance> {
        let ttl = self.ttl_ms;
        self.instances
            .retain(|_, i| now_ms.saturating_sub(i.last_seen_ms) <= ttl);
        self.instances
            .values()
            .filter(|i| service.is_none_or(|s| i.beat.service == s))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_expire_without_heartbeats() {
        let mut r = Registry::new(1000);
        let beat = |i: &str| Heartbeat {
            service: "worker".into(),
            instance: i.into(),
            pid: 1,
            job: None,
            rank: None,
        };
        r.heartbeat(beat("a"), 0).unwrap();
        r.heartbeat(beat("b"), 500).unwrap();
        assert_eq!(r.discover(Some("worker"), 900).len(), 2);
        assert_eq!(r.discover(Some("worker"), 1200).len(), 1);
        assert_eq!(r.discover(Some("other"), 1200).len(), 0);
        assert!(r
            .heartbeat(beat(""), 0)
            .unwrap_err()
            .to_string()
            .contains("instance"));
    }
}
