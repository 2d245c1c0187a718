//! The host-aware planners against the simulator: every hierarchical collective and the
//! host-ordered ring, on even, uneven and interleaved host layouts, edge counts, every type
//! and operator, in place and out of place.

use super::oracle::{check_with, Case, Rng};
use crate::model::CostModel;
use crate::plan::hier_all_reduce_pipelined;
use crate::plan::{plan_hierarchical, plan_host_ring_all_reduce, plan_on, Hosts};
use crate::sim::SendMode;
use crate::types::{Algo, CollKind, DataType, ReduceOp};

/// Which host-aware planner a case runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Planner {
    Hierarchical,
    HostRing,
    /// [`plan_on`]: whatever the two-class cost model picks.
    On,
}

/// (kind, forced algorithm of the flat phases, planner).
const HIER: [(CollKind, Option<Algo>, Planner); 9] = [
    (CollKind::AllReduce, Some(Algo::Ring), Planner::Hierarchical),
    (CollKind::AllReduce, Some(Algo::Tree), Planner::Hierarchical),
    (
        CollKind::AllReduce,
        Some(Algo::RecursiveDoubling),
        Planner::Hierarchical,
    ),
    (CollKind::AllReduce, None, Planner::HostRing),
    (CollKind::ReduceScatter, None, Planner::Hierarchical),
    (CollKind::AllGather, None, Planner::Hierarchical),
    (CollKind::Broadcast, Some(Algo::Ring), Planner::Hierarchical),
    (CollKind::Broadcast, Some(Algo::Tree), Planner::Hierarchical),
    (CollKind::Reduce, Some(Algo::Ring), Planner::Hierarchical),
];

/// Host id of every rank for the test layouts: contiguous hosts of the listed sizes, and a
/// few interleaved ones.
fn layouts() -> Vec<Vec<usize>> {
    let sizes: [&[usize]; 8] = [
        &[1],
        &[3],
        &[1, 1],
        &[2, 2],
        &[3, 1, 2],
        &[4, 4, 4],
        &[2, 5],
        &[1, 2, 3, 2, 1, 3, 3, 2, 1, 1, 2, 3, 1, 2, 2, 3],
    ];
    let mut v: Vec<Vec<usize>> = sizes
        .iter()
        .map(|s| {
            s.iter()
                .enumerate()
                .flat_map(|(h, &n)| vec![h; n])
                .collect()
        })
        .collect();
    v.push(vec![7, 3, 7, 9, 3, 7]); // interleaved, arbitrary ids: sizes 3, 2, 1
    v.push((0..10).map(|r| r % 3).collect()); // round-robin over 3 hosts
                                              // Sixteen hosts of one to three ranks each, shuffled.
    let mut rng = Rng(16);
    let mut ids: Vec<usize> = (0..16)
        .flat_map(|h| vec![h; 1 + rng.below(3) as usize])
        .collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i as u64 + 1) as usize);
    }
    v.push(ids);
    v
}

fn run(c: &Case, host_of: &[usize], planner: Planner) -> Result<(), String> {
    let hosts = Hosts::new(host_of).map_err(|e| e.to_string())?;
    let (desc, mut cfg) = (c.desc(), c.cfg());
    if planner == Planner::On {
        // A 1 Gbit/s network between hosts with shared memory within them.
        cfg.model = CostModel::shared_memory();
        cfg.inter = CostModel {
            alpha: 30e-6,
            beta: 1.0 / 0.125e9,
            gamma: 1.0 / 10e9,
        };
    }
    check_with(c, &|r| match planner {
        Planner::Hierarchical => plan_hierarchical(&desc, r, &hosts, c.inplace, &cfg),
        Planner::HostRing => plan_host_ring_all_reduce(&desc, r, &hosts, c.inplace, &cfg),
        Planner::On => plan_on(&desc, r, &hosts, c.inplace, &cfg),
    })
    .map_err(|e| format!("layout {host_of:?}: {e}"))
}

fn run_all(cases: Vec<(Case, Vec<usize>, Planner)>) {
    let n = cases.len();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(c, l, p)| run(c, l, *p).err().map(|e| format!("{p:?} {c:?}\n    {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(8)].join("\n")
    );
}

/// Data movement of every host-aware collective on every layout, edge counts, every root.
#[test]
fn every_hierarchical_collective_and_layout() {
    let mut cases = Vec::new();
    for host_of in layouts() {
        let n = host_of.len();
        let mut counts = vec![0, 1, n - 1, n, n + 1, 2 * n + 3, 37];
        counts.sort_unstable();
        counts.dedup();
        for (kind, algo, planner) in HIER {
            for &count in &counts {
                for inplace in [false, true] {
                    let mut c = Case::new(kind, n, count);
                    c.algo = algo;
                    c.inplace = inplace;
                    c.root = (count * 7 + n / 3) % n;
                    c.seed = (n * 1000 + count) as u64;
                    c.op = if count % 2 == 1 {
                        ReduceOp::Avg
                    } else {
                        ReduceOp::Sum
                    };
                    c.mode = if inplace {
                        SendMode::Eager
                    } else {
                        SendMode::Rendezvous
                    };
                    cases.push((c, host_of.clone(), planner));
                }
            }
        }
    }
    run_all(cases);
}

/// Every type and operator through every reducing host-aware collective.
#[test]
fn every_type_and_operator_hierarchical() {
    let reducing = [
        (CollKind::AllReduce, Some(Algo::Ring), Planner::Hierarchical),
        (CollKind::AllReduce, Some(Algo::Tree), Planner::Hierarchical),
        (CollKind::AllReduce, None, Planner::HostRing),
        (CollKind::ReduceScatter, None, Planner::Hierarchical),
        (CollKind::Reduce, Some(Algo::Ring), Planner::Hierarchical),
        (CollKind::Reduce, Some(Algo::Tree), Planner::Hierarchical),
    ];
    let layouts: [&[usize]; 3] = [
        &[0, 0, 0, 1, 2, 2],
        &[0, 1, 0, 1],
        &[5, 5, 6, 6, 6, 7, 7, 5],
    ];
    let mut cases = Vec::new();
    for (kind, algo, planner) in reducing {
        for dtype in DataType::ALL {
            for op in ReduceOp::ALL
                .into_iter()
                .filter(|o| o.check_dtype(dtype).is_ok())
            {
                for (i, host_of) in layouts.iter().enumerate() {
                    for inplace in [false, true] {
                        let n = host_of.len();
                        let mut c = Case::new(kind, n, [5, 13, 2][i]);
                        c.algo = algo;
                        c.dtype = dtype;
                        c.op = op;
                        c.inplace = inplace;
                        c.root = (i + 2) % n;
                        c.seg_bytes = 3 * dtype.size();
                        cases.push((c, host_of.to_vec(), planner));
                    }
                }
            }
        }
    }
    run_all(cases);
}

/// Random float data and larger counts with default and small segments (floats compared
/// within rounding error, and all-reduce results bit-identical across ranks).
#[test]
fn large_counts_hierarchical() {
    let mut cases = Vec::new();
    let layouts: [Vec<usize>; 2] = [vec![0, 0, 0, 1, 2, 2], (0..9).map(|r| r / 3).collect()];
    for (kind, algo, planner) in HIER {
        for host_of in &layouts {
            for (count, seg_bytes) in [(1001, 1 << 20), (2049, 400)] {
                let mut c = Case::new(kind, host_of.len(), count);
                c.algo = algo;
                c.dtype = DataType::Float32;
                c.random = true;
                c.seg_bytes = seg_bytes;
                c.root = 1;
                cases.push((c, host_of.clone(), planner));
            }
        }
    }
    run_all(cases);
}

/// The model's choice of the flat phases' algorithms (no forced algorithm).
#[test]
fn model_chosen_phases() {
    let mut cases = Vec::new();
    for kind in [CollKind::AllReduce, CollKind::Broadcast, CollKind::Reduce] {
        for count in [1, 100, 3000] {
            let host_of: Vec<usize> = vec![0, 0, 1, 1, 1, 2];
            let mut c = Case::new(kind, host_of.len(), count);
            c.seg_bytes = 1 << 20;
            c.op = ReduceOp::Avg;
            cases.push((c, host_of, Planner::Hierarchical));
        }
    }
    run_all(cases);
}

/// [`plan_on`] on every layout, size and root, with links between hosts slower than those
/// within (so that hierarchical and flat choices both occur), forced or not.
#[test]
fn planned_on_hosts() {
    let kinds = [
        CollKind::AllReduce,
        CollKind::ReduceScatter,
        CollKind::AllGather,
        CollKind::Broadcast,
        CollKind::Reduce,
        CollKind::AllToAll,
        CollKind::Barrier,
    ];
    let mut cases = Vec::new();
    for host_of in layouts() {
        for kind in kinds {
            for count in [1, 7, 1000, 40_000] {
                for algo in [None, Some(Algo::Hierarchical), Some(Algo::HostRing)] {
                    let mut c = Case::new(kind, host_of.len(), count);
                    c.algo = algo;
                    c.seg_bytes = 4096;
                    c.root = count % host_of.len();
                    c.inplace = count % 2 == 1;
                    cases.push((c, host_of.clone(), Planner::On));
                }
            }
        }
    }
    run_all(cases);
}

/// The pipelined hierarchical all-reduce with a forced depth, on every layout, counts that
/// leave parts empty, every type and operator on a few layouts, synchronous and eager sends.
#[test]
fn pipelined_hierarchical_all_reduce() {
    let mut cases = Vec::new();
    for host_of in layouts() {
        let n = host_of.len();
        for segments in [2, 3, 16] {
            for count in [1, n + 1, 37, 1001] {
                for inplace in [false, true] {
                    let mut c = Case::new(CollKind::AllReduce, n, count);
                    c.inplace = inplace;
                    c.seed = (n * 7919 + count * 31 + segments) as u64;
                    c.op = if count % 2 == 1 {
                        ReduceOp::Avg
                    } else {
                        ReduceOp::Sum
                    };
                    c.random = count > 100;
                    c.dtype = if c.random { DataType::Float32 } else { c.dtype };
                    c.mode = if inplace {
                        SendMode::Eager
                    } else {
                        SendMode::Rendezvous
                    };
                    cases.push((c, host_of.clone(), segments));
                }
            }
        }
    }
    let layouts: [&[usize]; 2] = [&[0, 0, 0, 1, 2, 2], &[5, 5, 6, 6, 6, 7, 7, 5]];
    for dtype in DataType::ALL {
        for op in ReduceOp::ALL
            .into_iter()
            .filter(|o| o.check_dtype(dtype).is_ok())
        {
            for host_of in layouts {
                let mut c = Case::new(CollKind::AllReduce, host_of.len(), 29);
                c.dtype = dtype;
                c.op = op;
                cases.push((c, host_of.to_vec(), 4));
            }
        }
    }
    let total = cases.len();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(c, host_of, segments)| {
            let hosts = Hosts::new(host_of).expect("layout");
            let avg = c.op == ReduceOp::Avg;
            check_with(c, &|r| {
                Ok(hier_all_reduce_pipelined::plan(
                    r, &hosts, c.count, *segments, c.inplace, avg,
                ))
            })
            .err()
            .map(|e| format!("{segments} segments, layout {host_of:?}, {c:?}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(8)].join("\n")
    );
}

/// The planner pipelines the hierarchical all-reduce where the model says it pays: a large
/// call over a slow network, and not a small one.
#[test]
fn hierarchical_all_reduce_pipelines_large_calls() {
    let hosts = Hosts::from_sizes(&[3, 3, 3]).unwrap();
    let mut c = Case::new(CollKind::AllReduce, 9, 16 << 20);
    c.algo = Some(Algo::Hierarchical);
    let mut cfg = c.cfg();
    cfg.model = CostModel::shared_memory();
    cfg.inter = CostModel {
        alpha: 30e-6,
        beta: 1.0 / 0.125e9,
        gamma: 1.0 / 10e9,
    };
    let model = crate::model::HierCostModel {
        intra: cfg.model,
        inter: cfg.inter,
    };
    let ids = hosts.host_ids();
    let deep = model.hier_all_reduce_segments(16 << 20, 4, &ids);
    assert!(deep >= 8, "64 MiB pipelines in {deep} segments");
    assert_eq!(model.hier_all_reduce_segments(1024, 4, &ids), 1);
    // The pipelined prediction beats the unpipelined one by most of the intra-host work.
    let (one, best) = (
        model.hier_all_reduce_time(64 << 20, &ids, 1),
        model.hier_all_reduce_time(64 << 20, &ids, deep),
    );
    assert!(best < one, "{best} vs {one}");
    let sched = plan_hierarchical(&c.desc(), 0, &hosts, false, &cfg).unwrap();
    let unpiped = hier_all_reduce_pipelined::plan(0, &hosts, 16 << 20, deep, false, false);
    assert_eq!(sched, unpiped, "the planner runs the chosen depth");
}

/// Bad layouts and arguments are errors naming the problem, never panics.
#[test]
fn bad_layouts_and_arguments() {
    let e = Hosts::new(&[]).unwrap_err().to_string();
    assert!(e.contains("no ranks"), "{e}");
    let e = Hosts::from_sizes(&[2, 0, 1]).unwrap_err().to_string();
    assert!(e.contains("host 1") && e.contains("no ranks"), "{e}");
    assert!(Hosts::from_sizes(&[]).is_err());
    let hosts = Hosts::from_sizes(&[2, 1]).unwrap();
    assert!(hosts
        .check_world(4)
        .unwrap_err()
        .to_string()
        .contains("3 ranks"));
    let c = Case::new(CollKind::AllReduce, 3, 4);
    let e = plan_hierarchical(&c.desc(), 3, &hosts, false, &c.cfg())
        .unwrap_err()
        .to_string();
    assert!(e.contains("rank 3"), "{e}");
    let mut b = Case::new(CollKind::Broadcast, 3, 4);
    b.root = 5;
    let e = plan_hierarchical(&b.desc(), 0, &hosts, false, &b.cfg())
        .unwrap_err()
        .to_string();
    assert!(e.contains("root 5"), "{e}");
    let e = plan_host_ring_all_reduce(&b.desc(), 0, &hosts, false, &b.cfg())
        .unwrap_err()
        .to_string();
    assert!(e.contains("broadcast") || e.contains("root"), "{e}");
}

/// The layout type: normalised ids, local indices, host order.
#[test]
fn host_layout() {
    let h = Hosts::new(&[7, 3, 7, 9, 3, 7]).unwrap();
    assert_eq!(h.nhosts(), 3);
    assert_eq!(h.sizes(), vec![3, 2, 1]);
    assert_eq!(h.min_size(), 1);
    assert_eq!(
        (0..6).map(|r| h.host_of(r)).collect::<Vec<_>>(),
        [0, 1, 0, 2, 1, 0]
    );
    assert_eq!(
        (0..6).map(|r| h.local_index(r)).collect::<Vec<_>>(),
        [0, 0, 1, 0, 1, 2]
    );
    assert_eq!(h.host_order(), vec![0, 2, 5, 1, 4, 3]);
    assert_eq!(h.members(1), &[1, 4]);
}
