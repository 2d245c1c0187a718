//! A FAKE GPU for the stream-ordering tests: streams are queues of commands that
//! [`FakeGpu::run`] executes in order, the way a device would, with the CUDA semantics that
//! [`StreamOps`] documents (an event wait sees the record made before it; a gate wait
//! compares cyclically). Nothing here touches CUDA.

use super::stream_order::StreamOps;
use dmsc_core::error::{Error, Result};
use std::collections::VecDeque;

/// A command queued on a fake stream.
#[derive(Clone, Debug)]
pub(crate) enum Cmd {
    /// A kernel or copy, logged by its label when it runs.
    Work(&'static str),
    /// Complete record number `n` of event `e`.
    Record { e: usize, n: u64 },
    /// Wait until record number `n` of event `e` has completed.
    WaitEvent { e: usize, n: u64 },
    /// Wait until `(gate g - value) as i32 >= 0`.
    WaitGate { g: usize, value: u32 },
    /// Set gate `g` to `value`.
    WriteGate { g: usize, value: u32 },
}

/// The fake device: command queues, event and gate state, and a log of the work run.
pub(crate) struct FakeGpu {
    streams: Vec<VecDeque<Cmd>>,
    blocked: Vec<bool>,
    /// Per event: (records made, records completed).
    events: Vec<(u64, u64)>,
    gates: Vec<u32>,
    ran: Vec<&'static str>,
    executed: usize,
}

impl FakeGpu {
    /// A fake device with streams `0..streams`.
    pub(crate) fn new(streams: usize) -> Self {
        FakeGpu {
            streams: vec![VecDeque::new(); streams],
            blocked: vec![false; streams],
            events: Vec::new(),
            gates: Vec::new(),
            ran: Vec::new(),
            executed: 0,
        }
    }

    /// Queue `cmd` on `stream`.
    pub(crate) fn push(&mut self, stream: usize, cmd: Cmd) {
        self.streams[stream].push_back(cmd);
    }

    /// Hold `stream` where it is (its current command is still running).
    pub(crate) fn block(&mut self, stream: usize) {
        self.blocked[stream] = true;
    }

    /// Let `stream` go on.
    pub(crate) fn unblock(&mut self, stream: usize) {
        self.blocked[stream] = false;
    }

    /// The labels of the work run so far, in order.
    pub(crate) fn ran(&self) -> &[&'static str] {
        &self.ran
    }

    /// How many commands have been executed.
    pub(crate) fn executed(&self) -> usize {
        self.executed
    }

    /// How many commands wait on `stream`.
    pub(crate) fn queued(&self, stream: usize) -> usize {
        self.streams[stream].len()
    }

    /// Execute commands on every stream until none can go on.
    pub(crate) fn run(&mut self) {
        loop {
            let mut progress = false;
            for s in 0..self.streams.len() {
                while !self.blocked[s] {
                    let Some(cmd) = self.streams[s].front().cloned() else {
                        break;
                    };
                    let ready = match cmd {
                        Cmd::WaitEvent { e, n } => self.events[e].1 >= n,
                        Cmd::WaitGate { g, value } => self.gates[g].wrapping_sub(value) as i32 >= 0,
                        _ => true,
                    };
                    if !ready {
                        break;
                    }
                    match cmd {
                        Cmd::Work(label) => self.ran.push(label),
                        Cmd::Record { e, n } => self.events[e].1 = self.events[e].1.max(n),
                        Cmd::WriteGate { g, value } => self.gates[g] = value,
                        Cmd::WaitEvent { .. } | Cmd::WaitGate { .. } => {}
                    }
                    self.streams[s].pop_front();
                    self.executed += 1;
                    progress = true;
                }
            }
            if !progress {
                return;
            }
        }
    }

    fn stream(&self, s: usize) -> Result<usize> {
        if s < self.streams.len() {
            Ok(s)
        } else {
            Err(Error::invalid(format!("the fake GPU has no stream {s}")))
        }
    }
}

impl StreamOps for FakeGpu {
    type Stream = usize;
    type Event = usize;
    type Gate = usize;

    fn create_event(&mut self) -> Result<usize> {
        self.events.push((0, 0));
        Ok(self.events.len() - 1)
    }

    fn create_gate(&mut self, value: u32) -> Result<usize> {
        self.gates.push(value);
        Ok(self.gates.len() - 1)
    }

    fn record(&mut self, event: &usize, stream: usize) -> Result<()> {
        let s = self.stream(stream)?;
        self.events[*event].0 += 1;
        let n = self.events[*event].0;
        self.push(s, Cmd::Record { e: *event, n });
        Ok(())
    }

    fn query(&mut self, event: &usize) -> Result<bool> {
        let (made, done) = self.events[*event];
        Ok(done >= made)
    }

    fn wait_event(&mut self, stream: usize, event: &usize) -> Result<()> {
        let s = self.stream(stream)?;
        // As cuStreamWaitEvent: waits for the record made before this call; none, no wait.
        let n = self.events[*event].0;
        self.push(s, Cmd::WaitEvent { e: *event, n });
        Ok(())
    }

    fn wait_gate(&mut self, stream: usize, gate: &usize, value: u32) -> Result<()> {
        let s = self.stream(stream)?;
        self.push(s, Cmd::WaitGate { g: *gate, value });
        Ok(())
    }

    fn open_gate(&mut self, stream: usize, gate: &usize, value: u32) -> Result<()> {
        let s = self.stream(stream)?;
        self.push(s, Cmd::WriteGate { g: *gate, value });
        Ok(())
    }
}

#[test]
fn the_fake_waits_only_for_records_made_before_the_wait() {
    let mut gpu = FakeGpu::new(2);
    let e = gpu.create_event().unwrap();
    gpu.wait_event(1, &e).unwrap(); // never recorded: no wait
    gpu.push(1, Cmd::Work("free"));
    gpu.block(0);
    gpu.record(&e, 0).unwrap();
    gpu.wait_event(1, &e).unwrap();
    gpu.push(1, Cmd::Work("after record"));
    gpu.run();
    assert_eq!(gpu.ran(), ["free"]);
    assert!(!gpu.query(&e).unwrap());
    gpu.unblock(0);
    gpu.run();
    assert_eq!(gpu.ran(), ["free", "after record"]);
    assert!(gpu.query(&e).unwrap());
}
