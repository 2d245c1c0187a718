//! The service registry kept in etcd (cargo feature `etcd`).
//!
//! etcd v3 speaks gRPC, and it also serves the same calls as JSON over plain HTTP through
//! its gRPC gateway: each call is a `POST` of the request message as JSON to a path under
//! `/v3/` (etcd 3.4: `/v3/kv/put`, `/v3/kv/range`, `/v3/kv/deleterange`, `/v3/lease/grant`,
//! `/v3/lease/keepalive`, `/v3/kv/lease/revoke`). Keys and values are bytes, so the JSON
//! carries them base64-encoded, and 64-bit integers such as lease ids travel as decimal
//! strings. A failed call answers with `{"error", "message", "code"}`, the gRPC status.
//! (See etcd's documentation, "gRPC gateway", and its API reference for these messages.)
//!
//! An instance lives at `/dmsc/services/<service>/<instance>`, its value the
//! [`Instance`] as JSON, attached to a lease of the registry's TTL:
//!
//! * register: grant a lease, then put the key with that lease;
//! * heartbeat: keep the lease alive (and put the key again only if the heartbeat changed);
//!   if etcd has let the lease expire, register again;
//! * deregister: revoke the lease, which deletes the key with it;
//! * discover: a range read of the prefix `/dmsc/services/[<service>/]`.
//!
//! An instance whose heartbeats stop disappears when etcd expires its lease, the TTL after
//! its last keepalive; etcd grants at least its minimum TTL (2 s with default settings).
//! An instance's `last_seen_ms` is when its record was last written.

use crate::error::{Error, Result};
use crate::registry::{self, Heartbeat, Instance, ServiceRegistry};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The key prefix of every registered instance.
pub const PREFIX: &str = "/dmsc/services/";

/// A lease this registry holds for one instance, and the heartbeat last written under it.
#[derive(Debug)]
struct Held {
    lease: String,
    beat: Heartbeat,
}

/// Instances registered in etcd under leases, through etcd's JSON gRPC gateway.
#[derive(Debug)]
pub struct EtcdRegistry {
    endpoint: String,
    ttl_s: u64,
    http: reqwest::blocking::Client,
    held: BTreeMap<String, Held>,
}

/// The key of `instance` of `service`.
pub fn key(service: &str, instance: &str) -> String {
    format!("{PREFIX}{service}/{instance}")
}

/// The end of the key range holding every key that starts with `prefix`: the prefix with
/// its last byte incremented (etcd's `range_end` convention).
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A 64-bit integer field, as a JSON string or number (0 when absent).
fn int_field(v: &Value, name: &str) -> i64 {
    match &v[name] {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

impl EtcdRegistry {
    /// Connect to etcd at `endpoint` (e.g. `http://127.0.0.1:2379`), with leases of
    /// `ttl_s` seconds. Errors if etcd does not answer its `/version`.
    pub fn connect(endpoint: &str, ttl_s: u64) -> Result<EtcdRegistry> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Registry {
                what: format!("building the HTTP client for etcd at {endpoint}"),
                reason: e.to_string(),
            })?;
        let url = format!("{endpoint}/version");
        let version = http
            .get(&url)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json::<Value>())
            .map_err(|e| Error::Registry {
                what: format!("reaching etcd at {url}"),
                reason: e.to_string(),
            })?;
        tracing::info!(%endpoint, version = %version["etcdserver"], ttl_s, "etcd registry");
        Ok(EtcdRegistry {
            endpoint,
            ttl_s: ttl_s.max(1),
            http,
            held: BTreeMap::new(),
        })
    }

    /// The endpoint this registry talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The lease TTL it asks for, in seconds.
    pub fn ttl_s(&self) -> u64 {
        self.ttl_s
    }

    /// POST `body` to `path`; `what` names the call and its key in errors, with etcd's
    /// message or the transport's error.
    fn call(&self, path: &str, what: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.endpoint);
        let fail = |reason: String| Error::Registry {
            what: format!("{what} at {url}"),
            reason,
        };
        let resp = self
            .http
            .post(&url)
            .json(body)
            .send()
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let text = resp.text().map_err(|e| fail(e.to_string()))?;
        // A streaming call (keepalive) answers one JSON object per line.
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let v: Value = serde_json::from_str(first)
            .map_err(|e| fail(format!("HTTP {status}, not JSON ({e}): {text:.200}")))?;
        let err = v
            .get("error")
            .or_else(|| v.get("result").and_then(|r| r.get("error")));
        if let Some(err) = err {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .or_else(|| v["message"].as_str())
                .or_else(|| err.as_str())
                .unwrap_or("no message");
            return Err(fail(format!(
                "etcd says: {message} (code {})",
                int_field(&v, "code")
            )));
        }
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}: {text:.200}")));
        }
        Ok(v)
    }

    /// Grant a lease of the registry's TTL; its id.
    fn grant(&self, key: &str) -> Result<String> {
        let v = self.call(
            "/v3/lease/grant",
            &format!("lease grant for {key}"),
            &json!({ "TTL": self.ttl_s }),
        )?;
        match int_field(&v, "ID") {
            0 => Err(Error::Registry {
                what: format!("lease grant for {key} at {}", self.endpoint),
                reason: format!("no lease id in the answer: {v}"),
            }),
            id => Ok(id.to_string()),
        }
    }

    /// Put `key` = `instance` as JSON under `lease`.
    fn put(&self, key: &str, lease: &str, instance: &Instance) -> Result<()> {
        let value = serde_json::to_vec(instance).map_err(|source| Error::Json {
            what: format!("the record of {key}"),
            source,
        })?;
        self.call(
            "/v3/kv/put",
            &format!("put {key}"),
            &json!({ "key": B64.encode(key), "value": B64.encode(value), "lease": lease }),
        )?;
        Ok(())
    }

    /// Keep `lease` alive; false if etcd no longer has it (it expired).
    fn keepalive(&self, key: &str, lease: &str) -> Result<bool> {
        let v = self.call(
            "/v3/lease/keepalive",
            &format!("lease keepalive for {key}"),
            &json!({ "ID": lease }),
        )?;
        Ok(int_field(&v["result"], "TTL") > 0)
    }

    /// Register `beat`'s instance: a fresh lease, and its key put under it.
    pub fn register(&mut self, beat: Heartbeat, now_ms: u64) -> Result<()> {
        registry::check(&beat)?;
        if beat.service.contains('/') {
            return Err(Error::invalid(
                "service",
                format!(
                    "`{}` must not contain `/` (the key separator)",
                    beat.service
                ),
            ));
        }
        let key = key(&beat.service, &beat.instance);
        let lease = self.grant(&key)?;
        let instance = Instance {
            beat: beat.clone(),
            last_seen_ms: now_ms,
        };
        self.put(&key, &lease, &instance)?;
        self.held.insert(key, Held { lease, beat });
        Ok(())
    }

    /// Keep `instance` of `service` alive without a new heartbeat (what a worker that
    /// registered itself does periodically); false if its lease had already expired (it
    /// must register again) or this registry never registered it.
    pub fn keep_alive(&mut self, service: &str, instance: &str) -> Result<bool> {
        let key = key(service, instance);
        let Some(held) = self.held.get(&key) else {
            return Ok(false);
        };
        let alive = self.keepalive(&key, &held.lease)?;
        if !alive {
            self.held.remove(&key);
        }
        Ok(alive)
    }
}

impl ServiceRegistry for EtcdRegistry {
    fn heartbeat(&mut self, beat: Heartbeat, now_ms: u64) -> Result<()> {
        registry::check(&beat)?;
        let key = key(&beat.service, &beat.instance);
        if !self.keep_alive(&beat.service, &beat.instance)? {
            return self.register(beat, now_ms);
        }
        if let Some(held) = self.held.get_mut(&key) {
            if held.beat != beat {
                let instance = Instance {
                    beat: beat.clone(),
                    last_seen_ms: now_ms,
                };
                let lease = held.lease.clone();
                held.beat = beat;
                self.put(&key, &lease, &instance)?;
            }
        }
        Ok(())
    }

    fn deregister(&mut self, service: &str, instance: &str) -> Result<()> {
        let key = key(service, instance);
        match self.held.remove(&key) {
            Some(held) => {
                match self.call(
                    "/v3/kv/lease/revoke",
                    &format!("lease revoke for {key}"),
                    &json!({ "ID": held.lease }),
                ) {
                    Ok(_) => Ok(()),
                    // Already expired: the key went with it.
                    Err(Error::Registry { reason, .. })
                        if reason.contains("requested lease not found") =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            // Registered by another process (or a gateway before a restart): delete the key.
            None => self
                .call(
                    "/v3/kv/deleterange",
                    &format!("delete {key}"),
                    &json!({ "key": B64.encode(&key) }),
                )
                .map(|_| ()),
        }
    }

    fn discover(&mut self, service: Option<&str>, _now_ms: u64) -> Result<Vec<Instance>> {
        let prefix = match service {
            Some(s) => format!("{PREFIX}{s}/"),
            None => PREFIX.to_string(),
        };
        let v = self.call(
            "/v3/kv/range",
            &format!("range {prefix}*"),
            &json!({ "key": B64.encode(&prefix), "range_end": B64.encode(range_end(&prefix)) }),
        )?;
        let kvs = v["kvs"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let decode = |field: &str| {
                B64.decode(kv[field].as_str().unwrap_or(""))
                    .map_err(|e| Error::Registry {
                        what: format!("range {prefix}* at {}", self.endpoint),
                        reason: format!("the {field} of an entry is not base64: {e}"),
                    })
            };
            let key = String::from_utf8_lossy(&decode("key")?).into_owned();
            let instance: Instance =
                serde_json::from_slice(&decode("value")?).map_err(|source| Error::Json {
                    what: format!("the record of {key} in etcd"),
                    source,
                })?;
            out.push(instance);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_end_after_every_key_with_the_prefix() {
        assert_eq!(range_end("/dmsc/services/"), b"/dmsc/services0".to_vec());
        assert_eq!(range_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(
            key("worker", "job1-rank0"),
            "/dmsc/services/worker/job1-rank0"
        );
    }

    #[test]
    fn integers_are_read_from_strings_or_numbers() {
        let v = json!({"ID": "7587899294045470471", "TTL": 2});
        assert_eq!(int_field(&v, "ID"), 7587899294045470471);
        assert_eq!(int_field(&v, "TTL"), 2);
        assert_eq!(int_field(&v, "missing"), 0);
    }
}
