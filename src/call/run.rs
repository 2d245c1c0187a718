//! Running a [`Call`]: the engine job it becomes (memory regions and the rank's schedule),
//! to completion on the calling thread or queued as a [`Request`].

use super::{Call, P2pCall, Shape, Span};
use crate::comm::{Communicator, Job};
use crate::device_call::staged::SelfCopy;
use crate::request::Request;
use dmsc_core::engine::{MemKind, OpMemory, Region};
use dmsc_core::plan::{self, P2p};
use dmsc_core::{CollDesc, CollKind, DataType, Error, Result};

fn region(s: Span) -> Region {
    Region {
        kind: s.kind,
        ..Region::host(s.ptr, s.len)
    }
}

impl Communicator {
    /// This rank and the number of ranks, for the builders of [`Call`].
    pub fn shape(&self) -> Shape {
        Shape {
            rank: self.rank(),
            size: self.size(),
        }
    }

    /// Run `call` to completion.
    ///
    /// # Safety
    /// Every span of `call` is valid for the whole call: inputs readable, outputs writable,
    /// and not accessed by anyone else in a conflicting way.
    ///
    /// A call on CUDA device buffers is ordered on the default stream and waited for (see
    /// [`Communicator::run_call_on_stream`] for the caller's own stream).
    pub unsafe fn run_call(&self, call: &Call) -> Result<()> {
        if call.memory() != MemKind::Host {
            // SAFETY: forwarded contract; 0 is the default stream.
            return unsafe { self.device_slot(call, 0) }.and_then(|s| {
                s.wait_until(None)
                    .unwrap_or_else(|| Err(Error::internal("a device call's slot never filled")))
            });
        }
        self.drain_device_calls();
        // SAFETY: forwarded contract.
        match unsafe { self.job(call) }? {
            Some(job) => self.run_blocking(job),
            None => Ok(()),
        }
    }

    /// Start `call` and return its request; the buffers are in use until it completes.
    ///
    /// # Safety
    /// As [`Communicator::run_call`], until the returned request has completed (`test`
    /// returned true, `wait` returned, or it was dropped), whatever lifetime `'a` the caller
    /// picks.
    pub unsafe fn start_call<'a>(&self, call: &Call) -> Request<'a> {
        if call.memory() != MemKind::Host {
            // SAFETY: forwarded contract; 0 is the default stream.
            return unsafe { self.start_call_on_stream(call, 0) };
        }
        self.drain_device_calls();
        // SAFETY: forwarded contract.
        match unsafe { self.job(call) } {
            Ok(Some(job)) => self.run_async(job),
            Ok(None) => Request::done(Ok(())),
            Err(e) => Request::done(Err(e)),
        }
    }

    /// The engine job of `call`; None when nothing is left to move (a group whose every
    /// operation was with this rank itself, done here).
    ///
    /// # Safety
    /// As [`Communicator::run_call`]: sends to this rank itself are copied now.
    pub(crate) unsafe fn job(&self, call: &Call) -> Result<Option<Job>> {
        let (copies, job) = self.job_parts(call)?;
        for c in copies {
            // SAFETY: the caller's contract covers both buffers; the builder checked that a
            // receive overlaps no other buffer of the group, and `copy` tolerates overlap.
            unsafe { std::ptr::copy(c.src, c.dst, c.len) };
        }
        Ok(job)
    }

    /// The engine job of a call on host memory, and the copies of its sends to this rank
    /// itself, not yet done (a staged device call does them once its host twins hold the
    /// data).
    pub(crate) fn job_parts(&self, call: &Call) -> Result<(Vec<SelfCopy>, Option<Job>)> {
        self.job_parts_on(call, MemKind::Host)
    }

    /// [`Communicator::job_parts`] of a call on memory of kind `on`: host memory (a host call,
    /// or a staged device call's twins), or device memory where the engine runs on it (the
    /// direct path of `device_call::stager`).
    pub(crate) fn job_parts_on(
        &self,
        call: &Call,
        on: MemKind,
    ) -> Result<(Vec<SelfCopy>, Option<Job>)> {
        let memory = call.memory();
        if memory != on {
            return Err(Error::internal(format!(
                "a call on {memory} reached the job builder for {on} (unstaged?)"
            )));
        }
        match call {
            Call::Collective {
                desc,
                input,
                output,
                factor,
            } => self
                .collective_job(*desc, *input, *output, *factor)
                .map(|j| (vec![], Some(j))),
            Call::AllToAllV {
                dtype,
                input,
                output,
                v,
            } => {
                let sched = plan::plan_all_to_all_v(
                    self.rank(),
                    self.size(),
                    *dtype,
                    &v[0],
                    &v[1],
                    &v[2],
                    &v[3],
                    input.is_none(),
                )?;
                let desc = CollDesc {
                    kind: CollKind::AllToAllV,
                    count: 0,
                    dtype: *dtype,
                    op: dmsc_core::ReduceOp::Sum,
                    root: 0,
                };
                let mem = OpMemory {
                    input: region(input.unwrap_or(*output)),
                    output: region(*output),
                    group: vec![],
                };
                let sched = sched.into();
                Ok((
                    vec![],
                    Some(Job::Collective {
                        desc,
                        sched,
                        mem,
                        premul: None,
                    }),
                ))
            }
            Call::P2p { dtype, ops } => self.p2p_job(*dtype, ops),
        }
    }

    /// A collective's job: its memory (in place, the whole buffer, with this rank's block
    /// for all-gather and reduce-scatter) and its schedule. With a premultiplication
    /// `factor`, the job multiplies the input when it runs and then runs out of place (see
    /// `Engine::run_collective_premul`), so the caller's input is never written (NCCL's rule
    /// for `sendbuff`); a reduction off the root then writes no output, as out of place.
    fn collective_job(
        &self,
        desc: CollDesc,
        input: Option<Span>,
        output: Span,
        factor: Option<f64>,
    ) -> Result<Job> {
        let es = desc.dtype.size();
        let (read, written) = match input {
            Some(i) => (i, output),
            None => {
                let block = || output.sub(self.rank() * desc.count * es, desc.count * es);
                match desc.kind {
                    CollKind::AllGather => (block(), output),
                    CollKind::ReduceScatter => (output, block()),
                    _ => (output, output),
                }
            }
        };
        let off_root = desc.kind == CollKind::Reduce && self.rank() != desc.root;
        let written = match factor {
            Some(_) if off_root => Region::EMPTY,
            _ => region(written),
        };
        let in_place = input.is_none() && factor.is_none();
        let mem = OpMemory {
            input: region(read),
            output: written,
            group: vec![],
        };
        let hosts = self.topology.hosts();
        let sched = self
            .plans
            .get(&desc, in_place, self.rank(), hosts, &self.config.plan)?;
        Ok(Job::Collective {
            desc,
            sched,
            mem,
            premul: factor,
        })
    }

    /// A group's job, and the copies of its sends to this rank itself into their receives
    /// (each matched in order with a receive from this rank, as NCCL allows), to be done
    /// before the job runs.
    fn p2p_job(&self, dtype: DataType, ops: &[P2pCall]) -> Result<(Vec<SelfCopy>, Option<Job>)> {
        let me = self.rank();
        let es = dtype.size();
        // Iterators, not collected lists: a group with no operation on this rank itself (the
        // usual case) allocates nothing here.
        let to_me = |send: bool| ops.iter().filter(move |o| o.peer == me && o.send == send);
        let others = || ops.iter().filter(|o| o.peer != me);
        let (sends, recvs) = (to_me(true).count(), to_me(false).count());
        if sends != recvs {
            return Err(Error::invalid(format!(
                "a group has {sends} send(s) to this rank ({me}) but {recvs} receive(s) from it; they must pair up"
            )));
        }
        for (s, r) in to_me(true).zip(to_me(false)) {
            let (sl, rl) = (s.buf.len / es, r.buf.len / es);
            if sl != rl || s.tag != r.tag {
                return Err(Error::invalid(format!(
                    "send to self of {sl} elements (tag {}) meets a receive of {rl} elements (tag {})",
                    s.tag, r.tag
                )));
            }
        }
        let copies = to_me(true)
            .zip(to_me(false))
            .map(|(s, r)| SelfCopy {
                dst: r.buf.ptr,
                src: s.buf.ptr,
                len: s.buf.len,
            })
            .collect();
        if others().next().is_none() {
            return Ok((copies, None));
        }
        let plan_ops: Vec<P2p> = others()
            .enumerate()
            .map(|(b, o)| {
                let (peer, buf, len) = (o.peer, b as u32, o.buf.len / es);
                if o.send {
                    P2p::Send { peer, buf, len }
                } else {
                    P2p::Recv { peer, buf, len }
                }
            })
            .collect();
        let sched = plan::plan_send_recv(me, self.size(), &plan_ops)?;
        Ok((
            copies,
            Some(Job::P2p {
                dtype,
                ops: plan_ops,
                tags: others().map(|o| o.tag).collect(),
                sched: sched.into(),
                mem: OpMemory {
                    input: Region::EMPTY,
                    output: Region::EMPTY,
                    group: others().map(|o| region(o.buf)).collect(),
                },
            }),
        ))
    }
}
