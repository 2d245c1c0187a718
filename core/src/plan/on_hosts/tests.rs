use super::*;
use crate::model::CostModel;
use crate::plan::choose_algo;
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

/// Link figures of three kinds of cluster: (name, within hosts, between hosts).
fn clusters() -> [(&'static str, CostModel, CostModel); 3] {
    [
        (
            // The namespace bed: shared memory on 2 vCPUs, 1 Gbit/s tbf links.
            "bed",
            CostModel {
                alpha: 7e-6,
                beta: 1.0 / 1.1e9,
                gamma: 1.0 / 10e9,
            },
            CostModel {
                alpha: 40e-6,
                beta: 1.0 / 0.119e9,
                gamma: 1.0 / 10e9,
            },
        ),
        (
            "10GbE",
            CostModel::shared_memory(),
            CostModel {
                alpha: 20e-6,
                beta: 1.0 / 1.2e9,
                gamma: 1.0 / 10e9,
            },
        ),
        (
            // NVLink-class links within a host, a 200 Gbit/s NIC per host.
            "nvlink+ib",
            CostModel {
                alpha: 2e-6,
                beta: 1.0 / 150e9,
                gamma: 1.0 / 500e9,
            },
            CostModel {
                alpha: 5e-6,
                beta: 1.0 / 25e9,
                gamma: 1.0 / 500e9,
            },
        ),
    ]
}

fn cfg_of(intra: CostModel, inter: CostModel) -> PlanConfig {
    PlanConfig {
        model: intra,
        inter,
        ..PlanConfig::default()
    }
}

/// Host layouts of the grid: `H` hosts of `G` ranks, and uneven ones.
fn shapes() -> Vec<Hosts> {
    let mut v = Vec::new();
    for h in [2, 3, 4, 8, 16, 64] {
        for g in [1, 2, 3, 8] {
            v.push(Hosts::from_sizes(&vec![g; h]).unwrap());
        }
    }
    for sizes in [&[3, 1, 2][..], &[2, 5], &[8, 8, 8, 4], &[1, 8]] {
        v.push(Hosts::from_sizes(sizes).unwrap());
    }
    v.push(Hosts::new(&(0..12).map(|r| r % 3).collect::<Vec<_>>()).unwrap());
    v
}

/// The planner's choice is within 5% of the best prediction of every algorithm there is
/// (not only the planner's candidates), at every point of a grid of sizes, cluster shapes
/// up to 1,024 hosts of 8 ranks, link figures and collectives.
#[test]
fn choice_is_within_five_percent_of_the_best_prediction() {
    let kinds = [
        CollKind::AllReduce,
        CollKind::Broadcast,
        CollKind::Reduce,
        CollKind::AllGather,
        CollKind::ReduceScatter,
    ];
    let mut failures = Vec::new();
    let mut points = 0;
    let big = Hosts::from_sizes(&[8; 1024]).unwrap();
    for (name, intra, inter) in clusters() {
        let cfg = cfg_of(intra, inter);
        let model = model_of(&cfg);
        for hosts in shapes().iter().chain([&big]) {
            let huge = hosts.nranks() > 1000;
            for kind in kinds {
                if huge && kind != CollKind::AllReduce {
                    continue;
                }
                let mut bytes = 8usize;
                while bytes <= 1 << 30 {
                    let d = desc(kind, bytes / 4);
                    let seg = cfg.segment_elems(d.dtype, d.count) * 4;
                    let chosen = choose_algo_on(&d, hosts, &cfg);
                    let t = model.predict(&d, hosts, chosen, seg);
                    let (best, tb) = Algo::ALL
                        .iter()
                        .map(|&a| (a, model.predict(&d, hosts, a, seg)))
                        .fold(
                            (Algo::Ring, f64::INFINITY),
                            |b, x| if x.1 < b.1 { x } else { b },
                        );
                    points += 1;
                    if t > 1.05 * tb {
                        failures.push(format!(
                            "{name} {:?} {kind} {bytes} B: chose {} ({t:.3e} s), {} predicts \
                             {tb:.3e} s",
                            hosts.sizes(),
                            chosen.name(),
                            best.name()
                        ));
                    }
                    bytes *= if huge { 64 } else { 4 };
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {points} points off:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

/// On the bed (3 hosts of 3 ranks, 1 Gbit/s), large all-reduces go hierarchical, with the
/// predicted gain of the bus factors, and small ones stay flat.
#[test]
fn bed_goes_hierarchical_at_large_sizes() {
    let (_, intra, inter) = clusters()[0];
    let cfg = cfg_of(intra, inter);
    let hosts = Hosts::from_sizes(&[3, 3, 3]).unwrap();
    let big = desc(CollKind::AllReduce, 16 << 20); // 64 MiB
    assert_eq!(choose_algo_on(&big, &hosts, &cfg), Algo::Hierarchical);
    let model = model_of(&cfg);
    let seg = cfg.segment_bytes;
    let ratio = model.predict(&big, &hosts, Algo::Ring, seg)
        / model.predict(&big, &hosts, Algo::Hierarchical, seg);
    assert!(ratio > 1.2 && ratio < 4.0 / 3.0 + 1e-9, "ratio {ratio}");
    let small = desc(CollKind::AllReduce, 2);
    assert!(!choose_algo_on(&small, &hosts, &cfg).is_host_aware());
    // Interleaved ranks: the host-ordered ring or the hierarchy, never the flat ring.
    let rr = Hosts::new(&(0..9).map(|r| r % 3).collect::<Vec<_>>()).unwrap();
    assert!(choose_algo_on(&big, &rr, &cfg).is_host_aware());
}

/// One host: exactly the flat planner's choice and schedule.
#[test]
fn one_host_is_the_flat_planner() {
    let cfg = PlanConfig::default();
    let hosts = Hosts::from_sizes(&[5]).unwrap();
    for kind in [
        CollKind::AllReduce,
        CollKind::Broadcast,
        CollKind::AllGather,
    ] {
        for count in [1, 1000, 1 << 22] {
            let d = desc(kind, count);
            assert_eq!(choose_algo_on(&d, &hosts, &cfg), choose_algo(&d, 5, &cfg));
            for r in 0..5 {
                assert_eq!(
                    plan_on(&d, r, &hosts, false, &cfg).unwrap(),
                    plan(&d, r, 5, false, &cfg).unwrap()
                );
            }
        }
    }
}

/// A forced algorithm wins where the collective has it; elsewhere the model chooses.
#[test]
fn forced_algorithms() {
    let (_, intra, inter) = clusters()[1];
    let hosts = Hosts::from_sizes(&[2, 2]).unwrap();
    let forced = |a| PlanConfig {
        algo: Some(a),
        ..cfg_of(intra, inter)
    };
    let ar = desc(CollKind::AllReduce, 1 << 24);
    for a in Algo::ALL {
        assert_eq!(choose_algo_on(&ar, &hosts, &forced(a)), a);
    }
    let bc = desc(CollKind::Broadcast, 1 << 24);
    assert_eq!(
        choose_algo_on(&bc, &hosts, &forced(Algo::HostRing)),
        Algo::Ring
    );
    assert_eq!(
        choose_algo_on(&bc, &hosts, &forced(Algo::RecursiveDoubling)),
        Algo::Tree
    );
    let ag = desc(CollKind::AllGather, 1 << 20);
    assert_eq!(
        choose_algo_on(&ag, &hosts, &forced(Algo::Hierarchical)),
        Algo::Hierarchical
    );
    let unforced = choose_algo_on(&ag, &hosts, &cfg_of(intra, inter));
    assert_eq!(choose_algo_on(&ag, &hosts, &forced(Algo::Tree)), unforced);
    let a2a = desc(CollKind::AllToAll, 1 << 20);
    assert_eq!(
        choose_algo_on(&a2a, &hosts, &forced(Algo::Hierarchical)),
        Algo::Ring
    );
}
