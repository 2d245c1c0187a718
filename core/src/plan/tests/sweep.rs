//! Exhaustive sweeps over world sizes, edge-case counts, types, operators and layouts.

use super::oracle::{check_all, Case, ALGOS};
use crate::sim::SendMode;
use crate::types::{Algo, CollKind, DataType, ReduceOp};

/// Edge-case counts for `n` ranks: 0, 1, fewer than `n`, `n`, odd ones.
fn counts(n: usize) -> Vec<usize> {
    let mut c = vec![0, 1, n.saturating_sub(1), n, n + 1, 2 * n + 3, 37];
    c.sort_unstable();
    c.dedup();
    c
}

/// Data movement: every algorithm, every world size 1..=16, edge counts, both layouts,
/// every root position class, with tiny pipeline segments.
#[test]
fn every_algorithm_world_size_and_count() {
    let mut cases = Vec::new();
    for (kind, algo) in ALGOS {
        for n in 1..=16 {
            for count in counts(n) {
                for inplace in [false, true] {
                    let mut c = Case::new(kind, n, count);
                    c.algo = algo;
                    c.inplace = inplace;
                    c.root = (count + n / 3) % n;
                    c.seed = (n * 1000 + count) as u64;
                    cases.push(c);
                }
            }
        }
    }
    check_all(cases);
}

/// World sizes past 16: powers of two and their neighbours.
#[test]
fn larger_worlds() {
    let mut cases = Vec::new();
    for (kind, algo) in ALGOS {
        for n in [17, 24, 31, 32, 33, 64] {
            for count in [1, n - 1, 2 * n + 1, 100] {
                for inplace in [false, true] {
                    let mut c = Case::new(kind, n, count);
                    c.algo = algo;
                    c.inplace = inplace;
                    c.op = ReduceOp::Avg;
                    c.root = n - 1 - count % n;
                    cases.push(c);
                }
            }
        }
    }
    check_all(cases);
}

/// Every type and operator through every reducing algorithm, with exact small-integer data.
#[test]
fn every_type_and_operator() {
    let reducing = [
        (CollKind::AllReduce, Some(Algo::Ring)),
        (CollKind::AllReduce, Some(Algo::Tree)),
        (CollKind::AllReduce, Some(Algo::RecursiveDoubling)),
        (CollKind::AllReduce, Some(Algo::Rabenseifner)),
        (CollKind::ReduceScatter, None),
        (CollKind::Reduce, Some(Algo::Ring)),
        (CollKind::Reduce, Some(Algo::Tree)),
    ];
    let mut cases = Vec::new();
    for (kind, algo) in reducing {
        for dtype in DataType::ALL {
            // Bitwise operators apply to integer types only.
            for op in ReduceOp::ALL
                .into_iter()
                .filter(|o| o.check_dtype(dtype).is_ok())
            {
                for (n, count) in [(1, 3), (2, 5), (3, 1), (5, 13), (8, 6), (13, 29)] {
                    for inplace in [false, true] {
                        let mut c = Case::new(kind, n, count);
                        c.algo = algo;
                        c.dtype = dtype;
                        c.op = op;
                        c.inplace = inplace;
                        c.seg_bytes = 3 * dtype.size();
                        cases.push(c);
                    }
                }
            }
        }
    }
    check_all(cases);
}

/// Data movement of every element size, for the collectives that only move data.
#[test]
fn every_element_size_moves_correctly() {
    let mut cases = Vec::new();
    for (kind, algo) in ALGOS {
        for dtype in [
            DataType::Uint8,
            DataType::Bfloat16,
            DataType::Float32,
            DataType::Int64,
        ] {
            for (n, count) in [(3, 7), (6, 2), (11, 19)] {
                for inplace in [false, true] {
                    let mut c = Case::new(kind, n, count);
                    c.algo = algo;
                    c.dtype = dtype;
                    c.inplace = inplace;
                    c.random = true;
                    cases.push(c);
                }
            }
        }
    }
    check_all(cases);
}

/// Large counts with random (non-integral, cancelling) float data and default-sized and
/// small segments; eager sends too.
#[test]
fn large_counts() {
    let mut cases = Vec::new();
    for (kind, algo) in ALGOS {
        for (n, count, seg_bytes) in [(7, 3001, 1 << 20), (16, 2049, 1 << 20), (5, 4099, 4000)] {
            for (inplace, mode) in [(false, SendMode::Rendezvous), (true, SendMode::Eager)] {
                let mut c = Case::new(kind, n, count);
                c.algo = algo;
                c.dtype = DataType::Float32;
                c.op = ReduceOp::Sum;
                c.inplace = inplace;
                c.seg_bytes = seg_bytes;
                c.random = true;
                c.mode = mode;
                cases.push(c);
            }
        }
    }
    // One much larger call of a one-byte type.
    let mut c = Case::new(CollKind::AllReduce, 9, 50_001);
    c.dtype = DataType::Int8;
    c.random = true;
    c.seg_bytes = 4096;
    for algo in [Algo::Ring, Algo::Tree] {
        c.algo = Some(algo);
        cases.push(c);
    }
    check_all(cases);
}

/// Algorithm choice by the cost model (no forced algorithm), default segments.
#[test]
fn model_chosen_algorithms() {
    let mut cases = Vec::new();
    for kind in [CollKind::AllReduce, CollKind::Broadcast, CollKind::Reduce] {
        for n in [2, 3, 9, 16] {
            for count in [1, 100, 3000] {
                let mut c = Case::new(kind, n, count);
                c.seg_bytes = 1 << 20;
                c.op = ReduceOp::Avg;
                cases.push(c);
            }
        }
    }
    check_all(cases);
}

/// The dissemination barrier: it completes, sends only empty messages, and after the last
/// step every rank has (transitively) heard from every other rank.
#[test]
fn barrier_disseminates() {
    use crate::plan::plan;
    use crate::schedule::Action;
    for n in 1..=16 {
        let c = Case::new(CollKind::Barrier, n, 0);
        check_all([c]);
        let scheds: Vec<_> = (0..n)
            .map(|r| plan(&c.desc(), r, n, false, &c.cfg()).unwrap())
            .collect();
        let rounds = scheds[0].steps.len();
        assert!(scheds.iter().all(|s| s.steps.len() == rounds));
        assert_eq!(rounds, super::super::binomial::rounds(n));
        // knows[r] = ranks whose arrival r has evidence of.
        let mut knows: Vec<u64> = (0..n).map(|r| 1 << r).collect();
        for k in 0..rounds {
            let before = knows.clone();
            for (r, s) in scheds.iter().enumerate() {
                for a in &s.steps[k].actions {
                    match *a {
                        Action::Recv { peer, dst } => {
                            assert_eq!(dst.len, 0);
                            knows[r] |= before[peer];
                        }
                        Action::Send { src, .. } => assert_eq!(src.len, 0),
                        _ => panic!("barrier has a local action"),
                    }
                }
            }
        }
        assert!(knows.iter().all(|&k| k == (1u64 << n) - 1), "n={n}");
    }
}
