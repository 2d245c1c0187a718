//! The texts that name what went wrong: a mismatched call (from the header that arrived
//! against the one expected) and a timeout (asking every peer where it is and naming the
//! ranks not in this operation).

use super::control::ControlMsg;
use super::exec::{Exec, Labels};
use super::*;

impl Engine {
    pub(super) fn bad_header(
        &self,
        peer: Rank,
        got: &crate::wire::FrameHeader,
        ex: &Exec,
    ) -> Error {
        if got.crc.is_some() != self.cfg.checksum {
            let (on, off) = if self.cfg.checksum {
                (self.rank, peer)
            } else {
                (peer, self.rank)
            };
            return Error::usage(format!(
                "rank {on} checksums its chunks (DMSC_CHECKSUM=1) and rank {off} does not; DMSC_CHECKSUM must be the same on every rank"
            ));
        }
        match &ex.labels {
            Labels::Collective { seq, desc } => {
                let detail = if got.desc.kind == CollKind::SendRecv {
                    format!(
                        "rank {} called {desc} (#{seq}) while rank {peer} sent a point-to-point message",
                        self.rank
                    )
                } else if got.seq != *seq {
                    format!(
                        "rank {} is at operation #{seq} ({desc}) while rank {peer} sent data of operation #{} ({}); the ranks called different numbers of collectives",
                        self.rank, got.seq, got.desc
                    )
                } else if let Some(d) = desc.difference(&got.desc) {
                    format!(
                        "{d}: rank {} called {desc}, rank {peer} called {}",
                        self.rank, got.desc
                    )
                } else {
                    format!(
                        "rank {peer} sent a message of {} bytes (message {}, chunk {}) where rank {} expected a different layout; per-rank counts or displacements disagree",
                        got.len, got.msg, got.chunk, self.rank
                    )
                };
                Error::Mismatch {
                    seq: *seq,
                    ranks: sorted(self.rank, peer),
                    detail,
                }
            }
            Labels::P2p { .. } => {
                let detail = if got.desc.kind != CollKind::SendRecv {
                    format!(
                        "rank {} posted a receive from rank {peer}, which sent data of collective #{} ({})",
                        self.rank, got.seq, got.desc
                    )
                } else {
                    format!(
                        "rank {peer} sent message #{} with tag {} and {} bytes ({}), which does not match rank {}'s receive (same order, tag, size and type are required)",
                        got.seq, got.aux, got.len, got.desc.dtype, self.rank
                    )
                };
                Error::Mismatch {
                    seq: 0,
                    ranks: sorted(self.rank, peer),
                    detail,
                }
            }
        }
    }

    /// Build the timeout error: ask every peer where it is and name the ones not in this
    /// operation.
    pub(super) fn timeout_error(&mut self, ex: &Exec, started_at: Instant) -> Error {
        let (seq, op) = (ex.labels.seq(), ex.labels.describe());
        self.statuses.clear();
        let q = ControlMsg::StatusQuery.encode();
        for p in (0..self.nranks).filter(|&p| p != self.rank) {
            self.transport.send_control(p, &q);
        }
        let grace = Instant::now() + self.cfg.status_grace;
        let mut comps = Vec::new();
        let remote = self.remote_failure;
        while self.statuses.len() + 1 < self.nranks
            && Instant::now() < grace
            && !self.abort.is_aborted()
        {
            comps.clear();
            if self.poll_io(&mut comps, Duration::from_millis(10)).is_err() {
                break;
            }
            for c in comps.drain(..) {
                if let Completion::Control { peer, payload } = c {
                    let _ = self.on_control(peer, &payload);
                }
            }
        }
        // Errors met while gathering statuses are not this timeout's.
        self.remote_failure = remote;
        let now = Instant::now();
        let waiting = ex.waiting_on();
        let mut missing = Vec::new();
        let mut lines = Vec::new();
        for p in (0..self.nranks).filter(|&p| p != self.rank) {
            match self.statuses.iter().find(|s| s.0 == p) {
                None => {
                    missing.push(p);
                    lines.push(format!(
                        "rank {p}: no answer ({})",
                        self.live.describe(p, now)
                    ));
                }
                Some(&(_, started, completed, current)) => {
                    let in_this = seq != 0 && started == seq && current.is_some();
                    if seq != 0 && !in_this {
                        missing.push(p);
                    }
                    lines.push(match current {
                        Some(d) => format!("rank {p}: in {d} #{started}"),
                        None => format!("rank {p}: idle after #{completed}"),
                    });
                }
            }
        }
        if seq == 0 {
            missing = waiting.clone();
        }
        Error::Timeout {
            op: format!("{op} on rank {}", self.rank),
            waited_s: started_at.elapsed().as_secs_f64(),
            missing,
            detail: format!(
                "rank {} is at {} waiting on rank(s) {:?}; {}",
                self.rank,
                ex.where_am_i(),
                waiting,
                lines.join("; ")
            ),
        }
    }
}

pub(super) fn sorted(a: Rank, b: Rank) -> Vec<Rank> {
    if a < b {
        vec![a, b]
    } else {
        vec![b, a]
    }
}
