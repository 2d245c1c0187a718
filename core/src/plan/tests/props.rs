//! Random cases drawn by proptest (modest case counts: these run in debug builds in CI).

use super::oracle::{check, Case, ALGOS};
use super::vector::{check_group, check_v, GroupCase, VCase};
use crate::sim::SendMode;
use crate::types::{DataType, ReduceOp};
use proptest::prelude::*;

/// `cases` random cases, or `PROPTEST_CASES` of them when set (for long release runs:
/// `PROPTEST_CASES=20000 cargo test --release -p dmsc-core --lib plan::tests::props`).
fn config(cases: u32) -> ProptestConfig {
    let env = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    ProptestConfig {
        cases: env.unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn mode(eager: bool) -> SendMode {
    if eager {
        SendMode::Eager
    } else {
        SendMode::Rendezvous
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn random_collectives(
        which in 0..ALGOS.len(),
        n in 1usize..=16,
        count in prop_oneof![0usize..20, 0usize..1200],
        dtype in 0..DataType::ALL.len(),
        op in 0..ReduceOp::ALL.len(),
        root in 0usize..16,
        inplace: bool,
        seg_elems in 1usize..48,
        random: bool,
        eager: bool,
        seed: u64,
    ) {
        let (kind, algo) = ALGOS[which];
        let dtype = DataType::ALL[dtype];
        let c = Case {
            kind,
            n,
            count,
            dtype,
            // Bitwise operators apply to integer types only: Sum stands in on floats.
            op: Some(ReduceOp::ALL[op]).filter(|o| o.check_dtype(dtype).is_ok()).unwrap_or(ReduceOp::Sum),
            root: root % n,
            inplace,
            algo,
            seg_bytes: seg_elems * dtype.size(),
            random,
            seed,
            mode: mode(eager),
        };
        let r = check(&c);
        prop_assert!(r.is_ok(), "{:?}: {}", c, r.unwrap_err());
    }
}

fn count_matrix() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (1usize..=10).prop_flat_map(|n| prop::collection::vec(prop::collection::vec(0usize..7, n), n))
}

fn messages() -> impl Strategy<Value = (usize, Vec<(usize, usize, usize)>)> {
    (1usize..=8).prop_flat_map(|n| {
        (
            Just(n),
            prop::collection::vec((0..n, 0..n, 0usize..6), 0..24),
        )
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn random_all_to_all_v(
        counts in count_matrix(),
        dtype in 0..DataType::ALL.len(),
        inplace: bool,
        eager: bool,
        seed: u64,
    ) {
        let c = VCase { dtype: DataType::ALL[dtype], counts, inplace, seed, mode: mode(eager) };
        let r = check_v(&c);
        prop_assert!(r.is_ok(), "{:?}: {}", c, r.unwrap_err());
    }

    #[test]
    fn random_send_recv_groups((n, messages) in messages(), eager: bool, seed: u64) {
        let c = GroupCase { n, messages, seed, mode: mode(eager) };
        let r = check_group(&c);
        prop_assert!(r.is_ok(), "{:?}: {}", c, r.unwrap_err());
    }
}
