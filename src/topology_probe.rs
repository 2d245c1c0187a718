//! The topology probe's I/O: the meetings `dmsc_core::topology::probe` plans, held over the
//! communicator's own sends and receives, and the all-gather that gives every rank every
//! figure. It runs once, when a communicator that spans several hosts is created, and takes
//! a few milliseconds per round of meetings (see the plan's module docs for the bound).

use crate::comm::Communicator;
use dmsc_core::topology::ladder::{self, Ladder};
use dmsc_core::topology::probe::{self, Meeting, Record, Role};
use dmsc_core::topology::{Link, Topology};
use dmsc_core::{Error, Result};
use std::time::Instant;

/// Tag of the probe's messages; the probe runs before the communicator is handed to the
/// caller, so no user message can be in flight.
const TAG: u32 = 0x7090_0be0;

impl Communicator {
    /// When the communicator spans several hosts and `DMSC_TOPO_PROBE` is on, measure its
    /// links and price the algorithms with them: `config.plan.model` becomes the measured
    /// model within hosts, `config.plan.inter` the one between hosts (each the default where
    /// nothing was measured). Every rank gathers the same figures, so every rank plans alike.
    pub(crate) fn measure_topology(&mut self) -> Result<()> {
        if self.topology.nhosts() < 2 {
            return Ok(());
        }
        if self.config.topo_probe {
            let mut topo = self.topology.clone();
            let t = Instant::now();
            probe(self, &mut topo)?;
            log::info!(
                target: dmsc_core::subsys::INIT,
                "topology probe took {:.1} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
            self.topology = topo;
        }
        let plan = &mut self.config.plan;
        (plan.model, plan.inter) = self.topology.models(plan.model, plan.inter);
        Ok(())
    }
}

/// Measure the links of `topo` by meeting the peers the probe plans for this rank, and
/// gather every rank's figures into `topo`.
fn probe(comm: &Communicator, topo: &mut Topology) -> Result<()> {
    let hosts = topo.hosts().clone();
    let mut rec = Record::empty(topo.nhosts());
    for m in probe::meetings(&hosts, comm.rank()) {
        if let Some(l) = meet(comm, &m)? {
            match m.round {
                None => rec.intra = Some(l),
                Some(i) => rec.inter[i] = Some((hosts.host_of(m.peer), l)),
            }
        }
    }
    let mine = rec.encode();
    let mut all = vec![0f64; mine.len() * comm.size()];
    comm.all_gather(&mine, &mut all)?;
    probe::assemble(topo, &all)
}

/// Hold one meeting; the initiator returns what it measured.
fn meet(comm: &Communicator, m: &Meeting) -> Result<Option<Link>> {
    let peer = m.peer;
    let mut rtts = Vec::with_capacity(probe::PINGS);
    let ping = [0u8; 8];
    let mut pong = [0u8; 8];
    for _ in 0..probe::PINGS {
        match m.role {
            Role::Initiator => {
                let t = Instant::now();
                comm.send(&ping, peer, TAG)?;
                comm.recv(&mut pong, peer, TAG)?;
                rtts.push(t.elapsed().as_secs_f64());
            }
            Role::Responder => {
                comm.recv(&mut pong, peer, TAG)?;
                comm.send(&ping, peer, TAG)?;
            }
        }
    }
    let mut ladder = Ladder::new();
    loop {
        let bytes = match m.role {
            Role::Initiator => {
                let next = ladder.next();
                comm.send(&[next.unwrap_or(0) as u64], peer, TAG)?;
                next
            }
            Role::Responder => {
                let mut b = [0u64];
                comm.recv(&mut b, peer, TAG)?;
                match b[0] {
                    0 => None,
                    b if (ladder::START as u64..=ladder::MAX as u64).contains(&b) => {
                        Some(b as usize)
                    }
                    b => {
                        return Err(Error::protocol(format!(
                            "topology probe: rank {peer} asked for an exchange of {b} bytes, \
                             outside {}..={}",
                            ladder::START,
                            ladder::MAX
                        )))
                    }
                }
            }
        };
        let Some(bytes) = bytes else { break };
        let secs = exchange(comm, peer, bytes)?;
        ladder.record(bytes, secs);
    }
    Ok(match (m.role, ladder.rate()) {
        (Role::Initiator, Some(bytes_per_s)) => Some(Link {
            latency_s: probe::latency(&rtts)?,
            bytes_per_s,
        }),
        _ => None,
    })
}

/// Send `bytes` to `peer` while receiving as many from it; the seconds it took.
fn exchange(comm: &Communicator, peer: usize, bytes: usize) -> Result<f64> {
    // Non-zero fills touch every page first, so no page fault is timed.
    let out = vec![1u8; bytes];
    let mut inn = vec![1u8; bytes];
    let t = Instant::now();
    let mut g = comm.group();
    g.send(&out, peer, TAG)?;
    g.recv(&mut inn, peer, TAG)?;
    g.end()?;
    Ok(t.elapsed().as_secs_f64())
}
