//! The simulator finds each kind of defect and says where.

use super::*;
use crate::schedule::{BufId, Step};

const IN: BufId = BufId::Input;
const OUT: BufId = BufId::Output;

fn s(buf: BufId, offset: usize, len: usize) -> Slice {
    Slice::new(buf, offset, len)
}

fn send(peer: Rank, src: Slice) -> Action {
    Action::Send { peer, src }
}

fn recv(peer: Rank, dst: Slice) -> Action {
    Action::Recv { peer, dst }
}

fn sched(steps: Vec<Vec<Action>>) -> Schedule {
    Schedule {
        steps: steps.into_iter().map(|actions| Step { actions }).collect(),
        scratch_elems: 0,
    }
}

/// Ranks with 4-element i32 buffers: input `[10r, 10r+1, ...]`, output zero.
fn world(schedules: Vec<Schedule>) -> Vec<SimRank> {
    schedules
        .into_iter()
        .enumerate()
        .map(|(r, schedule)| {
            let input: Vec<u8> = (0..4)
                .flat_map(|i| (10 * r as i32 + i).to_ne_bytes())
                .collect();
            SimRank {
                schedule,
                mem: RankMem::separate(&input, &[0; 16]),
            }
        })
        .collect()
}

fn ints(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn sim(mode: SendMode) -> Sim {
    Sim {
        dtype: DataType::Int32,
        op: ReduceOp::Sum,
        mode,
    }
}

fn run(mode: SendMode, schedules: Vec<Schedule>) -> Result<Vec<SimRank>, SimError> {
    let mut w = world(schedules);
    sim(mode).run(&mut w)?;
    Ok(w)
}

#[test]
fn exchange_and_reduce() {
    // Each rank sends its input to the other and adds what it receives.
    let sc = |peer| {
        sched(vec![vec![
            send(peer, s(IN, 0, 4)),
            Action::RecvReduce {
                peer,
                local: s(IN, 0, 4),
                dst: s(OUT, 0, 4),
            },
        ]])
    };
    for mode in [SendMode::Rendezvous, SendMode::Eager] {
        let mut w = world(vec![sc(1), sc(0)]);
        let report = sim(mode).run(&mut w).unwrap();
        assert_eq!(ints(w[0].mem.output()), [10, 12, 14, 16]);
        assert_eq!(ints(w[1].mem.output()), [10, 12, 14, 16]);
        assert_eq!(report.messages, 2);
        assert_eq!(report.bytes, 32);
        assert_eq!(report.steps, [1, 1]);
    }
}

#[test]
fn local_actions_run_in_order_before_transfers() {
    let w = run(
        SendMode::Rendezvous,
        vec![sched(vec![
            vec![Action::Copy {
                src: s(IN, 0, 2),
                dst: s(OUT, 0, 2),
            }],
            vec![Action::Reduce {
                src: s(IN, 2, 2),
                dst: s(OUT, 0, 2),
            }],
            vec![Action::Scale { dst: s(OUT, 0, 2) }],
        ])],
    )
    .unwrap();
    // One rank: Scale divides by 1.
    assert_eq!(ints(w[0].mem.output()), [2, 4, 0, 0]);
}

#[test]
fn deadlock_names_ranks_and_what_they_wait_for() {
    // Both receive first, then send.
    let sc = |peer| {
        sched(vec![
            vec![recv(peer, s(OUT, 0, 1))],
            vec![send(peer, s(IN, 0, 1))],
        ])
    };
    let e = run(SendMode::Eager, vec![sc(1), sc(0)]).unwrap_err();
    let SimError::Deadlock { ranks, detail } = &e else {
        panic!("{e}")
    };
    assert_eq!(ranks, &[0, 1]);
    assert!(detail.contains("rank 0 at step 0 waits for receive #0 from rank 1 (at step 0)"));
}

#[test]
fn rendezvous_is_stricter_than_eager() {
    // Both send first, then receive: fine with buffering, a deadlock without.
    let sc = |peer| {
        sched(vec![
            vec![send(peer, s(IN, 0, 1))],
            vec![recv(peer, s(OUT, 0, 1))],
        ])
    };
    let w = run(SendMode::Eager, vec![sc(1), sc(0)]).unwrap();
    assert_eq!(ints(w[0].mem.output())[0], 10);
    let e = run(SendMode::Rendezvous, vec![sc(1), sc(0)]).unwrap_err();
    assert!(matches!(e, SimError::Deadlock { .. }), "{e}");
    assert!(e.to_string().contains("send #0 to rank 1"), "{e}");
}

#[test]
fn length_mismatch() {
    let e = run(
        SendMode::Rendezvous,
        vec![
            sched(vec![vec![send(1, s(IN, 0, 3))]]),
            sched(vec![vec![recv(0, s(OUT, 0, 2))]]),
        ],
    )
    .unwrap_err();
    assert_eq!(
        e,
        SimError::LengthMismatch {
            from: 0,
            to: 1,
            seq: 0,
            sent: 3,
            expected: 2,
            send_step: 0,
            recv_step: 0
        }
    );
}

#[test]
fn out_of_bounds_and_missing_buffers() {
    let e = run(
        SendMode::Rendezvous,
        vec![sched(vec![vec![Action::Scale { dst: s(OUT, 2, 3) }]])],
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SimError::OutOfBounds {
                available: Some(4),
                ..
            }
        ),
        "{e}"
    );
    let e = run(
        SendMode::Rendezvous,
        vec![sched(vec![vec![Action::Scale {
            dst: s(BufId::Group(0), 0, 1),
        }]])],
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not have"), "{e}");
    let e = run(
        SendMode::Rendezvous,
        vec![sched(vec![vec![Action::Scale {
            dst: s(OUT, usize::MAX, 2),
        }]])],
    )
    .unwrap_err();
    assert!(matches!(e, SimError::OutOfBounds { .. }), "{e}");
}

#[test]
fn bad_peer() {
    let e = run(
        SendMode::Rendezvous,
        vec![sched(vec![vec![send(3, s(IN, 0, 1))]])],
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SimError::BadPeer {
                peer: 3,
                nranks: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn conflicting_actions_in_one_step() {
    // Receive into elements 0..2 while sending elements 1..3.
    let e = run(
        SendMode::Rendezvous,
        vec![
            sched(vec![vec![recv(1, s(OUT, 0, 2)), send(1, s(OUT, 1, 2))]]),
            sched(vec![vec![recv(0, s(OUT, 0, 2)), send(0, s(IN, 0, 2))]]),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SimError::Conflict {
                rank: 0,
                step: 0,
                ..
            }
        ),
        "{e}"
    );
    // Two reads of the same memory are fine.
    run(
        SendMode::Rendezvous,
        vec![
            sched(vec![vec![send(1, s(IN, 0, 2)), send(1, s(IN, 0, 2))]]),
            sched(vec![vec![recv(0, s(OUT, 0, 2)), recv(0, s(OUT, 2, 2))]]),
        ],
    )
    .unwrap();
}

#[test]
fn in_place_aliasing_is_real() {
    // Out of place these two actions touch different buffers; in place they collide.
    let sc = sched(vec![vec![
        Action::Copy {
            src: s(IN, 0, 2),
            dst: s(OUT, 2, 2),
        },
        Action::Scale { dst: s(OUT, 0, 2) },
    ]]);
    let mut w = vec![SimRank {
        schedule: sc.clone(),
        mem: RankMem::aliased(&[0; 16], (0, 16), (0, 16)),
    }];
    let e = sim(SendMode::Rendezvous).run(&mut w).unwrap_err();
    assert!(matches!(e, SimError::Conflict { .. }), "{e}");
    run(SendMode::Rendezvous, vec![sc]).unwrap();
    // A copy onto itself is skipped, as the engine does.
    let mut w = vec![SimRank {
        schedule: sched(vec![vec![
            Action::Copy {
                src: s(IN, 0, 4),
                dst: s(OUT, 0, 4),
            },
            Action::Scale { dst: s(OUT, 0, 4) },
        ]]),
        mem: RankMem::aliased(&[0; 16], (0, 16), (0, 16)),
    }];
    sim(SendMode::Rendezvous).run(&mut w).unwrap();
}

#[test]
fn malformed_actions() {
    let bad = [
        Action::Copy {
            src: s(OUT, 0, 2),
            dst: s(OUT, 1, 2),
        },
        Action::Copy {
            src: s(IN, 0, 2),
            dst: s(OUT, 0, 3),
        },
        Action::Reduce {
            src: s(OUT, 0, 2),
            dst: s(OUT, 0, 2),
        },
    ];
    for a in bad {
        let e = run(SendMode::Rendezvous, vec![sched(vec![vec![a]])]).unwrap_err();
        assert!(matches!(e, SimError::Malformed { .. }), "{e}");
    }
}

#[test]
fn unreceived_messages() {
    let sc = vec![
        sched(vec![vec![send(1, s(IN, 0, 1))], vec![send(1, s(IN, 1, 2))]]),
        sched(vec![vec![recv(0, s(OUT, 0, 1))]]),
    ];
    let e = run(SendMode::Eager, sc.clone()).unwrap_err();
    assert_eq!(
        e,
        SimError::Unreceived {
            messages: vec![(0, 1, 1, 2)]
        }
    );
    // Without buffering, the sender is stuck instead.
    let e = run(SendMode::Rendezvous, sc).unwrap_err();
    assert!(e.to_string().contains("rank 1 (finished)"), "{e}");
}

#[test]
fn messages_match_in_fifo_order_per_pair() {
    let w = run(
        SendMode::Rendezvous,
        vec![
            sched(vec![vec![send(1, s(IN, 1, 1)), send(1, s(IN, 3, 1))]]),
            sched(vec![
                vec![recv(0, s(OUT, 3, 1))],
                vec![recv(0, s(OUT, 0, 1))],
            ]),
        ],
    );
    // Rank 0's step holds both sends; rank 1 takes them one step at a time.
    let w = w.unwrap();
    assert_eq!(ints(w[1].mem.output()), [3, 0, 0, 1]);
}

#[test]
fn scratch_starts_as_garbage() {
    let mut sc = sched(vec![vec![Action::Copy {
        src: s(BufId::Scratch, 0, 1),
        dst: s(OUT, 0, 1),
    }]]);
    sc.scratch_elems = 1;
    let w = run(SendMode::Rendezvous, vec![sc]).unwrap();
    assert_eq!(w[0].mem.output()[..4], [SCRATCH_FILL; 4]);
}

#[test]
fn absurd_scratch_is_an_error() {
    let mut sc = sched(vec![]);
    sc.scratch_elems = usize::MAX / 2;
    let e = run(SendMode::Rendezvous, vec![sc]).unwrap_err();
    assert_eq!(
        e,
        SimError::ScratchTooLarge {
            rank: 0,
            elems: usize::MAX / 2
        }
    );
}
