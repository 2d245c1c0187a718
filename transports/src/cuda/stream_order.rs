//! Collectives ordered on the caller's CUDA stream, as NCCL orders them, without blocking the
//! calling thread and without a host callback on the fast path.
//!
//! For one operation ([`StreamOrder`]):
//! 1. **Submit** (calling thread, [`StreamOrder::submit`]): record a *start* event on the
//!    caller's stream, which completes once the work queued there before the call has run,
//!    and queue on the caller's stream a wait for the communicator's *gate* word to reach the
//!    operation's sequence number (`cuStreamWaitValue32`), so the work the caller queues after
//!    the call waits for the collective. Both are asynchronous: the thread returns at once.
//! 2. **Start** (progress thread, [`StreamOrder::poll_start`]): make dmsc's own stream wait
//!    for the start event (`cuStreamWaitEvent`), so the device work dmsc queues comes after
//!    the caller's, and query the event without blocking before the progress thread reads or
//!    sends device data through the host (staging).
//! 3. **Finish** (progress thread, [`StreamOrder::finish`]): record a *done* event on dmsc's
//!    stream after its last kernel or copy, and write the sequence number to the gate on the
//!    same stream (`cuStreamWriteValue32`), which releases the caller's stream when dmsc's
//!    device work has run. The done event is what `Work.wait()`-style front ends hand to
//!    `cuStreamWaitEvent` on another stream (torch's current stream), and what they query
//!    for completion.
//!
//! An operation that fails still opens the gate ([`StreamOrder::fail`]): the caller's stream
//! must never hang on a collective that will not finish; the failure goes to the
//! communicator's asynchronous error (NCCL's `ncclCommGetAsyncError`). Operations finish in
//! the order they were submitted (one progress thread runs them in order); the gate compares
//! cyclically, as `CU_STREAM_WAIT_VALUE_GEQ` does, so the 32-bit sequence may wrap.
//!
//! The stream and event operations are a trait, [`StreamOps`]: the CUDA driver implements it
//! with the feature on; the tests drive the state machine with a fake GPU that runs streams
//! as queues of commands.

use dmsc_core::error::{Error, Result};

/// The stream, event and stream-memory operations stream ordering needs. Every method only
/// queues work or looks at state; none blocks the calling thread.
pub trait StreamOps {
    /// A stream handle (`CUstream`).
    type Stream: Copy + std::fmt::Debug;
    /// An event (`CUevent`, created without timing).
    type Event;
    /// A 32-bit word the device can wait on and write (device or mapped host memory).
    type Gate;

    /// Create an event.
    fn create_event(&mut self) -> Result<Self::Event>;
    /// Create a gate holding `value`.
    fn create_gate(&mut self, value: u32) -> Result<Self::Gate>;
    /// `cuEventRecord`: the event completes when the work queued on `stream` so far has run.
    fn record(&mut self, event: &Self::Event, stream: Self::Stream) -> Result<()>;
    /// `cuEventQuery`: whether the event's last record has completed (`true` for an event
    /// never recorded).
    fn query(&mut self, event: &Self::Event) -> Result<bool>;
    /// `cuStreamWaitEvent`: work queued on `stream` after this waits for the event's last
    /// record as of this call.
    fn wait_event(&mut self, stream: Self::Stream, event: &Self::Event) -> Result<()>;
    /// `cuStreamWaitValue32(GEQ)`: work queued on `stream` after this waits until
    /// `(gate - value) as i32 >= 0`.
    fn wait_gate(&mut self, stream: Self::Stream, gate: &Self::Gate, value: u32) -> Result<()>;
    /// `cuStreamWriteValue32`: when `stream` gets there, the gate becomes `value`.
    fn open_gate(&mut self, stream: Self::Stream, gate: &Self::Gate, value: u32) -> Result<()>;
}

/// One submitted operation, from submit to finish.
#[derive(Debug)]
pub struct Ticket<E> {
    /// The operation's sequence number (the gate value that releases the caller).
    pub seq: u32,
    start: E,
    started: bool,
}

/// The stream ordering of one communicator's operations.
pub struct StreamOrder<S: StreamOps> {
    ops: S,
    /// dmsc's own stream, where its kernels and copies run.
    own: S::Stream,
    /// The word callers' streams wait on; holds the sequence number of the last operation
    /// finished on `own` (once `own` gets there).
    gate: S::Gate,
    /// The last sequence number handed out.
    submitted: u32,
    /// The last sequence number finished or failed.
    finished: u32,
}

impl<S: StreamOps> StreamOrder<S> {
    /// Ordering over `ops`, with dmsc's work on stream `own`.
    pub fn new(ops: S, own: S::Stream) -> Result<Self> {
        Self::starting_after(ops, own, 0)
    }

    /// Ordering whose first operation has sequence number `last + 1`.
    fn starting_after(mut ops: S, own: S::Stream, last: u32) -> Result<Self> {
        let gate = ops.create_gate(last)?;
        Ok(StreamOrder {
            ops,
            own,
            gate,
            submitted: last,
            finished: last,
        })
    }

    /// The stream operations (for the device work between start and finish).
    pub fn ops(&mut self) -> &mut S {
        &mut self.ops
    }

    /// Step 1, on the calling thread: order the next operation after the work queued on
    /// `caller`, and the caller's later work after the operation. Returns at once.
    pub fn submit(&mut self, caller: S::Stream) -> Result<Ticket<S::Event>> {
        let start = self.ops.create_event()?;
        self.ops.record(&start, caller)?;
        let seq = self.submitted.wrapping_add(1);
        self.ops.wait_gate(caller, &self.gate, seq)?;
        self.submitted = seq;
        Ok(Ticket {
            seq,
            start,
            started: false,
        })
    }

    /// Step 2, on the progress thread: whether the caller's earlier work has run. The first
    /// call also orders dmsc's stream after it. Never blocks; poll again later on `false`.
    pub fn poll_start(&mut self, t: &mut Ticket<S::Event>) -> Result<bool> {
        if !t.started {
            self.ops.wait_event(self.own, &t.start)?;
            t.started = true;
        }
        self.ops.query(&t.start)
    }

    /// Step 3, on the progress thread, after the operation's last kernel or copy was queued
    /// on dmsc's stream: the done event (for `cuStreamWaitEvent` on other streams, and for
    /// completion queries), and the caller's stream released when the device gets there.
    pub fn finish(&mut self, t: Ticket<S::Event>) -> Result<S::Event> {
        self.check_order(&t)?;
        let done = self.ops.create_event()?;
        self.ops.record(&done, self.own)?;
        self.ops.open_gate(self.own, &self.gate, t.seq)?;
        self.finished = t.seq;
        Ok(done)
    }

    /// Release the caller's stream after a failed operation (the error itself goes to the
    /// communicator's asynchronous error). Also orders dmsc's stream after the caller's
    /// earlier work if that was not done yet, so later operations keep their order.
    pub fn fail(&mut self, mut t: Ticket<S::Event>) -> Result<()> {
        self.check_order(&t)?;
        if !t.started {
            self.ops.wait_event(self.own, &t.start)?;
            t.started = true;
        }
        self.ops.open_gate(self.own, &self.gate, t.seq)?;
        self.finished = t.seq;
        Ok(())
    }

    fn check_order(&self, t: &Ticket<S::Event>) -> Result<()> {
        let next = self.finished.wrapping_add(1);
        if t.seq != next {
            return Err(Error::internal(format!(
                "stream-ordered operation {} finished before operation {next}",
                t.seq
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::fake_gpu::{Cmd, FakeGpu};

    /// A fake GPU with the caller's stream 0 and dmsc's stream 1.
    fn order() -> StreamOrder<FakeGpu> {
        StreamOrder::new(FakeGpu::new(2), 1).unwrap()
    }

    #[test]
    fn the_operation_starts_after_the_callers_earlier_work() {
        let mut o = order();
        o.ops().push(0, Cmd::Work("producer"));
        o.ops().block(0); // the producer kernel is still running
        let mut t = o.submit(0).unwrap();
        assert!(!o.poll_start(&mut t).unwrap());
        o.ops().push(1, Cmd::Work("reduce"));
        o.ops().run();
        assert!(
            o.ops().ran().is_empty(),
            "dmsc's kernel ran before the caller's producer"
        );
        o.ops().unblock(0);
        o.ops().run();
        assert!(o.poll_start(&mut t).unwrap());
        assert_eq!(o.ops().ran(), ["producer", "reduce"]);
    }

    #[test]
    fn the_callers_later_work_waits_for_the_finish() {
        let mut o = order();
        let mut t = o.submit(0).unwrap();
        o.ops().push(0, Cmd::Work("consumer"));
        o.ops().run();
        assert!(o.poll_start(&mut t).unwrap());
        assert!(
            o.ops().ran().is_empty(),
            "the consumer ran before the collective"
        );
        o.ops().push(1, Cmd::Work("reduce"));
        let done = o.finish(t).unwrap();
        o.ops().block(1);
        o.ops().run();
        assert!(!o.ops().query(&done).unwrap());
        assert!(
            o.ops().ran().is_empty(),
            "the consumer ran before dmsc's kernel"
        );
        o.ops().unblock(1);
        o.ops().run();
        assert!(o.ops().query(&done).unwrap());
        assert_eq!(o.ops().ran(), ["reduce", "consumer"]);
    }

    #[test]
    fn submit_never_waits_for_the_device() {
        // The caller's stream is stuck: submit still returns, having only queued commands.
        let mut o = order();
        o.ops().block(0);
        o.ops().push(0, Cmd::Work("stuck"));
        let before = o.ops().executed();
        let t = o.submit(0).unwrap();
        assert_eq!(o.ops().executed(), before, "submit ran device work");
        assert_eq!(t.seq, 1);
        assert_eq!(o.ops().queued(0), 3); // the stuck kernel, the record, the gate wait
    }

    #[test]
    fn a_failed_operation_still_releases_the_callers_stream() {
        let mut o = order();
        let t = o.submit(0).unwrap();
        o.ops().push(0, Cmd::Work("consumer"));
        o.fail(t).unwrap();
        o.ops().run();
        assert_eq!(o.ops().ran(), ["consumer"]);
    }

    #[test]
    fn operations_release_their_callers_in_order_and_refuse_to_finish_out_of_order() {
        let mut o = order();
        let mut a = o.submit(0).unwrap();
        o.ops().push(0, Cmd::Work("after a"));
        let mut b = o.submit(0).unwrap();
        o.ops().push(0, Cmd::Work("after b"));
        o.ops().run();
        assert!(o.poll_start(&mut a).unwrap());
        assert!(
            !o.poll_start(&mut b).unwrap(),
            "b started before a finished"
        );
        let err = o.finish(b).unwrap_err();
        assert!(
            err.to_string().contains("finished before operation 1"),
            "{err}"
        );
        // The refused ticket is gone; a new order shows a, then a later op, releasing in turn.
        let mut o = order();
        let a = o.submit(0).unwrap();
        o.ops().push(0, Cmd::Work("after a"));
        let b = o.submit(0).unwrap();
        o.ops().push(0, Cmd::Work("after b"));
        o.finish(a).unwrap();
        o.ops().run();
        assert_eq!(o.ops().ran(), ["after a"]);
        o.finish(b).unwrap();
        o.ops().run();
        assert_eq!(o.ops().ran(), ["after a", "after b"]);
    }

    #[test]
    fn the_gate_compares_cyclically_across_the_wrap_of_the_sequence() {
        let mut o = StreamOrder::starting_after(FakeGpu::new(2), 1, u32::MAX - 1).unwrap();
        for label in ["first", "second", "third"] {
            let t = o.submit(0).unwrap();
            o.ops().push(0, Cmd::Work(label));
            o.ops().run();
            assert!(
                !o.ops().ran().contains(&label),
                "{label} ran before its collective"
            );
            o.finish(t).unwrap();
            o.ops().run();
            assert!(o.ops().ran().contains(&label), "{label} never released");
        }
        assert_eq!(o.finished, 1);
    }
}
