//! Which devices and ports the RDMA transport uses: `DMSC_IB_HCA`, in NCCL's syntax.
//!
//! The value is a comma-separated list of `device[:port]`. Without a prefix, each entry
//! matches devices whose name starts with it (`mlx5` matches `mlx5_0` and `mlx5_12`); a
//! leading `=` makes every entry match exact names only; a leading `^` turns the list into
//! exclusions (`^=mlx5_1` excludes exactly `mlx5_1`). A port, when given, narrows the entry
//! to that port. Unset or empty: every active port of every device. The syntax is NCCL's
//! `NCCL_IB_HCA` (its `parseStringList` / `matchIfList` in `src/misc/utils.cc`, read for the
//! behaviour, never copied).

use super::verbs::DeviceInfo;
use dmsc_core::error::{Error, Result};

/// One entry of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HcaEntry {
    /// Device name or prefix.
    pub name: String,
    /// Port, or every port.
    pub port: Option<u8>,
}

/// A parsed `DMSC_IB_HCA`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HcaFilter {
    /// The entries (empty: everything matches unless `exclude`).
    pub entries: Vec<HcaEntry>,
    /// `^`: the entries name what not to use.
    pub exclude: bool,
    /// `=`: names match exactly instead of by prefix.
    pub exact: bool,
}

/// A selected port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selected {
    /// Device name.
    pub device: String,
    /// Port number.
    pub port: u8,
}

impl HcaFilter {
    /// Parse a `DMSC_IB_HCA` value.
    pub fn parse(value: &str) -> Result<HcaFilter> {
        let mut s = value.trim();
        let mut f = HcaFilter::default();
        if let Some(rest) = s.strip_prefix('^') {
            f.exclude = true;
            s = rest;
        }
        if let Some(rest) = s.strip_prefix('=') {
            f.exact = true;
            s = rest;
        }
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, port) = match item.split_once(':') {
                Some((n, p)) => {
                    let port = p.trim().parse::<u8>().ok().filter(|&p| p > 0).ok_or_else(|| {
                        Error::invalid(format!(
                            "DMSC_IB_HCA={value}: port `{p}` of `{item}` is not a number from 1 to 255"
                        ))
                    })?;
                    (n.trim(), Some(port))
                }
                None => (item, None),
            };
            if name.is_empty() || name.contains(['^', '=']) {
                return Err(Error::invalid(format!(
                    "DMSC_IB_HCA={value}: `{item}` is not a device name (`^` and `=` go once, \
                     at the start of the whole list)"
                )));
            }
            f.entries.push(HcaEntry {
                name: name.to_string(),
                port,
            });
        }
        if f.exclude && f.entries.is_empty() {
            return Err(Error::invalid(format!(
                "DMSC_IB_HCA={value}: `^` needs devices to exclude"
            )));
        }
        Ok(f)
    }

    fn entry_matches(&self, e: &HcaEntry, device: &str, port: u8) -> bool {
        let name = if self.exact {
            device == e.name
        } else {
            device.starts_with(&e.name)
        };
        name && e.port.is_none_or(|p| p == port)
    }

    /// Whether port `port` of `device` is selected.
    pub fn matches(&self, device: &str, port: u8) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        let hit = self
            .entries
            .iter()
            .any(|e| self.entry_matches(e, device, port));
        hit != self.exclude
    }

    /// The active ports of `devices` this filter selects, in the order listed. None: an
    /// error listing every device and port there is, with their states.
    pub fn select(&self, devices: &[DeviceInfo], raw: &str) -> Result<Vec<Selected>> {
        let picked: Vec<Selected> = devices
            .iter()
            .flat_map(|d| {
                d.ports
                    .iter()
                    .filter(|p| p.active && self.matches(&d.name, p.port))
                    .map(|p| Selected {
                        device: d.name.clone(),
                        port: p.port,
                    })
            })
            .collect();
        if !picked.is_empty() {
            return Ok(picked);
        }
        let what = if raw.trim().is_empty() {
            "no active RDMA port".to_string()
        } else {
            format!("DMSC_IB_HCA={raw} matches no active RDMA port")
        };
        Err(Error::invalid(format!("{what}; found: {}", list(devices))))
    }
}

/// `mlx5_0:1 (active, InfiniBand), mlx5_1:1 (down, Ethernet)`, or `no devices`.
pub fn list(devices: &[DeviceInfo]) -> String {
    let v: Vec<String> = devices
        .iter()
        .flat_map(|d| {
            if d.ports.is_empty() {
                return vec![format!("{} (no ports)", d.name)];
            }
            d.ports
                .iter()
                .map(|p| {
                    format!(
                        "{}:{} ({}, {})",
                        d.name,
                        p.port,
                        if p.active { "active" } else { "not active" },
                        p.link_layer
                    )
                })
                .collect()
        })
        .collect();
    if v.is_empty() {
        "no devices".into()
    } else {
        v.join(", ")
    }
}

/// Parse `DMSC_IB_GID_INDEX` (default 0; RoCE v2 clusters often need 3).
pub fn parse_gid_index(value: Option<&str>) -> Result<u8> {
    match value.map(str::trim) {
        None | Some("") => Ok(0),
        Some(v) => v.parse::<u8>().map_err(|_| {
            Error::invalid(format!(
                "DMSC_IB_GID_INDEX={v} is not a GID table index from 0 to 255"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdma::verbs::PortInfo;

    fn devs() -> Vec<DeviceInfo> {
        let port = |port, active| PortInfo {
            port,
            active,
            link_layer: "InfiniBand".into(),
        };
        vec![
            DeviceInfo {
                name: "mlx5_0".into(),
                ports: vec![port(1, true), port(2, true)],
            },
            DeviceInfo {
                name: "mlx5_1".into(),
                ports: vec![port(1, true)],
            },
            DeviceInfo {
                name: "mlx5_10".into(),
                ports: vec![port(1, false)],
            },
        ]
    }

    fn sel(v: &str) -> Result<Vec<String>> {
        let f = HcaFilter::parse(v)?;
        Ok(f.select(&devs(), v)?
            .into_iter()
            .map(|s| format!("{}:{}", s.device, s.port))
            .collect())
    }

    #[test]
    fn unset_selects_every_active_port() {
        assert_eq!(sel("").unwrap(), ["mlx5_0:1", "mlx5_0:2", "mlx5_1:1"]);
    }

    #[test]
    fn entries_match_by_prefix_and_port() {
        assert_eq!(sel("mlx5_0:1,mlx5_1:1").unwrap(), ["mlx5_0:1", "mlx5_1:1"]);
        assert_eq!(sel("mlx5_1").unwrap(), ["mlx5_1:1"]);
        assert_eq!(sel("mlx5").unwrap().len(), 3);
    }

    #[test]
    fn equals_matches_exact_names() {
        // Prefix `mlx5_1` would also match mlx5_10 (inactive here); `=` does not.
        let f = HcaFilter::parse("=mlx5_1").unwrap();
        assert!(f.matches("mlx5_1", 1) && !f.matches("mlx5_10", 1));
        let f = HcaFilter::parse("mlx5_1").unwrap();
        assert!(f.matches("mlx5_10", 1));
    }

    #[test]
    fn caret_excludes() {
        assert_eq!(sel("^mlx5_0").unwrap(), ["mlx5_1:1"]);
        assert_eq!(sel("^mlx5_0:2").unwrap(), ["mlx5_0:1", "mlx5_1:1"]);
        let f = HcaFilter::parse("^=mlx5_1").unwrap();
        assert!(f.exclude && f.exact && !f.matches("mlx5_1", 1) && f.matches("mlx5_10", 1));
    }

    #[test]
    fn nothing_matching_lists_what_exists() {
        let e = sel("mlx4").unwrap_err().to_string();
        assert!(
            e.contains("DMSC_IB_HCA=mlx4 matches no active RDMA port"),
            "{e}"
        );
        assert!(
            e.contains("mlx5_0:1 (active, InfiniBand)") && e.contains("mlx5_10:1 (not active"),
            "{e}"
        );
        let e = HcaFilter::parse("")
            .unwrap()
            .select(&[], "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no active RDMA port; found: no devices"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        for (v, want) in [
            ("mlx5_0:x", "port `x` of `mlx5_0:x`"),
            ("mlx5_0:0", "port `0`"),
            ("a,^b", "`^b` is not a device name"),
            ("^", "`^` needs devices"),
        ] {
            let e = HcaFilter::parse(v).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
        assert_eq!(parse_gid_index(Some("3")).unwrap(), 3);
        assert_eq!(parse_gid_index(None).unwrap(), 0);
        assert!(parse_gid_index(Some("300"))
            .unwrap_err()
            .to_string()
            .contains("DMSC_IB_GID_INDEX=300"));
    }
}
