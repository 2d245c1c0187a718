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
//! [`HierCostModel`] (in `hier.rs`) prices every algorithm on a layout of ranks over hosts,
//! with one model within hosts and one for the network between them.

use crate::types::{Algo, CollDesc, CollKind};

mod hier;
pub use hier::{HierCostModel, HIER_PIPELINE_DEPTHS};

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
                Algo::Ring | Algo::Hierarchical | Algo::HostRing => self.ring_all_reduce(bytes, p),
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
    fn halving_doubling_threshold_takes_powers_of_two_of_four_and_more() {
        let cfg = PlanConfig {
            halving_doubling_max_bytes: 2 << 20,
            ..PlanConfig::default()
        };
        let ar = |count: usize, p: usize, cfg: &PlanConfig| {
            choose_algo(&desc(CollKind::AllReduce, count), p, cfg)
        };
        // Within the threshold (float32: 4 bytes per element), from 1 element on.
        for p in [4usize, 8, 64] {
            for count in [1usize, 2, 1 << 10, 1 << 19] {
                assert_eq!(ar(count, p, &cfg), Algo::Rabenseifner, "{count} x {p}");
            }
            // Above it the model decides, as without the threshold.
            let big = (2 << 20) / 4 + 1;
            assert_eq!(ar(big, p, &cfg), ar(big, p, &PlanConfig::default()));
            assert_ne!(ar(big, p, &cfg), Algo::Rabenseifner);
        }
        // Not a power of two, or 2 ranks (where it is the ring): the model decides.
        for p in [2usize, 3, 5, 6, 12] {
            assert_eq!(ar(1 << 10, p, &cfg), ar(1 << 10, p, &PlanConfig::default()));
        }
        // Other collectives and a forced algorithm are unaffected.
        assert_eq!(
            choose_algo(&desc(CollKind::Broadcast, 16), 4, &cfg),
            choose_algo(&desc(CollKind::Broadcast, 16), 4, &PlanConfig::default())
        );
        let forced = PlanConfig {
            algo: Some(Algo::Ring),
            ..cfg
        };
        assert_eq!(ar(16, 4, &forced), Algo::Ring);
        // Off by default.
        assert_ne!(ar(1 << 10, 4, &PlanConfig::default()), Algo::Rabenseifner);
        // Up to the lower threshold the model decides (recursive doubling, small vectors).
        let above = PlanConfig {
            halving_doubling_min_bytes: 8 << 10,
            ..cfg
        };
        for p in [4usize, 8] {
            for count in [1usize, 2, (8 << 10) / 4] {
                assert_eq!(
                    ar(count, p, &above),
                    Algo::RecursiveDoubling,
                    "{count} x {p}"
                );
            }
            assert_eq!(ar((8 << 10) / 4 + 1, p, &above), Algo::Rabenseifner);
        }
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
}
