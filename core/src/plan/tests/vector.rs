//! All-to-all-v and send/recv groups: drivers shared by the sweeps here and the proptests.

use super::oracle::Rng;
use crate::plan::{plan_all_to_all_v, plan_send_recv, P2p};
use crate::sim::{RankMem, SendMode, Sim, SimRank, OUTPUT_FILL};
use crate::types::{DataType, ReduceOp};

/// An all-to-all-v: `counts[i][j]` elements go from rank `i` to rank `j`.
#[derive(Clone, Debug)]
pub(super) struct VCase {
    pub dtype: DataType,
    pub counts: Vec<Vec<usize>>,
    pub inplace: bool,
    pub seed: u64,
    pub mode: SendMode,
}

/// Displacements for blocks of `lens`, laid out in a random order with random gaps;
/// returns them and the buffer length.
fn layout(lens: &[usize], rng: &mut Rng) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut displs = vec![0; lens.len()];
    let mut at = 0;
    for j in order {
        at += rng.below(3) as usize;
        displs[j] = at;
        at += lens[j];
    }
    (displs, at + rng.below(2) as usize)
}

/// Plan, simulate and check one all-to-all-v.
pub(super) fn check_v(c: &VCase) -> Result<(), String> {
    let n = c.counts.len();
    let w = c.dtype.size();
    let mut rng = Rng(c.seed);
    let mut ranks = Vec::new();
    let mut layouts = Vec::new();
    for r in 0..n {
        let sc: Vec<usize> = (0..n).map(|j| c.counts[r][j]).collect();
        let rc: Vec<usize> = (0..n).map(|i| c.counts[i][r]).collect();
        let (sd, slen) = layout(&sc, &mut rng);
        let (rd, rlen) = layout(&rc, &mut rng);
        let s = plan_all_to_all_v(r, n, c.dtype, &sc, &sd, &rc, &rd, c.inplace)
            .map_err(|e| format!("plan rank {r}: {e}"))?;
        let input = rng.bytes(slen.max(if c.inplace { rlen } else { 0 }) * w);
        let mem = if c.inplace {
            RankMem::aliased(&input, (0, input.len()), (0, input.len()))
        } else {
            RankMem::separate(&input, &vec![OUTPUT_FILL; rlen * w])
        };
        ranks.push(SimRank { schedule: s, mem });
        layouts.push((sd, rd, input));
    }
    let sim = Sim {
        dtype: c.dtype,
        op: ReduceOp::Sum,
        mode: c.mode,
    };
    sim.run(&mut ranks).map_err(|e| e.to_string())?;
    for (r, rank) in ranks.iter().enumerate() {
        let out = rank.mem.output();
        // Bytes no message lands on keep their old value.
        let mut want = if c.inplace {
            layouts[r].2.clone()
        } else {
            vec![OUTPUT_FILL; out.len()]
        };
        for (i, (sd, _, input)) in layouts.iter().enumerate() {
            let len = c.counts[i][r] * w;
            let (from, to) = (sd[r] * w, layouts[r].1[i] * w);
            want[to..to + len].copy_from_slice(&input[from..from + len]);
        }
        if out != want.as_slice() {
            return Err(format!("rank {r}: output differs from the reference"));
        }
        if !c.inplace && rank.mem.input() != layouts[r].2.as_slice() {
            return Err(format!("rank {r}: input changed"));
        }
    }
    Ok(())
}

/// A send/recv group: messages `(from, to, elements)`, matched in list order per pair.
#[derive(Clone, Debug)]
pub(super) struct GroupCase {
    pub n: usize,
    pub messages: Vec<(usize, usize, usize)>,
    pub seed: u64,
    pub mode: SendMode,
}

/// Plan, simulate and check one group. Each operation gets its own group buffer; odd ranks
/// list their receives before their sends.
pub(super) fn check_group(c: &GroupCase) -> Result<(), String> {
    let w = 2; // bf16 elements
    let mut rng = Rng(c.seed);
    // Per message: (sender's buffer index, receiver's buffer index).
    let mut slots = vec![(0u32, 0u32); c.messages.len()];
    let mut ranks = Vec::new();
    let mut payloads = Vec::new();
    for (m, &(_, _, len)) in c.messages.iter().enumerate() {
        payloads.push(rng.bytes(len * w));
        let _ = m;
    }
    for r in 0..c.n {
        let mut sends = Vec::new();
        let mut recvs = Vec::new();
        let mut bufs: Vec<Vec<u8>> = Vec::new();
        for (m, &(from, to, len)) in c.messages.iter().enumerate() {
            if from == r {
                slots[m].0 = bufs.len() as u32;
                sends.push(P2p::Send {
                    peer: to,
                    buf: bufs.len() as u32,
                    len,
                });
                bufs.push(payloads[m].clone());
            }
            if to == r {
                slots[m].1 = bufs.len() as u32;
                recvs.push(P2p::Recv {
                    peer: from,
                    buf: bufs.len() as u32,
                    len,
                });
                bufs.push(vec![OUTPUT_FILL; len * w]);
            }
        }
        let ops: Vec<P2p> = if r % 2 == 1 {
            recvs.into_iter().chain(sends).collect()
        } else {
            sends.into_iter().chain(recvs).collect()
        };
        let s = plan_send_recv(r, c.n, &ops).map_err(|e| format!("plan rank {r}: {e}"))?;
        if s.steps.len() > 1 {
            return Err(format!("rank {r}: {} steps", s.steps.len()));
        }
        let mem = RankMem::separate(&[], &[]).with_groups(&bufs);
        ranks.push(SimRank { schedule: s, mem });
    }
    let sim = Sim {
        dtype: DataType::Bfloat16,
        op: ReduceOp::Sum,
        mode: c.mode,
    };
    sim.run(&mut ranks).map_err(|e| e.to_string())?;
    for (m, &(from, to, _)) in c.messages.iter().enumerate() {
        let got = ranks[to].mem.group(slots[m].1 as usize);
        let sent = ranks[from].mem.group(slots[m].0 as usize);
        if got != payloads[m].as_slice() || sent != payloads[m].as_slice() {
            return Err(format!("message #{m} {from}->{to} arrived wrong"));
        }
    }
    Ok(())
}

#[test]
fn all_to_all_v_sweep() {
    for n in 1..=9 {
        for pattern in 0..4 {
            for inplace in [false, true] {
                let counts = (0..n)
                    .map(|i| {
                        (0..n)
                            .map(|j| match pattern {
                                0 => 0,
                                1 => (i + 2 * j) % 4,
                                2 => usize::from(i == j) * 5,
                                _ => (i * 7 + j * 3) % 9,
                            })
                            .collect()
                    })
                    .collect();
                let c = VCase {
                    dtype: DataType::Int32,
                    counts,
                    inplace,
                    seed: (n * 10 + pattern) as u64,
                    mode: SendMode::Rendezvous,
                };
                check_v(&c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
            }
        }
    }
}

#[test]
fn send_recv_groups() {
    let ring = |n: usize| (0..n).map(|r| (r, (r + 1) % n, 3 + r)).collect::<Vec<_>>();
    let mut cases = vec![
        (1, vec![(0, 0, 4), (0, 0, 0), (0, 0, 2)]),
        (2, vec![(0, 1, 5), (1, 0, 5), (0, 1, 1), (1, 1, 3)]),
        (5, ring(5)),
        (4, vec![(0, 3, 0), (3, 0, 2), (2, 2, 1)]),
    ];
    // Everyone to everyone, twice.
    let all: Vec<_> = (0..6)
        .flat_map(|i| (0..6).map(move |j| (i, j, (i + j) % 3)))
        .collect();
    cases.push((6, [all.clone(), all].concat()));
    for (n, messages) in cases {
        for mode in [SendMode::Rendezvous, SendMode::Eager] {
            let c = GroupCase {
                n,
                messages: messages.clone(),
                seed: n as u64,
                mode,
            };
            check_group(&c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        }
    }
}
