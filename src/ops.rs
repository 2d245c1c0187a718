//! Collective and point-to-point calls: argument checks, planning, and the typed API.
//!
//! Naming follows rsmpi: `all_reduce` is out of place (`input` → `output`),
//! `all_reduce_in_place` works on one buffer, and `immediate_*` returns a [`Request`].
//! Counts follow NCCL: for all-gather the output holds `size()` blocks of the input's
//! length; for reduce-scatter the input holds `size()` blocks of the output's length.

use crate::comm::{Communicator, Job};
use crate::element::{bytes, bytes_mut, Element};
use crate::request::Request;
use dmsc_core::device::{Device, HostDevice};
use dmsc_core::engine::{OpMemory, Region};
use dmsc_core::plan::{self, P2p};
use dmsc_core::{CollDesc, CollKind, DataType, Error, ReduceOp, Result};

fn region(b: &[u8]) -> Region {
    Region::host(b.as_ptr() as *mut u8, b.len())
}

fn check_align(what: &str, b: &[u8], dtype: DataType) -> Result<()> {
    if !b.len().is_multiple_of(dtype.size()) {
        return Err(Error::invalid(format!(
            "{what} has {} bytes, not a whole number of {dtype} elements ({} bytes each)",
            b.len(),
            dtype.size()
        )));
    }
    if !(b.as_ptr() as usize).is_multiple_of(dtype.size()) && !b.is_empty() {
        return Err(Error::invalid(format!(
            "{what} at {:p} is not aligned to its {}-byte {dtype} elements",
            b.as_ptr(),
            dtype.size()
        )));
    }
    Ok(())
}

fn need(what: &str, have: usize, want_elems: usize, dtype: DataType) -> Result<()> {
    let want = want_elems
        .checked_mul(dtype.size())
        .ok_or_else(|| Error::invalid(format!("{what}: {want_elems} elements overflow")))?;
    if have < want {
        return Err(Error::invalid(format!(
            "{what} has {have} bytes but the call needs {want} ({want_elems} {dtype} elements)"
        )));
    }
    Ok(())
}

impl Communicator {
    fn check_root(&self, root: usize) -> Result<()> {
        if root >= self.size() {
            return Err(Error::invalid(format!(
                "root {root} is out of range for a communicator of {} ranks",
                self.size()
            )));
        }
        Ok(())
    }

    /// Build the job of a collective on byte buffers. `input == None`: in place, with
    /// `output` the whole buffer (NCCL's in-place layouts).
    pub(crate) fn collective_job(
        &self,
        desc: CollDesc,
        input: Option<&[u8]>,
        output: &[u8],
    ) -> Result<Job> {
        let n = self.size();
        if matches!(desc.kind, CollKind::AllToAllV | CollKind::SendRecv) {
            return Err(Error::invalid(format!(
                "{} has its own entry point",
                desc.kind
            )));
        }
        if matches!(desc.kind, CollKind::Broadcast | CollKind::Reduce) {
            self.check_root(desc.root)?;
        }
        let (in_elems, out_elems) = plan::buffer_elems(&desc, n)?;
        let es = desc.dtype.size();
        check_align("output buffer", output, desc.dtype)?;
        let inplace = input.is_none();
        let mem = match input {
            Some(inp) => {
                check_align("input buffer", inp, desc.dtype)?;
                if desc.kind != CollKind::Barrier {
                    // Broadcast: only the root reads its input.
                    if desc.kind != CollKind::Broadcast || self.rank() == desc.root {
                        need("input buffer", inp.len(), in_elems, desc.dtype)?;
                    }
                    if desc.kind != CollKind::Reduce || self.rank() == desc.root {
                        need("output buffer", output.len(), out_elems, desc.dtype)?;
                    }
                }
                OpMemory {
                    input: region(inp),
                    output: region(output),
                    group: vec![],
                }
            }
            None => {
                let whole = in_elems.max(out_elems);
                need("buffer", output.len(), whole, desc.dtype)?;
                let base = region(output);
                let off = self.rank() * desc.count * es;
                let sub = |len: usize| Region {
                    // SAFETY: off + len <= whole * es <= output.len(), checked above.
                    ptr: unsafe { base.ptr.add(off) },
                    len,
                    ..base
                };
                match desc.kind {
                    CollKind::AllGather => OpMemory {
                        input: sub(desc.count * es),
                        output: base,
                        group: vec![],
                    },
                    CollKind::ReduceScatter => OpMemory {
                        input: base,
                        output: sub(desc.count * es),
                        group: vec![],
                    },
                    _ => OpMemory {
                        input: base,
                        output: base,
                        group: vec![],
                    },
                }
            }
        };
        let sched = plan::plan(&desc, self.rank(), n, inplace, &self.config.plan)?;
        Ok(Job::Collective { desc, sched, mem })
    }

    /// Untyped collective over byte buffers. `count` follows NCCL's convention for `kind`
    /// (see [`CollKind`]). `input == None` means in place with NCCL's layouts: `output` is
    /// the whole buffer; for all_gather this rank's contribution already sits at
    /// `output[rank*count..]`, for reduce_scatter the result lands there. `root` is used by
    /// broadcast and reduce. Not for all-to-all-v or send/recv.
    #[allow(clippy::too_many_arguments)]
    pub fn collective_bytes(
        &self,
        kind: CollKind,
        input: Option<&[u8]>,
        output: &mut [u8],
        count: usize,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        let desc = CollDesc {
            kind,
            count,
            dtype,
            op,
            root,
        };
        let job = self.collective_job(desc, input, output)?;
        self.run_blocking(job)
    }

    /// Non-blocking [`Communicator::collective_bytes`].
    #[allow(clippy::too_many_arguments)]
    pub fn immediate_collective_bytes<'a>(
        &self,
        kind: CollKind,
        input: Option<&'a [u8]>,
        output: &'a mut [u8],
        count: usize,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
    ) -> Request<'a> {
        let desc = CollDesc {
            kind,
            count,
            dtype,
            op,
            root,
        };
        match self.collective_job(desc, input, output) {
            Ok(job) => self.run_async(job),
            Err(e) => Request::done(Err(e)),
        }
    }

    fn typed<T: Element>(
        &self,
        kind: CollKind,
        input: Option<&[T]>,
        output: &mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        let count = count_of(kind, input.map(|i| i.len()), output.len(), self.size());
        self.collective_bytes(
            kind,
            input.map(bytes),
            bytes_mut(output),
            count,
            T::DTYPE,
            op,
            root,
        )
    }

    fn typed_async<'a, T: Element>(
        &self,
        kind: CollKind,
        input: Option<&'a [T]>,
        output: &'a mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Request<'a> {
        let count = count_of(kind, input.map(|i| i.len()), output.len(), self.size());
        self.immediate_collective_bytes(
            kind,
            input.map(bytes),
            bytes_mut(output),
            count,
            T::DTYPE,
            op,
            root,
        )
    }

    /// `output = input` reduced with `op` across all ranks.
    pub fn all_reduce<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        if input.len() != output.len() {
            return Err(Error::invalid(format!(
                "all_reduce input has {} elements but output has {}",
                input.len(),
                output.len()
            )));
        }
        self.typed(CollKind::AllReduce, Some(input), output, op, 0)
    }

    /// All-reduce in place.
    pub fn all_reduce_in_place<T: Element>(&self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        self.typed(CollKind::AllReduce, None, buf, op, 0)
    }

    /// Non-blocking all-reduce in place.
    pub fn immediate_all_reduce_in_place<'a, T: Element>(
        &self,
        buf: &'a mut [T],
        op: ReduceOp,
    ) -> Request<'a> {
        self.typed_async(CollKind::AllReduce, None, buf, op, 0)
    }

    /// Non-blocking out-of-place all-reduce.
    pub fn immediate_all_reduce<'a, T: Element>(
        &self,
        input: &'a [T],
        output: &'a mut [T],
        op: ReduceOp,
    ) -> Request<'a> {
        if input.len() != output.len() {
            return Request::done(Err(Error::invalid(
                "all_reduce input and output lengths differ",
            )));
        }
        self.typed_async(CollKind::AllReduce, Some(input), output, op, 0)
    }

    /// Reduce `input` (`size()` blocks of `output.len()`) and keep block `rank()`.
    pub fn reduce_scatter<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        if Some(input.len()) != output.len().checked_mul(self.size()) {
            return Err(Error::invalid(format!(
                "reduce_scatter input has {} elements, expected size() * output = {} * {}",
                input.len(),
                self.size(),
                output.len()
            )));
        }
        self.typed(CollKind::ReduceScatter, Some(input), output, op, 0)
    }

    /// Reduce-scatter in place: the result lands in block `rank()` of `buf`.
    pub fn reduce_scatter_in_place<T: Element>(&self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        check_blocks("reduce_scatter_in_place buffer", buf.len(), self.size())?;
        self.typed(CollKind::ReduceScatter, None, buf, op, 0)
    }

    /// Gather every rank's `input` into `output` (block r from rank r).
    pub fn all_gather<T: Element>(&self, input: &[T], output: &mut [T]) -> Result<()> {
        if Some(output.len()) != input.len().checked_mul(self.size()) {
            return Err(Error::invalid(format!(
                "all_gather output has {} elements, expected size() * input = {} * {}",
                output.len(),
                self.size(),
                input.len()
            )));
        }
        self.typed(CollKind::AllGather, Some(input), output, ReduceOp::Sum, 0)
    }

    /// All-gather in place: this rank's block already sits at block `rank()` of `buf`.
    pub fn all_gather_in_place<T: Element>(&self, buf: &mut [T]) -> Result<()> {
        check_blocks("all_gather_in_place buffer", buf.len(), self.size())?;
        self.typed(CollKind::AllGather, None, buf, ReduceOp::Sum, 0)
    }

    /// Broadcast `buf` from `root` to every rank, in place.
    pub fn broadcast<T: Element>(&self, buf: &mut [T], root: usize) -> Result<()> {
        self.typed(CollKind::Broadcast, None, buf, ReduceOp::Sum, root)
    }

    /// Broadcast out of place: the root's `input` lands in every rank's `output`.
    pub fn broadcast_into<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        root: usize,
    ) -> Result<()> {
        self.typed(
            CollKind::Broadcast,
            Some(input),
            output,
            ReduceOp::Sum,
            root,
        )
    }

    /// Reduce every rank's `input` into `output` on `root` (other ranks' output untouched).
    pub fn reduce<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        if self.rank() == root && input.len() != output.len() {
            return Err(Error::invalid(
                "reduce input and output lengths differ on the root",
            ));
        }
        let count = input.len();
        self.collective_bytes(
            CollKind::Reduce,
            Some(bytes(input)),
            bytes_mut(output),
            count,
            T::DTYPE,
            op,
            root,
        )
    }

    /// Reduce in place onto `root`.
    pub fn reduce_in_place<T: Element>(
        &self,
        buf: &mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        self.typed(CollKind::Reduce, None, buf, op, root)
    }

    /// Block `j` of `input` goes to rank `j`; block `i` of `output` comes from rank `i`.
    pub fn all_to_all<T: Element>(&self, input: &[T], output: &mut [T]) -> Result<()> {
        check_blocks("all_to_all input", input.len(), self.size())?;
        if input.len() != output.len() {
            return Err(Error::invalid("all_to_all input and output lengths differ"));
        }
        self.typed(CollKind::AllToAll, Some(input), output, ReduceOp::Sum, 0)
    }

    /// All-to-all in place.
    pub fn all_to_all_in_place<T: Element>(&self, buf: &mut [T]) -> Result<()> {
        check_blocks("all_to_all buffer", buf.len(), self.size())?;
        self.typed(CollKind::AllToAll, None, buf, ReduceOp::Sum, 0)
    }

    /// All-to-all with per-peer counts and displacements (in elements), like `MPI_Alltoallv`.
    pub fn all_to_all_v<T: Element>(
        &self,
        input: &[T],
        send_counts: &[usize],
        send_displs: &[usize],
        output: &mut [T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<()> {
        let job = self.all_to_all_v_job(
            T::DTYPE,
            Some(bytes(input)),
            bytes_mut(output),
            [send_counts, send_displs, recv_counts, recv_displs],
        )?;
        self.run_blocking(job)
    }

    /// Untyped all-to-all-v; `input == None` is in place. `v` = send counts, send
    /// displacements, receive counts, receive displacements (elements).
    pub fn all_to_all_v_bytes(
        &self,
        dtype: DataType,
        input: Option<&[u8]>,
        output: &mut [u8],
        v: [&[usize]; 4],
    ) -> Result<()> {
        let job = self.all_to_all_v_job(dtype, input, output, v)?;
        self.run_blocking(job)
    }

    /// Non-blocking [`Communicator::all_to_all_v_bytes`]. The counts and displacements are
    /// only read during the call; the buffers stay borrowed until the request completes.
    pub fn immediate_all_to_all_v_bytes<'a>(
        &self,
        dtype: DataType,
        input: Option<&'a [u8]>,
        output: &'a mut [u8],
        v: [&[usize]; 4],
    ) -> Request<'a> {
        match self.all_to_all_v_job(dtype, input, output, v) {
            Ok(job) => self.run_async(job),
            Err(e) => Request::done(Err(e)),
        }
    }

    fn all_to_all_v_job(
        &self,
        dtype: DataType,
        input: Option<&[u8]>,
        output: &[u8],
        v: [&[usize]; 4],
    ) -> Result<Job> {
        let names = ["send_counts", "send_displs", "recv_counts", "recv_displs"];
        for (a, name) in v.iter().zip(names) {
            if a.len() != self.size() {
                return Err(Error::invalid(format!(
                    "{name} has {} entries, expected one per rank ({})",
                    a.len(),
                    self.size()
                )));
            }
        }
        check_align("output buffer", output, dtype)?;
        let end = |c: &[usize], d: &[usize], what: &str| -> Result<usize> {
            c.iter().zip(d).try_fold(0usize, |m, (&c, &d)| {
                c.checked_add(d)
                    .map(|e| m.max(e))
                    .ok_or_else(|| Error::invalid(format!("{what} count + displacement overflows")))
            })
        };
        let in_end = end(v[0], v[1], "send")?;
        let out_end = end(v[2], v[3], "recv")?;
        let inplace = input.is_none();
        let inp = input.unwrap_or(output);
        check_align("input buffer", inp, dtype)?;
        need("input buffer", inp.len(), in_end, dtype)?;
        need("output buffer", output.len(), out_end, dtype)?;
        let sched = plan::plan_all_to_all_v(
            self.rank(),
            self.size(),
            dtype,
            v[0],
            v[1],
            v[2],
            v[3],
            inplace,
        )?;
        let desc = CollDesc {
            kind: CollKind::AllToAllV,
            count: 0,
            dtype,
            op: ReduceOp::Sum,
            root: 0,
        };
        Ok(Job::Collective {
            desc,
            sched,
            mem: OpMemory {
                input: region(inp),
                output: region(output),
                group: vec![],
            },
        })
    }

    /// Block until every rank has entered the barrier.
    pub fn barrier(&self) -> Result<()> {
        let desc = CollDesc {
            kind: CollKind::Barrier,
            count: 0,
            dtype: DataType::Uint8,
            op: ReduceOp::Sum,
            root: 0,
        };
        let job = self.collective_job(desc, Some(&[]), &[])?;
        self.run_blocking(job)
    }

    /// Send `buf` to `peer` with `tag`. Matched in order with the peer's `recv` from this rank.
    pub fn send<T: Element>(&self, buf: &[T], peer: usize, tag: u32) -> Result<()> {
        let mut g = self.group();
        g.send(buf, peer, tag)?;
        g.end()
    }

    /// Receive into `buf` from `peer`; `tag` and length must match the sender's.
    pub fn recv<T: Element>(&self, buf: &mut [T], peer: usize, tag: u32) -> Result<()> {
        let mut g = self.group();
        g.recv(buf, peer, tag)?;
        g.end()
    }

    /// Send `send` to rank `to` and receive `recv` from rank `from` concurrently.
    pub fn send_recv_bytes(
        &self,
        send: &[u8],
        to: usize,
        recv: &mut [u8],
        from: usize,
    ) -> Result<()> {
        let mut g = self.group();
        g.send_bytes(send, to, 0, DataType::Uint8)?;
        g.recv_bytes(recv, from, 0, DataType::Uint8)?;
        g.end()
    }

    /// Start a group of sends and receives that go out together (`ncclGroupStart`/`End`).
    pub fn group(&self) -> Group<'_, '_> {
        Group {
            comm: self,
            ops: vec![],
            tags: vec![],
            bufs: vec![],
            dtype: None,
            _b: std::marker::PhantomData,
        }
    }
}

/// Sends and receives issued together; nothing moves until [`Group::end`].
pub struct Group<'c, 'b> {
    comm: &'c Communicator,
    ops: Vec<P2p>,
    tags: Vec<u32>,
    bufs: Vec<Region>,
    dtype: Option<DataType>,
    _b: std::marker::PhantomData<&'b mut [u8]>,
}

impl<'b> Group<'_, 'b> {
    fn check_peer(&self, peer: usize) -> Result<()> {
        if peer >= self.comm.size() {
            return Err(Error::invalid(format!(
                "peer {peer} is out of range for a communicator of {} ranks",
                self.comm.size()
            )));
        }
        Ok(())
    }

    fn set_dtype(&mut self, d: DataType) -> Result<()> {
        match self.dtype {
            None => self.dtype = Some(d),
            Some(x) if x == d => {}
            Some(x) if x.size() == d.size() => {}
            Some(x) => {
                return Err(Error::invalid(format!(
                    "a group mixes element types {x} and {d}; use one group per type"
                )))
            }
        }
        Ok(())
    }

    /// Add a send of `buf` to `peer`.
    pub fn send<T: Element>(&mut self, buf: &'b [T], peer: usize, tag: u32) -> Result<()> {
        self.send_bytes(bytes(buf), peer, tag, T::DTYPE)
    }

    /// Add a receive into `buf` from `peer`.
    pub fn recv<T: Element>(&mut self, buf: &'b mut [T], peer: usize, tag: u32) -> Result<()> {
        self.recv_bytes(bytes_mut(buf), peer, tag, T::DTYPE)
    }

    /// Add a send of raw bytes holding `dtype` elements.
    pub fn send_bytes(
        &mut self,
        buf: &'b [u8],
        peer: usize,
        tag: u32,
        dtype: DataType,
    ) -> Result<()> {
        self.push(true, buf, peer, tag, dtype)
    }

    /// Add a receive into raw bytes holding `dtype` elements.
    pub fn recv_bytes(
        &mut self,
        buf: &'b mut [u8],
        peer: usize,
        tag: u32,
        dtype: DataType,
    ) -> Result<()> {
        self.push(false, buf, peer, tag, dtype)
    }

    fn push(
        &mut self,
        send: bool,
        buf: &[u8],
        peer: usize,
        tag: u32,
        dtype: DataType,
    ) -> Result<()> {
        self.check_peer(peer)?;
        check_align(
            if send {
                "send buffer"
            } else {
                "receive buffer"
            },
            buf,
            dtype,
        )?;
        self.set_dtype(dtype)?;
        let (b, len) = (self.bufs.len() as u32, buf.len() / dtype.size());
        self.ops.push(if send {
            P2p::Send { peer, buf: b, len }
        } else {
            P2p::Recv { peer, buf: b, len }
        });
        self.tags.push(tag);
        self.bufs.push(region(buf));
        Ok(())
    }

    /// Perform the sends to this rank itself: each is matched, in order, with a receive from
    /// this rank in the same group (as NCCL allows), and copied locally.
    fn take_self_ops(&mut self) -> Result<()> {
        let me = self.comm.rank();
        let is_self = |o: &P2p| match *o {
            P2p::Send { peer, .. } | P2p::Recv { peer, .. } => peer == me,
        };
        if !self.ops.iter().any(is_self) {
            return Ok(());
        }
        let (mut sends, mut recvs) = (vec![], vec![]);
        for (i, o) in self.ops.iter().enumerate().filter(|(_, o)| is_self(o)) {
            match *o {
                P2p::Send { buf, len, .. } => sends.push((i, buf, len)),
                P2p::Recv { buf, len, .. } => recvs.push((i, buf, len)),
            }
        }
        if sends.len() != recvs.len() {
            return Err(Error::invalid(format!(
                "a group has {} send(s) to this rank ({me}) but {} receive(s) from it; they must pair up",
                sends.len(),
                recvs.len()
            )));
        }
        let es = self.dtype.map_or(1, |d| d.size());
        for ((si, sb, sl), (ri, rb, rl)) in sends.iter().zip(&recvs) {
            if sl != rl || self.tags[*si] != self.tags[*ri] {
                return Err(Error::invalid(format!(
                    "send to self of {sl} elements (tag {}) meets a receive of {rl} elements (tag {})",
                    self.tags[*si], self.tags[*ri]
                )));
            }
            let (src, dst) = (self.bufs[*sb as usize], self.bufs[*rb as usize]);
            // SAFETY: both regions come from live borrows held by this group for 'b, of at
            // least sl * es bytes; the device's copy tolerates overlap.
            unsafe { HostDevice.copy(dst.ptr, src.ptr, sl * es)? };
        }
        let keep: Vec<bool> = self.ops.iter().map(|o| !is_self(o)).collect();
        let mut k = keep.iter();
        self.ops.retain(|_| *k.next().unwrap_or(&true));
        let mut k = keep.iter();
        self.tags.retain(|_| *k.next().unwrap_or(&true));
        Ok(())
    }

    fn job(mut self) -> Result<Option<(Job, &'b ())>> {
        self.take_self_ops()?;
        if self.ops.is_empty() {
            return Ok(None);
        }
        let dtype = self.dtype.unwrap_or(DataType::Uint8);
        let sched = plan::plan_send_recv(self.comm.rank(), self.comm.size(), &self.ops)?;
        Ok(Some((
            Job::P2p {
                dtype,
                ops: self.ops,
                tags: self.tags,
                sched,
                mem: OpMemory {
                    input: Region::EMPTY,
                    output: Region::EMPTY,
                    group: self.bufs,
                },
            },
            &(),
        )))
    }

    /// Run the group to completion.
    pub fn end(self) -> Result<()> {
        let comm = self.comm;
        match self.job()? {
            None => Ok(()),
            Some((job, _)) => comm.run_blocking(job),
        }
    }

    /// Start the group and return a request.
    pub fn immediate_end(self) -> Request<'b> {
        let comm = self.comm;
        match self.job() {
            Ok(None) => Request::done(Ok(())),
            Ok(Some((job, _))) => comm.run_async(job),
            Err(e) => Request::done(Err(e)),
        }
    }
}

fn check_blocks(what: &str, len: usize, n: usize) -> Result<()> {
    if !len.is_multiple_of(n) {
        return Err(Error::invalid(format!(
            "{what} has {len} elements, not a multiple of the {n} ranks"
        )));
    }
    Ok(())
}

/// NCCL's per-call count from buffer lengths.
fn count_of(kind: CollKind, input: Option<usize>, output: usize, n: usize) -> usize {
    match kind {
        CollKind::AllGather => input.unwrap_or(output / n),
        CollKind::ReduceScatter => match input {
            Some(_) => output,
            None => output / n,
        },
        CollKind::AllToAll => input.unwrap_or(output) / n,
        _ => input.unwrap_or(output),
    }
}
