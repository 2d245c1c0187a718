//! Frame headers of the data and control streams.
//!
//! Every frame starts with a fixed [`HEADER_LEN`]-byte header: a magic, a version, the frame
//! kind, the sender's collective sequence number and call description (so a receiver detects a
//! mismatched call from the first header it reads), the message and chunk indices, the byte
//! offset of the chunk within its message, the payload length and, when the sender checksums
//! its chunks (`DMSC_CHECKSUM=1`), the payload's CRC32C (flag bit [`FLAG_CRC`] of byte 9, the
//! value in bytes 56..60). All integers are little endian. [`FrameHeader::decode`] validates every field and never panics: a malformed header
//! is an [`Error::Protocol`].

use crate::error::{Error, Result};
use crate::types::{CollDesc, CollKind, DataType, ReduceOp};

/// Size of an encoded header in bytes.
pub const HEADER_LEN: usize = 64;
/// `"DMSC"` in little endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"DMSC");
/// Wire protocol version.
pub const VERSION: u8 = 1;
/// Largest payload of one data frame (one chunk).
pub const MAX_CHUNK: u32 = 64 << 20;
/// Largest payload of one control frame.
pub const MAX_CONTROL: u32 = 64 << 10;
/// Bit of the flags byte (byte 9): the header carries the payload's CRC32C.
pub const FLAG_CRC: u8 = 1;

pub use crate::codec::{le_u16, le_u32, le_u64};

/// Frame kind codes a transport may give frames of its own (a connection's hello, a chunk
/// passed by reference): core never interprets them, and a receive the engine posted never
/// matches one (its header says [`FrameKind::Data`]).
pub const TRANSPORT_KINDS: std::ops::RangeInclusive<u8> = 0x80..=0xFF;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A chunk of a message of a collective (code 1).
    Data,
    /// A control message (see [`crate::engine::control`]; code 2).
    Control,
    /// A transport's own frame, with a code in [`TRANSPORT_KINDS`] that the transport
    /// defines (for example the TCP mesh's hello, the memory-attach layer's references).
    Transport(u8),
}

impl FrameKind {
    /// The byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            FrameKind::Data => 1,
            FrameKind::Control => 2,
            FrameKind::Transport(k) => k,
        }
    }

    /// The kind of wire byte `b`, if it names one.
    pub fn from_code(b: u8) -> Option<FrameKind> {
        match b {
            1 => Some(FrameKind::Data),
            2 => Some(FrameKind::Control),
            k if TRANSPORT_KINDS.contains(&k) => Some(FrameKind::Transport(k)),
            _ => None,
        }
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Frame kind.
    pub kind: FrameKind,
    /// Sequence number of the collective on the sender (1-based, per communicator).
    pub seq: u64,
    /// The sender's call.
    pub desc: CollDesc,
    /// Index of the message between this pair of ranks within the collective.
    pub msg: u32,
    /// Index of the chunk within the message.
    pub chunk: u32,
    /// Byte offset of the chunk within the message.
    pub offset: u64,
    /// Payload bytes following the header.
    pub len: u32,
    /// Free-form field: the sender's rank in `Hello`, the tag of a point-to-point message.
    pub aux: u32,
    /// CRC32C (Castagnoli) of the payload, when the sender checksums its chunks. In the
    /// header a receive expects, only whether it is `Some` matters (see
    /// [`FrameHeader::matches`]).
    pub crc: Option<u32>,
}

impl FrameHeader {
    /// Encode into exactly [`HEADER_LEN`] bytes.
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out.fill(0);
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4] = VERSION;
        out[5] = self.kind.code();
        out[6] = self.desc.kind as u8;
        out[7] = self.desc.dtype as u8;
        out[8] = self.desc.op as u8;
        if let Some(crc) = self.crc {
            out[9] = FLAG_CRC;
            out[56..60].copy_from_slice(&crc.to_le_bytes());
        }
        out[12..16].copy_from_slice(&self.aux.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&(self.desc.count as u64).to_le_bytes());
        out[32..36].copy_from_slice(&(self.desc.root as u32).to_le_bytes());
        out[36..40].copy_from_slice(&self.msg.to_le_bytes());
        out[40..44].copy_from_slice(&self.chunk.to_le_bytes());
        out[44..48].copy_from_slice(&self.len.to_le_bytes());
        out[48..56].copy_from_slice(&self.offset.to_le_bytes());
    }

    /// Decode and validate a header.
    pub fn decode(b: &[u8]) -> Result<FrameHeader> {
        if b.len() < HEADER_LEN {
            return Err(Error::protocol(format!(
                "frame header truncated: {} of {HEADER_LEN} bytes",
                b.len()
            )));
        }
        let u32_at = |i: usize| le_u32(b, i);
        let u64_at = |i: usize| le_u64(b, i);
        if u32_at(0) != MAGIC {
            return Err(Error::protocol(format!(
                "bad frame magic {:#010x} (not a dmsc peer, or the stream lost its framing)",
                u32_at(0)
            )));
        }
        if b[4] != VERSION {
            return Err(Error::protocol(format!(
                "peer speaks wire version {}, this build speaks {VERSION}",
                b[4]
            )));
        }
        let kind = FrameKind::from_code(b[5])
            .ok_or_else(|| Error::protocol(format!("unknown frame kind {}", b[5])))?;
        let ckind = CollKind::from_code(b[6])
            .ok_or_else(|| Error::protocol(format!("unknown collective code {}", b[6])))?;
        let dtype = DataType::from_code(b[7])
            .ok_or_else(|| Error::protocol(format!("unknown data type code {}", b[7])))?;
        let op = ReduceOp::from_code(b[8])
            .ok_or_else(|| Error::protocol(format!("unknown reduce op code {}", b[8])))?;
        if b[9] & !FLAG_CRC != 0 {
            return Err(Error::protocol(format!(
                "unknown frame flags {:#04x} (a newer peer?)",
                b[9]
            )));
        }
        let crc = (b[9] & FLAG_CRC != 0).then(|| u32_at(56));
        let len = u32_at(44);
        let max = if kind == FrameKind::Data {
            MAX_CHUNK
        } else {
            MAX_CONTROL
        };
        if len > max {
            return Err(Error::protocol(format!(
                "frame payload of {len} bytes exceeds the limit of {max}"
            )));
        }
        let count = usize::try_from(u64_at(24))
            .map_err(|_| Error::protocol("element count does not fit this platform"))?;
        Ok(FrameHeader {
            kind,
            seq: u64_at(16),
            desc: CollDesc {
                kind: ckind,
                count,
                dtype,
                op,
                root: u32_at(32) as usize,
            },
            msg: u32_at(36),
            chunk: u32_at(40),
            offset: u64_at(48),
            len,
            aux: u32_at(12),
            crc,
        })
    }

    /// True when `self` (an arriving header) is the frame a receive expecting `expect` waits
    /// for: every field equal, except the CRC value, which the receiver cannot know in
    /// advance. Whether a CRC is present must agree (both ranks checksum, or neither).
    pub fn matches(&self, expect: &FrameHeader) -> bool {
        FrameHeader {
            crc: self.crc.map(|_| 0),
            ..*self
        } == FrameHeader {
            crc: expect.crc.map(|_| 0),
            ..*expect
        }
    }

    /// A header carrying no collective (hello and control frames).
    pub fn plain(kind: FrameKind, aux: u32, len: u32) -> FrameHeader {
        FrameHeader {
            kind,
            seq: 0,
            desc: CollDesc {
                kind: CollKind::Barrier,
                count: 0,
                dtype: DataType::Uint8,
                op: ReduceOp::Sum,
                root: 0,
            },
            msg: 0,
            chunk: 0,
            offset: 0,
            len,
            aux,
            crc: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FrameHeader {
        FrameHeader {
            kind: FrameKind::Data,
            seq: 42,
            desc: CollDesc {
                kind: CollKind::AllReduce,
                count: 1 << 40,
                dtype: DataType::Bfloat16,
                op: ReduceOp::Max,
                root: 3,
            },
            msg: 7,
            chunk: 9,
            offset: 123456789,
            len: 4096,
            aux: 5,
            crc: None,
        }
    }

    #[test]
    fn round_trip() {
        let h = sample();
        let mut b = [0u8; HEADER_LEN];
        h.encode(&mut b);
        assert_eq!(FrameHeader::decode(&b).unwrap(), h);
        let h = FrameHeader {
            crc: Some(0xdead_beef),
            ..sample()
        };
        h.encode(&mut b);
        assert_eq!(FrameHeader::decode(&b).unwrap(), h);
    }

    #[test]
    fn matching_ignores_the_crc_value_but_not_its_presence() {
        let sent = FrameHeader {
            crc: Some(0x1234_5678),
            ..sample()
        };
        let expect = FrameHeader {
            crc: Some(0),
            ..sample()
        };
        assert!(sent.matches(&expect));
        assert!(!sent.matches(&sample()));
        assert!(!sample().matches(&expect));
        assert!(sample().matches(&sample()));
        let other = FrameHeader {
            chunk: 10,
            ..expect
        };
        assert!(!sent.matches(&other));
    }

    #[test]
    fn rejects_unknown_flags() {
        let mut b = [0u8; HEADER_LEN];
        sample().encode(&mut b);
        b[9] = 0x80;
        let e = FrameHeader::decode(&b).unwrap_err();
        assert!(e.to_string().contains("flags"), "{e}");
    }

    #[test]
    fn rejects_malformed() {
        let mut b = [0u8; HEADER_LEN];
        sample().encode(&mut b);
        for cut in 0..HEADER_LEN {
            assert!(FrameHeader::decode(&b[..cut]).is_err());
        }
        for (i, v) in [(0, 0u8), (4, 9), (5, 0), (6, 99), (7, 99), (8, 99)] {
            let mut c = b;
            c[i] = v;
            assert!(FrameHeader::decode(&c).is_err(), "byte {i}");
        }
        let mut c = b;
        c[44..48].copy_from_slice(&(MAX_CHUNK + 1).to_le_bytes());
        let e = FrameHeader::decode(&c).unwrap_err();
        assert!(e.to_string().contains("exceeds"), "{e}");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x9e3779b97f4a7c15u64;
        for _ in 0..20000 {
            let mut b = [0u8; HEADER_LEN];
            for byte in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
            b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
            b[4] = VERSION;
            let _ = FrameHeader::decode(&b);
        }
    }
}
