//! Packet spraying: one peer reached over several paths, sans-IO.
//!
//! A transfer (one engine frame to one peer) is cut into at most [`wire::MAX_SEGS`]
//! segments. Each segment carries `{transfer id, segment index, offset, length, epoch}` in a
//! [`wire::UnitHeader`] and the transfer's engine header, and the receiver writes it straight
//! to its offset in the destination, so segments may arrive in any order and on any path,
//! and a copy that arrives twice is harmless. A segment counts as delivered only when the
//! receiver acknowledges it ([`wire::Ack`]: cumulative plus selective, on any healthy path);
//! a transfer completes on the sending side only when all of its segments are acknowledged.
//!
//! * [`Sender`] decides which path carries each segment: by default the path whose expected
//!   completion time (bytes queued on it plus the segment, over its measured delivery rate)
//!   is earliest, within a window of about 20 ms of its rate ([`Mode`]). It suspects a path
//!   that has data outstanding and no delivery for a bound derived from its round trip (at
//!   least [`path::SUSPECT_FLOOR`]), while another path still delivers, and moves that
//!   path's unacknowledged segments to the others at once. It duplicates slow tail segments
//!   on an idle faster path, within a byte budget. It says when a failed path may be
//!   connected again (backoff, longer for a path that flaps), and re-admits it with a small
//!   window that grows with its deliveries.
//! * [`PathScheduler`] makes the same choice, on the same per-path state, for transports
//!   whose paths report each message's completion themselves (RDMA queue pairs).
//! * [`Receiver`] places arriving segments (directly, or into a side buffer when the receive
//!   is not posted yet or another path is still writing the same segment), completes
//!   receives, checks every segment's engine header against the receive, and builds acks.
//!
//! No sockets, no clocks: time comes in as an argument, so the tests drive a pair of
//! endpoints over simulated paths with a fake clock, in the manner of quinn-proto's tests.
//! The design draws on multipath TCP's schedulers (the earliest-completion-first scheduler
//! of Lim et al., "ECF: An MPTCP Path Scheduler to Manage Heterogeneous Paths", CoNEXT 2017)
//! and on SACK (RFC 2018) for the acknowledgements.

pub mod path;
mod receiver;
pub mod scheduler;
mod sender;
pub mod wire;

#[cfg(test)]
mod sim_tests;

pub use path::{PathMetrics, PathState};
pub use receiver::{Placement, Receiver, STUCK_WRITER};
pub use scheduler::PathScheduler;
pub use sender::{Sender, Transmit};

use crate::error::{Error, Result};

/// How the sender picks a path for each segment (`DMSC_SPRAY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Earliest expected completion by measured rate (the default).
    Adaptive,
    /// Each path in turn, ignoring speed (for comparison).
    RoundRobin,
    /// One path at a time: the lowest-numbered live one (failover only).
    Single,
}

impl Mode {
    /// Parse `adaptive`, `roundrobin` (or `rr`), `single`.
    pub fn parse(s: &str) -> Result<Mode> {
        match s.to_ascii_lowercase().as_str() {
            "" | "adaptive" => Ok(Mode::Adaptive),
            "roundrobin" | "round-robin" | "rr" => Ok(Mode::RoundRobin),
            "single" => Ok(Mode::Single),
            other => Err(Error::invalid(format!(
                "DMSC_SPRAY={other} is not one of adaptive, roundrobin, single"
            ))),
        }
    }

    /// Name as accepted by [`Mode::parse`].
    pub fn name(self) -> &'static str {
        match self {
            Mode::Adaptive => "adaptive",
            Mode::RoundRobin => "roundrobin",
            Mode::Single => "single",
        }
    }
}

/// Settings of the spraying layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SprayConfig {
    /// Path choice.
    pub mode: Mode,
    /// Smallest segment in bytes (`DMSC_SPRAY_SEGMENT`). Segments carry about 1 ms of the
    /// paths' combined measured rate, at least this and at most 1 MiB; a transfer is cut
    /// into at most [`wire::MAX_SEGS`].
    pub segment_bytes: usize,
    /// Most bytes duplicated at the tail, as a fraction of the bytes sent.
    pub max_duplicate_fraction: f64,
}

impl Default for SprayConfig {
    fn default() -> Self {
        SprayConfig {
            mode: Mode::Adaptive,
            segment_bytes: 128 << 10,
            max_duplicate_fraction: 0.05,
        }
    }
}

/// Segment length and count of a transfer of `total` bytes.
pub fn segmentation(total: u64, segment_bytes: usize) -> (u64, u32) {
    let min = (segment_bytes.max(1)) as u64;
    let seg = min.max(total.div_ceil(wire::MAX_SEGS as u64));
    let n = total.div_ceil(seg).max(1);
    (seg, n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse("RR").unwrap(), Mode::RoundRobin);
        assert_eq!(Mode::parse("").unwrap(), Mode::Adaptive);
        assert!(Mode::parse("fastest")
            .unwrap_err()
            .to_string()
            .contains("DMSC_SPRAY=fastest"));
    }

    #[test]
    fn transfers_are_cut_into_bounded_segments() {
        assert_eq!(segmentation(0, 1000), (1000, 1));
        assert_eq!(segmentation(1000, 1000), (1000, 1));
        assert_eq!(segmentation(1001, 1000), (1000, 2));
        let (seg, n) = segmentation(64 << 20, 128 << 10);
        assert_eq!(n, wire::MAX_SEGS);
        assert_eq!(seg, 1 << 20);
    }
}
