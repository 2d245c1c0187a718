//! The topology of a communicator: which ranks share a host, and how fast the links within
//! and between hosts are.
//!
//! Every rank publishes its host identity when the communicator connects (the transports'
//! host card: kernel boot id and namespaces, plus the host name), so every rank derives the
//! same [`Hosts`] layout. When the communicator spans several hosts, a short probe
//! ([`probe`]) measures the latency and bandwidth of each class of link: within each host,
//! and between a sample of host pairs; its figures reach every rank, so every rank prices
//! the algorithms alike and makes the same choice ([`Topology::models`]). This is the
//! information NCCL gathers in its topology detection (`ncclTopoGetSystem` and the search
//! that follows it), reduced to the two link classes the hierarchical algorithms use.

pub mod ladder;
pub mod probe;

use crate::error::{Error, Result};
use crate::model::CostModel;
use crate::plan::Hosts;
use crate::types::Rank;
use std::fmt;

/// Measured figures of one link class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// One-way latency of a small message, in seconds (half the median round trip).
    pub latency_s: f64,
    /// Bandwidth in one direction while both ends send, in bytes per second.
    pub bytes_per_s: f64,
}

impl Link {
    /// The cost model of this link: α and β from the measurement, γ (reductions) from
    /// `base`, since reductions run on the host's CPU whatever the link.
    pub fn model(&self, base: CostModel) -> CostModel {
        CostModel {
            alpha: self.latency_s,
            beta: 1.0 / self.bytes_per_s,
            gamma: base.gamma,
        }
    }

    /// Whether both figures are finite and positive (a record can carry NaN for "absent").
    pub fn is_valid(&self) -> bool {
        self.latency_s.is_finite()
            && self.latency_s >= 0.0
            && self.bytes_per_s.is_finite()
            && self.bytes_per_s > 0.0
    }
}

/// Hosts, the ranks on each, and the link matrix between hosts.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    hosts: Hosts,
    /// Name of each host (the name its first rank published).
    names: Vec<String>,
    /// `links[a * nhosts + b]`: the link from host `a` to host `b` (`a == b`: within host
    /// `a`), `None` where nothing was measured.
    links: Vec<Option<Link>>,
}

impl Topology {
    /// The topology in which rank `r` runs on the host with (arbitrary) id `host_id[r]` and
    /// name `name[r]`, with no link measured yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when there are no ranks, or the two slices differ in
    /// length.
    pub fn new(host_id: &[usize], name: &[String]) -> Result<Topology> {
        if host_id.len() != name.len() {
            return Err(Error::invalid(format!(
                "topology: {} host ids for {} host names",
                host_id.len(),
                name.len()
            )));
        }
        let hosts = Hosts::new(host_id)?;
        let names = (0..hosts.nhosts())
            .map(|h| name[hosts.members(h)[0]].clone())
            .collect();
        let n = hosts.nhosts();
        Ok(Topology {
            hosts,
            names,
            links: vec![None; n * n],
        })
    }

    /// The topology of `nranks` ranks on one host named `name`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `nranks` is 0.
    pub fn single_host(nranks: usize, name: &str) -> Result<Topology> {
        Topology::new(&vec![0; nranks], &vec![name.to_string(); nranks])
    }

    /// The host layout (which host each rank is on, and each rank's local index).
    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    /// Number of hosts.
    pub fn nhosts(&self) -> usize {
        self.hosts.nhosts()
    }

    /// Number of ranks.
    pub fn nranks(&self) -> usize {
        self.hosts.nranks()
    }

    /// The host of `rank` (`0..nhosts()`, host 0 being rank 0's).
    ///
    /// # Panics
    ///
    /// When `rank` is not below [`Topology::nranks`].
    pub fn host_of(&self, rank: Rank) -> usize {
        self.hosts.host_of(rank)
    }

    /// The ranks on `host`, ascending.
    ///
    /// # Panics
    ///
    /// When `host` is not below [`Topology::nhosts`].
    pub fn ranks_of(&self, host: usize) -> &[Rank] {
        self.hosts.members(host)
    }

    /// The name of `host`.
    ///
    /// # Panics
    ///
    /// When `host` is not below [`Topology::nhosts`].
    pub fn host_name(&self, host: usize) -> &str {
        &self.names[host]
    }

    /// The measured link from host `a` to host `b` (`a == b`: between ranks of host `a`),
    /// or `None` when it was not measured (the probe was off, the host has one rank, or the
    /// pair was not in the probe's sample).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when a host is out of range.
    pub fn link(&self, a: usize, b: usize) -> Result<Option<Link>> {
        let n = self.nhosts();
        if a >= n || b >= n {
            return Err(Error::invalid(format!(
                "host {} is out of range for a topology of {n} hosts",
                a.max(b)
            )));
        }
        Ok(self.links[a * n + b])
    }

    /// Record the figures of the link between hosts `a` and `b`, both ways.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when a host is out of range or a figure is not finite
    /// and positive.
    pub fn set_link(&mut self, a: usize, b: usize, link: Link) -> Result<()> {
        self.link(a, b)?;
        if !link.is_valid() {
            return Err(Error::invalid(format!(
                "link {a}-{b}: latency {} s and bandwidth {} B/s must be finite and positive",
                link.latency_s, link.bytes_per_s
            )));
        }
        let n = self.nhosts();
        self.links[a * n + b] = Some(link);
        self.links[b * n + a] = Some(link);
        Ok(())
    }

    /// Whether any link was measured.
    pub fn measured(&self) -> bool {
        self.links.iter().any(Option::is_some)
    }

    /// The cost models of the two link classes: within hosts and between them, or the given
    /// default where none of a class was measured. Between hosts, the median of the measured
    /// links (latency and bandwidth taken apart): host pairs may differ, and one odd pair
    /// should not price them all. Within hosts, the best measured latency and bandwidth:
    /// the hosts of a job are alike, a memory copy between two ranks of one host is slowed
    /// only by the scheduler taking a rank off its core while it is timed (noise that only
    /// adds time, seen on oversubscribed hosts), and the hierarchical schedules that the
    /// figure prices keep those ranks busy rather than waiting. The result depends only on
    /// the topology, so ranks holding the same topology choose the same algorithms.
    pub fn models(
        &self,
        intra_default: CostModel,
        inter_default: CostModel,
    ) -> (CostModel, CostModel) {
        let n = self.nhosts();
        let class = |inside: bool| -> Vec<Link> {
            (0..n)
                .flat_map(|a| (0..n).map(move |b| (a, b)))
                .filter(|&(a, b)| if inside { a == b } else { a < b })
                .filter_map(|(a, b)| self.links[a * n + b])
                .collect()
        };
        let model = |links: Vec<Link>, base: CostModel, best: bool| -> CostModel {
            if links.is_empty() {
                return base;
            }
            let lat: Vec<f64> = links.iter().map(|l| l.latency_s).collect();
            let bw: Vec<f64> = links.iter().map(|l| l.bytes_per_s).collect();
            let (latency_s, bytes_per_s) = if best {
                (
                    lat.into_iter().fold(f64::INFINITY, f64::min),
                    bw.into_iter().fold(0.0, f64::max),
                )
            } else {
                (median(lat), median(bw))
            };
            Link {
                latency_s,
                bytes_per_s,
            }
            .model(base)
        };
        (
            model(class(true), intra_default, true),
            model(class(false), inter_default, false),
        )
    }
}

/// The median of `v` (the mean of the two middle values for an even count); `v` must not
/// be empty and holds no NaN.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Writes one line per host (`host 0 "name": ranks [0, 1, 2]`) and one per measured link
/// (`link 0-1: 95.3 us, 0.118 GB/s`), as `DMSC_DEBUG=INFO` prints at init.
impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.nhosts();
        write!(f, "{} ranks on {} host(s)", self.nranks(), n)?;
        for h in 0..n {
            write!(
                f,
                "\n  host {h} \"{}\": ranks {}",
                self.names[h],
                rank_list(self.ranks_of(h))
            )?;
        }
        for a in 0..n {
            for b in a..n {
                if let Some(l) = self.links[a * n + b] {
                    let what = if a == b {
                        format!("within host {a}")
                    } else {
                        format!("host {a} - host {b}")
                    };
                    write!(
                        f,
                        "\n  link {what}: {:.1} us, {:.3} GB/s",
                        l.latency_s * 1e6,
                        l.bytes_per_s / 1e9
                    )?;
                }
            }
        }
        if !self.measured() && n > 1 {
            write!(f, "\n  links not measured (DMSC_TOPO_PROBE=0)")?;
        }
        Ok(())
    }
}

/// `[0-3, 8, 10-11]`: ascending ranks with consecutive runs collapsed.
fn rank_list(ranks: &[Rank]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ranks.len() {
        let mut j = i;
        while j + 1 < ranks.len() && ranks[j + 1] == ranks[j] + 1 {
            j += 1;
        }
        parts.push(if j > i {
            format!("{}-{}", ranks[i], ranks[j])
        } else {
            ranks[i].to_string()
        });
        i = j + 1;
    }
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|r| format!("h{}", r % 3)).collect()
    }

    #[test]
    fn hosts_are_numbered_by_first_rank_and_named() {
        let t = Topology::new(&[7, 9, 7, 9, 4], &names(5)).unwrap();
        assert_eq!(t.nhosts(), 3);
        assert_eq!(t.ranks_of(0), &[0, 2]);
        assert_eq!(t.ranks_of(1), &[1, 3]);
        assert_eq!(t.ranks_of(2), &[4]);
        assert_eq!(t.host_name(1), "h1");
        assert_eq!(t.host_of(3), 1);
        let s = t.to_string();
        assert!(
            s.contains("5 ranks on 3 host(s)") && s.contains("host 0 \"h0\": ranks [0, 2]"),
            "{s}"
        );
        assert!(s.contains("not measured"), "{s}");
    }

    #[test]
    fn bad_shapes_and_figures_are_refused() {
        assert!(Topology::new(&[], &[]).is_err());
        let e = Topology::new(&[0, 1], &names(1)).unwrap_err().to_string();
        assert!(e.contains("2 host ids for 1 host names"), "{e}");
        let mut t = Topology::new(&[0, 1], &names(2)).unwrap();
        let e = t.link(0, 2).unwrap_err().to_string();
        assert!(e.contains("host 2 is out of range"), "{e}");
        let bad = Link {
            latency_s: f64::NAN,
            bytes_per_s: 1.0,
        };
        assert!(t.set_link(0, 1, bad).is_err());
        assert_eq!(t.link(0, 1).unwrap(), None);
    }

    #[test]
    fn models_take_the_median_between_hosts_the_best_within_and_defaults_elsewhere() {
        let mut t = Topology::new(&[0, 0, 1, 1, 2, 2], &names(6)).unwrap();
        let intra = CostModel::shared_memory();
        let inter = CostModel::default();
        assert_eq!(t.models(intra, inter), (intra, inter));
        let l = |us: f64, gbs: f64| Link {
            latency_s: us * 1e-6,
            bytes_per_s: gbs * 1e9,
        };
        t.set_link(0, 1, l(100.0, 0.1)).unwrap();
        t.set_link(1, 2, l(300.0, 0.2)).unwrap();
        t.set_link(0, 2, l(200.0, 0.12)).unwrap();
        t.set_link(1, 1, l(2.0, 5.0)).unwrap();
        let (i, x) = t.models(intra, inter);
        assert!((x.alpha - 200e-6).abs() < 1e-12 && (x.beta - 1.0 / 0.12e9).abs() < 1e-18);
        assert_eq!(x.gamma, inter.gamma);
        assert!((i.alpha - 2e-6).abs() < 1e-12 && (i.beta - 1.0 / 5e9).abs() < 1e-18);
        // Within hosts the best figures of all hosts: host 0 measured while descheduled.
        t.set_link(0, 0, l(400.0, 0.07)).unwrap();
        t.set_link(2, 2, l(3.0, 8.0)).unwrap();
        let (i, _) = t.models(intra, inter);
        assert!((i.alpha - 2e-6).abs() < 1e-12 && (i.beta - 1.0 / 8e9).abs() < 1e-18);
        assert_eq!(t.link(2, 1).unwrap(), Some(l(300.0, 0.2)));
        let s = t.to_string();
        assert!(
            s.contains("link host 0 - host 1: 100.0 us, 0.100 GB/s"),
            "{s}"
        );
        assert!(s.contains("link within host 1: 2.0 us, 5.000 GB/s"), "{s}");
    }

    #[test]
    fn rank_lists_collapse_runs() {
        assert_eq!(rank_list(&[0, 1, 2, 3, 8, 10, 11]), "[0-3, 8, 10-11]");
        assert_eq!(rank_list(&[5]), "[5]");
    }
}
