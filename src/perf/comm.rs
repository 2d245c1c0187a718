//! What dmsc-perf needs of a communicator ([`PerfComm`]), and its implementation over
//! [`Communicator`]: the calls of every measured operation, blocking and non-blocking.

use crate::{CollKind, Communicator, DataType, ReduceOp, Request, Result};

/// What dmsc-perf needs of a communicator (implemented by [`Communicator`]; tests use an
/// in-memory one). The methods mirror [`Communicator`]'s.
pub trait PerfComm {
    /// This process's rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// See [`Communicator::collective_bytes`].
    #[allow(clippy::too_many_arguments)]
    fn collective_bytes(
        &self,
        kind: CollKind,
        input: Option<&[u8]>,
        output: &mut [u8],
        count: usize,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
    ) -> Result<()>;
    /// See [`Communicator::immediate_collective_bytes`].
    #[allow(clippy::too_many_arguments)]
    fn immediate_collective_bytes<'a>(
        &'a self,
        kind: CollKind,
        input: Option<&'a [u8]>,
        output: &'a mut [u8],
        count: usize,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
    ) -> Request<'a>;
    /// See [`Communicator::send_recv_bytes`].
    fn send_recv_bytes(&self, send: &[u8], to: usize, recv: &mut [u8], from: usize) -> Result<()>;
    /// Non-blocking [`PerfComm::send_recv_bytes`]: a group of one send and one receive
    /// started with [`crate::Group::immediate_end`].
    fn immediate_send_recv_bytes<'a>(
        &'a self,
        send: &'a [u8],
        to: usize,
        recv: &'a mut [u8],
        from: usize,
    ) -> Request<'a>;
    /// See [`Communicator::all_to_all_v_bytes`].
    fn all_to_all_v_bytes(
        &self,
        dtype: DataType,
        input: Option<&[u8]>,
        output: &mut [u8],
        v: [&[usize]; 4],
    ) -> Result<()>;
    /// See [`Communicator::immediate_all_to_all_v_bytes`].
    fn immediate_all_to_all_v_bytes<'a>(
        &'a self,
        dtype: DataType,
        input: Option<&'a [u8]>,
        output: &'a mut [u8],
        v: [&[usize]; 4],
    ) -> Request<'a>;
    /// One group ([`crate::Group`]) of byte sends `(buffer, to)` and receives
    /// `(buffer, from)`, run to completion.
    fn group_bytes(&self, sends: Vec<(&[u8], usize)>, recvs: Vec<(&mut [u8], usize)>)
        -> Result<()>;
    /// The same group, started with [`crate::Group::immediate_end`].
    fn immediate_group_bytes<'a>(
        &'a self,
        sends: Vec<(&'a [u8], usize)>,
        recvs: Vec<(&'a mut [u8], usize)>,
    ) -> Request<'a>;
    /// See [`Communicator::barrier`].
    fn barrier(&self) -> Result<()>;
    /// Run `call` (on device buffers, `--device cuda`) to completion, as
    /// [`Communicator::run_call`]. A communicator without device calls refuses it (the
    /// default).
    ///
    /// # Safety
    /// As [`Communicator::run_call`].
    unsafe fn run_device_call(&self, call: &crate::call::Call) -> Result<()> {
        let _ = call;
        Err(no_device_calls())
    }
    /// Start `call` (on device buffers) as [`Communicator::start_call`]; refused by default.
    ///
    /// # Safety
    /// As [`Communicator::start_call`].
    unsafe fn start_device_call<'a>(&'a self, call: &crate::call::Call) -> Request<'a> {
        let _ = call;
        Request::done(Err(no_device_calls()))
    }
}

/// The refusal of a communicator that takes no calls on device buffers.
fn no_device_calls() -> crate::Error {
    crate::Error::usage("this communicator takes no calls on device buffers (--device)")
}

/// Add `sends` and `recvs` (bytes, tag 0) to `g`.
fn add_to_group<'b>(
    g: &mut crate::Group<'_, 'b>,
    sends: Vec<(&'b [u8], usize)>,
    recvs: Vec<(&'b mut [u8], usize)>,
) -> Result<()> {
    for (buf, to) in sends {
        g.send_bytes(buf, to, 0, DataType::Uint8)?;
    }
    for (buf, from) in recvs {
        g.recv_bytes(buf, from, 0, DataType::Uint8)?;
    }
    Ok(())
}

impl PerfComm for Communicator {
    fn rank(&self) -> usize {
        Communicator::rank(self)
    }
    fn size(&self) -> usize {
        Communicator::size(self)
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
        Communicator::collective_bytes(self, kind, input, output, count, dtype, op, root)
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
        Communicator::immediate_collective_bytes(self, kind, input, output, count, dtype, op, root)
    }
    fn send_recv_bytes(&self, send: &[u8], to: usize, recv: &mut [u8], from: usize) -> Result<()> {
        Communicator::send_recv_bytes(self, send, to, recv, from)
    }
    fn immediate_send_recv_bytes<'a>(
        &'a self,
        send: &'a [u8],
        to: usize,
        recv: &'a mut [u8],
        from: usize,
    ) -> Request<'a> {
        self.immediate_group_bytes(vec![(send, to)], vec![(recv, from)])
    }
    fn all_to_all_v_bytes(
        &self,
        dtype: DataType,
        input: Option<&[u8]>,
        output: &mut [u8],
        v: [&[usize]; 4],
    ) -> Result<()> {
        Communicator::all_to_all_v_bytes(self, dtype, input, output, v)
    }
    fn immediate_all_to_all_v_bytes<'a>(
        &'a self,
        dtype: DataType,
        input: Option<&'a [u8]>,
        output: &'a mut [u8],
        v: [&[usize]; 4],
    ) -> Request<'a> {
        Communicator::immediate_all_to_all_v_bytes(self, dtype, input, output, v)
    }
    fn group_bytes(
        &self,
        sends: Vec<(&[u8], usize)>,
        recvs: Vec<(&mut [u8], usize)>,
    ) -> Result<()> {
        let mut g = self.group();
        add_to_group(&mut g, sends, recvs)?;
        g.end()
    }
    fn immediate_group_bytes<'a>(
        &'a self,
        sends: Vec<(&'a [u8], usize)>,
        recvs: Vec<(&'a mut [u8], usize)>,
    ) -> Request<'a> {
        let mut g = self.group();
        match add_to_group(&mut g, sends, recvs) {
            Ok(()) => g.immediate_end(),
            Err(e) => Request::done(Err(e)),
        }
    }
    fn barrier(&self) -> Result<()> {
        Communicator::barrier(self)
    }
    unsafe fn run_device_call(&self, call: &crate::call::Call) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { Communicator::run_call(self, call) }
    }
    unsafe fn start_device_call<'a>(&'a self, call: &crate::call::Call) -> Request<'a> {
        // SAFETY: forwarded contract.
        unsafe { Communicator::start_call(self, call) }
    }
}
