//! A call on device buffers run device to device over CUDA IPC, for ranks that all share one
//! host (NCCL's P2P transport role): no staging through host memory for the payload.
//!
//! Covered: all-gather, broadcast, and where the device queues reductions on a stream
//! ([`IpcMemory::reduces_on_stream`](dmsc_transports::cuda::ipc_memory::IpcMemory::reduces_on_stream):
//! the driver and the FAKE device do) all-reduce, reduce-scatter and reduce, in place or
//! not, with every operator but `PreMulSum`. Everything else (those kinds
//! otherwise, all-to-all(-v), gather, scatter, send/receive groups) keeps the staged path.
//!
//! When: every peer of the communicator is served by shared memory (`shm`, so every rank is
//! a process or thread of this host), the communicator has more than one rank, the call moves
//! bytes, `DMSC_CUDA_IPC` is not `0`, and, agreed once when the device is attached (a host
//! all-gather of each rank's GPU UUID and process id, `agreement::agreed`), every rank's buffers
//! are on one GPU (IPC between GPUs needs peer access: not supported yet, those stage) and
//! no two ranks share a process (CUDA cannot open a process's own exports; the FAKE device
//! can). Never whether this rank's call is in place. The choice depends only on what every rank sees
//! alike (the call's kind, count and operator, the communicator's transports, the device
//! kind, the job's environment), so all ranks take the same path and their host jobs match.
//!
//! How (on the communicator's staging thread, in call order, see `stager`):
//! 1. dmsc's stream waits for the caller's earlier work, and the staging thread waits until
//!    it has run: this rank's buffers are then ready to be read by its peers;
//! 2. this rank exports the buffers its peers read ([`Moves::exports`]: an all-gather's
//!    input block, a broadcast root's source, a reduction's input, and an all-reduce's
//!    output) and all ranks exchange their messages ([`MSG`] bytes: a status byte, the
//!    number of exports, the exports) with a host all-gather through the engine; the
//!    exchange is also the barrier "every input is ready";
//! 3. each rank maps the peers' buffers it reads (checking they hold the bytes read) and runs
//!    its phases ([`Moves::phases`]) on dmsc's stream, waiting for each:
//!    - all-gather: copy every peer's block into its slot of the output;
//!    - broadcast: non-root ranks copy the root's buffer;
//!    - reduce-scatter, reduce: reduce this rank's part (the root's whole output) over every
//!      rank's input, the reduction kernels reading the peers' inputs where they are
//!      (own input first, so in place it is read before it is written), then divide for
//!      `Avg`;
//!    - all-reduce: the same on this rank's `1/ranks` slice of the elements, then, after a
//!      barrier, copy every peer's slice from its output;
//! 4. after each phase a host all-gather of one status byte per rank is the barrier "nobody
//!    reads what this phase read any more" (after the last, the caller may reuse or free its
//!    buffers once its stream passes the call), and tells every rank whether a peer failed:
//!    a failure anywhere fails the call on every rank, naming the ranks, and never hangs a
//!    peer (a mismatched count or root included).
//!
//! Exports are made per call and mappings dropped after it (no cache yet): the driver's
//! `cuIpcOpenMemHandle` per call is a cost NCCL avoids by registering buffers once. Sources:
//! NCCL's P2P transport (design only); CUDA Driver API reference, "Interprocess
//! Communication".

use crate::call::{Call, Span};
use dmsc_core::engine::executor::Job;
use dmsc_core::{CollDesc, CollKind, DataType, Error, ReduceOp, Result};
use dmsc_transports::cuda::ipc_handle::{IpcExport, ENCODED_LEN};

/// Exports per rank at most (an all-reduce's input and output).
const EXPORTS: usize = 2;
/// Bytes of one rank's message in the exchange: status, number of exports, the exports.
pub(crate) const MSG: usize = 2 + EXPORTS * ENCODED_LEN;

/// Whether the environment allows CUDA IPC (`DMSC_CUDA_IPC=0` forces staging).
pub(crate) fn ipc_allowed() -> bool {
    std::env::var("DMSC_CUDA_IPC").map_or(true, |v| v.trim() != "0")
}

/// Whether peers served by `transports` (one per rank, `"self"` for this one) all share this
/// host's memory.
pub(crate) fn all_on_this_host(transports: &[&str]) -> bool {
    transports.len() > 1
        && transports
            .iter()
            .all(|t| *t == "self" || t.starts_with("shm"))
}

/// Where an operand of a device operation lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Src {
    /// This rank's device address.
    Own(usize),
    /// Byte `offset` of export number `export` of rank `rank`.
    Peer {
        /// The rank.
        rank: usize,
        /// Which of its exports.
        export: usize,
        /// Bytes into it.
        offset: usize,
    },
}

/// One device operation queued on dmsc's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Copy `len` bytes.
    Copy { dst: usize, src: Src, len: usize },
    /// `dst = a ⊕ b` over `len` bytes.
    Reduce {
        dst: usize,
        a: Src,
        b: Src,
        len: usize,
    },
    /// Divide every element of `len` bytes at `dst` by the number of ranks (average).
    Divide { dst: usize, len: usize },
}

/// The data movement of a call over IPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Moves {
    /// Every rank copies each peer's block into block `r` of its output; its own block comes
    /// from `own` (no copy when in place).
    AllGather {
        /// This rank's output: `ranks * blk` bytes.
        out: usize,
        /// Bytes per rank.
        blk: usize,
        /// This rank's block (its input, or its slot of the output in place).
        own: usize,
    },
    /// Every rank but the root copies the root's `src` into its output.
    Broadcast {
        /// The root rank.
        root: usize,
        /// The root's source (its input, or its output in place); this rank's, at the root.
        src: usize,
        /// This rank's output.
        out: usize,
        /// Bytes.
        len: usize,
    },
    /// All-reduce, reduce-scatter or reduce: each rank reduces its part over every rank's
    /// input, reading the peers' inputs where they are; an all-reduce's rank `r` reduces
    /// its `1/ranks` slice of the elements, and after a barrier copies the peers' slices
    /// from their outputs.
    Reduce {
        /// The collective.
        kind: CollKind,
        /// Element type.
        dtype: DataType,
        /// Operator.
        op: ReduceOp,
        /// Root (reduce).
        root: usize,
        /// This rank's input (its output for an all-reduce in place).
        input: usize,
        /// This rank's output.
        out: usize,
        /// Elements of the output (per rank for a reduce-scatter).
        count: usize,
    },
}

impl Moves {
    /// The IPC moves of `call` on rank `me` of `ranks`, or none when it takes the staged path
    /// (`reduces`: whether the device reduces on a stream).
    pub(crate) fn of(call: &Call, me: usize, ranks: usize, reduces: bool) -> Option<Moves> {
        let Call::Collective {
            desc,
            input,
            output,
            factor,
        } = call
        else {
            return None;
        };
        let bytes = desc.count.checked_mul(desc.dtype.size())?;
        if bytes == 0 || ranks < 2 {
            return None;
        }
        match desc.kind {
            CollKind::AllGather => Some(Moves::AllGather {
                out: output.addr(),
                blk: bytes,
                own: match input {
                    Some(i) => i.addr(),
                    None => output.addr() + me * bytes,
                },
            }),
            CollKind::Broadcast => Some(Moves::Broadcast {
                root: desc.root,
                src: match input {
                    Some(i) if me == desc.root => i.addr(),
                    _ => output.addr(),
                },
                out: output.addr(),
                len: bytes,
            }),
            CollKind::AllReduce | CollKind::ReduceScatter | CollKind::Reduce
                if reduces && factor.is_none() && desc.op != ReduceOp::PreMulSum =>
            {
                // In place (a rank's own choice, so it must not change the path): the one
                // buffer is the input, and a reduce-scatter's result goes to this rank's
                // block of it (NCCL's layout, `recvbuff = sendbuff + rank * recvcount`).
                let (input, out) = match (input, desc.kind) {
                    (Some(i), _) => (i.addr(), output.addr()),
                    (None, CollKind::ReduceScatter) => (output.addr(), output.addr() + me * bytes),
                    (None, _) => (output.addr(), output.addr()),
                };
                Some(Moves::Reduce {
                    kind: desc.kind,
                    dtype: desc.dtype,
                    op: desc.op,
                    root: desc.root,
                    input,
                    out,
                    count: desc.count,
                })
            }
            _ => None,
        }
    }

    /// The collective these moves are.
    pub(crate) fn kind(&self) -> CollKind {
        match self {
            Moves::AllGather { .. } => CollKind::AllGather,
            Moves::Broadcast { .. } => CollKind::Broadcast,
            Moves::Reduce { kind, .. } => *kind,
        }
    }

    /// The device ranges this rank exports for its peers, in export order.
    pub(crate) fn exports(&self, me: usize, ranks: usize) -> Vec<(usize, usize)> {
        match *self {
            Moves::AllGather { own, blk, .. } => vec![(own, blk)],
            Moves::Broadcast { root, src, len, .. } => {
                if me == root {
                    vec![(src, len)]
                } else {
                    vec![]
                }
            }
            Moves::Reduce {
                kind,
                dtype,
                input,
                out,
                count,
                ..
            } => {
                let bytes = count * dtype.size();
                match kind {
                    CollKind::AllReduce => vec![(input, bytes), (out, bytes)],
                    CollKind::ReduceScatter => vec![(input, ranks * bytes)],
                    _ => vec![(input, bytes)],
                }
            }
        }
    }

    /// The phases of device operations of this rank, a barrier after each.
    pub(crate) fn phases(&self, me: usize, ranks: usize) -> Vec<Vec<Op>> {
        let peer = |rank: usize, export: usize, offset: usize| Src::Peer {
            rank,
            export,
            offset,
        };
        match *self {
            Moves::AllGather { out, blk, own } => vec![(0..ranks)
                .filter_map(|r| {
                    let dst = out + r * blk;
                    match r == me {
                        true if own == dst => None,
                        true => Some(Op::Copy {
                            dst,
                            src: Src::Own(own),
                            len: blk,
                        }),
                        false => Some(Op::Copy {
                            dst,
                            src: peer(r, 0, 0),
                            len: blk,
                        }),
                    }
                })
                .collect()],
            Moves::Broadcast {
                root,
                src,
                out,
                len,
            } => vec![match root == me {
                true if src == out => vec![],
                true => vec![Op::Copy {
                    dst: out,
                    src: Src::Own(src),
                    len,
                }],
                false => vec![Op::Copy {
                    dst: out,
                    src: peer(root, 0, 0),
                    len,
                }],
            }],
            Moves::Reduce {
                kind,
                dtype,
                op,
                root,
                input,
                out,
                count,
            } => {
                let es = dtype.size();
                // (elements reduced here, first element, where in the inputs)
                let (lo, hi, at) = match kind {
                    CollKind::AllReduce => {
                        let (lo, hi) = (me * count / ranks, (me + 1) * count / ranks);
                        (lo, hi, lo * es)
                    }
                    CollKind::ReduceScatter => (0, count, me * count * es),
                    _ if me == root => (0, count, 0),
                    _ => (0, 0, 0),
                };
                let (dst, len) = (out + lo * es, (hi - lo) * es);
                let src = |q: usize| {
                    if q == me {
                        Src::Own(input + at)
                    } else {
                        peer(q, 0, at)
                    }
                };
                // This rank's own input first: in place it is `dst`, read before written.
                let order: Vec<usize> = std::iter::once(me)
                    .chain((0..ranks).filter(|&q| q != me))
                    .collect();
                let mut reduce = Vec::new();
                if len > 0 {
                    reduce.push(Op::Reduce {
                        dst,
                        a: src(order[0]),
                        b: src(order[1]),
                        len,
                    });
                    for &q in &order[2..] {
                        reduce.push(Op::Reduce {
                            dst,
                            a: Src::Own(dst),
                            b: src(q),
                            len,
                        });
                    }
                    if op == ReduceOp::Avg {
                        reduce.push(Op::Divide { dst, len });
                    }
                }
                if kind != CollKind::AllReduce {
                    return vec![reduce];
                }
                let gather = (0..ranks)
                    .filter(|&q| q != me)
                    .filter_map(|q| {
                        let (lo, hi) = (q * count / ranks, (q + 1) * count / ranks);
                        (hi > lo).then(|| Op::Copy {
                            dst: out + lo * es,
                            src: peer(q, 1, lo * es),
                            len: (hi - lo) * es,
                        })
                    })
                    .collect();
                vec![reduce, gather]
            }
        }
    }
}

/// The peer operands of `phases`: `(rank, export, bytes read up to)`.
pub(crate) fn peer_reads(phases: &[Vec<Op>]) -> Vec<(usize, usize, usize)> {
    let mut v: Vec<(usize, usize, usize)> = Vec::new();
    let mut note = |s: &Src, len: usize| {
        if let Src::Peer {
            rank,
            export,
            offset,
        } = *s
        {
            match v.iter_mut().find(|(r, e, _)| (*r, *e) == (rank, export)) {
                Some(x) => x.2 = x.2.max(offset + len),
                None => v.push((rank, export, offset + len)),
            }
        }
    };
    for op in phases.iter().flatten() {
        match op {
            Op::Copy { src, len, .. } => note(src, *len),
            Op::Reduce { a, b, len, .. } => {
                note(a, *len);
                note(b, *len);
            }
            Op::Divide { .. } => {}
        }
    }
    v
}

/// One status exchange's host buffers: this rank's byte, and every rank's.
pub(crate) type Statuses = (Box<[u8]>, Box<[u8]>);

/// A call prepared for the IPC path: its moves, the host buffers of its exchanges and their
/// engine jobs (built at submission, so they take their place among this rank's jobs).
pub(crate) struct IpcCall {
    /// The call's kind (for messages).
    pub kind: CollKind,
    /// The data movement.
    pub moves: Moves,
    /// This rank.
    pub me: usize,
    /// The number of ranks.
    pub ranks: usize,
    /// This rank's message of the first exchange.
    pub msg: Box<[u8]>,
    /// Every rank's message, in rank order.
    pub all: Box<[u8]>,
    /// Per phase: this rank's status (0: ok) and every rank's, exchanged after the phase.
    pub statuses: Vec<Statuses>,
    /// The job of the first exchange, then of each phase's status exchange (none on a
    /// communicator where they have nothing to do).
    pub jobs: Vec<Option<Job>>,
}

// SAFETY: the jobs address the boxes above, owned by this value and moved with it (a box's
// heap memory does not move); nothing else shares them.
unsafe impl Send for IpcCall {}

/// A host all-gather of `input.len()` bytes per rank from `input` into `output`.
pub(crate) fn host_all_gather(input: &mut [u8], output: &mut [u8]) -> Call {
    Call::Collective {
        desc: CollDesc {
            kind: CollKind::AllGather,
            count: input.len(),
            dtype: DataType::Uint8,
            op: ReduceOp::Sum,
            root: 0,
        },
        input: Some(Span::new(input.as_mut_ptr(), input.len())),
        output: Span::new(output.as_mut_ptr(), output.len()),
        factor: None,
    }
}

impl IpcCall {
    /// Prepare `moves` of a call on rank `me` of `ranks`, its exchanges' jobs built with
    /// `build`.
    pub(crate) fn new(
        moves: Moves,
        me: usize,
        ranks: usize,
        build: &dyn Fn(&Call) -> Result<Option<Job>>,
    ) -> Result<IpcCall> {
        let phases = moves.phases(me, ranks).len();
        let mut c = IpcCall {
            kind: moves.kind(),
            moves,
            me,
            ranks,
            msg: vec![0; MSG].into(),
            all: vec![0; MSG * ranks].into(),
            statuses: (0..phases)
                .map(|_| (vec![0u8; 1].into(), vec![0u8; ranks].into()))
                .collect(),
            jobs: Vec::new(),
        };
        let mut jobs = vec![build(&host_all_gather(&mut c.msg, &mut c.all))?];
        for (mine, all) in &mut c.statuses {
            jobs.push(build(&host_all_gather(mine, all))?);
        }
        c.jobs = jobs;
        Ok(c)
    }

    /// Write this rank's message: its exports, or that it failed.
    pub(crate) fn set_exports(&mut self, e: &Result<Vec<IpcExport>>) {
        self.msg.fill(0);
        match e {
            Err(_) => self.msg[0] = 1,
            Ok(v) => {
                self.msg[1] = v.len().min(EXPORTS) as u8;
                for (k, e) in v.iter().take(EXPORTS).enumerate() {
                    self.msg[2 + k * ENCODED_LEN..2 + (k + 1) * ENCODED_LEN]
                        .copy_from_slice(&e.to_bytes());
                }
            }
        }
    }

    /// The exports this rank reads (`reads` from [`peer_reads`]), from the exchanged
    /// messages; an error naming a rank that sent none where one was needed.
    pub(crate) fn peer_exports(&self, reads: &[(usize, usize, usize)]) -> Result<Vec<IpcExport>> {
        let msgs: Vec<&[u8]> = self.all.chunks(MSG).collect();
        reads
            .iter()
            .map(|&(r, k, _)| {
                if usize::from(msgs[r][1]) <= k {
                    return Err(Error::protocol(format!(
                        "CUDA IPC {}: rank {r} sent no export of its buffer (do all ranks \
                         pass the same call, with the same root?)",
                        self.kind
                    )));
                }
                IpcExport::from_bytes(&msgs[r][2 + k * ENCODED_LEN..2 + (k + 1) * ENCODED_LEN])
            })
            .collect()
    }

    /// After the first exchange: an error naming every rank that could not export (the same
    /// on every rank).
    pub(crate) fn exports_failed(&self) -> Result<()> {
        let failed: Vec<usize> = (0..self.ranks)
            .filter(|&r| self.all[r * MSG] != 0)
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(Error::usage(format!(
            "CUDA IPC {}: rank(s) {failed:?} could not export their device buffers (memory \
             from cuMemCreate or a cudaMallocAsync pool cannot be exported with \
             cuIpcGetMemHandle; DMSC_CUDA_IPC=0 on every rank stages such calls instead)",
            self.kind
        )))
    }

    /// After phase `p`'s status exchange: an error naming the ranks that failed, if any did.
    pub(crate) fn peers_failed(&self, p: usize) -> Result<()> {
        let all = &self.statuses[p].1;
        let failed: Vec<usize> = (0..self.ranks).filter(|&r| all[r] != 0).collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(Error::usage(format!(
            "CUDA IPC {}: rank(s) {failed:?} failed to run their device operations on their \
             peers' buffers",
            self.kind
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{CollArgs, Names, Shape};
    use dmsc_core::engine::MemKind;

    fn call(kind: CollKind, rank: usize, in_place: bool) -> Call {
        let dev = |a: usize, n: usize| {
            Span::in_memory(a as *const u8, n * 16, MemKind::Cuda { device: 0 })
        };
        let (input, output) = match (kind, in_place) {
            (CollKind::AllGather, false) => (Some(dev(0x1000, 1)), dev(0x10_000, 3)),
            (CollKind::AllGather, true) => (Some(dev(0x10_000 + rank * 16, 1)), dev(0x10_000, 3)),
            (_, false) => (Some(dev(0x1000, 1)), dev(0x10_000, 1)),
            (_, true) => (None, dev(0x10_000, 1)),
        };
        let args = CollArgs {
            kind,
            dtype: DataType::Float32,
            op: ReduceOp::Sum,
            root: 1,
            input,
            output,
            count: Some(4),
            factor: None,
        };
        Call::collective(Shape { rank, size: 3 }, args, &Names::RUST).unwrap()
    }

    fn own(a: usize, len: usize) -> Op {
        Op::Copy {
            dst: a,
            src: Src::Own(0x1000),
            len,
        }
    }

    fn from(dst: usize, rank: usize, export: usize, offset: usize, len: usize) -> Op {
        Op::Copy {
            dst,
            src: Src::Peer {
                rank,
                export,
                offset,
            },
            len,
        }
    }

    #[test]
    fn an_all_gather_copies_every_peer_block_and_its_own_unless_in_place() {
        let m = Moves::of(&call(CollKind::AllGather, 1, false), 1, 3, true).unwrap();
        assert_eq!(m.exports(1, 3), [(0x1000, 16)]);
        let p = m.phases(1, 3);
        assert_eq!(
            p,
            [vec![
                from(0x10_000, 0, 0, 0, 16),
                own(0x10_010, 16),
                from(0x10_020, 2, 0, 0, 16)
            ]]
        );
        assert_eq!(peer_reads(&p), [(0, 0, 16), (2, 0, 16)]);
        let m = Moves::of(&call(CollKind::AllGather, 2, true), 2, 3, true).unwrap();
        assert_eq!(m.exports(2, 3), [(0x10_020, 16)]);
        assert_eq!(
            m.phases(2, 3),
            [vec![
                from(0x10_000, 0, 0, 0, 16),
                from(0x10_010, 1, 0, 0, 16)
            ]]
        );
    }

    #[test]
    fn a_broadcast_reads_the_root_only_and_the_root_copies_only_out_of_place() {
        for in_place in [false, true] {
            let m = Moves::of(&call(CollKind::Broadcast, 0, in_place), 0, 3, true).unwrap();
            assert!(m.exports(0, 3).is_empty());
            assert_eq!(m.phases(0, 3), [vec![from(0x10_000, 1, 0, 0, 16)]]);
            let m = Moves::of(&call(CollKind::Broadcast, 1, in_place), 1, 3, true).unwrap();
            let want_src = if in_place { 0x10_000 } else { 0x1000 };
            assert_eq!(m.exports(1, 3), [(want_src, 16)]);
            let want: Vec<_> = (!in_place).then(|| own(0x10_000, 16)).into_iter().collect();
            assert_eq!(m.phases(1, 3), [want]);
        }
    }

    #[test]
    fn an_all_reduce_reduces_its_slice_over_every_input_then_gathers_the_peers_slices() {
        // 4 elements over 3 ranks: slices [0, 1), [1, 2), [2, 4).
        let m = Moves::of(&call(CollKind::AllReduce, 2, false), 2, 3, true).unwrap();
        assert_eq!(m.exports(2, 3), [(0x1000, 16), (0x10_000, 16)]);
        let p = m.phases(2, 3);
        let peer = |rank, export, offset| Src::Peer {
            rank,
            export,
            offset,
        };
        let (dst, len) = (0x10_008, 8);
        assert_eq!(
            p[0],
            [
                Op::Reduce {
                    dst,
                    a: Src::Own(0x1008),
                    b: peer(0, 0, 8),
                    len
                },
                Op::Reduce {
                    dst,
                    a: Src::Own(dst),
                    b: peer(1, 0, 8),
                    len
                },
            ]
        );
        assert_eq!(
            p[1],
            [from(0x10_000, 0, 1, 0, 4), from(0x10_004, 1, 1, 4, 4)]
        );
        assert_eq!(
            peer_reads(&p),
            [(0, 0, 16), (1, 0, 16), (0, 1, 4), (1, 1, 8)]
        );
    }

    #[test]
    fn reductions_stage_without_a_stream_reduction_and_premul_sum_and_one_rank_always() {
        let c = call(CollKind::AllReduce, 0, false);
        assert_eq!(Moves::of(&c, 0, 3, false), None);
        assert!(Moves::of(&c, 0, 3, true).is_some());
        let c = call(CollKind::AllGather, 0, false);
        assert_eq!(Moves::of(&c, 0, 1, true), None);
        assert!(all_on_this_host(&["self", "shm", "shm+cma"]));
        assert!(!all_on_this_host(&["self", "shm", "tcp-socket"]));
        assert!(!all_on_this_host(&["self"]));
    }

    #[test]
    fn exchanged_failures_and_missing_exports_name_the_ranks() {
        let m = Moves::of(&call(CollKind::Broadcast, 0, false), 0, 3, true).unwrap();
        let mut c = IpcCall::new(m, 0, 3, &|_| Ok(None)).unwrap();
        let reads = peer_reads(&m.phases(0, 3));
        let e = c.peer_exports(&reads).unwrap_err().to_string();
        assert!(e.contains("rank 1 sent no export"), "{e}");
        c.all[2 * MSG] = 1;
        let e = c.exports_failed().unwrap_err().to_string();
        assert!(e.contains("[2]") && e.contains("could not export"), "{e}");
        c.statuses[0].1[1] = 1;
        let e = c.peers_failed(0).unwrap_err().to_string();
        assert!(e.contains("[1]"), "{e}");
    }
}
