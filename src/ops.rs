//! The typed Rust API of collectives and point-to-point calls, and its untyped byte form.
//!
//! Naming follows rsmpi: `all_reduce` is out of place (`input` → `output`),
//! `all_reduce_in_place` works on one buffer, and `immediate_*` returns a [`Request`].
//! Counts follow NCCL: for all-gather the output holds `size()` blocks of the input's
//! length; for reduce-scatter the input holds `size()` blocks of the output's length.
//! Every method builds a [`Call`] (the one description of an operation the C and Python
//! front ends use too) from borrows it holds for as long as the operation runs.

use crate::call::{Call, CollArgs, Names, Span};
use crate::comm::Communicator;
use crate::element::{bytes, Element};
use crate::request::Request;
use dmsc_core::{CollKind, DataType, ReduceOp, Result};

/// `(kind, op, root)` of a typed call.
type What = (CollKind, ReduceOp, usize);

impl Communicator {
    /// The [`Call`] of a collective on byte buffers; `count: None` derives it; `factor` is
    /// this rank's premultiplication factor (for `PreMulSum` only).
    fn call_of(
        &self,
        (kind, op, root): What,
        input: Option<&[u8]>,
        output: &[u8],
        count: Option<usize>,
        dtype: DataType,
        factor: Option<f64>,
    ) -> Result<Call> {
        let args = CollArgs {
            kind,
            dtype,
            op,
            root,
            input: input.map(Span::of),
            output: Span::of(output),
            count,
            factor,
        };
        Call::collective(self.shape(), args, &Names::RUST)
    }

    /// Run a collective on borrowed byte buffers.
    fn collective(
        &self,
        what: What,
        input: Option<&[u8]>,
        output: &mut [u8],
        count: Option<usize>,
        dtype: DataType,
    ) -> Result<()> {
        let call = self.call_of(what, input, output, count, dtype, None)?;
        // SAFETY: the spans are `input` and `output`, borrowed (the output mutably) for this
        // whole call.
        unsafe { self.run_call(&call) }
    }

    /// Start a collective on byte buffers borrowed for `'a`.
    fn immediate<'a>(
        &self,
        what: What,
        input: Option<&'a [u8]>,
        output: &'a mut [u8],
        count: Option<usize>,
        dtype: DataType,
    ) -> Request<'a> {
        match self.call_of(what, input, output, count, dtype, None) {
            // SAFETY: the spans are `input` and `output`, which the request borrows for 'a;
            // a request waits for its operation when dropped.
            Ok(call) => unsafe { self.start_call(&call) },
            Err(e) => Request::done(Err(e)),
        }
    }

    fn typed<T: Element>(&self, what: What, input: Option<&[T]>, output: &mut [T]) -> Result<()> {
        let out = crate::element::bytes_mut(output);
        self.collective(what, input.map(bytes), out, None, T::DTYPE)
    }

    fn typed_async<'a, T: Element>(
        &self,
        what: What,
        input: Option<&'a [T]>,
        output: &'a mut [T],
    ) -> Request<'a> {
        let out = crate::element::bytes_mut(output);
        self.immediate(what, input.map(bytes), out, None, T::DTYPE)
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
        self.collective((kind, op, root), input, output, Some(count), dtype)
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
        self.immediate((kind, op, root), input, output, Some(count), dtype)
    }

    /// `output = input` reduced with `op` across all ranks.
    pub fn all_reduce<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        self.typed((CollKind::AllReduce, op, 0), Some(input), output)
    }

    /// All-reduce in place.
    pub fn all_reduce_in_place<T: Element>(&self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        self.typed((CollKind::AllReduce, op, 0), None, buf)
    }

    /// Non-blocking all-reduce in place.
    pub fn immediate_all_reduce_in_place<'a, T: Element>(
        &self,
        buf: &'a mut [T],
        op: ReduceOp,
    ) -> Request<'a> {
        self.typed_async((CollKind::AllReduce, op, 0), None, buf)
    }

    /// Non-blocking out-of-place all-reduce.
    pub fn immediate_all_reduce<'a, T: Element>(
        &self,
        input: &'a [T],
        output: &'a mut [T],
        op: ReduceOp,
    ) -> Request<'a> {
        self.typed_async((CollKind::AllReduce, op, 0), Some(input), output)
    }

    /// A [`ReduceOp::PreMulSum`] collective of `kind`: every rank's input multiplied by its
    /// own `factor`, then summed (the caller's input is not written).
    fn premul<T: Element>(
        &self,
        (kind, root): (CollKind, usize),
        factor: f64,
        input: Option<&[T]>,
        output: &mut [T],
    ) -> Result<()> {
        let what = (kind, ReduceOp::PreMulSum, root);
        let (input, output) = (input.map(bytes), crate::element::bytes_mut(output));
        let call = self.call_of(what, input, output, None, T::DTYPE, Some(factor))?;
        // SAFETY: the spans are `input` and `output`, borrowed (the output mutably) for this
        // whole call.
        unsafe { self.run_call(&call) }
    }

    /// `output` = the sum over ranks of each rank's `input` times its own `factor` (NCCL's
    /// `ncclRedOpCreatePreMulSum` operator, torch's `PREMUL_SUM`). Ranks may pass different
    /// factors; for integer types the factor must be a whole number.
    pub fn all_reduce_premul<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        factor: f64,
    ) -> Result<()> {
        self.premul((CollKind::AllReduce, 0), factor, Some(input), output)
    }

    /// [`Communicator::all_reduce_premul`] in place on `buf`.
    pub fn all_reduce_premul_in_place<T: Element>(&self, buf: &mut [T], factor: f64) -> Result<()> {
        self.premul((CollKind::AllReduce, 0), factor, None, buf)
    }

    /// Reduce-scatter with [`ReduceOp::PreMulSum`] (see [`Communicator::all_reduce_premul`]).
    pub fn reduce_scatter_premul<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        factor: f64,
    ) -> Result<()> {
        self.premul((CollKind::ReduceScatter, 0), factor, Some(input), output)
    }

    /// Reduce onto `root` with [`ReduceOp::PreMulSum`] (see
    /// [`Communicator::all_reduce_premul`]).
    pub fn reduce_premul<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        factor: f64,
        root: usize,
    ) -> Result<()> {
        self.premul((CollKind::Reduce, root), factor, Some(input), output)
    }

    /// Reduce `input` (`size()` blocks of `output.len()`) and keep block `rank()`.
    pub fn reduce_scatter<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        self.typed((CollKind::ReduceScatter, op, 0), Some(input), output)
    }

    /// Reduce-scatter in place: the result lands in block `rank()` of `buf`.
    pub fn reduce_scatter_in_place<T: Element>(&self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        self.typed((CollKind::ReduceScatter, op, 0), None, buf)
    }

    /// Gather every rank's `input` into `output` (block r from rank r).
    pub fn all_gather<T: Element>(&self, input: &[T], output: &mut [T]) -> Result<()> {
        self.typed((CollKind::AllGather, ReduceOp::Sum, 0), Some(input), output)
    }

    /// All-gather in place: this rank's block already sits at block `rank()` of `buf`.
    pub fn all_gather_in_place<T: Element>(&self, buf: &mut [T]) -> Result<()> {
        self.typed((CollKind::AllGather, ReduceOp::Sum, 0), None, buf)
    }

    /// Broadcast `buf` from `root` to every rank, in place.
    pub fn broadcast<T: Element>(&self, buf: &mut [T], root: usize) -> Result<()> {
        self.typed((CollKind::Broadcast, ReduceOp::Sum, root), None, buf)
    }

    /// Broadcast out of place: the root's `input` lands in every rank's `output`.
    pub fn broadcast_into<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        root: usize,
    ) -> Result<()> {
        self.typed(
            (CollKind::Broadcast, ReduceOp::Sum, root),
            Some(input),
            output,
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
        self.typed((CollKind::Reduce, op, root), Some(input), output)
    }

    /// Reduce in place onto `root`.
    pub fn reduce_in_place<T: Element>(
        &self,
        buf: &mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        self.typed((CollKind::Reduce, op, root), None, buf)
    }

    /// Block `j` of `input` goes to rank `j`; block `i` of `output` comes from rank `i`.
    pub fn all_to_all<T: Element>(&self, input: &[T], output: &mut [T]) -> Result<()> {
        self.typed((CollKind::AllToAll, ReduceOp::Sum, 0), Some(input), output)
    }

    /// All-to-all in place.
    pub fn all_to_all_in_place<T: Element>(&self, buf: &mut [T]) -> Result<()> {
        self.typed((CollKind::AllToAll, ReduceOp::Sum, 0), None, buf)
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
        let v = [send_counts, send_displs, recv_counts, recv_displs];
        let out = crate::element::bytes_mut(output);
        self.all_to_all_v_bytes(T::DTYPE, Some(bytes(input)), out, v)
    }

    /// The [`Call`] of an all-to-all-v on byte buffers.
    fn all_to_all_v_call(
        &self,
        dtype: DataType,
        input: Option<&[u8]>,
        output: &[u8],
        v: [&[usize]; 4],
    ) -> Result<Call> {
        let v = v.map(<[usize]>::to_vec);
        Call::all_to_all_v(
            self.shape(),
            dtype,
            input.map(Span::of),
            Span::of(output),
            v,
            &Names::RUST,
        )
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
        let call = self.all_to_all_v_call(dtype, input, output, v)?;
        // SAFETY: the spans are `input` and `output`, borrowed for this whole call.
        unsafe { self.run_call(&call) }
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
        match self.all_to_all_v_call(dtype, input, output, v) {
            // SAFETY: the request borrows the buffers for 'a and waits for them when dropped.
            Ok(call) => unsafe { self.start_call(&call) },
            Err(e) => Request::done(Err(e)),
        }
    }

    /// Block until every rank has entered the barrier.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: a barrier has no buffers.
        unsafe { self.run_call(&Call::barrier()) }
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
}
