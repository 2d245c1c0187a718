//! Where one launcher's ranks sit in a job of several hosts: torchrun's `--nnodes`,
//! `--node-rank`, `--master-addr` and `--master-port`.
//!
//! Each host runs one launcher with the same `--nnodes N`, `--master-addr HOST` and
//! `--master-port P`, its own `--node-rank I`, and `K` ranks (`--nproc-per-node K`). The job
//! has `N × K` ranks; local rank `l` of node `I` is rank `I × K + l` (torchrun's layout, which
//! is what `LOCAL_RANK` / `GROUP_RANK` consumers expect).
//!
//! Node 0's launcher serves the rendezvous store on port `P` of every interface (`0.0.0.0`,
//! or `::` when `HOST` is an IPv6 literal; only the loopback address itself when `HOST` is a
//! loopback address or `localhost`, so a one-machine test opens nothing to the network). Binding `HOST`
//! itself is avoided on purpose: a host's own name often resolves to a loopback address
//! there (Debian's `127.0.1.1` in `/etc/hosts`), which the other hosts cannot reach. The other
//! nodes serve nothing: their ranks connect to `HOST:P`.
//!
//! # What `MASTER_PORT` means
//!
//! With one node and no `--master-port`, the store takes a free port and `MASTER_PORT` is
//! another free port (see [`crate::launch`]). With `--master-port P`, `DMSC_STORE_ADDR` is
//! `HOST:P` (dmsc's store is where the user said), `MASTER_ADDR` is `HOST` and `MASTER_PORT` is
//! `P + 1`, the same on every node. It cannot be `P` itself: a torch program's rank 0 serves
//! torch's own `TCPStore` on `MASTER_PORT` (`init_process_group` with `env://`), which could
//! not bind the port dmsc's store holds, and the two stores speak different protocols. dmsc
//! programs read `DMSC_STORE_ADDR` first, so they never look at `MASTER_PORT`. (torchrun's
//! agent makes the converse choice, its store on `MASTER_PORT`, and dmsc then takes
//! `MASTER_PORT + 1`; either way the two stores sit on adjacent ports.)

use crate::{Error, Result};
use dmsc_core::bootstrap::env::join_host_port;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// torchrun's default `--master-port`, used when `--master-addr` is given without a port.
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// The nodes of a job and this launcher's place among them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nodes {
    /// Number of nodes (hosts) in the job, each running one launcher (at least 1).
    pub nnodes: usize,
    /// This launcher's node, `0..nnodes`; node 0 serves the store.
    pub node_rank: usize,
    /// Node 0's address and the store's port there. `None` (one node only): the store is
    /// served on a free port of 127.0.0.1.
    pub master: Option<(String, u16)>,
}

impl Default for Nodes {
    /// One node, store on a free port of 127.0.0.1.
    fn default() -> Nodes {
        Nodes {
            nnodes: 1,
            node_rank: 0,
            master: None,
        }
    }
}

impl Nodes {
    /// Check and build a layout from the command line's values: `nnodes` (default 1),
    /// `node_rank` (default 0), `master_addr` (required with more than one node; default
    /// 127.0.0.1 with one node and a port) and `master_port` (default
    /// [`DEFAULT_MASTER_PORT`] when an address is given). The errors name the option that is
    /// wrong.
    pub fn new(
        nnodes: Option<usize>,
        node_rank: Option<usize>,
        master_addr: Option<&str>,
        master_port: Option<u16>,
    ) -> Result<Nodes> {
        let nnodes = nnodes.unwrap_or(1);
        if nnodes == 0 {
            return Err(Error::invalid("--nnodes must be at least 1, got 0"));
        }
        let node_rank = node_rank.unwrap_or(0);
        if node_rank >= nnodes {
            return Err(Error::invalid(format!(
                "--node-rank {node_rank} is out of range: with --nnodes {nnodes} it must be \
                 0 to {}",
                nnodes - 1
            )));
        }
        let addr = match master_addr.map(|a| a.trim().trim_start_matches('[').trim_end_matches(']'))
        {
            Some("") => return Err(Error::invalid("--master-addr is empty: give node 0's host")),
            Some(a) if a.chars().any(char::is_whitespace) => {
                return Err(Error::invalid(format!(
                    "--master-addr '{a}' contains whitespace: give node 0's host name or address"
                )))
            }
            Some(a) => Some(a.to_string()),
            None if nnodes > 1 => {
                return Err(Error::invalid(format!(
                    "--nnodes {nnodes} needs --master-addr HOST: the address of node 0, where \
                     the store is served, reachable from every node"
                )))
            }
            None if master_port.is_some() => Some(Ipv4Addr::LOCALHOST.to_string()),
            None => None,
        };
        let master = match addr {
            Some(a) => {
                let port = master_port.unwrap_or(DEFAULT_MASTER_PORT);
                if port == 0 {
                    return Err(Error::invalid(
                        "--master-port must be a port number 1-65534, got 0: every node must \
                         know the store's port in advance",
                    ));
                }
                if port == u16::MAX {
                    return Err(Error::invalid(
                        "--master-port 65535 leaves no port above it for MASTER_PORT (torch's \
                         own store takes the store's port + 1): choose 1-65534",
                    ));
                }
                Some((a, port))
            }
            None => None,
        };
        Ok(Nodes {
            nnodes,
            node_rank,
            master,
        })
    }

    /// Refuse restarts with several nodes: each node's launcher would restart its own ranks
    /// alone, while the other nodes' ranks are gone or still running.
    pub fn check_restarts(&self, restarts: usize) -> Result<()> {
        if self.is_multi() && restarts > 0 {
            return Err(Error::invalid(format!(
                "--restarts {restarts} is not supported with --nnodes {}: each node's launcher \
                 would restart its own ranks alone",
                self.nnodes
            )));
        }
        Ok(())
    }

    /// Whether the job spans several nodes (output is then prefixed `[node:rank]`).
    pub fn is_multi(&self) -> bool {
        self.nnodes > 1
    }

    /// The job's world size with `nproc` ranks per node.
    pub fn world_size(&self, nproc: usize) -> usize {
        self.nnodes * nproc
    }

    /// The global rank of local rank `local`, with `nproc` ranks per node.
    pub fn rank(&self, nproc: usize, local: usize) -> usize {
        self.node_rank * nproc + local
    }

    /// What names local rank `local` in output: `R` on one node, `NODE:R` on several (`R`
    /// the global rank).
    pub fn tag(&self, nproc: usize, local: usize) -> String {
        let r = self.rank(nproc, local);
        if self.is_multi() {
            format!("{}:{r}", self.node_rank)
        } else {
            r.to_string()
        }
    }

    /// Where this launcher serves the store, or `None` when another node does.
    pub fn store_bind(&self) -> Option<SocketAddr> {
        if self.node_rank != 0 {
            return None;
        }
        let Some((host, port)) = &self.master else {
            return Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        };
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() => ip,
            Err(_) if host.eq_ignore_ascii_case("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Ok(IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        Some(SocketAddr::new(ip, *port))
    }

    /// The store's port and `MASTER_PORT` for the ranks: with `--master-port P`, `P` and
    /// `P + 1`; else the port the store was served on (`served`) and a free one (`free`).
    pub fn ports(
        &self,
        served: Option<u16>,
        free: impl FnOnce() -> Result<u16>,
    ) -> Result<(u16, u16)> {
        match (&self.master, served) {
            (Some((_, p)), _) => Ok((*p, p.saturating_add(1))),
            (None, Some(s)) => Ok((s, free()?)),
            (None, None) => Err(Error::invalid(
                "a node other than node 0 needs --master-addr to find the store",
            )),
        }
    }

    /// The rendezvous variables of local rank `local` (torchrun's, plus `GROUP_*`,
    /// `NODE_RANK` and dmsc's store variables), given the
    /// store's port and `MASTER_PORT` from [`Nodes::ports`].
    pub fn rank_env(
        &self,
        nproc: usize,
        local: usize,
        (store_port, master_port): (u16, u16),
    ) -> Vec<(&'static str, String)> {
        let host = match &self.master {
            Some((h, _)) => h.clone(),
            None => Ipv4Addr::LOCALHOST.to_string(),
        };
        vec![
            ("MASTER_ADDR", host.clone()),
            ("MASTER_PORT", master_port.to_string()),
            ("RANK", self.rank(nproc, local).to_string()),
            ("WORLD_SIZE", self.world_size(nproc).to_string()),
            ("LOCAL_RANK", local.to_string()),
            ("LOCAL_WORLD_SIZE", nproc.to_string()),
            ("GROUP_RANK", self.node_rank.to_string()),
            ("GROUP_WORLD_SIZE", self.nnodes.to_string()),
            ("NODE_RANK", self.node_rank.to_string()),
            ("DMSC_LAUNCHER", "dmscrun".to_string()),
            ("DMSC_STORE_ADDR", join_host_port(&host, store_port)),
            // The launcher of node 0 serves the store; no rank does.
            ("DMSC_STORE_EXTERNAL", "1".to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(
        nnodes: Option<usize>,
        node: Option<usize>,
        addr: Option<&str>,
        port: Option<u16>,
    ) -> String {
        Nodes::new(nnodes, node, addr, port)
            .unwrap_err()
            .to_string()
    }

    fn env_of(n: &Nodes, nproc: usize, local: usize, ports: (u16, u16)) -> Vec<(String, String)> {
        n.rank_env(nproc, local, ports)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    #[test]
    fn single_node_is_the_default() {
        let n = Nodes::new(None, None, None, None).unwrap();
        assert_eq!(n, Nodes::default());
        assert!(!n.is_multi());
        assert_eq!(n.tag(4, 3), "3");
        assert_eq!(n.store_bind(), Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(n.ports(Some(5000), || Ok(6000)).unwrap(), (5000, 6000));
        let env = env_of(&n, 4, 3, (5000, 6000));
        let get = |k: &str| env.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        assert_eq!(get("DMSC_STORE_ADDR"), Some("127.0.0.1:5000"));
        assert_eq!(get("MASTER_PORT"), Some("6000"));
        assert_eq!(get("RANK"), Some("3"));
        assert_eq!(get("GROUP_RANK"), Some("0"));
        assert_eq!(env.len(), 12);
    }

    #[test]
    fn several_nodes_follow_torchrun() {
        let n = Nodes::new(Some(3), Some(2), Some("h0"), Some(29400)).unwrap();
        assert!(n.is_multi());
        assert_eq!((n.world_size(4), n.rank(4, 1)), (12, 9));
        assert_eq!(n.tag(4, 1), "2:9");
        assert_eq!(n.store_bind(), None, "only node 0 serves the store");
        assert_eq!(
            n.ports(None, || panic!("no free port needed")).unwrap(),
            (29400, 29401)
        );
        let env = env_of(&n, 4, 1, (29400, 29401));
        let get = |k: &str| env.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        for (k, v) in [
            ("MASTER_ADDR", "h0"),
            ("MASTER_PORT", "29401"),
            ("RANK", "9"),
            ("WORLD_SIZE", "12"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "4"),
            ("GROUP_RANK", "2"),
            ("GROUP_WORLD_SIZE", "3"),
            ("NODE_RANK", "2"),
            ("DMSC_STORE_ADDR", "h0:29400"),
            ("DMSC_STORE_EXTERNAL", "1"),
        ] {
            assert_eq!(get(k), Some(v), "{k}");
        }
        let zero = Nodes::new(Some(3), Some(0), Some("h0"), None).unwrap();
        assert_eq!(zero.store_bind(), Some("0.0.0.0:29500".parse().unwrap()));
        let lo = Nodes::new(Some(2), Some(0), Some("127.0.0.1"), Some(7)).unwrap();
        assert_eq!(lo.store_bind(), Some("127.0.0.1:7".parse().unwrap()));
        let named = Nodes::new(Some(2), Some(0), Some("LocalHost"), Some(7)).unwrap();
        assert_eq!(named.store_bind(), Some("127.0.0.1:7".parse().unwrap()));
        let v6 = Nodes::new(Some(2), Some(0), Some("[fd00::1]"), Some(7)).unwrap();
        assert_eq!(v6.store_bind(), Some("[::]:7".parse().unwrap()));
        assert_eq!(env_of(&v6, 1, 0, (7, 8))[10].1, "[fd00::1]:7");
        // One node with a fixed port: the store is where the user said.
        let one = Nodes::new(None, None, None, Some(4000)).unwrap();
        assert_eq!(one.master, Some(("127.0.0.1".into(), 4000)));
        assert_eq!(one.tag(2, 1), "1");
    }

    #[test]
    fn bad_layouts_name_the_option() {
        assert!(err(Some(0), None, None, None).contains("--nnodes must be at least 1"));
        assert_eq!(
            err(Some(2), Some(2), Some("h"), None),
            "invalid argument: --node-rank 2 is out of range: with --nnodes 2 it must be 0 to 1"
        );
        assert!(err(None, Some(1), None, None).contains("--node-rank 1 is out of range"));
        assert!(err(Some(2), Some(1), None, None).contains("--nnodes 2 needs --master-addr"));
        assert!(err(Some(2), None, Some(" "), None).contains("--master-addr is empty"));
        assert!(err(Some(2), None, Some("a b"), None).contains("contains whitespace"));
        assert!(err(Some(2), None, Some("h"), Some(0)).contains("--master-port must be"));
        assert!(err(Some(2), None, Some("h"), Some(65535)).contains("--master-port 65535"));
        let two = Nodes::new(Some(2), None, Some("h"), None).unwrap();
        assert!(two.check_restarts(0).is_ok());
        assert!(Nodes::default().check_restarts(3).is_ok());
        let e = two.check_restarts(1).unwrap_err().to_string();
        assert!(
            e.contains("--restarts 1 is not supported with --nnodes 2"),
            "{e}"
        );
    }
}
