//! Bad arguments are refused with `InvalidArgument` naming the argument, never a panic.

use crate::plan::{
    buffer_elems, extent, plan, plan_all_to_all_v, plan_send_recv, P2p, PlanConfig, MAX_SEGMENTS,
};
use crate::schedule::BufId;
use crate::types::{Algo, CollDesc, CollKind, DataType, ReduceOp};
use crate::Error;

fn desc(kind: CollKind, count: usize) -> CollDesc {
    CollDesc {
        kind,
        count,
        dtype: DataType::Float32,
        op: ReduceOp::Sum,
        root: 0,
    }
}

/// The error's text, asserting it is an `InvalidArgument` that mentions `word`.
fn invalid<T: std::fmt::Debug>(r: crate::Result<T>, word: &str) {
    match r {
        Err(Error::InvalidArgument { what }) => {
            assert!(what.contains(word), "{what:?} does not mention {word:?}")
        }
        other => panic!("expected InvalidArgument about {word}, got {other:?}"),
    }
}

#[test]
fn plan_refuses_bad_arguments() {
    let cfg = PlanConfig::default();
    let d = desc(CollKind::AllReduce, 10);
    invalid(plan(&d, 0, 0, false, &cfg), "nranks");
    invalid(plan(&d, 4, 4, false, &cfg), "rank 4");
    let mut b = desc(CollKind::Broadcast, 10);
    b.root = 4;
    invalid(plan(&b, 0, 4, false, &cfg), "root 4");
    let mut r = desc(CollKind::Reduce, 10);
    r.root = usize::MAX;
    invalid(plan(&r, 0, 4, false, &cfg), "root");
    for kind in [
        CollKind::AllGather,
        CollKind::ReduceScatter,
        CollKind::AllToAll,
    ] {
        invalid(
            plan(&desc(kind, usize::MAX / 3), 0, 4, false, &cfg),
            "overflow",
        );
    }
    invalid(
        plan(
            &desc(CollKind::AllReduce, usize::MAX / 2),
            0,
            4,
            false,
            &cfg,
        ),
        "overflow",
    );
    invalid(
        plan(&desc(CollKind::AllToAllV, 1), 0, 4, false, &cfg),
        "all_to_all_v",
    );
    invalid(
        plan(&desc(CollKind::SendRecv, 1), 0, 4, false, &cfg),
        "send_recv",
    );
    let zero = PlanConfig {
        segment_bytes: 0,
        ..cfg
    };
    invalid(plan(&d, 0, 4, false, &zero), "segment_bytes");
    // Root is ignored where it has no meaning.
    let mut ar = d;
    ar.root = 99;
    assert!(plan(&ar, 0, 4, false, &cfg).is_ok());
}

#[test]
fn all_to_all_v_refuses_bad_arguments() {
    let ok = [1usize, 2, 3];
    let displs = [0usize, 1, 3];
    let dt = DataType::Int32;
    invalid(
        plan_all_to_all_v(0, 3, dt, &ok[..2], &displs, &ok, &displs, false),
        "send_counts",
    );
    invalid(
        plan_all_to_all_v(0, 3, dt, &ok, &displs[..1], &ok, &displs, false),
        "send_displs",
    );
    invalid(
        plan_all_to_all_v(0, 3, dt, &ok, &displs, &ok, &[0, 0], false),
        "recv_displs",
    );
    invalid(
        plan_all_to_all_v(0, 3, dt, &ok, &[0, usize::MAX, 0], &ok, &displs, false),
        "send_displs[1]",
    );
    invalid(
        plan_all_to_all_v(
            0,
            3,
            dt,
            &ok,
            &displs,
            &[1, usize::MAX / 2, 0],
            &displs,
            false,
        ),
        "recv_displs[1]",
    );
    invalid(
        plan_all_to_all_v(1, 3, dt, &ok, &displs, &[1, 5, 3], &displs, false),
        "send_counts[1]",
    );
    invalid(
        plan_all_to_all_v(3, 3, dt, &ok, &displs, &ok, &displs, false),
        "rank 3",
    );
    invalid(
        plan_all_to_all_v(0, 0, dt, &[], &[], &[], &[], false),
        "nranks",
    );
}

#[test]
fn send_recv_refuses_bad_arguments() {
    let send = |peer, len| P2p::Send { peer, buf: 0, len };
    let recv = |peer, len| P2p::Recv { peer, buf: 1, len };
    invalid(plan_send_recv(0, 2, &[send(2, 1)]), "peer 2");
    invalid(plan_send_recv(0, 2, &[recv(7, 0)]), "peer 7");
    invalid(plan_send_recv(1, 2, &[send(1, 3)]), "itself");
    invalid(
        plan_send_recv(1, 2, &[send(1, 3), recv(1, 4)]),
        "self send #0",
    );
    invalid(plan_send_recv(2, 2, &[]), "rank 2");
    // Operations keep their order (zero-length ones too); self pairs become copies at the end.
    let s = plan_send_recv(0, 2, &[recv(0, 2), send(1, 0), send(0, 2), recv(1, 3)]).unwrap();
    let a = &s.steps[0].actions;
    assert_eq!(a.len(), 3);
    assert!(matches!(
        a[0],
        crate::schedule::Action::Send { peer: 1, .. }
    ));
    assert!(matches!(
        a[1],
        crate::schedule::Action::Recv { peer: 1, .. }
    ));
    assert!(matches!(a[2], crate::schedule::Action::Copy { .. }));
    assert!(plan_send_recv(0, 2, &[]).unwrap().steps.is_empty());
}

#[test]
fn zero_count_is_empty_and_single_rank_is_local() {
    let cfg = PlanConfig::default();
    for kind in [
        CollKind::AllReduce,
        CollKind::ReduceScatter,
        CollKind::AllGather,
        CollKind::Broadcast,
        CollKind::Reduce,
        CollKind::AllToAll,
    ] {
        assert_eq!(
            plan(&desc(kind, 0), 1, 3, false, &cfg).unwrap().steps.len(),
            0
        );
        let one = plan(&desc(kind, 5), 0, 1, false, &cfg).unwrap();
        assert_eq!(one.transfers(), 0);
        assert_eq!(
            plan(&desc(kind, 5), 0, 1, true, &cfg).unwrap().steps.len(),
            0
        );
    }
    let mut avg = desc(CollKind::AllReduce, 5);
    avg.op = ReduceOp::Avg;
    assert_eq!(plan(&avg, 0, 1, true, &cfg).unwrap().steps.len(), 1);
    assert!(plan(&desc(CollKind::Barrier, 0), 0, 1, false, &cfg)
        .unwrap()
        .steps
        .is_empty());
}

#[test]
fn step_counts() {
    let cfg = PlanConfig::default();
    let steps = |kind, count, n, algo| {
        let c = PlanConfig { algo, ..cfg };
        plan(&desc(kind, count), 1, n, false, &c)
            .unwrap()
            .steps
            .len()
    };
    for n in [2, 5, 8, 16] {
        assert_eq!(
            steps(CollKind::AllReduce, 1000, n, Some(Algo::Ring)),
            2 * (n - 1)
        );
        assert_eq!(steps(CollKind::ReduceScatter, 10, n, None), n - 1);
        assert_eq!(steps(CollKind::AllGather, 10, n, None), n - 1);
        assert_eq!(steps(CollKind::AllToAll, 10, n, None), n - 1);
        assert_eq!(
            steps(CollKind::Barrier, 0, n, None),
            n.next_power_of_two().trailing_zeros() as usize
        );
    }
}

#[test]
fn huge_counts_get_bounded_segments() {
    let cfg = PlanConfig {
        segment_bytes: 1,
        ..PlanConfig::default()
    };
    let seg = cfg.segment_elems(DataType::Float64, usize::MAX / 16);
    assert!((usize::MAX / 16).div_ceil(seg) <= MAX_SEGMENTS);
    assert_eq!(cfg.segment_elems(DataType::Float64, 100), 1);
}

#[test]
fn buffer_sizes_and_extents() {
    let d = desc(CollKind::AllGather, 10);
    assert_eq!(buffer_elems(&d, 4).unwrap(), (10, 40));
    let s = plan(&d, 2, 4, false, &PlanConfig::default()).unwrap();
    assert_eq!(extent(&s, BufId::Input), 10);
    assert_eq!(extent(&s, BufId::Output), 40);
    assert_eq!(extent(&s, BufId::Scratch), 0);
    invalid(buffer_elems(&desc(CollKind::SendRecv, 1), 4), "send_recv");
}
