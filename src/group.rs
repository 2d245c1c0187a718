//! [`Group`]: sends and receives issued together (`ncclGroupStart`/`ncclGroupEnd`), which
//! progress concurrently so that two ranks that both send first do not deadlock.

use crate::call::{Call, P2pCall, Span};
use crate::comm::Communicator;
use crate::element::{bytes, bytes_mut, Element};
use crate::request::Request;
use dmsc_core::{DataType, Result};

/// Sends and receives issued together; nothing moves until [`Group::end`].
pub struct Group<'c, 'b> {
    comm: &'c Communicator,
    ops: Vec<P2pCall>,
    _b: std::marker::PhantomData<&'b mut [u8]>,
}

impl Communicator {
    /// Start a group of sends and receives that go out together (`ncclGroupStart`/`End`).
    pub fn group(&self) -> Group<'_, '_> {
        Group {
            comm: self,
            ops: vec![],
            _b: std::marker::PhantomData,
        }
    }
}

impl<'b> Group<'_, 'b> {
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
        let op = P2pCall {
            send,
            peer,
            tag,
            buf: Span::of(buf),
            dtype,
        };
        op.check(self.comm.shape())?;
        self.ops.push(op);
        Ok(())
    }

    /// Run the group to completion.
    pub fn end(self) -> Result<()> {
        let call = Call::p2p(self.comm.shape(), self.ops)?;
        // SAFETY: every span is a buffer the group borrows for 'b (receives mutably), which
        // outlives this call.
        unsafe { self.comm.run_call(&call) }
    }

    /// Start the group and return a request.
    pub fn immediate_end(self) -> Request<'b> {
        match Call::p2p(self.comm.shape(), self.ops) {
            // SAFETY: the request borrows the buffers for 'b and waits for them when dropped.
            Ok(call) => unsafe { self.comm.start_call(&call) },
            Err(e) => Request::done(Err(e)),
        }
    }
}
