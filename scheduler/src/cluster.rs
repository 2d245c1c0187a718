//! The cluster description: ranks with a relative speed and a memory size, and the link
//! matrix between them (measured by [`crate::probe`] or given).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// One rank (one process with its device).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankDesc {
    /// A name for plans and logs.
    pub name: String,
    /// Speed relative to the cluster's `base_flops` (1.0: exactly that fast).
    pub speed: f64,
    /// Memory the rank offers to its stage, in bytes.
    pub memory_bytes: u64,
}

/// Bandwidth (bytes/s) and latency (s) between every ordered pair of ranks. The diagonal is
/// not used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkMatrix {
    /// `bandwidth[i][j]`: bytes per second from rank i to rank j.
    pub bandwidth: Vec<Vec<f64>>,
    /// `latency[i][j]`: seconds for a small message from rank i to rank j.
    pub latency: Vec<Vec<f64>>,
}

impl LinkMatrix {
    /// The same bandwidth and latency between every pair of `n` ranks.
    pub fn uniform(n: usize, bandwidth: f64, latency: f64) -> LinkMatrix {
        LinkMatrix {
            bandwidth: vec![vec![bandwidth; n]; n],
            latency: vec![vec![latency; n]; n],
        }
    }

    /// Number of ranks the matrix describes.
    pub fn len(&self) -> usize {
        self.bandwidth.len()
    }

    /// True when it describes no rank.
    pub fn is_empty(&self) -> bool {
        self.bandwidth.is_empty()
    }

    /// Check shape and values for `n` ranks; `path` prefixes field names in errors.
    pub fn validate(&self, n: usize, path: &str) -> Result<()> {
        for (name, m) in [("bandwidth", &self.bandwidth), ("latency", &self.latency)] {
            if m.len() != n {
                return Err(Error::invalid(
                    format!("{path}.{name}"),
                    format!("has {} rows, the cluster has {n} ranks", m.len()),
                ));
            }
            for (i, row) in m.iter().enumerate() {
                if row.len() != n {
                    return Err(Error::invalid(
                        format!("{path}.{name}[{i}]"),
                        format!("has {} entries, the cluster has {n} ranks", row.len()),
                    ));
                }
                for (j, &v) in row.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    let ok = if name == "bandwidth" {
                        v.is_finite() && v > 0.0
                    } else {
                        v.is_finite() && v >= 0.0
                    };
                    if !ok {
                        return Err(Error::invalid(
                            format!("{path}.{name}[{i}][{j}]"),
                            format!("{v} is not a valid {name}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A cluster: its ranks and links.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterDesc {
    /// The cluster's name.
    pub name: String,
    /// FLOP/s of a rank whose `speed` is 1.0.
    pub base_flops: f64,
    /// The ranks.
    pub ranks: Vec<RankDesc>,
    /// Bandwidth and latency between ranks; absent: `default_bandwidth` / `default_latency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<LinkMatrix>,
    /// Bytes/s between any two ranks when `links` is absent.
    #[serde(default = "default_bw")]
    pub default_bandwidth: f64,
    /// Seconds of latency between any two ranks when `links` is absent.
    #[serde(default)]
    pub default_latency: f64,
}

fn default_bw() -> f64 {
    10e9
}

impl ClusterDesc {
    /// `n` identical ranks with uniform links.
    pub fn homogeneous(n: usize, base_flops: f64, memory_bytes: u64, bandwidth: f64) -> Self {
        ClusterDesc {
            name: format!("homogeneous-{n}"),
            base_flops,
            ranks: (0..n)
                .map(|i| RankDesc {
                    name: format!("rank{i}"),
                    speed: 1.0,
                    memory_bytes,
                })
                .collect(),
            links: None,
            default_bandwidth: bandwidth,
            default_latency: 0.0,
        }
    }

    /// Parse and validate a cluster from JSON text.
    pub fn from_json(text: &str) -> Result<ClusterDesc> {
        let c: ClusterDesc = serde_json::from_str(text).map_err(|source| Error::Json {
            what: "cluster description".into(),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Read, parse and validate a cluster file.
    pub fn load(path: &std::path::Path) -> Result<ClusterDesc> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading cluster {}", path.display()), e))?;
        ClusterDesc::from_json(&text)
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        if !(self.base_flops.is_finite() && self.base_flops > 0.0) {
            return Err(Error::invalid(
                "base_flops",
                format!("{} is not a positive FLOP/s", self.base_flops),
            ));
        }
        if self.ranks.is_empty() {
            return Err(Error::invalid("ranks", "a cluster needs at least one rank"));
        }
        for (i, r) in self.ranks.iter().enumerate() {
            if !(r.speed.is_finite() && r.speed > 0.0) {
                return Err(Error::invalid(
                    format!("ranks[{i}].speed"),
                    format!("{} is not a positive relative speed", r.speed),
                ));
            }
            if r.memory_bytes == 0 {
                return Err(Error::invalid(
                    format!("ranks[{i}].memory_bytes"),
                    "must be positive",
                ));
            }
        }
        if !(self.default_bandwidth.is_finite() && self.default_bandwidth > 0.0) {
            return Err(Error::invalid(
                "default_bandwidth",
                format!("{} is not a positive bandwidth", self.default_bandwidth),
            ));
        }
        if !(self.default_latency.is_finite() && self.default_latency >= 0.0) {
            return Err(Error::invalid(
                "default_latency",
                format!("{} is not a latency", self.default_latency),
            ));
        }
        if let Some(l) = &self.links {
            l.validate(self.ranks.len(), "links")?;
        }
        Ok(())
    }

    /// The link matrix: the given one, or the uniform default.
    pub fn link_matrix(&self) -> LinkMatrix {
        self.links.clone().unwrap_or_else(|| {
            LinkMatrix::uniform(
                self.ranks.len(),
                self.default_bandwidth,
                self.default_latency,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let mut c = ClusterDesc::homogeneous(3, 1e12, 1 << 30, 1e9);
        c.validate().unwrap();
        c.ranks[2].speed = -1.0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ranks[2].speed"));
        c.ranks[2].speed = 1.0;
        let mut l = LinkMatrix::uniform(3, 1e9, 0.0);
        l.bandwidth[1][0] = 0.0;
        c.links = Some(l);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("links.bandwidth[1][0]"), "{e}");
        c.links = Some(LinkMatrix::uniform(2, 1e9, 0.0));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("links.bandwidth"), "{e}");
        let e = ClusterDesc::from_json(
            r#"{"name":"x","base_flops":1,"ranks":[{"name":"a","speed":1,"memory_bytes":0}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ranks[0].memory_bytes"), "{e}");
    }
}
