//! Pairwise-exchange all-to-all and all-to-all-v.
//!
//! Out of place, step `s` (of `n-1`) has rank `r` send its block for `r+s` to `r+s` and
//! receive the block from `r-s`, so every step is a permutation and every link carries one
//! block per step; the own block is copied locally in the first step (MPICH's pairwise
//! exchange for long messages; Thakur, Rabenseifner and Gropp, IJHPCA 19(1), 2005).
//!
//! In place (all-to-all), receiving from `r-s` into block `r-s` would overwrite data not yet
//! sent, so ranks instead pair up symmetrically: in round `s` (of `n`) rank `r` exchanges
//! with `s - r mod n`, which exchanges with `r` in the same round (each rank meets itself
//! once and skips that round). Rank `r` sends its block for the partner straight from the
//! buffer and receives the partner's block into one of two scratch blocks; the next round
//! copies it into place while the other scratch block receives. Scratch: `2*count`.
//!
//! All-to-all-v (arbitrary counts and displacements) uses the shifted pairing; in place
//! it first packs everything it sends into `Scratch`, so receives may land anywhere.

use super::timeline::Timeline;
use super::{add, sub};
use crate::error::{Error, Result};
use crate::schedule::{Action, BufId, Schedule, Slice};
use crate::types::{DataType, Rank};

/// Rank `rank`'s all-to-all of blocks of `count` elements over `n >= 2` ranks.
pub(crate) fn plan(rank: Rank, n: usize, count: usize, inplace: bool) -> Schedule {
    if inplace {
        return plan_in_place(rank, n, count);
    }
    let blk = |buf, b: usize| Slice::new(buf, b * count, count);
    let mut t = Timeline::default();
    t.at(
        0,
        Action::Copy {
            src: blk(BufId::Input, rank),
            dst: blk(BufId::Output, rank),
        },
    );
    for s in 1..n {
        let (to, from) = (add(rank, s, n), sub(rank, s, n));
        t.at(
            s - 1,
            Action::Send {
                peer: to,
                src: blk(BufId::Input, to),
            },
        );
        t.at(
            s - 1,
            Action::Recv {
                peer: from,
                dst: blk(BufId::Output, from),
            },
        );
    }
    t.into_schedule(0)
}

fn plan_in_place(rank: Rank, n: usize, count: usize) -> Schedule {
    let blk = |b: usize| Slice::new(BufId::Output, b * count, count);
    let slot = |s: usize| Slice::new(BufId::Scratch, (s % 2) * count, count);
    let mut t = Timeline::default();
    for s in 0..n {
        let partner = sub(s, rank, n);
        if partner == rank {
            continue;
        }
        t.at(
            s,
            Action::Send {
                peer: partner,
                src: blk(partner),
            },
        );
        t.at(
            s,
            Action::Recv {
                peer: partner,
                dst: slot(s),
            },
        );
        t.at(
            s + 1,
            Action::Copy {
                src: slot(s),
                dst: blk(partner),
            },
        );
    }
    t.into_schedule(2 * count)
}

/// Validated all-to-all-v arguments of one rank.
#[derive(Debug)]
pub(crate) struct VSpec {
    rank: Rank,
    n: usize,
    send: Vec<(usize, usize)>,
    recv: Vec<(usize, usize)>,
}

impl VSpec {
    /// Check `[send_counts, send_displs, recv_counts, recv_displs]`.
    pub(crate) fn new(rank: Rank, n: usize, dtype: DataType, args: [&[usize]; 4]) -> Result<Self> {
        const NAMES: [&str; 4] = ["send_counts", "send_displs", "recv_counts", "recv_displs"];
        for (a, name) in args.iter().zip(NAMES) {
            if a.len() != n {
                return Err(Error::invalid(format!(
                    "{name} has {} entries but there are {n} ranks",
                    a.len()
                )));
            }
        }
        let ranges = |counts: &[usize], displs: &[usize], what: &str| {
            counts
                .iter()
                .zip(displs)
                .enumerate()
                .map(|(j, (&c, &d))| {
                    d.checked_add(c)
                        .and_then(|end| end.checked_mul(dtype.size()))
                        .map(|_| (d, c))
                        .ok_or_else(|| {
                            Error::invalid(format!(
                                "{what}_displs[{j}] + {what}_counts[{j}] ({d} + {c} elements of \
                                 {dtype}) overflows the address space"
                            ))
                        })
                })
                .collect::<Result<Vec<_>>>()
        };
        let send = ranges(args[0], args[1], "send")?;
        let recv = ranges(args[2], args[3], "recv")?;
        if send[rank].1 != recv[rank].1 {
            return Err(Error::invalid(format!(
                "send_counts[{rank}] = {} differs from recv_counts[{rank}] = {} (what rank {rank} \
                 sends itself)",
                send[rank].1, recv[rank].1
            )));
        }
        Ok(VSpec {
            rank,
            n,
            send,
            recv,
        })
    }
}

/// The all-to-all-v schedule of validated arguments.
pub(crate) fn plan_v(v: &VSpec, inplace: bool) -> Schedule {
    let VSpec { rank, n, .. } = *v;
    let mut t = Timeline::default();
    // Where the data for each peer is read from: the input, or its packed copy.
    let mut src: Vec<Slice> = v
        .send
        .iter()
        .map(|&(d, c)| Slice::new(BufId::Input, d, c))
        .collect();
    let mut scratch = 0;
    if inplace {
        for s in src.iter_mut().filter(|s| s.len > 0) {
            let packed = Slice::new(BufId::Scratch, scratch, s.len);
            t.at(
                0,
                Action::Copy {
                    src: *s,
                    dst: packed,
                },
            );
            *s = packed;
            scratch += s.len;
        }
    }
    let base = usize::from(inplace);
    let (rd, rc) = v.recv[rank];
    if rc > 0 {
        // Its own step (before the exchange, or after the packing), so that a receive
        // range overlapping it cannot conflict.
        t.at(
            base,
            Action::Copy {
                src: src[rank],
                dst: Slice::new(BufId::Output, rd, rc),
            },
        );
    }
    for s in 1..n {
        let (to, from) = (add(rank, s, n), sub(rank, s, n));
        if src[to].len > 0 {
            t.at(
                base + s,
                Action::Send {
                    peer: to,
                    src: src[to],
                },
            );
        }
        let (d, c) = v.recv[from];
        if c > 0 {
            t.at(
                base + s,
                Action::Recv {
                    peer: from,
                    dst: Slice::new(BufId::Output, d, c),
                },
            );
        }
    }
    t.into_schedule(scratch)
}
