//! A call on device buffers run device to device over CUDA IPC, for ranks that all share one
//! host (NCCL's P2P transport role): no staging through host memory for the payload.
//!
//! Covered: all-gather and broadcast (data movement only). Reductions (all-reduce,
//! reduce-scatter, reduce) need a reduction kernel queued on a stream over device memory,
//! which the device-memory trait does not offer yet, so they keep the staged path, as do
//! all-to-all(-v), gather, scatter and send/receive groups.
//!
//! When: every peer of the communicator is served by shared memory (`shm`, so every rank is
//! a process or thread of this host), the communicator has more than one rank, the call moves
//! bytes, and `DMSC_CUDA_IPC` is not `0`. The choice depends only on what every rank sees
//! alike (the call's kind and count, the communicator's transports, the environment of the
//! job), so all ranks take the same path and their host jobs match.
//!
//! How (on the communicator's staging thread, in call order, see `stager`):
//! 1. dmsc's stream waits for the caller's earlier work, and the staging thread waits until
//!    it has run: this rank's input is then ready to be read by its peers;
//! 2. this rank exports the buffer its peers read (an all-gather's input block, a
//!    broadcast root's source) and all ranks exchange their messages with a host all-gather
//!    through the engine ([`MSG`] bytes: a status byte, whether an export follows, the
//!    export); the exchange is also the barrier "every input is ready";
//! 3. each rank maps the peers' buffers it reads and queues device-to-device copies on
//!    dmsc's stream into its own output, and waits until they have run;
//! 4. a second host all-gather of one status byte per rank is the barrier "nobody reads a
//!    peer's buffer any more" (so the caller may reuse or free its buffers once its stream
//!    passes the call), and tells every rank whether a peer failed: a failure anywhere fails
//!    the call on every rank, naming the ranks, and never hangs a peer.
//!
//! Exports are made per call and mappings dropped after it (no cache yet): the driver's
//! `cuIpcOpenMemHandle` per call is a cost NCCL avoids by registering buffers once. Sources:
//! NCCL's P2P transport and its proxy-free copy-engine path (design only); CUDA Driver API
//! reference, "Interprocess Communication".

use crate::call::{Call, Span};
use dmsc_core::engine::executor::Job;
use dmsc_core::{CollDesc, CollKind, DataType, Error, ReduceOp, Result};
use dmsc_transports::cuda::ipc_handle::{IpcExport, ENCODED_LEN};

/// Bytes of one rank's message in the exchange: status, whether an export follows, export.
pub(crate) const MSG: usize = 2 + ENCODED_LEN;

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
}

impl Moves {
    /// The IPC moves of `call` on rank `me` of `ranks`, or none when it takes the staged path.
    pub(crate) fn of(call: &Call, me: usize, ranks: usize) -> Option<Moves> {
        let Call::Collective {
            desc,
            input,
            output,
            ..
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
            _ => None,
        }
    }

    /// The collective these moves are.
    pub(crate) fn kind(&self) -> CollKind {
        match self {
            Moves::AllGather { .. } => CollKind::AllGather,
            Moves::Broadcast { .. } => CollKind::Broadcast,
        }
    }

    /// The device range this rank exports for its peers (none: nobody reads this rank).
    pub(crate) fn export(&self, me: usize) -> Option<(usize, usize)> {
        match *self {
            Moves::AllGather { own, blk, .. } => Some((own, blk)),
            Moves::Broadcast { root, src, len, .. } => (me == root).then_some((src, len)),
        }
    }

    /// The bytes this rank reads of each peer's export.
    pub(crate) fn read_len(&self) -> usize {
        match *self {
            Moves::AllGather { blk, .. } => blk,
            Moves::Broadcast { len, .. } => len,
        }
    }

    /// The ranks whose exports this rank maps.
    pub(crate) fn reads(&self, me: usize, ranks: usize) -> Vec<usize> {
        match *self {
            Moves::AllGather { .. } => (0..ranks).filter(|&r| r != me).collect(),
            Moves::Broadcast { root, .. } if root != me => vec![root],
            Moves::Broadcast { .. } => vec![],
        }
    }

    /// The copies `(dst, src, len)` this rank queues, with `peer(r)` rank `r`'s mapped
    /// address (only asked for the ranks of [`Moves::reads`]).
    pub(crate) fn copies(
        &self,
        me: usize,
        ranks: usize,
        peer: impl Fn(usize) -> usize,
    ) -> Vec<(usize, usize, usize)> {
        match *self {
            Moves::AllGather { out, blk, own } => (0..ranks)
                .filter_map(|r| {
                    let dst = out + r * blk;
                    match r == me {
                        true if own == dst => None,
                        true => Some((dst, own, blk)),
                        false => Some((dst, peer(r), blk)),
                    }
                })
                .collect(),
            Moves::Broadcast {
                root,
                src,
                out,
                len,
            } => match root == me {
                true if src == out => vec![],
                true => vec![(out, src, len)],
                false => vec![(out, peer(root), len)],
            },
        }
    }
}

/// A call prepared for the IPC path: its moves, the host buffers of its two exchanges and
/// their engine jobs (built at submission, so they take their place among this rank's jobs).
pub(crate) struct IpcCall {
    /// The call's kind (for messages).
    pub kind: CollKind,
    /// The data movement.
    pub moves: Moves,
    /// This rank and the number of ranks.
    pub me: usize,
    /// The number of ranks.
    pub ranks: usize,
    /// This rank's message of the first exchange.
    pub msg: Box<[u8]>,
    /// Every rank's message, in rank order.
    pub all: Box<[u8]>,
    /// This rank's status of the second exchange (0: ok).
    pub status: Box<[u8]>,
    /// Every rank's status.
    pub statuses: Box<[u8]>,
    /// The jobs of the two exchanges (none on a communicator where they have nothing to do).
    pub jobs: [Option<Job>; 2],
}

// SAFETY: the jobs address the boxes above, owned by this value and moved with it (a box's
// heap memory does not move); nothing else shares them.
unsafe impl Send for IpcCall {}

/// A host all-gather of `blk` bytes per rank from `input` into `output`.
fn host_all_gather(input: &mut [u8], output: &mut [u8]) -> Call {
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
    /// Prepare `moves` of a call on rank `me` of `ranks`, its exchanges' jobs built
    /// with `build`.
    pub(crate) fn new(
        moves: Moves,
        me: usize,
        ranks: usize,
        build: &dyn Fn(&Call) -> Result<Option<Job>>,
    ) -> Result<IpcCall> {
        let mut c = IpcCall {
            kind: moves.kind(),
            moves,
            me,
            ranks,
            msg: vec![0; MSG].into(),
            all: vec![0; MSG * ranks].into(),
            status: vec![0; 1].into(),
            statuses: vec![0; ranks].into(),
            jobs: [None, None],
        };
        let first = build(&host_all_gather(&mut c.msg, &mut c.all))?;
        let second = build(&host_all_gather(&mut c.status, &mut c.statuses))?;
        c.jobs = [first, second];
        Ok(c)
    }

    /// Write this rank's message: its export, or that it failed.
    pub(crate) fn set_export(&mut self, e: &Result<Option<IpcExport>>) {
        self.msg.fill(0);
        match e {
            Err(_) => self.msg[0] = 1,
            Ok(None) => {}
            Ok(Some(e)) => {
                self.msg[1] = 1;
                self.msg[2..].copy_from_slice(&e.to_bytes());
            }
        }
    }

    /// The exports of the ranks this rank reads, from the exchanged messages; an error
    /// naming every rank that failed its export, or sent none where one was needed.
    pub(crate) fn peer_exports(&self) -> Result<Vec<(usize, IpcExport)>> {
        let msgs: Vec<&[u8]> = self.all.chunks(MSG).collect();
        let failed: Vec<usize> = (0..self.ranks).filter(|&r| msgs[r][0] != 0).collect();
        if !failed.is_empty() {
            return Err(Error::usage(format!(
                "CUDA IPC {}: rank(s) {failed:?} could not export their device buffer",
                self.kind
            )));
        }
        self.moves
            .reads(self.me, self.ranks)
            .into_iter()
            .map(|r| {
                if msgs[r][1] != 1 {
                    return Err(Error::protocol(format!(
                        "CUDA IPC {}: rank {r} sent no export of its buffer (do all ranks \
                         pass the same call, with the same root?)",
                        self.kind
                    )));
                }
                Ok((r, IpcExport::from_bytes(&msgs[r][2..])?))
            })
            .collect()
    }

    /// After the second exchange: an error naming the ranks that failed, if any did.
    pub(crate) fn peers_failed(&self) -> Result<()> {
        let failed: Vec<usize> = (0..self.ranks).filter(|&r| self.statuses[r] != 0).collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(Error::usage(format!(
            "CUDA IPC {}: rank(s) {failed:?} failed to copy from their peers' device buffers",
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

    #[test]
    fn an_all_gather_copies_every_peer_block_and_its_own_unless_in_place() {
        let peer = |r: usize| 0xA000 + r;
        let m = Moves::of(&call(CollKind::AllGather, 1, false), 1, 3).unwrap();
        assert_eq!(m.export(1), Some((0x1000, 16)));
        assert_eq!(m.reads(1, 3), [0, 2]);
        assert_eq!(
            m.copies(1, 3, peer),
            [
                (0x10_000, 0xA000, 16),
                (0x10_010, 0x1000, 16),
                (0x10_020, 0xA002, 16)
            ]
        );
        let m = Moves::of(&call(CollKind::AllGather, 2, true), 2, 3).unwrap();
        assert_eq!(m.export(2), Some((0x10_020, 16)));
        assert_eq!(
            m.copies(2, 3, peer),
            [(0x10_000, 0xA000, 16), (0x10_010, 0xA001, 16)]
        );
    }

    #[test]
    fn a_broadcast_reads_the_root_only_and_the_root_copies_only_out_of_place() {
        let peer = |r: usize| 0xA000 + r;
        for in_place in [false, true] {
            let m = Moves::of(&call(CollKind::Broadcast, 0, in_place), 0, 3).unwrap();
            assert_eq!(m.export(0), None);
            assert_eq!(m.reads(0, 3), [1]);
            assert_eq!(m.copies(0, 3, peer), [(0x10_000, 0xA001, 16)]);
            let m = Moves::of(&call(CollKind::Broadcast, 1, in_place), 1, 3).unwrap();
            assert!(m.reads(1, 3).is_empty());
            let want_src = if in_place { 0x10_000 } else { 0x1000 };
            assert_eq!(m.export(1), Some((want_src, 16)));
            let want: Vec<_> = (!in_place)
                .then_some((0x10_000, 0x1000, 16))
                .into_iter()
                .collect();
            assert_eq!(m.copies(1, 3, peer), want);
        }
    }

    #[test]
    fn reductions_and_one_rank_take_the_staged_path() {
        let c = call(CollKind::AllReduce, 0, false);
        assert_eq!(Moves::of(&c, 0, 3), None);
        let c = call(CollKind::AllGather, 0, false);
        assert_eq!(Moves::of(&c, 0, 1), None);
        assert!(all_on_this_host(&["self", "shm", "shm+cma"]));
        assert!(!all_on_this_host(&["self", "shm", "tcp-socket"]));
        assert!(!all_on_this_host(&["self"]));
    }

    #[test]
    fn exchanged_failures_and_missing_exports_name_the_ranks() {
        let m = Moves::of(&call(CollKind::Broadcast, 0, false), 0, 3).unwrap();
        let mut c = IpcCall::new(m, 0, 3, &|_| Ok(None)).unwrap();
        let e = c.peer_exports().unwrap_err().to_string();
        assert!(e.contains("rank 1 sent no export"), "{e}");
        c.all[2 * MSG] = 1;
        let e = c.peer_exports().unwrap_err().to_string();
        assert!(e.contains("[2]") && e.contains("could not export"), "{e}");
        c.statuses[1] = 1;
        let e = c.peers_failed().unwrap_err().to_string();
        assert!(e.contains("[1]"), "{e}");
    }
}
