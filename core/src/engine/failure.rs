//! Failure handling: a failure is recorded once (sticky), told to every peer in a `Failed`
//! control message unless it came from one, and a peer's report of what went wrong first is
//! preferred to the bare loss of its connection. Control messages from peers arrive here too.

use super::control::{ControlMsg, ErrorClass};
use super::exec::{Exec, Labels};
use super::liveness::State;
use super::*;

impl Engine {
    /// Record a failure and tell every peer (unless it came from a peer).
    pub(super) fn fail(&mut self, e: Error, labels: &Labels) {
        self.fail_seq(e, labels.seq());
    }

    /// [`Engine::fail`] at operation `seq`.
    pub(super) fn fail_seq(&mut self, e: Error, seq: u64) {
        if let Error::PeerLost { peer, .. } = &e {
            self.live.lost(*peer);
        }
        let msg = match &e {
            Error::Mismatch { ranks, detail, .. } => Some(ControlMsg::Failed {
                seq,
                class: ErrorClass::Mismatch,
                ranks: ranks.iter().map(|&r| r as u32).collect(),
                text: detail.clone(),
            }),
            Error::Aborted { .. } => Some(ControlMsg::Failed {
                seq,
                class: ErrorClass::Aborted,
                ranks: vec![self.rank as u32],
                text: format!("rank {} aborted", self.rank),
            }),
            // Every rank hears of a lost peer from the first rank that noticed.
            Error::PeerLost { peer, detail } if !self.remote_failure => Some(ControlMsg::Failed {
                seq,
                class: ErrorClass::PeerLost,
                ranks: vec![*peer as u32],
                text: detail.clone(),
            }),
            Error::Remote { .. } | Error::Timeout { .. } | Error::PeerLost { .. } => None,
            other => Some(ControlMsg::Failed {
                seq,
                class: ErrorClass::Other,
                ranks: vec![self.rank as u32],
                text: other.to_string(),
            }),
        };
        if let Some(m) = msg {
            let bytes = m.encode();
            for p in (0..self.nranks).filter(|&p| p != self.rank) {
                self.transport.send_control(p, &bytes);
            }
            // Flush the control messages out before returning to the caller.
            let mut sink = Vec::new();
            let _ = self.transport.poll(&mut sink, Duration::ZERO);
        }
        self.set_failed(e);
    }

    /// Record an error found while idle (the first one only) and tell the peers.
    pub(super) fn fail_idle(&mut self, e: Error) {
        if self.failed.is_none() {
            self.fail_seq(e, self.completed);
        }
    }

    /// Wait up to `grace` for a peer's `Failed` control message and return it as an error.
    /// Stops early, after a few more polls to drain messages already arrived, once `peer`'s
    /// control stream has ended (nothing more can come from it), and on abort.
    pub(super) fn root_cause(&mut self, peer: Rank, grace: Duration) -> Option<Error> {
        let until = Instant::now() + grace;
        let mut comps = Vec::new();
        // After `peer`'s stream ended, keep draining for a while: another rank's report may
        // need several polls to arrive (header and payload complete separately), and on a
        // busy host this rank may have been descheduled while it came in.
        const DRAIN: u32 = 20;
        let mut drain = DRAIN;
        loop {
            comps.clear();
            let wait = if drain < DRAIN {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(5)
            };
            if self.poll_io(&mut comps, wait).is_err() {
                return None;
            }
            for c in comps.drain(..) {
                if let Completion::Control { peer, payload } = c {
                    if let Err(e) = self.on_control(peer, &payload) {
                        return Some(e);
                    }
                }
            }
            if self.live.state(peer) != Some(&State::Live) {
                drain -= 1;
            }
            if drain == 0 || self.abort.is_aborted() || Instant::now() >= until {
                return None;
            }
        }
    }

    /// Completions that are not chunk completions of the current operation.
    pub(super) fn on_other(&mut self, c: &Completion, ex: &Exec) -> Result<()> {
        match c {
            Completion::BadHeader { peer, got, .. } => Err(self.bad_header(*peer, got, ex)),
            Completion::PeerFailed { peer, error } => Err(Error::PeerLost {
                peer: *peer,
                detail: format!(
                    "during {} on rank {}: {error}",
                    ex.labels.describe(),
                    self.rank
                ),
            }),
            // Noted by `poll_io`; `check_peers` decides whether the operation still needs it.
            Completion::Closed { .. } => Ok(()),
            Completion::Control { peer, payload } => self.on_control(*peer, payload),
            Completion::Sent { token } | Completion::Received { token, .. } => {
                Err(Error::internal(format!(
                    "completion for token {token:#x} of no operation in progress"
                )))
            }
        }
    }

    pub(super) fn on_control(&mut self, peer: Rank, payload: &[u8]) -> Result<()> {
        match ControlMsg::decode(payload)? {
            ControlMsg::Failed {
                seq,
                class,
                ranks,
                text,
            } => {
                self.remote_failure = true;
                Err(match class {
                    ErrorClass::Mismatch => Error::Mismatch {
                        seq,
                        ranks: ranks.into_iter().map(|r| r as usize).collect(),
                        detail: text,
                    },
                    ErrorClass::Aborted => Error::Remote {
                        from: peer,
                        detail: format!("rank {peer} aborted the communicator"),
                    },
                    ErrorClass::Other => Error::Remote {
                        from: peer,
                        detail: text,
                    },
                    ErrorClass::PeerLost => Error::PeerLost {
                        peer: ranks.first().map_or(peer, |&r| r as usize),
                        detail: format!("{text} (reported by rank {peer})"),
                    },
                })
            }
            ControlMsg::Heartbeat => Ok(()),
            ControlMsg::Bye => {
                self.live.left(peer);
                Ok(())
            }
            ControlMsg::StatusQuery => {
                let reply = ControlMsg::Status {
                    started: self.started,
                    completed: self.completed,
                    current: self.current,
                };
                self.transport.send_control(peer, &reply.encode());
                Ok(())
            }
            ControlMsg::Status {
                started,
                completed,
                current,
            } => {
                // One entry per peer: a repeated or unrequested reply replaces the last one,
                // so a chatty peer cannot grow this list.
                let entry = (peer, started, completed, current);
                match self.statuses.iter_mut().find(|s| s.0 == peer) {
                    Some(s) => *s = entry,
                    None => self.statuses.push(entry),
                }
                Ok(())
            }
        }
    }
}
