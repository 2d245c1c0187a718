//! Property tests: whatever happens (submissions of gangs and replicas, workers joining,
//! dying, results and failures), no partial gang is ever admitted and no worker serves two
//! replicas at once.

use dmsc_scheduler::clock::ManualClock;
use dmsc_scheduler::policy::Policy;
use dmsc_scheduler::scheduler::{Config, Scheduler};
use dmsc_scheduler::task::{Assignment, TaskSpec};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

#[derive(Clone, Debug)]
enum Op {
    Submit {
        gang: u32,
        redundancy: u32,
        retries: u32,
    },
    AddWorker,
    Dispatch,
    Complete(usize),
    Fail(usize),
    /// Time passes; only workers in the mask send heartbeats.
    Elapse {
        ms: u64,
        alive_mask: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u32..6, 1u32..3, 0u32..3).prop_map(|(gang, redundancy, retries)| Op::Submit {
            gang,
            redundancy,
            retries
        }),
        Just(Op::AddWorker),
        Just(Op::Dispatch),
        Just(Op::Dispatch),
        (0usize..16).prop_map(Op::Complete),
        (0usize..16).prop_map(Op::Fail),
        (0u64..2500, any::<u16>()).prop_map(|(ms, alive_mask)| Op::Elapse { ms, alive_mask }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn no_partial_gang(ops in proptest::collection::vec(op(), 1..120), policy in 0u8..3, backfill in any::<bool>()) {
        let clock = ManualClock::new();
        let policy = [Policy::Fcfs, Policy::Priority, Policy::WeightedFair][policy as usize];
        let mut s = Scheduler::new(Config { policy, backfill, heartbeat_timeout_ms: 3000, ..Config::default() }, clock.clone());
        let mut next_worker = 0u64;
        let mut gang_of: HashMap<u64, u32> = HashMap::new();
        let mut live: Vec<Assignment> = Vec::new();
        for _ in 0..4 { s.add_worker(next_worker, 1.0); next_worker += 1; }
        for op in ops {
            match op {
                Op::Submit { gang, redundancy, retries } => {
                    let id = s.submit(TaskSpec { gang, redundancy, retries, class: format!("c{}", gang % 2), ..TaskSpec::new("t") }).unwrap();
                    gang_of.insert(id, gang);
                }
                Op::AddWorker => { s.add_worker(next_worker, 1.0); next_worker += 1; }
                Op::Dispatch => {
                    let new = s.dispatch();
                    for a in &new {
                        prop_assert_eq!(a.workers.len() as u32, gang_of[&a.task], "partial gang");
                        let distinct: HashSet<_> = a.workers.iter().collect();
                        prop_assert_eq!(distinct.len(), a.workers.len());
                    }
                    live.extend(new);
                }
                Op::Complete(i) | Op::Fail(i) if !live.is_empty() => {
                    let a = live.remove(i % live.len());
                    if matches!(op, Op::Complete(_)) {
                        let _ = s.complete(a.id, serde_json::json!(1));
                    } else {
                        let _ = s.fail(a.id, "injected");
                    }
                }
                Op::Complete(_) | Op::Fail(_) => {}
                Op::Elapse { ms, alive_mask } => {
                    clock.advance(ms);
                    for w in 0..next_worker {
                        if alive_mask & (1 << (w % 16)) != 0 { let _ = s.heartbeat(w); }
                    }
                    s.tick();
                }
            }
            // Invariants after every step: each current assignment holds its whole gang of
            // distinct live workers; no worker is in two assignments; busy + free = workers.
            live.retain(|a| s.assignment_workers(a.id).is_some());
            let mut seen = HashSet::new();
            for a in &live {
                let ws = s.assignment_workers(a.id).unwrap();
                prop_assert_eq!(ws.len() as u32, gang_of[&a.task]);
                for w in ws { prop_assert!(seen.insert(*w), "worker {} in two assignments", w); }
            }
            prop_assert_eq!(seen.len() + s.free_workers(), s.workers());
            prop_assert_eq!(live.len(), s.running());
        }
    }
}
