//! Measuring the link matrix with dmsc itself: a short point-to-point probe.
//!
//! dmsc has no `Communicator::topology()` yet, so every pair of ranks, one pair at a time,
//! runs a ping-pong of small messages (latency = half the round trip) and then streams large
//! messages each way (bandwidth = bytes / time). Every rank must call
//! [`measure`]; each measured entry is written by one rank and an all-reduce gives every rank
//! the whole matrix.

use crate::cluster::LinkMatrix;
use crate::error::Result;
use dmsc::{Communicator, ReduceOp};
use std::time::Instant;

/// Probe sizes.
#[derive(Clone, Copy, Debug)]
pub struct ProbeOptions {
    /// Round trips for the latency.
    pub pings: usize,
    /// Bytes of each bandwidth message.
    pub large_bytes: usize,
    /// Large messages per direction.
    pub reps: usize,
}

impl Default for ProbeOptions {
    fn default() -> ProbeOptions {
        ProbeOptions {
            pings: 20,
            large_bytes: 4 << 20,
            reps: 4,
        }
    }
}

const TAG: u32 = 0x5c4e_0000;

/// Stream `reps` large messages to `peer` and wait for its one-byte acknowledgement; seconds.
fn stream_to(comm: &Communicator, peer: usize, buf: &[u8], reps: usize) -> Result<f64> {
    let mut ack = [0u8; 1];
    let t = Instant::now();
    for _ in 0..reps {
        comm.send(buf, peer, TAG + 2)?;
    }
    comm.recv(&mut ack, peer, TAG + 3)?;
    Ok(t.elapsed().as_secs_f64())
}

fn stream_from(comm: &Communicator, peer: usize, buf: &mut [u8], reps: usize) -> Result<()> {
    for _ in 0..reps {
        comm.recv(buf, peer, TAG + 2)?;
    }
    comm.send(&[1u8], peer, TAG + 3)?;
    Ok(())
}

/// Measure bandwidth and latency between every pair of ranks (collective: every rank calls it).
pub fn measure(comm: &Communicator, opts: ProbeOptions) -> Result<LinkMatrix> {
    let n = comm.size();
    let me = comm.rank();
    let mut bw = vec![0f64; n * n];
    let mut lat = vec![0f64; n * n];
    let mut buf = vec![0u8; opts.large_bytes.max(1)];
    let mut small = [0u8; 8];
    for a in 0..n {
        for b in a + 1..n {
            if me == a || me == b {
                let peer = if me == a { b } else { a };
                // Warm up the connection, then ping-pong.
                for i in 0..=opts.pings {
                    let t = Instant::now();
                    if me == a {
                        comm.send(&small, peer, TAG)?;
                        comm.recv(&mut small, peer, TAG + 1)?;
                    } else {
                        comm.recv(&mut small, peer, TAG)?;
                        comm.send(&small, peer, TAG + 1)?;
                    }
                    if i > 0 && me == a {
                        lat[a * n + b] += t.elapsed().as_secs_f64() / 2.0 / opts.pings as f64;
                    }
                }
                // a → b, then b → a; each sender times its own direction.
                for (from, to) in [(a, b), (b, a)] {
                    if me == from {
                        stream_to(comm, to, &buf, 1)?; // warm-up
                        let s = stream_to(comm, to, &buf, opts.reps)?;
                        // The time includes one small acknowledgement: negligible next to
                        // several megabytes.
                        bw[from * n + to] = (opts.reps * buf.len()) as f64 / s;
                    } else {
                        stream_from(comm, from, &mut buf, 1)?;
                        stream_from(comm, from, &mut buf, opts.reps)?;
                    }
                }
            }
            comm.barrier()?;
        }
    }
    comm.all_reduce_in_place(&mut bw, ReduceOp::Sum)?;
    comm.all_reduce_in_place(&mut lat, ReduceOp::Sum)?;
    let mut m = LinkMatrix::uniform(n, 0.0, 0.0);
    for i in 0..n {
        for j in 0..n {
            if i != j {
                m.bandwidth[i][j] = bw[i * n + j];
                let (x, y) = (i.min(j), i.max(j));
                m.latency[i][j] = lat[x * n + y];
            }
        }
    }
    Ok(m)
}
