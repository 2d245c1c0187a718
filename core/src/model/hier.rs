//! The cost model with two link classes, within a host and between hosts, on a layout of
//! ranks over hosts ([`Hosts`]): what [`crate::plan::choose_algo_on`] chooses with and
//! `dmsc-sim` predicts with.
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
//! | hierarchical all-reduce in `P` segments | `P+2` stages of `max(s-1, 2(H-1))` slots, each slot the slower of its network step (`α_e + (b/P)/H·β_e`) and its intra-host steps |
//!
//! The hierarchical time is intra-host reduce-scatter, inter-host ring all-reduce of `m`
//! concurrent groups sharing each host's link (`m` blocks of `b/(mH)` per step), intra-host
//! all-gather. With a slow network and large `b` the ratio of flat ring to hierarchical
//! tends to `2(N-1)/N ÷ 2(H-1)/H`, the bus-bandwidth factors of NCCL's performance notes
//! applied to the ranks and to the hosts (Patarasuk and Yuan, "Bandwidth optimal all-reduce
//! algorithms for clusters of workstations", JPDC 69(2), 2009; Thakur, Rabenseifner and
//! Gropp 2005 for the α-β-γ terms; Jia et al., arXiv:1807.11205, 2018, for the two-level
//! scheme).
//!
//! The flat algorithms are priced on the layout the same way, round by round: a round in
//! which `e` ranks of the busiest host send across the network costs
//! `max(α_i + cβ_i, α_e + e·cβ_e)` (recursive doubling, Rabenseifner's halving-doubling,
//! binomial trees: `e` counted from the partners of each round; chains and rings: from the
//! edges in rank order). The double binary tree is priced per pipeline step with the tree
//! edges that leave the busiest host. Hierarchical broadcast, reduce, all-gather and
//! reduce-scatter add the flat phases they run (see `plan::hier_broadcast` and its
//! siblings).

use super::{log2_ceil, segments, CostModel};
use crate::plan::Hosts;
use crate::types::{Algo, CollDesc, CollKind};

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

    /// The hierarchical all-reduce (`plan::hier_all_reduce`) of `bytes` per rank on the
    /// layout `host_of`, pipelined as [`HierCostModel::hier_all_reduce_segments`] chooses for
    /// `bytes` one-byte elements.
    pub fn hierarchical_all_reduce(&self, bytes: usize, host_of: &[usize]) -> f64 {
        let p = self.hier_all_reduce_segments(bytes, 1, host_of);
        self.hier_all_reduce_time(bytes, host_of, p)
    }

    /// The number of segments that the hierarchical all-reduce of `count` elements of
    /// `elem` bytes pipelines on the layout `host_of`: the depth among
    /// [`HIER_PIPELINE_DEPTHS`] with the lowest [`HierCostModel::hier_all_reduce_time`]
    /// (the smaller on ties), among those that leave every segment at least one element per
    /// rank of the inter-host ring of each local index (`m·H` elements). 1 (no pipeline)
    /// on one host, and where no deeper pipeline pays off. The planner
    /// (`plan::hier_all_reduce`) and [`HierCostModel::predict`] both ask this function.
    pub fn hier_all_reduce_segments(&self, count: usize, elem: usize, host_of: &[usize]) -> usize {
        let (h, _, m) = shape(host_of);
        if h <= 1 {
            return 1;
        }
        let bytes = count.saturating_mul(elem);
        let mut best = (1, self.hier_all_reduce_time(bytes, host_of, 1));
        for &p in HIER_PIPELINE_DEPTHS.iter().filter(|&&p| p > 1) {
            if count / p < m * h {
                break;
            }
            let t = self.hier_all_reduce_time(bytes, host_of, p);
            if t < best.1 {
                best = (p, t);
            }
        }
        best.0
    }

    /// The hierarchical all-reduce of `bytes` on `host_of` in `segments` pipeline segments.
    ///
    /// Unpipelined (`segments == 1`): intra-host ring reduce-scatter, the flat all-reduce the
    /// planner picks among the `H` ranks of each local index (ring, double binary tree or
    /// recursive doubling, with the network shared by the `m` groups), intra-host ring
    /// all-gather, one after another. Pipelined (`plan::hier_all_reduce_pipelined`): stage
    /// `k` runs the reduce-scatter of segment `k`, the inter-host ring all-reduce of segment
    /// `k-1` and the all-gather of segment `k-2` side by side, one step of each per time
    /// slot; a slot costs the slower of its network step and its intra-host steps (the two
    /// intra-host rings share the rank's memory and are added).
    pub fn hier_all_reduce_time(&self, bytes: usize, host_of: &[usize], segments: usize) -> f64 {
        if host_of.len() <= 1 {
            return 0.0;
        }
        let (h, s, m) = shape(host_of);
        let (i, x) = (&self.intra, &self.inter);
        if segments <= 1 || h <= 1 {
            let blk = bytes.div_ceil(m) as f64;
            let intra_steps = (s - 1) as f64;
            let rs = intra_steps * (i.alpha + blk * (i.beta + i.gamma));
            let ag = intra_steps * (i.alpha + blk * i.beta);
            // Phase 2 runs the flat algorithm the planner picks for `H` ranks with the
            // network shared by the `m` groups (ring, double binary tree or recursive
            // doubling).
            let inter = if h > 1 {
                let shared = CostModel {
                    gamma: i.gamma,
                    ..self.inter_shared(m)
                };
                let sub = bytes.div_ceil(m);
                let seg = crate::plan::DEFAULT_SEGMENT_BYTES;
                shared
                    .ring_all_reduce(sub, h)
                    .min(shared.recursive_doubling_all_reduce(sub, h))
                    .min(shared.tree_all_reduce(sub, h, seg))
            } else {
                0.0
            };
            return rs + inter + ag;
        }
        let p = segments;
        let seg = bytes as f64 / p as f64;
        let part = seg / m as f64;
        let rs = i.alpha + part * (i.beta + i.gamma);
        let ag = i.alpha + part * i.beta;
        // Each of the `m` groups sends `seg/(mH)` per step through the host's link.
        let net = x.alpha + seg / h as f64 * x.beta;
        let net_rs = net + part / h as f64 * i.gamma;
        let (r, g) = (s - 1, h - 1);
        let slots = r.max(2 * g);
        let mut total = 0.0;
        for k in 0..p + 2 {
            for j in 0..slots {
                let mut local = 0.0;
                if k < p && j < r {
                    local += rs;
                }
                if (2..p + 2).contains(&k) && j < r {
                    local += ag;
                }
                let network = match j {
                    _ if !(1..=p).contains(&k) => 0.0,
                    j if j < g => net_rs,
                    j if j < 2 * g => net,
                    _ => 0.0,
                };
                total += f64::max(local, network);
            }
        }
        total
    }
}

/// The pipeline depths [`HierCostModel::hier_all_reduce_segments`] chooses among.
pub const HIER_PIPELINE_DEPTHS: [usize; 5] = [1, 2, 4, 8, 16];

/// Ranks of the world whose host is `host_of[r]`, as `(number of hosts, max size, min size)`.
fn shape(host_of: &[usize]) -> (usize, usize, usize) {
    let (h, sizes) = host_sizes(host_of);
    let s = sizes.iter().copied().max().unwrap_or(1);
    let m = sizes.iter().copied().min().unwrap_or(1);
    (h, s, m)
}

/// The largest number of `pairs` (sender, receiver) leaving one host.
fn busiest(host_of: &[usize], pairs: impl Iterator<Item = (usize, usize)>) -> usize {
    let mut out = vec![0usize; host_of.iter().copied().max().map_or(0, |h| h + 1)];
    for (a, b) in pairs {
        if host_of[a] != host_of[b] {
            out[host_of[a]] += 1;
        }
    }
    out.into_iter().max().unwrap_or(0)
}

/// Ring edges `r -> r+1` leaving the busiest host (the flat ring's and the chain's `e`).
fn ring_edges_out(host_of: &[usize]) -> usize {
    let p = host_of.len();
    busiest(host_of, (0..p).map(|r| (r, (r + 1) % p)))
}

/// The ranks that remain after recursive doubling's fold, by new number: `r = p - q` odd
/// ranks of the folded pairs, then the ranks from `2r` on.
fn folded(p: usize) -> (usize, Vec<usize>) {
    let q = 1usize << (usize::BITS - 1 - p.leading_zeros());
    let r = p - q;
    (
        q,
        (0..q)
            .map(|n| if n < r { 2 * n + 1 } else { n + r })
            .collect(),
    )
}

impl HierCostModel {
    /// One round: `c` bytes to a partner, `e` of the busiest host's ranks crossing hosts.
    fn round(&self, c: f64, e: usize) -> f64 {
        let (i, x) = (&self.intra, &self.inter);
        let local = i.alpha + c * i.beta;
        if e == 0 {
            local
        } else {
            local.max(x.alpha + e as f64 * c * x.beta)
        }
    }

    /// The fold and unfold of recursive doubling and Rabenseifner (`b` bytes each way), 0
    /// when `p` is a power of two.
    fn fold(&self, b: f64, host_of: &[usize]) -> f64 {
        let p = host_of.len();
        let (q, _) = folded(p);
        let r = p - q;
        if r == 0 {
            return 0.0;
        }
        let e = busiest(host_of, (0..r).map(|k| (2 * k, 2 * k + 1)));
        2.0 * self.round(b, e) + b * self.intra.gamma
    }

    /// Recursive-doubling all-reduce of `bytes` on the layout.
    fn rd_all_reduce(&self, bytes: usize, host_of: &[usize]) -> f64 {
        let b = bytes as f64;
        let (q, map) = folded(host_of.len());
        let mut t = self.fold(b, host_of);
        let mut d = 1;
        while d < q {
            let e = busiest(host_of, (0..q).map(|n| (map[n], map[n ^ d])));
            t += self.round(b, e) + b * self.intra.gamma;
            d <<= 1;
        }
        t
    }

    /// Rabenseifner's all-reduce of `bytes` on the layout: halving rounds with masks
    /// `q/2 .. 1` moving `b/2, b/4, ...`, then the doubling rounds back.
    fn rabenseifner_all_reduce(&self, bytes: usize, host_of: &[usize]) -> f64 {
        let b = bytes as f64;
        let (q, map) = folded(host_of.len());
        let mut t = self.fold(b, host_of);
        let (mut mask, mut c) = (q / 2, b / 2.0);
        while mask >= 1 {
            let e = busiest(host_of, (0..q).map(|n| (map[n], map[n ^ mask])));
            t += 2.0 * self.round(c, e) + c * self.intra.gamma;
            mask /= 2;
            c /= 2.0;
        }
        t
    }

    /// Binomial broadcast (`reduce`: plus the combining) of `bytes` from `root`: round `k`
    /// sends from relative rank `v < 2^k` to `v + 2^k`.
    fn binomial(&self, bytes: usize, host_of: &[usize], root: usize, reduce: bool) -> f64 {
        let (p, b) = (host_of.len(), bytes as f64);
        let at = |v: usize| (v + root) % p;
        let mut t = 0.0;
        let mut d = 1;
        while d < p {
            let pairs = (0..d.min(p - d)).map(|v| (at(v + d), at(v)));
            let e = busiest(host_of, pairs);
            t += self.round(b, e) + if reduce { b * self.intra.gamma } else { 0.0 };
            d <<= 1;
        }
        t
    }

    /// Pipelined chain broadcast (`reduce`: plus the combining) of `bytes` in segments of
    /// `seg` along rank order.
    fn chain(&self, bytes: usize, host_of: &[usize], seg: usize, reduce: bool) -> f64 {
        let p = host_of.len();
        if p <= 1 {
            return 0.0;
        }
        let (k, s) = segments(bytes, seg);
        let step = self.round(s, usize::from(ring_edges_out(host_of) > 0));
        let g = if reduce { s * self.intra.gamma } else { 0.0 };
        (p as f64 - 2.0 + k) * (step + g)
    }

    /// Flat ring all-gather (`reduce`: reduce-scatter) of blocks of `block` bytes.
    fn ring_half(&self, block: usize, host_of: &[usize], reduce: bool) -> f64 {
        let p = host_of.len();
        let c = block as f64;
        let g = if reduce { c * self.intra.gamma } else { 0.0 };
        p.saturating_sub(1) as f64 * (self.round(c, ring_edges_out(host_of)) + g)
    }

    /// The pipelined double binary tree all-reduce (`plan::tree`) of `bytes` on `host_of`
    /// in segments of `seg` bytes. In steady state every edge of both trees carries one
    /// segment each way per step, so a step costs the slower of a rank's four segments over
    /// its intra-host links and the `e` segments leaving the busiest host, `e` being the
    /// number of tree edges (both trees) with one end on that host and the other elsewhere:
    /// `(K + 3⌈log2 p⌉)·(max(α_i + 4sβ_i, α_e + e·sβ_e) + 2sγ)` for `K` segments of `s`
    /// bytes per tree.
    fn tree_all_reduce(&self, bytes: usize, host_of: &[usize], seg: usize) -> f64 {
        let p = host_of.len();
        if p <= 1 {
            return 0.0;
        }
        let mut out = vec![0usize; host_of.iter().copied().max().map_or(0, |h| h + 1)];
        for t in crate::plan::tree::double_tree(p) {
            for (r, parent) in t.parent.iter().enumerate() {
                if let Some(&q) = parent.as_ref() {
                    if host_of[r] != host_of[q] {
                        out[host_of[r]] += 1;
                        out[host_of[q]] += 1;
                    }
                }
            }
        }
        let e = out.into_iter().max().unwrap_or(0);
        let (k, s) = segments(bytes.div_ceil(2), seg);
        let (i, x) = (&self.intra, &self.inter);
        let within = i.alpha + 4.0 * s * i.beta;
        let step = if e == 0 {
            within
        } else {
            within.max(x.alpha + e as f64 * s * x.beta)
        };
        (k + 3.0 * log2_ceil(p)) * (step + 2.0 * s * i.gamma)
    }

    /// The network's model with its per-byte cost shared by `k` concurrent groups.
    fn inter_shared(&self, k: usize) -> CostModel {
        CostModel {
            beta: self.inter.beta * k as f64,
            ..self.inter
        }
    }

    /// Hierarchical broadcast: a flat broadcast among the host leaders over the network,
    /// then one within each host, each with the cheaper of chain and binomial tree.
    fn hier_broadcast(&self, bytes: usize, host_of: &[usize], seg: usize) -> f64 {
        let (h, s, _) = shape(host_of);
        let (i, x) = (&self.intra, &self.inter);
        let across = x
            .chain_broadcast(bytes, h, seg)
            .min(x.binomial_broadcast(bytes, h));
        let within = i
            .chain_broadcast(bytes, s, seg)
            .min(i.binomial_broadcast(bytes, s));
        across + within
    }

    /// Hierarchical reduce: a flat reduce within each host (the cheaper of chain and tree),
    /// then a binomial tree among the leaders over the network.
    fn hier_reduce(&self, bytes: usize, host_of: &[usize], seg: usize) -> f64 {
        let (h, s, _) = shape(host_of);
        let i = &self.intra;
        let x = CostModel {
            gamma: i.gamma,
            ..self.inter
        };
        let within = i
            .chain_reduce(bytes, s, seg)
            .min(i.binomial_reduce(bytes, s));
        within + x.binomial_reduce(bytes, h)
    }

    /// Hierarchical all-gather of blocks of `block` bytes (`plan::hier_all_gather`).
    fn hier_all_gather(&self, block: usize, host_of: &[usize]) -> f64 {
        let (h, s, m) = shape(host_of);
        let (n, c) = (host_of.len(), block as f64);
        let (i, x) = (&self.intra, &self.inter);
        let intra = (s - 1) as f64;
        let phase1 = intra * (i.alpha + c * i.beta);
        let phase2 = (h - 1) as f64 * (x.alpha + s as f64 * c * x.beta);
        let phase3 = intra * (i.alpha + (n - s) as f64 / m as f64 * c * i.beta);
        phase1 + phase2 + phase3
    }

    /// Hierarchical reduce-scatter of blocks of `block` bytes (`plan::hier_reduce_scatter`).
    fn hier_reduce_scatter(&self, block: usize, host_of: &[usize]) -> f64 {
        let (h, s, m) = shape(host_of);
        let (n, c) = (host_of.len(), block as f64);
        let (i, x) = (&self.intra, &self.inter);
        let phase1 = (s - 1) as f64 * (i.alpha + n as f64 / m as f64 * c * (i.beta + i.gamma));
        let carried = s as f64 / m as f64 * c;
        let phase2 = (h - 1) as f64 * (x.alpha + s as f64 * c * x.beta + carried * i.gamma);
        phase1 + phase2 + i.alpha + c * i.beta
    }

    /// The α–β lower bound of an all-reduce of `bytes` on `hosts`: every host's network link
    /// carries at least `2(H-1)/H·b` each way and every rank's intra-host link `2(s-1)/s·b`
    /// of its host's share (bandwidth-optimal bounds of Patarasuk and Yuan, JPDC 69(2),
    /// 2009), and a value needs `⌈log2 H⌉` network and `⌈log2 s⌉` intra-host latencies to
    /// reach every rank.
    pub fn all_reduce_bound(&self, bytes: usize, hosts: &Hosts) -> f64 {
        let (h, n) = (hosts.nhosts(), hosts.nranks());
        if n <= 1 {
            return 0.0;
        }
        let b = bytes as f64;
        let s = hosts.sizes().into_iter().max().unwrap_or(1) as f64;
        let net = if h > 1 {
            2.0 * (h - 1) as f64 / h as f64 * b * self.inter.beta
        } else {
            0.0
        };
        let local = 2.0 * (s - 1.0) / s * b * self.intra.beta;
        let alpha = log2_ceil(h) * self.inter.alpha + log2_ceil(s as usize) * self.intra.alpha;
        net.max(local) + alpha
    }

    /// Predicted time of `desc` on the layout `hosts` with `algo` (meaning as in
    /// [`crate::plan::choose_algo_on`]) and pipeline segments of `segment_bytes`. On one
    /// host this is the intra-host model's [`CostModel::predict`], a host-aware algorithm
    /// counting as the flat one the planner runs there. Collectives with one algorithm
    /// ignore `algo`; all-to-all-v and send/recv are given 0.
    pub fn predict(&self, desc: &CollDesc, hosts: &Hosts, algo: Algo, segment_bytes: usize) -> f64 {
        let host_of = hosts.host_ids();
        let p = host_of.len();
        if hosts.nhosts() <= 1 || p <= 1 {
            let flat = if algo.is_host_aware() {
                Algo::Ring
            } else {
                algo
            };
            return self.intra.predict(desc, p, flat, segment_bytes);
        }
        let bytes = desc.count.saturating_mul(desc.dtype.size());
        let seg = segment_bytes;
        let tree = matches!(
            algo,
            Algo::Tree | Algo::RecursiveDoubling | Algo::Rabenseifner
        );
        let root = desc.root.min(p - 1);
        match desc.kind {
            CollKind::AllReduce => match algo {
                Algo::Ring => self.flat_ring_all_reduce(bytes, &host_of),
                Algo::HostRing => self.host_ring_all_reduce(bytes, &host_of),
                Algo::Hierarchical => {
                    let p = self.hier_all_reduce_segments(desc.count, desc.dtype.size(), &host_of);
                    self.hier_all_reduce_time(bytes, &host_of, p)
                }
                Algo::RecursiveDoubling => self.rd_all_reduce(bytes, &host_of),
                Algo::Rabenseifner => self.rabenseifner_all_reduce(bytes, &host_of),
                Algo::Tree => self.tree_all_reduce(bytes, &host_of, seg),
            },
            CollKind::Broadcast | CollKind::Reduce => {
                let reduce = desc.kind == CollKind::Reduce;
                match algo {
                    Algo::Hierarchical if reduce => self.hier_reduce(bytes, &host_of, seg),
                    Algo::Hierarchical => self.hier_broadcast(bytes, &host_of, seg),
                    _ if tree => self.binomial(bytes, &host_of, root, reduce),
                    _ => self.chain(bytes, &host_of, seg, reduce),
                }
            }
            CollKind::AllGather | CollKind::ReduceScatter => {
                let reduce = desc.kind == CollKind::ReduceScatter;
                match (algo, reduce) {
                    (Algo::Hierarchical, false) => self.hier_all_gather(bytes, &host_of),
                    (Algo::Hierarchical, true) => self.hier_reduce_scatter(bytes, &host_of),
                    _ => self.ring_half(bytes, &host_of, reduce),
                }
            }
            CollKind::AllToAll => {
                let (_, s, _) = shape(&host_of);
                self.inter_shared(s).pairwise_all_to_all(bytes, p)
            }
            CollKind::Barrier => log2_ceil(p) * self.inter.alpha,
            CollKind::AllToAllV | CollKind::SendRecv => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                                                           // Slightly above the bus factors' ratio at most: the flat ring pays its reductions
                                                           // (`(N-1)·c·γ`) in line, the pipelined hierarchical one hides them behind the network.
        let ring_gamma = 8.0 * (bytes / 9) as f64 * m.intra.gamma;
        let flat_wo_gamma = m.flat_ring_all_reduce(bytes, &host_of) - ring_gamma;
        let bound = ideal * m.flat_ring_all_reduce(bytes, &host_of) / flat_wo_gamma;
        assert!(
            ratio > 1.3 && ratio <= bound + 1e-9,
            "ratio {ratio}, bound {bound}"
        );
        assert!(m.hier_all_reduce_segments(bytes, 1, &host_of) > 1);
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

    #[test]
    fn the_bound_is_below_every_prediction() {
        let m = HierCostModel::default();
        for sizes in [&[8; 8][..], &[3, 3, 3], &[4], &[1, 1], &[8; 64]] {
            let hosts = Hosts::from_sizes(sizes).unwrap();
            let mut bytes = 8;
            while bytes <= 1 << 30 {
                let d = CollDesc {
                    kind: CollKind::AllReduce,
                    count: bytes / 4,
                    dtype: crate::types::DataType::Float32,
                    op: crate::types::ReduceOp::Sum,
                    root: 0,
                };
                let lb = m.all_reduce_bound(bytes, &hosts);
                for a in Algo::ALL {
                    let t = m.predict(&d, &hosts, a, 1 << 20);
                    assert!(
                        lb <= t * (1.0 + 1e-9),
                        "{sizes:?} {bytes} {a:?}: {lb} > {t}"
                    );
                }
                bytes *= 8;
            }
        }
    }
}
