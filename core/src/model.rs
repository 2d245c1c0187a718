//! The alpha-beta(-gamma) cost model: predicted time of each algorithm, used to choose one
//! and to extrapolate to scales we cannot run.
//!
//! A message of `m` bytes costs `α + β·m`; reducing `m` bytes costs `γ·m`. A step in which a
//! rank sends to and receives from different peers costs as much as its largest transfer
//! (full-duplex links). These are the formulas of Thakur, Rabenseifner and Gropp,
//! "Optimization of collective communication operations in MPICH", International Journal of
//! High Performance Computing Applications 19(1), 2005, applied to the schedules of
//! [`crate::plan`]; with `p` ranks and `b` bytes:
//!
//! | algorithm | time |
//! | --- | --- |
//! | ring all-reduce | `2(p-1)α + 2(p-1)/p·bβ + (p-1)/p·bγ` |
//! | double binary tree all-reduce, `K` segments of `s` bytes per tree | `(K + 3⌈log2 p⌉)·(α + 4sβ + 2sγ)` |
//! | recursive-doubling all-reduce, `q` the largest power of two `≤ p` | `(log2 q + 2[q≠p])·(α + bβ + bγ)` |
//! | chain broadcast (reduce), `K` segments of `s` | `(p-2+K)·(α + sβ (+ sγ))` |
//! | binomial broadcast (reduce) | `⌈log2 p⌉·(α + bβ (+ bγ))` |
//! | ring reduce-scatter / all-gather, blocks of `c` bytes | `(p-1)·(α + cβ (+ cγ))` |
//! | pairwise all-to-all, blocks of `c` | `(p-1)·(α + cβ)` |
//! | dissemination barrier | `⌈log2 p⌉·α` |
//!
//! In a tree step a rank that is inner in one tree and a leaf in the other sends four
//! segments (one up and two down in the first tree, one up in the second) and reduces two,
//! which is where `4sβ + 2sγ` comes from; `3⌈log2 p⌉` is the pipeline's fill and drain (two
//! time units per level up, because a node's two children are received one after the other,
//! one per level down).
//!
//! ## Two link classes
//!
//! [`HierCostModel`] prices the host-aware schedules (`plan::hier_all_reduce`,
//! `plan::host_ring`) with one [`CostModel`] for links between ranks of one host and one for
//! the network between hosts, whose per-byte cost `β_e` is paid by each host's single network
//! link: `k` messages of `c` bytes leaving one host in the same step cost `α_e + k·c·β_e`. A
//! step costs as much as its slowest transfer; reductions cost the intra-host `γ`. With
//! `N` ranks, `H` hosts of sizes `s_h`, `m = min s_h`, `s = max s_h`, `b` bytes:
//!
//! | algorithm | time |
//! | --- | --- |
//! | ring all-reduce, `e` ring edges leaving the busiest host (`e = 0` on one host) | `2(N-1)·max(α_i + cβ_i, α_e + e·cβ_e) + (N-1)cγ`, `c = b/N` |
//! | ring in host order | the same with `e = 1` |
//! | hierarchical all-reduce | `(s-1)(α_i + (b/m)(β_i+γ)) + 2(H-1)(α_e + b/H·β_e) + (H-1)(b/(mH))γ + (s-1)(α_i + (b/m)β_i)` |
//!
//! The hierarchical time is intra-host reduce-scatter, inter-host ring all-reduce of `m`
//! concurrent groups sharing each host's link (`m` blocks of `b/(mH)` per step), intra-host
//! all-gather. With a slow network and large `b` the ratio of flat ring to hierarchical
//! tends to `2(N-1)/N ÷ 2(H-1)/H`, the bus-bandwidth factors of NCCL's performance notes
//! applied to the ranks and to the hosts (Patarasuk and Yuan, "Bandwidth optimal all-reduce
//! algorithms for clusters of workstations", JPDC 69(2), 2009; Thakur, Rabenseifner and
//! Gropp 2005 for the α-β-γ terms; Jia et al., arXiv:1807.11205, 2018, for the two-level
//! scheme).

use crate::types::{Algo, CollDesc, CollKind};

/// Machine parameters of the model, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostModel {
    /// Latency of one message (s).
    pub alpha: f64,
    /// Transfer time per byte (s/B): the inverse of the link bandwidth.
    pub beta: f64,
    /// Reduction time per byte (s/B).
    pub gamma: f64,
}

impl Default for CostModel {
    /// TCP over loopback: α = 20 µs, 3 GB/s links, 10 GB/s reductions.
    fn default() -> Self {
        CostModel {
            alpha: 20e-6,
            beta: 1.0 / 3e9,
            gamma: 1.0 / 10e9,
        }
    }
}

impl CostModel {
    /// Shared memory between the ranks of one host: α = 1 µs (a doorbell-free ring hand-off
    /// with the engine's per-step work), 8 GB/s copies, 10 GB/s reductions; measured on the
    /// development VM, where it moves the ring/recursive-doubling crossover at 2 ranks from
    /// ~400 KB (the TCP model) to ~20 KB (ring measured 6.8 GB/s at 64 KiB against 2.7 for
    /// recursive doubling).
    pub fn shared_memory() -> CostModel {
        CostModel {
            alpha: 1e-6,
            beta: 1.0 / 8e9,
            gamma: 1.0 / 10e9,
        }
    }
}

/// `⌈log2 p⌉`.
fn log2_ceil(p: usize) -> f64 {
    f64::from(p.max(1).next_power_of_two().trailing_zeros())
}

/// `(K, s)`: number of segments and segment size for `bytes` in segments of `seg`.
fn segments(bytes: usize, seg: usize) -> (f64, f64) {
    let s = seg.max(1).min(bytes.max(1));
    (bytes.div_ceil(s).max(1) as f64, s as f64)
}

impl CostModel {
    /// Ring all-reduce of `bytes` per rank over `p` ranks.
    pub fn ring_all_reduce(&self, bytes: usize, p: usize) -> f64 {
        if p <= 1 {
            return 0.0;
        }
        let block = bytes.div_ceil(p) as f64;
        let steps = (p - 1) as f64;
        2.0 * steps * (self.alpha + block * self.beta) + steps * block * self.gamma
    }

    /// Recursive-doubling all-reduce of `bytes` per rank over `p` ranks: `⌊log2 p⌋` exchanges
    /// of the whole vector, plus a fold and an unfold when `p` is not a power of two.
    pub fn recursive_doubling_all_reduce(&self, bytes: usize, p: usize) -> f64 {
        if p <= 1 {
            return 0.0;
        }
        let q = 1usize << (usize::BITS - 1 - p.leading_zeros());
        let steps = q.trailing_zeros() as f64 + if q == p { 0.0 } else { 2.0 };
        let b = bytes as f64;
        steps * (self.alpha + b * self.beta + b * self.gamma)
    }

    /// Rabenseifner's all-reduce of `bytes` per rank over `p` ranks: `log2 q` halving rounds
    /// (sending and combining `bytes·(1 - 1/q)` in all), as many doubling rounds (sending as
    /// much), plus a fold and an unfold of the whole vector when `p` is not a power of two
    /// `q` (Thakur, Rabenseifner and Gropp 2005, section 4.4).
    pub fn rabenseifner_all_reduce(&self, bytes: usize, p: usize) -> f64 {
        if p <= 1 {
            return 0.0;
        }
        let q = 1usize << (usize::BITS - 1 - p.leading_zeros());
        let rounds = q.trailing_zeros() as f64;
        let b = bytes as f64;
        let moved = b * (1.0 - 1.0 / q as f64);
        let fold = if q == p {
            0.0
        } else {
            2.0 * (self.alpha + b * self.beta) + b * self.gamma
        };
        fold + 2.0 * rounds * self.alpha + moved * (2.0 * self.beta + self.gamma)
    }

    /// Pipelined double-binary-tree all-reduce of `bytes` per rank over `p` ranks in
    /// segments of `segment_bytes`.
    pub fn tree_all_reduce(&self, bytes: usize, p: usize, segment_bytes: usize) -> f64 {
        if p <= 1 {
            return 0.0;
        }
        let (k, s) = segments(bytes.div_ceil(2), segment_bytes);
        let steps = k + 3.0 * log2_ceil(p);
        steps * (self.alpha + 4.0 * s * self.beta + 2.0 * s * self.gamma)
    }

    /// Pipelined chain broadcast of `bytes` over `p` ranks in segments of `segment_bytes`.
    pub fn chain_broadcast(&self, bytes: usize, p: usize, segment_bytes: usize) -> f64 {
        self.chain(bytes, p, segment_bytes, 0.0)
    }

    /// Pipelined chain reduce of `bytes` over `p` ranks in segments of `segment_bytes`.
    pub fn chain_reduce(&self, bytes: usize, p: usize, segment_bytes: usize) -> f64 {
        self.chain(bytes, p, segment_bytes, self.gamma)
    }

    fn chain(&self, bytes: usize, p: usize, segment_bytes: usize, gamma: f64) -> f64 {
        if p <= 1 {
            return 0.0;
        }
        let (k, s) = segments(bytes, segment_bytes);
        (p as f64 - 2.0 + k) * (self.alpha + s * (self.beta + gamma))
    }

    /// Binomial-tree broadcast of `bytes` over `p` ranks.
    pub fn binomial_broadcast(&self, bytes: usize, p: usize) -> f64 {
        log2_ceil(p) * (self.alpha + bytes as f64 * self.beta)
    }

    /// Binomial-tree reduce of `bytes` over `p` ranks.
    pub fn binomial_reduce(&self, bytes: usize, p: usize) -> f64 {
        log2_ceil(p) * (self.alpha + bytes as f64 * (self.beta + self.gamma))
    }

    /// Ring reduce-scatter over `p` ranks, each receiving `block_bytes`.
    pub fn ring_reduce_scatter(&self, block_bytes: usize, p: usize) -> f64 {
        let c = block_bytes as f64;
        p.saturating_sub(1) as f64 * (self.alpha + c * (self.beta + self.gamma))
    }

    /// Ring all-gather over `p` ranks, each contributing `block_bytes`.
    pub fn ring_all_gather(&self, block_bytes: usize, p: usize) -> f64 {
        p.saturating_sub(1) as f64 * (self.alpha + block_bytes as f64 * self.beta)
    }

    /// Pairwise all-to-all over `p` ranks with `block_bytes` per pair.
    pub fn pairwise_all_to_all(&self, block_bytes: usize, p: usize) -> f64 {
        p.saturating_sub(1) as f64 * (self.alpha + block_bytes as f64 * self.beta)
    }

    /// Dissemination barrier over `p` ranks.
    pub fn barrier(&self, p: usize) -> f64 {
        log2_ceil(p) * self.alpha
    }

    /// Predicted time of `desc` over `p` ranks with algorithm `algo` (meaning as in
    /// [`crate::plan::choose_algo`]) and pipeline segments of `segment_bytes`. All-to-all-v
    /// and send/recv have no count to predict from and are given 0.
    pub fn predict(&self, desc: &CollDesc, p: usize, algo: Algo, segment_bytes: usize) -> f64 {
        let bytes = desc.count.saturating_mul(desc.dtype.size());
        let tree = algo == Algo::Tree;
        match desc.kind {
            CollKind::AllReduce => match algo {
                Algo::Ring => self.ring_all_reduce(bytes, p),
                Algo::Tree => self.tree_all_reduce(bytes, p, segment_bytes),
                Algo::RecursiveDoubling => self.recursive_doubling_all_reduce(bytes, p),
                Algo::Rabenseifner => self.rabenseifner_all_reduce(bytes, p),
            },
            CollKind::Broadcast if tree => self.binomial_broadcast(bytes, p),
            CollKind::Broadcast => self.chain_broadcast(bytes, p, segment_bytes),
            CollKind::Reduce if tree => self.binomial_reduce(bytes, p),
            CollKind::Reduce => self.chain_reduce(bytes, p, segment_bytes),
            CollKind::ReduceScatter => self.ring_reduce_scatter(bytes, p),
            CollKind::AllGather => self.ring_all_gather(bytes, p),
            CollKind::AllToAll => self.pairwise_all_to_all(bytes, p),
            CollKind::Barrier => self.barrier(p),
            CollKind::AllToAllV | CollKind::SendRecv => 0.0,
        }
    }
}

/// The α-β-γ model with two link classes: within a host and between hosts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HierCostModel {
    /// Links between ranks of one host; its `gamma` prices every reduction.
    pub intra: CostModel,
    /// The network between hosts; `beta` is per byte through one host's link.
    pub inter: CostModel,
}

impl Default for HierCostModel {
    /// Shared memory within hosts ([`CostModel::shared_memory`]), TCP between them
    /// ([`CostModel::default`]).
    fn default() -> Self {
        HierCostModel {
            intra: CostModel::shared_memory(),
            inter: CostModel::default(),
        }
    }
}

/// `(number of hosts, ranks per host)` of a layout given as the host id of every rank.
fn host_sizes(host_of: &[usize]) -> (usize, Vec<usize>) {
    let mut ids: Vec<usize> = host_of.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let sizes: Vec<usize> = ids
        .iter()
        .map(|id| host_of.iter().filter(|&&h| h == *id).count())
        .collect();
    (ids.len(), sizes)
}

impl HierCostModel {
    /// A ring all-reduce of `bytes` over `p` ranks whose busiest host has `e` ring edges
    /// leaving it (0: all on one host).
    fn ring(&self, bytes: usize, p: usize, e: usize) -> f64 {
        if p <= 1 {
            return 0.0;
        }
        let c = bytes.div_ceil(p) as f64;
        let (i, x) = (&self.intra, &self.inter);
        let step_intra = i.alpha + c * i.beta;
        let step = if e == 0 {
            step_intra
        } else {
            step_intra.max(x.alpha + e as f64 * c * x.beta)
        };
        let steps = (p - 1) as f64;
        2.0 * steps * step + steps * c * i.gamma
    }

    /// The flat ring all-reduce ([`crate::plan::plan`]'s ring, in rank order `r -> r+1`) of
    /// `bytes` per rank on the layout `host_of` (the host id of every rank).
    pub fn flat_ring_all_reduce(&self, bytes: usize, host_of: &[usize]) -> f64 {
        let p = host_of.len();
        let e = (0..p)
            .filter(|&r| host_of[r] != host_of[(r + 1) % p])
            .map(|r| {
                (0..p)
                    .filter(|&q| host_of[q] == host_of[r] && host_of[q] != host_of[(q + 1) % p])
                    .count()
            })
            .max()
            .unwrap_or(0);
        self.ring(bytes, p, e)
    }

    /// The ring all-reduce in host order (`plan::host_ring`) of `bytes` per rank on the
    /// layout `host_of`: one ring edge leaves each host.
    pub fn host_ring_all_reduce(&self, bytes: usize, host_of: &[usize]) -> f64 {
        let (h, _) = host_sizes(host_of);
        self.ring(bytes, host_of.len(), usize::from(h > 1))
    }

    /// The hierarchical all-reduce (`plan::hier_all_reduce`, with a ring across hosts) of
    /// `bytes` per rank on the layout `host_of`.
    pub fn hierarchical_all_reduce(&self, bytes: usize, host_of: &[usize]) -> f64 {
        let (h, sizes) = host_sizes(host_of);
        if host_of.len() <= 1 {
            return 0.0;
        }
        let m = sizes.iter().copied().min().unwrap_or(1);
        let s = sizes.iter().copied().max().unwrap_or(1);
        let (i, x) = (&self.intra, &self.inter);
        let blk = bytes.div_ceil(m) as f64;
        let intra_steps = (s - 1) as f64;
        let rs = intra_steps * (i.alpha + blk * (i.beta + i.gamma));
        let ag = intra_steps * (i.alpha + blk * i.beta);
        let inter = if h > 1 {
            let sub = bytes.div_ceil(m).div_ceil(h) as f64;
            let steps = (h - 1) as f64;
            2.0 * steps * (x.alpha + m as f64 * sub * x.beta) + steps * sub * i.gamma
        } else {
            0.0
        };
        rs + inter + ag
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{choose_algo, PlanConfig};
    use crate::types::{DataType, ReduceOp};

    fn desc(kind: CollKind, count: usize) -> CollDesc {
        CollDesc {
            kind,
            count,
            dtype: DataType::Float32,
            op: ReduceOp::Sum,
            root: 0,
        }
    }

    #[test]
    fn small_messages_pick_recursive_doubling_and_trees() {
        let cfg = PlanConfig::default();
        assert_eq!(
            choose_algo(&desc(CollKind::AllReduce, 3), 3, &cfg),
            Algo::RecursiveDoubling
        );
        for p in [16, 64, 1024] {
            for count in [1, 16, 256] {
                // log2(p) exchanges beat the tree's 3·log2(p) pipeline and the ring's 2(p-1).
                assert_eq!(
                    choose_algo(&desc(CollKind::AllReduce, count), p, &cfg),
                    Algo::RecursiveDoubling,
                    "p={p} count={count}"
                );
                assert_eq!(
                    choose_algo(&desc(CollKind::Broadcast, count), p, &cfg),
                    Algo::Tree
                );
                assert_eq!(
                    choose_algo(&desc(CollKind::Reduce, count), p, &cfg),
                    Algo::Tree
                );
            }
        }
    }

    #[test]
    fn large_messages_pick_ring_and_chain() {
        let cfg = PlanConfig::default();
        let count = 256 << 20; // 1 GiB of f32
        for p in [2, 4, 8, 16, 64] {
            assert_eq!(
                choose_algo(&desc(CollKind::AllReduce, count), p, &cfg),
                Algo::Ring,
                "p={p}"
            );
        }
        // With two ranks a chain is one message, pipelined or not; from four on it wins.
        for p in [4, 8, 16, 64] {
            assert_eq!(
                choose_algo(&desc(CollKind::Broadcast, count), p, &cfg),
                Algo::Ring
            );
            assert_eq!(
                choose_algo(&desc(CollKind::Reduce, count), p, &cfg),
                Algo::Ring
            );
        }
    }

    #[test]
    fn two_ranks_exchange_once_when_small_and_ring_when_large() {
        let cfg = PlanConfig::default();
        for count in [1, 1000] {
            assert_eq!(
                choose_algo(&desc(CollKind::AllReduce, count), 2, &cfg),
                Algo::RecursiveDoubling
            );
        }
        assert_eq!(
            choose_algo(&desc(CollKind::AllReduce, 1 << 24), 2, &cfg),
            Algo::Ring
        );
    }

    #[test]
    fn forced_algorithm_wins() {
        let cfg = PlanConfig {
            algo: Some(Algo::Tree),
            ..PlanConfig::default()
        };
        assert_eq!(
            choose_algo(&desc(CollKind::AllReduce, 1 << 28), 4, &cfg),
            Algo::Tree
        );
        // Collectives with a single algorithm report it.
        assert_eq!(
            choose_algo(&desc(CollKind::AllGather, 1), 64, &cfg),
            Algo::Ring
        );
    }

    #[test]
    fn rabenseifner_moves_the_rings_volume_in_fewer_steps() {
        let m = CostModel::default();
        for p in [4usize, 8, 16] {
            for bytes in [1usize << 10, 1 << 20, 1 << 28] {
                let (rab, ring) = (
                    m.rabenseifner_all_reduce(bytes, p),
                    m.ring_all_reduce(bytes, p),
                );
                // Same volume (up to the ring's rounding of blocks), fewer latencies.
                let fewer = 2.0 * ((p - 1) as f64 - (p as f64).log2()) * m.alpha;
                assert!(
                    (ring - rab - fewer).abs() <= 1e-9 + 1e-6 * ring,
                    "p={p} bytes={bytes}"
                );
            }
        }
        // Not a power of two: the fold and unfold of the whole vector cost extra.
        assert!(m.rabenseifner_all_reduce(1 << 28, 6) > m.ring_all_reduce(1 << 28, 6));
        let d = desc(CollKind::AllReduce, 1 << 20);
        assert_eq!(
            m.predict(&d, 8, Algo::Rabenseifner, 1 << 20),
            m.rabenseifner_all_reduce(4 << 20, 8)
        );
    }

    #[test]
    fn predictions_are_monotone_in_size() {
        let m = CostModel::default();
        let seg = 1 << 20;
        for p in [1, 2, 3, 8, 17, 64, 1000] {
            let mut prev = [0.0f64; 9];
            for shift in 0..34 {
                let b = 1usize << shift;
                let now = [
                    m.ring_all_reduce(b, p),
                    m.tree_all_reduce(b, p, seg),
                    m.chain_broadcast(b, p, seg),
                    m.chain_reduce(b, p, seg),
                    m.binomial_broadcast(b, p),
                    m.binomial_reduce(b, p),
                    m.ring_reduce_scatter(b, p),
                    m.ring_all_gather(b, p),
                    m.pairwise_all_to_all(b, p),
                ];
                for (i, (n, o)) in now.iter().zip(prev).enumerate() {
                    assert!(*n >= o, "p={p} b={b} formula {i}: {n} < {o}");
                    assert!(n.is_finite());
                }
                prev = now;
            }
        }
    }

    #[test]
    fn predictions_grow_with_ranks_for_latency_bound_calls() {
        let m = CostModel::default();
        assert!(m.ring_all_reduce(8, 64) > m.ring_all_reduce(8, 8));
        assert!(m.tree_all_reduce(8, 64, 1 << 20) > m.tree_all_reduce(8, 8, 1 << 20));
        assert!(m.barrier(64) > m.barrier(8));
        assert_eq!(m.barrier(1), 0.0);
    }

    #[test]
    fn ring_bandwidth_term_matches_nccl_bus_factor() {
        // With α = γ = 0, a ring all-reduce moves 2(p-1)/p of the data per rank.
        let m = CostModel {
            alpha: 0.0,
            beta: 1.0,
            gamma: 0.0,
        };
        let t = m.ring_all_reduce(1 << 20, 8);
        assert!((t - 2.0 * 7.0 / 8.0 * (1 << 20) as f64).abs() < 1e-6);
    }

    #[test]
    fn hierarchical_beats_flat_ring_by_the_bus_factor_ratio() {
        // N = 9 ranks on 3 hosts, a network 80 times slower than shared memory.
        let host_of: Vec<usize> = (0..9).map(|r| r / 3).collect();
        let m = HierCostModel {
            intra: CostModel::shared_memory(),
            inter: CostModel {
                alpha: 20e-6,
                beta: 1.0 / 100e6,
                gamma: 0.0,
            },
        };
        let bytes = 1 << 30;
        let ratio =
            m.flat_ring_all_reduce(bytes, &host_of) / m.hierarchical_all_reduce(bytes, &host_of);
        let ideal = (2.0 * 8.0 / 9.0) / (2.0 * 2.0 / 3.0); // 4/3
        assert!(ratio > 1.25 && ratio <= ideal + 1e-9, "ratio {ratio}");
        // Free intra-host links: exactly the ratio of the bus factors, at large sizes.
        let free = HierCostModel {
            intra: CostModel {
                alpha: 0.0,
                beta: 0.0,
                gamma: 0.0,
            },
            ..m
        };
        let ratio = free.flat_ring_all_reduce(bytes, &host_of)
            / free.hierarchical_all_reduce(bytes, &host_of);
        assert!((ratio - ideal).abs() < 1e-3, "ratio {ratio}");
        // Contiguous hosts: rank order is host order.
        assert_eq!(
            m.flat_ring_all_reduce(bytes, &host_of),
            m.host_ring_all_reduce(bytes, &host_of)
        );
    }

    #[test]
    fn host_order_helps_interleaved_layouts_and_one_host_is_intra() {
        let m = HierCostModel::default();
        let round_robin: Vec<usize> = (0..9).map(|r| r % 3).collect();
        let b = 1 << 28;
        // Every rank-order edge leaves its host: three per host share its link.
        let (flat, host) = (
            m.flat_ring_all_reduce(b, &round_robin),
            m.host_ring_all_reduce(b, &round_robin),
        );
        assert!(flat > 2.5 * host, "flat {flat} host {host}");
        let one = [4usize; 6];
        // One host: the reduce-scatter and all-gather of a ring over its six ranks.
        let want = 2.0 * 5.0 * m.intra.alpha
            + 5.0 * (b.div_ceil(6) as f64) * (2.0 * m.intra.beta + m.intra.gamma);
        let got = m.hierarchical_all_reduce(b, &one);
        assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
        assert_eq!(
            m.flat_ring_all_reduce(b, &one),
            m.intra.ring_all_reduce(b, 6)
        );
        assert_eq!(m.hierarchical_all_reduce(b, &[0]), 0.0);
        assert_eq!(m.flat_ring_all_reduce(b, &[]), 0.0);
    }
}
