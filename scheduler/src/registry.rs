//! The business layer's service registry: instances announce themselves with heartbeats and
//! are discoverable while their heartbeats are fresh.
//!
//! [`ServiceRegistry`] is what the gateway uses; [`Registry`] is the in-process backend (the
//! default), and with the cargo feature `etcd` [`crate::etcd::EtcdRegistry`] keeps the
//! instances in etcd under leases. [`Backend`] is the choice `dmsc-serve --registry` makes.

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

/// A service registry backend: heartbeats register or refresh an instance, which stays
/// discoverable until its heartbeats stop for the registry's TTL or it is deregistered.
pub trait ServiceRegistry: Send {
    /// Register `beat`'s instance, or refresh it if it is registered; `now_ms` is the
    /// caller's clock. Errors name an empty field or the backend call that failed.
    fn heartbeat(&mut self, beat: Heartbeat, now_ms: u64) -> crate::Result<()>;

    /// Remove `instance` of `service` now (a no-op if it is not registered).
    fn deregister(&mut self, service: &str, instance: &str) -> crate::Result<()>;

    /// Live instances of `service` (all services when `None`), ordered by service and name.
    fn discover(&mut self, service: Option<&str>, now_ms: u64) -> crate::Result<Vec<Instance>>;
}

/// Which registry backend to use, as `dmsc-serve --registry` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// [`Registry`], in this process (`inprocess`, the default).
    InProcess,
    /// etcd v3 at this client URL (`etcd=http://127.0.0.1:2379`); needs the `etcd` feature.
    Etcd(String),
}

impl Backend {
    /// Parse `inprocess` or `etcd=URL`. Without the `etcd` feature, `etcd=…` is an error
    /// saying that this build has no etcd backend.
    pub fn parse(text: &str) -> crate::Result<Backend> {
        let text = text.trim();
        if text == "inprocess" {
            return Ok(Backend::InProcess);
        }
        let Some(url) = text.strip_prefix("etcd=") else {
            return Err(crate::Error::invalid(
                "--registry",
                format!("`{text}` is neither `inprocess` nor `etcd=http://HOST:PORT`"),
            ));
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(crate::Error::invalid(
                "--registry",
                format!("the etcd endpoint `{url}` is not an http:// or https:// URL"),
            ));
        }
        if cfg!(feature = "etcd") {
            Ok(Backend::Etcd(url.trim_end_matches('/').to_string()))
        } else {
            Err(crate::Error::invalid(
                "--registry",
                "this dmsc-serve was built without the `etcd` feature; \
                 rebuild with `cargo build --features etcd` or use `inprocess`",
            ))
        }
    }

    /// Open the backend with instances expiring `ttl_ms` after their last heartbeat (etcd
    /// rounds up to whole seconds). Blocking: call it outside an async task.
    pub fn open(&self, ttl_ms: u64) -> crate::Result<Box<dyn ServiceRegistry>> {
        match self {
            Backend::InProcess => Ok(Box::new(Registry::new(ttl_ms))),
            #[cfg(feature = "etcd")]
            Backend::Etcd(url) => Ok(Box::new(crate::etcd::EtcdRegistry::connect(
                url,
                ttl_ms.div_ceil(1000).max(1),
            )?)),
            #[cfg(not(feature = "etcd"))]
            Backend::Etcd(url) => Err(crate::Error::invalid(
                "--registry",
                format!("etcd at {url}: this build has no `etcd` feature"),
            )),
        }
    }
}

/// Checks a heartbeat's names; errors name the empty field.
pub(crate) fn check(beat: &Heartbeat) -> crate::Result<()> {
    if beat.service.trim().is_empty() {
        return Err(crate::Error::invalid("service", "must not be empty"));
    }
    if beat.instance.trim().is_empty() {
        return Err(crate::Error::invalid("instance", "must not be empty"));
    }
    Ok(())
}

/// The in-process backend: instances by name, forgotten `ttl_ms` after their last heartbeat.
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
        check(&beat)?;
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

impl ServiceRegistry for Registry {
    fn heartbeat(&mut self, beat: Heartbeat, now_ms: u64) -> crate::Result<()> {
        Registry::heartbeat(self, beat, now_ms)
    }

    fn deregister(&mut self, service: &str, instance: &str) -> crate::Result<()> {
        if self
            .instances
            .get(instance)
            .is_some_and(|i| i.beat.service == service)
        {
            self.instances.remove(instance);
        }
        Ok(())
    }

    fn discover(&mut self, service: Option<&str>, now_ms: u64) -> crate::Result<Vec<Instance>> {
        let mut v = Registry::discover(self, service, now_ms);
        v.sort_by(|a, b| {
            (&a.beat.service, &a.beat.instance).cmp(&(&b.beat.service, &b.beat.instance))
        });
        Ok(v)
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
        ServiceRegistry::deregister(&mut r, "worker", "b").unwrap();
        assert!(ServiceRegistry::discover(&mut r, None, 1200)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn backends_parse_by_name() {
        assert_eq!(Backend::parse("inprocess").unwrap(), Backend::InProcess);
        let e = Backend::parse("zookeeper").unwrap_err().to_string();
        assert!(e.contains("zookeeper"), "{e}");
        let e = Backend::parse("etcd=127.0.0.1:2379")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://"), "{e}");
        let etcd = Backend::parse("etcd=http://127.0.0.1:2379/");
        if cfg!(feature = "etcd") {
            assert_eq!(etcd.unwrap(), Backend::Etcd("http://127.0.0.1:2379".into()));
        } else {
            let e = etcd.unwrap_err().to_string();
            assert!(e.contains("built without the `etcd` feature"), "{e}");
        }
    }
}
