//! Control messages: small out-of-band messages between the engines of a communicator.
//!
//! They carry an error from the rank that detected it to every other rank (so that a mismatch
//! seen between two ranks is reported on all of them), and the status queries that turn a
//! timeout into a report of which rank is where (the role of PyTorch's desync debugging),
//! and the heartbeats and goodbyes by which ranks tell a stopped or killed peer from a quiet
//! one (see `super::liveness`).
//! Decoding is bounded and never panics.
//!
//! The first byte of a message is its tag. Tags from [`FIRST_TRANSPORT_TAG`] up are reserved
//! for transports' own messages on the control channel (the memory-attach layer's
//! acknowledgements): a transport consumes them before the engine sees them, and
//! [`ControlMsg::decode`] names them as such if one ever reaches it.

use crate::codec::Reader;
use crate::error::{Error, Result};
use crate::types::{CollDesc, CollKind, DataType, ReduceOp};
use crate::wire::MAX_CONTROL;

/// The first control-message tag reserved for transports.
pub const FIRST_TRANSPORT_TAG: u8 = 0x80;

/// One control message.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlMsg {
    /// The sender failed operation `seq` with `error`; the receiver fails too.
    Failed {
        /// Operation sequence number.
        seq: u64,
        /// Error class: see [`ErrorClass`].
        class: ErrorClass,
        /// Ranks the error names.
        ranks: Vec<u32>,
        /// The error's sentence.
        text: String,
    },
    /// Ask the receiver where it is.
    StatusQuery,
    /// Where the sender is.
    Status {
        /// Sequence number of the last operation started.
        started: u64,
        /// Sequence number of the last operation completed.
        completed: u64,
        /// The operation in progress, if any.
        current: Option<CollDesc>,
    },
    /// The sender is alive (sent on every control connection every heartbeat interval).
    Heartbeat,
    /// The sender is destroying its communicator: its connections will close, and that is
    /// not a failure.
    Bye,
}

/// Which [`Error`] a [`ControlMsg::Failed`] stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorClass {
    /// [`Error::Mismatch`].
    Mismatch = 1,
    /// Anything else: [`Error::Remote`] on the receiver.
    Other = 2,
    /// [`Error::Aborted`].
    Aborted = 3,
    /// [`Error::PeerLost`]: the message's `ranks` holds the lost rank.
    PeerLost = 4,
}

impl ControlMsg {
    /// Encode (bounded by [`MAX_CONTROL`]: long texts are cut).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            ControlMsg::Failed {
                seq,
                class,
                ranks,
                text,
            } => {
                v.push(1);
                v.extend_from_slice(&seq.to_le_bytes());
                v.push(*class as u8);
                let ranks = &ranks[..ranks.len().min(1024)];
                v.extend_from_slice(&(ranks.len() as u32).to_le_bytes());
                for r in ranks {
                    v.extend_from_slice(&r.to_le_bytes());
                }
                // Cut at a character boundary, so the receiver gets valid UTF-8.
                let mut end = text.len().min(MAX_CONTROL as usize - v.len() - 4);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                v.extend_from_slice(&(end as u32).to_le_bytes());
                v.extend_from_slice(&text.as_bytes()[..end]);
            }
            ControlMsg::StatusQuery => v.push(2),
            ControlMsg::Heartbeat => v.push(4),
            ControlMsg::Bye => v.push(5),
            ControlMsg::Status {
                started,
                completed,
                current,
            } => {
                v.push(3);
                v.extend_from_slice(&started.to_le_bytes());
                v.extend_from_slice(&completed.to_le_bytes());
                match current {
                    None => v.push(0),
                    Some(d) => {
                        v.push(1);
                        v.extend_from_slice(&[d.kind as u8, d.dtype as u8, d.op as u8]);
                        v.extend_from_slice(&(d.count as u64).to_le_bytes());
                        v.extend_from_slice(&(d.root as u32).to_le_bytes());
                    }
                }
            }
        }
        v
    }

    /// Decode; errors on anything malformed.
    pub fn decode(b: &[u8]) -> Result<ControlMsg> {
        if b.len() > MAX_CONTROL as usize {
            return Err(Error::protocol("control message too long"));
        }
        if b.first().is_some_and(|&t| t >= FIRST_TRANSPORT_TAG) {
            return Err(Error::protocol(format!(
                "a transport's own control message (tag {:#04x}) reached the engine",
                b[0]
            )));
        }
        let mut r = Reader::new(b, "control message");
        let msg = match r.u8()? {
            1 => {
                let seq = r.u64()?;
                let class = match r.u8()? {
                    1 => ErrorClass::Mismatch,
                    2 => ErrorClass::Other,
                    3 => ErrorClass::Aborted,
                    4 => ErrorClass::PeerLost,
                    c => return Err(Error::protocol(format!("unknown error class {c}"))),
                };
                let n = r.u32()? as usize;
                if n > 1024 {
                    return Err(Error::protocol("too many ranks in a control message"));
                }
                let ranks = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>>>()?;
                let len = r.u32()? as usize;
                let text = std::str::from_utf8(r.take(len)?)
                    .map_err(|e| {
                        Error::protocol(format!("control message text is not UTF-8: {e}"))
                    })?
                    .to_owned();
                ControlMsg::Failed {
                    seq,
                    class,
                    ranks,
                    text,
                }
            }
            2 => ControlMsg::StatusQuery,
            4 => ControlMsg::Heartbeat,
            5 => ControlMsg::Bye,
            3 => {
                let started = r.u64()?;
                let completed = r.u64()?;
                let current = match r.u8()? {
                    0 => None,
                    1 => {
                        let s = r.take(3)?;
                        let (k, d, o) = (s[0], s[1], s[2]);
                        let count = r.u64()? as usize;
                        let root = r.u32()? as usize;
                        Some(CollDesc {
                            kind: CollKind::from_code(k)
                                .ok_or_else(|| Error::protocol("unknown collective code"))?,
                            dtype: DataType::from_code(d)
                                .ok_or_else(|| Error::protocol("unknown data type code"))?,
                            op: ReduceOp::from_code(o)
                                .ok_or_else(|| Error::protocol("unknown reduce op code"))?,
                            count,
                            root,
                        })
                    }
                    x => return Err(Error::protocol(format!("bad status flag {x}"))),
                };
                ControlMsg::Status {
                    started,
                    completed,
                    current,
                }
            }
            t => return Err(Error::protocol(format!("unknown control message type {t}"))),
        };
        if r.remaining() != 0 {
            return Err(Error::protocol("trailing bytes after a control message"));
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_truncations() {
        let msgs = [
            ControlMsg::Failed {
                seq: 9,
                class: ErrorClass::Mismatch,
                ranks: vec![1, 3],
                text: "count 4 vs 5".into(),
            },
            ControlMsg::StatusQuery,
            ControlMsg::Heartbeat,
            ControlMsg::Bye,
            ControlMsg::Failed {
                seq: 3,
                class: ErrorClass::PeerLost,
                ranks: vec![2],
                text: "no message for 812 ms".into(),
            },
            ControlMsg::Status {
                started: 5,
                completed: 4,
                current: Some(CollDesc {
                    kind: CollKind::Broadcast,
                    count: 77,
                    dtype: DataType::Float16,
                    op: ReduceOp::Sum,
                    root: 2,
                }),
            },
            ControlMsg::Status {
                started: 1,
                completed: 1,
                current: None,
            },
        ];
        for m in msgs {
            let b = m.encode();
            assert_eq!(ControlMsg::decode(&b).unwrap(), m);
            for cut in 0..b.len() {
                assert!(ControlMsg::decode(&b[..cut]).is_err());
            }
            let mut long = b.clone();
            long.push(0);
            assert!(ControlMsg::decode(&long).is_err());
        }
    }

    #[test]
    fn long_text_is_cut_to_the_limit() {
        let m = ControlMsg::Failed {
            seq: 1,
            class: ErrorClass::Other,
            ranks: vec![],
            text: "x".repeat(1 << 20),
        };
        let b = m.encode();
        assert!(b.len() <= MAX_CONTROL as usize);
        assert!(ControlMsg::decode(&b).is_ok());
    }

    #[test]
    fn text_is_cut_at_a_character_boundary_and_must_be_utf8() {
        let m = ControlMsg::Failed {
            seq: 1,
            class: ErrorClass::Other,
            ranks: vec![],
            // Characters of two bytes at odd offsets: the byte limit falls inside one.
            text: format!("a{}", "\u{e9}".repeat(1 << 16)),
        };
        let b = m.encode();
        assert!(b.len() <= MAX_CONTROL as usize);
        match ControlMsg::decode(&b).unwrap() {
            ControlMsg::Failed { text, .. } => {
                assert!(text.len() > 60_000 && text[1..].chars().all(|c| c == '\u{e9}'))
            }
            other => panic!("{other:?}"),
        }
        let mut b = ControlMsg::Failed {
            seq: 1,
            class: ErrorClass::Other,
            ranks: vec![],
            text: "ab".into(),
        }
        .encode();
        let n = b.len();
        b[n - 1] = 0xff;
        let e = ControlMsg::decode(&b).unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }
}
