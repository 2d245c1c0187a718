//! An in-memory communicator for tests: one thread per rank; every collective publishes each
//! rank's contribution and computes the results with dmsc-core's reduction kernels. The
//! non-blocking calls run to completion before they return a finished request.

use super::buf::AlignedBuf;
use super::comm::PerfComm;
use crate::{CollKind, DataType, Error, ReduceOp, Request, Result};
use dmsc_core::reduce::{reduce_in_place, scale_div};
use std::cell::Cell;
use std::sync::{Arc, Barrier, Mutex};

/// The state shared by the ranks of one fake group.
struct Group {
    barrier: Barrier,
    slots: Vec<Mutex<AlignedBuf>>,
}

/// One rank of a fake group.
pub struct FakeComm {
    rank: usize,
    group: Arc<Group>,
    /// When set, this rank's results longer than 8 bytes have their first byte flipped (to
    /// test `#wrong`; the 8-byte all-reduces of times and counts stay intact).
    pub corrupt: bool,
    /// Non-blocking calls started on this rank so far.
    pub immediate_calls: Cell<u64>,
    /// Barriers entered by this rank so far.
    pub barriers: Cell<u64>,
}

/// `n` connected fake ranks.
pub fn group(n: usize) -> Vec<FakeComm> {
    let group = Arc::new(Group {
        barrier: Barrier::new(n),
        slots: (0..n).map(|_| Mutex::new(AlignedBuf::new(0))).collect(),
    });
    (0..n)
        .map(|rank| FakeComm {
            rank,
            group: group.clone(),
            corrupt: false,
            immediate_calls: Cell::new(0),
            barriers: Cell::new(0),
        })
        .collect()
}

/// Reduce equal-length blocks in rank order (or reversed), as an engine might.
fn reduce_blocks(blocks: &[&[u8]], dtype: DataType, op: ReduceOp, reverse: bool) -> AlignedBuf {
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    if reverse {
        order.reverse();
    }
    let mut acc = AlignedBuf::from_bytes(blocks[order[0]]);
    for &r in &order[1..] {
        let src = AlignedBuf::from_bytes(blocks[r]);
        reduce_in_place(dtype, op.combiner(), acc.bytes_mut(), src.bytes()).expect("reduce");
    }
    if op == ReduceOp::Avg {
        scale_div(dtype, acc.bytes_mut(), blocks.len()).expect("scale");
    }
    acc
}

/// The receive buffer of rank `me` given every rank's send buffer (`None` for reduce on a
/// non-root rank, whose receive buffer is left alone).
#[allow(clippy::too_many_arguments)]
pub fn reference(
    kind: CollKind,
    contribs: &[&[u8]],
    me: usize,
    count: usize,
    dtype: DataType,
    op: ReduceOp,
    root: usize,
    reverse: bool,
) -> Option<AlignedBuf> {
    let b = count * dtype.size();
    let block = |r: usize, i: usize| &contribs[r][i * b..(i + 1) * b];
    let n = contribs.len();
    Some(match kind {
        CollKind::AllReduce => reduce_blocks(contribs, dtype, op, reverse),
        CollKind::Reduce if me == root => reduce_blocks(contribs, dtype, op, reverse),
        CollKind::Reduce => return None,
        CollKind::ReduceScatter => {
            let mine: Vec<&[u8]> = (0..n).map(|r| block(r, me)).collect();
            reduce_blocks(&mine, dtype, op, reverse)
        }
        CollKind::Broadcast => AlignedBuf::from_bytes(contribs[root]),
        CollKind::AllGather => AlignedBuf::from_bytes(
            &(0..n)
                .flat_map(|r| block(r, 0).to_vec())
                .collect::<Vec<u8>>(),
        ),
        CollKind::AllToAll => AlignedBuf::from_bytes(
            &(0..n)
                .flat_map(|r| block(r, me).to_vec())
                .collect::<Vec<u8>>(),
        ),
        CollKind::SendRecv => AlignedBuf::from_bytes(contribs[(me + n - 1) % n]),
        other => panic!("the fake has no {other}"),
    })
}

impl FakeComm {
    /// Publish `mine`, wait for everyone, run `f` over all contributions, wait again.
    fn exchange<T>(&self, mine: &[u8], f: impl FnOnce(&[&[u8]]) -> T) -> T {
        *self.group.slots[self.rank].lock().expect("slot") = AlignedBuf::from_bytes(mine);
        self.group.barrier.wait();
        let guards: Vec<_> = self
            .group
            .slots
            .iter()
            .map(|s| s.lock().expect("slot"))
            .collect();
        let all: Vec<&[u8]> = guards.iter().map(|g| g.bytes()).collect();
        let out = f(&all);
        drop(guards);
        self.group.barrier.wait();
        out
    }

    fn deliver(&self, dst: &mut [u8], src: &[u8]) {
        assert_eq!(dst.len(), src.len(), "rank {}: result length", self.rank);
        dst.copy_from_slice(src);
        if self.corrupt && dst.len() > 8 {
            dst[0] ^= 0x5A;
        }
    }
}

impl PerfComm for FakeComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.group.slots.len()
    }

    fn collective_bytes(
        &self,
        kind: CollKind,
        input: Option<&[u8]>,
        output: &mut [u8],
        count: usize,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        let (n, me, b) = (self.size(), self.rank, count * dtype.size());
        let (send, recv) = match kind {
            CollKind::AllGather => (b, b * n),
            CollKind::ReduceScatter => (b * n, b),
            CollKind::AllToAll => (b * n, b * n),
            _ => (b, b),
        };
        let mine: Vec<u8> = match input {
            Some(i) => {
                assert_eq!(i.len(), send, "rank {me}: {kind} input length");
                assert_eq!(output.len(), recv, "rank {me}: {kind} output length");
                i.to_vec()
            }
            None => {
                assert_eq!(
                    output.len(),
                    send.max(recv),
                    "rank {me}: {kind} in-place length"
                );
                let at = if kind == CollKind::AllGather {
                    me * b
                } else {
                    0
                };
                output[at..at + send].to_vec()
            }
        };
        let result = self.exchange(&mine, |all| {
            reference(kind, all, me, count, dtype, op, root, me % 2 == 1)
        });
        if let Some(r) = result {
            let at = match (input, kind) {
                (None, CollKind::ReduceScatter) => me * b,
                _ => 0,
            };
            self.deliver(&mut output[at..at + recv], r.bytes());
        }
        Ok(())
    }

    fn send_recv_bytes(&self, send: &[u8], to: usize, recv: &mut [u8], from: usize) -> Result<()> {
        let n = self.size();
        if to >= n || from >= n {
            return Err(Error::invalid(format!("peer {to}/{from} out of range")));
        }
        let got = self.exchange(send, |all| all[from].to_vec());
        self.deliver(recv, &got);
        Ok(())
    }

    fn immediate_collective_bytes<'a>(
        &'a self,
        kind: CollKind,
        input: Option<&'a [u8]>,
        output: &'a mut [u8],
        count: usize,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
    ) -> Request<'a> {
        self.immediate_calls.set(self.immediate_calls.get() + 1);
        Request::done(self.collective_bytes(kind, input, output, count, dtype, op, root))
    }

    fn immediate_send_recv_bytes<'a>(
        &'a self,
        send: &'a [u8],
        to: usize,
        recv: &'a mut [u8],
        from: usize,
    ) -> Request<'a> {
        self.immediate_calls.set(self.immediate_calls.get() + 1);
        Request::done(self.send_recv_bytes(send, to, recv, from))
    }

    fn all_to_all_v_bytes(
        &self,
        dtype: DataType,
        input: Option<&[u8]>,
        output: &mut [u8],
        v: [&[usize]; 4],
    ) -> Result<()> {
        let (n, me, e) = (self.size(), self.rank, dtype.size());
        let [sc, sd, rc, rd] = v;
        if [sc, sd, rc, rd].iter().any(|a| a.len() != n) {
            return Err(Error::invalid("all_to_all_v: one count per rank"));
        }
        // Published: n send counts, n send displacements (u64), then the send buffer.
        let data: Vec<u8> = input.map_or_else(|| output.to_vec(), <[u8]>::to_vec);
        let mut mine: Vec<u8> = sc
            .iter()
            .chain(sd)
            .flat_map(|&x| (x as u64).to_le_bytes())
            .collect();
        mine.extend_from_slice(&data);
        let pieces: Vec<Vec<u8>> = self.exchange(&mine, |all| {
            (0..n)
                .map(|i| {
                    let word = |k: usize| {
                        let mut w = [0u8; 8];
                        w.copy_from_slice(&all[i][k * 8..k * 8 + 8]);
                        u64::from_le_bytes(w) as usize
                    };
                    let (cnt, disp) = (word(me), word(n + me));
                    assert_eq!(cnt, rc[i], "rank {me}: receive count from {i}");
                    let at = 16 * n + disp * e;
                    all[i][at..at + cnt * e].to_vec()
                })
                .collect()
        });
        for (i, piece) in pieces.iter().enumerate() {
            self.deliver(&mut output[rd[i] * e..rd[i] * e + piece.len()], piece);
        }
        Ok(())
    }

    fn immediate_all_to_all_v_bytes<'a>(
        &'a self,
        dtype: DataType,
        input: Option<&'a [u8]>,
        output: &'a mut [u8],
        v: [&[usize]; 4],
    ) -> Request<'a> {
        self.immediate_calls.set(self.immediate_calls.get() + 1);
        Request::done(self.all_to_all_v_bytes(dtype, input, output, v))
    }

    fn group_bytes(
        &self,
        sends: Vec<(&[u8], usize)>,
        recvs: Vec<(&mut [u8], usize)>,
    ) -> Result<()> {
        let (n, me) = (self.size(), self.rank);
        if let Some(p) = sends
            .iter()
            .map(|s| s.1)
            .chain(recvs.iter().map(|r| r.1))
            .find(|&p| p >= n)
        {
            return Err(Error::invalid(format!("peer {p} out of range")));
        }
        // Published: for each send, its peer and length (u64), then its bytes.
        let mut mine = Vec::new();
        for (buf, to) in &sends {
            mine.extend_from_slice(&(*to as u64).to_le_bytes());
            mine.extend_from_slice(&(buf.len() as u64).to_le_bytes());
            mine.extend_from_slice(buf);
        }
        let froms: Vec<usize> = recvs.iter().map(|r| r.1).collect();
        let got: Vec<Option<Vec<u8>>> = self.exchange(&mine, |all| {
            let mut taken = vec![0usize; n];
            froms
                .iter()
                .map(|&from| {
                    // The k-th receive from `from` matches its k-th send to this rank.
                    let mut msgs = Vec::new();
                    let mut at = 0;
                    let p = all[from];
                    while at < p.len() {
                        let word = |k: usize| {
                            let mut w = [0u8; 8];
                            w.copy_from_slice(&p[k..k + 8]);
                            u64::from_le_bytes(w) as usize
                        };
                        let (to, len) = (word(at), word(at + 8));
                        if to == me {
                            msgs.push(p[at + 16..at + 16 + len].to_vec());
                        }
                        at += 16 + len;
                    }
                    let k = taken[from];
                    taken[from] += 1;
                    msgs.into_iter().nth(k)
                })
                .collect()
        });
        for ((buf, from), msg) in recvs.into_iter().zip(got) {
            let Some(msg) = msg else {
                return Err(Error::invalid(format!(
                    "rank {me}: no matching send from {from}"
                )));
            };
            self.deliver(buf, &msg);
        }
        Ok(())
    }

    fn immediate_group_bytes<'a>(
        &'a self,
        sends: Vec<(&'a [u8], usize)>,
        recvs: Vec<(&'a mut [u8], usize)>,
    ) -> Request<'a> {
        self.immediate_calls.set(self.immediate_calls.get() + 1);
        Request::done(self.group_bytes(sends, recvs))
    }

    fn barrier(&self) -> Result<()> {
        self.barriers.set(self.barriers.get() + 1);
        self.group.barrier.wait();
        Ok(())
    }
}
