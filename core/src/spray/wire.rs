//! The units that travel on a path.
//!
//! A path is a byte stream (a TCP connection now, a queue pair later) carrying units, each a
//! fixed [`UNIT_LEN`]-byte [`UnitHeader`] and a payload:
//!
//! * `Segment`: a piece of one transfer (one engine frame). The payload is the engine's own
//!   [`FrameHeader`](crate::wire::FrameHeader) (so every segment can be checked against the
//!   receive it lands in, and a call that differs between ranks is still named) followed by
//!   the segment's bytes, which the receiver writes straight to `offset` in the destination.
//! * `Ack`: cumulative plus selective acknowledgement of segments ([`Ack`]), sent on any
//!   healthy path.
//! * `Control`: an engine control message, numbered so that copies sent on two paths are
//!   delivered once.
//! * `Suspect`: the sender suspects one of its paths, so the receiver need not wait for a
//!   segment that path is still writing.
//! * `Down`: the sender took one incarnation of one of its paths down, so the receiver
//!   closes its end now instead of waiting for TCP to find the connection dead (on a cut
//!   link that takes retransmission timeouts, seconds; the side that dials cannot connect
//!   the path again until it knows).
//!
//! On a byte stream every unit's headers take 128 bytes: the unit header, then the engine
//! header of a segment or 64 zero bytes, so that one read takes them whatever the kind.
//!
//! All integers are little endian. [`UnitHeader::decode`] and [`Ack::decode`] validate every
//! field and never panic.

use crate::error::{Error, Result};
use crate::wire::{le_u32, le_u64, MAX_CHUNK, MAX_CONTROL};

/// Size of an encoded unit header.
pub const UNIT_LEN: usize = 64;
/// `"DMSP"` in little endian.
pub const UNIT_MAGIC: u32 = u32::from_le_bytes(*b"DMSP");
/// Version of the path protocol.
pub const UNIT_VERSION: u8 = 2;
/// Most segments one transfer is cut into (an ack carries one 64-bit map per transfer).
pub const MAX_SEGS: u32 = 64;
/// Most paths per peer.
pub const MAX_PATHS: usize = 16;
/// Most transfers one ack describes selectively.
pub const MAX_ACK_ENTRIES: usize = 1024;

/// What a unit carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum UnitKind {
    /// A piece of a transfer.
    Segment = 1,
    /// An acknowledgement.
    Ack = 2,
    /// An engine control message.
    Control = 3,
    /// The sender suspects one of its paths to this peer (`transfer` holds its index): its
    /// segments are being sent again elsewhere, so the receiver need not wait for a
    /// segment that path is still writing.
    Suspect = 4,
    /// The sender took one of its paths to this peer down: `transfer` holds the path's
    /// index and `seg` the incarnation that ended.
    Down = 5,
}

/// A decoded unit header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitHeader {
    /// Unit kind.
    pub kind: UnitKind,
    /// The sending side's index of the path the unit travels on.
    pub path: u8,
    /// The path's incarnation (bumped each time the path is connected again).
    pub epoch: u32,
    /// Segment: the transfer's id (per peer and direction, from 0). Control: the message's
    /// number. Ack: 0.
    pub transfer: u64,
    /// Segment: its index within the transfer.
    pub seg: u32,
    /// Segment: how many segments the transfer has.
    pub nsegs: u32,
    /// Segment: byte offset within the transfer.
    pub offset: u64,
    /// Payload bytes after the header (for a segment: its data, not counting the engine
    /// header that precedes it).
    pub len: u32,
    /// Segment: the transfer's total length.
    pub total: u64,
}

impl UnitHeader {
    /// A header for a non-segment unit.
    pub fn plain(kind: UnitKind, path: u8, epoch: u32, number: u64, len: u32) -> UnitHeader {
        UnitHeader {
            kind,
            path,
            epoch,
            transfer: number,
            seg: 0,
            nsegs: 0,
            offset: 0,
            len,
            total: 0,
        }
    }

    /// A `Down` unit, sent on path `via` (incarnation `via_epoch`): this side took
    /// incarnation `epoch` of its path `path` down.
    pub fn down(via: u8, via_epoch: u32, path: u8, epoch: u32) -> UnitHeader {
        UnitHeader {
            seg: epoch,
            ..UnitHeader::plain(UnitKind::Down, via, via_epoch, path as u64, 0)
        }
    }

    /// Encode into exactly [`UNIT_LEN`] bytes.
    pub fn encode(&self, out: &mut [u8; UNIT_LEN]) {
        out.fill(0);
        out[0..4].copy_from_slice(&UNIT_MAGIC.to_le_bytes());
        out[4] = UNIT_VERSION;
        out[5] = self.kind as u8;
        out[6] = self.path;
        out[8..12].copy_from_slice(&self.epoch.to_le_bytes());
        out[12..16].copy_from_slice(&self.seg.to_le_bytes());
        out[16..24].copy_from_slice(&self.transfer.to_le_bytes());
        out[24..28].copy_from_slice(&self.nsegs.to_le_bytes());
        out[28..32].copy_from_slice(&self.len.to_le_bytes());
        out[32..40].copy_from_slice(&self.offset.to_le_bytes());
        out[40..48].copy_from_slice(&self.total.to_le_bytes());
    }

    /// Decode and validate a header.
    pub fn decode(b: &[u8]) -> Result<UnitHeader> {
        if b.len() < UNIT_LEN {
            return Err(Error::protocol(format!(
                "path unit header truncated: {} of {UNIT_LEN} bytes",
                b.len()
            )));
        }
        let u32_at = |i: usize| le_u32(b, i);
        let u64_at = |i: usize| le_u64(b, i);
        if u32_at(0) != UNIT_MAGIC {
            return Err(Error::protocol(format!(
                "bad path unit magic {:#010x} (the path lost its framing)",
                u32_at(0)
            )));
        }
        if b[4] != UNIT_VERSION {
            return Err(Error::protocol(format!(
                "peer speaks path protocol version {}, this build speaks {UNIT_VERSION}",
                b[4]
            )));
        }
        let kind = match b[5] {
            1 => UnitKind::Segment,
            2 => UnitKind::Ack,
            3 => UnitKind::Control,
            4 => UnitKind::Suspect,
            5 => UnitKind::Down,
            k => return Err(Error::protocol(format!("unknown path unit kind {k}"))),
        };
        if b[7] != 0 || b[48..UNIT_LEN].iter().any(|&x| x != 0) {
            return Err(Error::protocol(
                "reserved bytes of a path unit header are set",
            ));
        }
        let path = b[6];
        if path as usize >= MAX_PATHS {
            return Err(Error::protocol(format!(
                "path unit names path {path}; at most {MAX_PATHS} paths exist"
            )));
        }
        let h = UnitHeader {
            kind,
            path,
            epoch: u32_at(8),
            seg: u32_at(12),
            transfer: u64_at(16),
            nsegs: u32_at(24),
            len: u32_at(28),
            offset: u64_at(32),
            total: u64_at(40),
        };
        match kind {
            UnitKind::Segment => {
                if h.nsegs == 0 || h.nsegs > MAX_SEGS || h.seg >= h.nsegs {
                    return Err(Error::protocol(format!(
                        "segment {} of {} (a transfer has 1 to {MAX_SEGS} segments)",
                        h.seg, h.nsegs
                    )));
                }
                if h.total > MAX_CHUNK as u64
                    || h.len > MAX_CHUNK
                    || h.offset
                        .checked_add(h.len as u64)
                        .is_none_or(|e| e > h.total)
                {
                    return Err(Error::protocol(format!(
                        "segment bytes {}..+{} outside a transfer of {} bytes (at most {MAX_CHUNK})",
                        h.offset, h.len, h.total
                    )));
                }
            }
            UnitKind::Ack | UnitKind::Control => {
                if h.seg != 0 || h.nsegs != 0 || h.offset != 0 || h.total != 0 {
                    return Err(Error::protocol(format!(
                        "{kind:?} unit with segment fields set"
                    )));
                }
                if h.len > MAX_CONTROL {
                    return Err(Error::protocol(format!(
                        "{kind:?} unit of {} bytes (at most {MAX_CONTROL})",
                        h.len
                    )));
                }
                if kind == UnitKind::Ack && h.transfer != 0 {
                    return Err(Error::protocol("ack unit with a number"));
                }
            }
            UnitKind::Suspect | UnitKind::Down => {
                // A notice about one path: its index in `transfer`; a `Down` unit also
                // carries the incarnation that ended, in `seg`.
                let (name, seg_used) = match kind {
                    UnitKind::Down => ("path-down", true),
                    _ => ("suspect", false),
                };
                if (h.seg != 0 && !seg_used)
                    || h.nsegs != 0
                    || h.offset != 0
                    || h.total != 0
                    || h.len != 0
                    || h.transfer >= MAX_PATHS as u64
                {
                    return Err(Error::protocol(format!(
                        "{name} unit for path {} with other fields set",
                        h.transfer
                    )));
                }
            }
        }
        Ok(h)
    }
}

/// An acknowledgement: every transfer below `cumulative` is complete; for later transfers
/// `selective` lists which segments arrived (bit `s` of the map: segment `s`). `delivered`
/// gives, per path of the acknowledging side's view, the incarnation and the payload bytes
/// that arrived on it, from which the sender measures each path's speed and round trip.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ack {
    /// All transfers with a smaller id are complete.
    pub cumulative: u64,
    /// (transfer id, map of segments that arrived), ids at or above `cumulative`.
    pub selective: Vec<(u64, u64)>,
    /// Per path: (incarnation, payload bytes received on it in that incarnation).
    pub delivered: Vec<(u32, u64)>,
}

impl Ack {
    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        12 + 16 * self.selective.len() + 12 * self.delivered.len()
    }

    /// Encode (at most [`MAX_ACK_ENTRIES`] selective entries and [`MAX_PATHS`] paths; the
    /// caller keeps within them).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.encoded_len());
        v.extend_from_slice(&self.cumulative.to_le_bytes());
        v.extend_from_slice(&(self.selective.len() as u16).to_le_bytes());
        v.extend_from_slice(&(self.delivered.len() as u16).to_le_bytes());
        for &(t, m) in &self.selective {
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(&m.to_le_bytes());
        }
        for &(e, d) in &self.delivered {
            v.extend_from_slice(&e.to_le_bytes());
            v.extend_from_slice(&d.to_le_bytes());
        }
        v
    }

    /// Decode and validate.
    pub fn decode(b: &[u8]) -> Result<Ack> {
        if b.len() < 12 {
            return Err(Error::protocol(format!(
                "ack of {} bytes is truncated",
                b.len()
            )));
        }
        let u64_at = |i: usize| le_u64(b, i);
        let cumulative = u64_at(0);
        let ns = u16::from_le_bytes([b[8], b[9]]) as usize;
        let nd = u16::from_le_bytes([b[10], b[11]]) as usize;
        if ns > MAX_ACK_ENTRIES || nd > MAX_PATHS {
            return Err(Error::protocol(format!(
                "ack with {ns} transfers and {nd} paths (at most {MAX_ACK_ENTRIES} and {MAX_PATHS})"
            )));
        }
        if b.len() != 12 + 16 * ns + 12 * nd {
            return Err(Error::protocol(format!(
                "ack of {} bytes does not hold {ns} transfers and {nd} paths",
                b.len()
            )));
        }
        let mut selective = Vec::with_capacity(ns);
        let mut prev = None;
        for i in 0..ns {
            let t = u64_at(12 + 16 * i);
            if t < cumulative || prev.is_some_and(|p| t <= p) {
                return Err(Error::protocol(format!(
                    "ack lists transfer {t} out of order (cumulative {cumulative})"
                )));
            }
            prev = Some(t);
            selective.push((t, u64_at(20 + 16 * i)));
        }
        let base = 12 + 16 * ns;
        let delivered = (0..nd)
            .map(|i| {
                let at = base + 12 * i;
                (le_u32(b, at), u64_at(at + 4))
            })
            .collect();
        Ok(Ack {
            cumulative,
            selective,
            delivered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg() -> UnitHeader {
        UnitHeader {
            kind: UnitKind::Segment,
            path: 3,
            epoch: 7,
            transfer: 1 << 40,
            seg: 2,
            nsegs: 4,
            offset: 2 << 17,
            len: 1 << 17,
            total: 1 << 19,
        }
    }

    #[test]
    fn headers_round_trip_and_are_checked() {
        let h = seg();
        let mut b = [0u8; UNIT_LEN];
        h.encode(&mut b);
        assert_eq!(UnitHeader::decode(&b).unwrap(), h);
        let bad = |f: &dyn Fn(&mut [u8; UNIT_LEN]), what: &str| {
            let mut c = b;
            f(&mut c);
            let e = UnitHeader::decode(&c).unwrap_err().to_string();
            assert!(e.contains(what), "{e} lacks {what}");
        };
        bad(&|c| c[0] = 0, "magic");
        bad(&|c| c[4] = 9, "version");
        bad(&|c| c[5] = 9, "kind");
        bad(&|c| c[6] = 16, "path");
        bad(&|c| c[60] = 1, "reserved");
        bad(&|c| c[12] = 4, "segment 4 of 4");
        bad(&|c| c[24] = 65, "segment");
        bad(&|c| c[40..48].fill(0), "outside");
        bad(
            &|c| c[32..40].copy_from_slice(&u64::MAX.to_le_bytes()),
            "outside",
        );
        assert!(UnitHeader::decode(&b[..10]).is_err());
        let a = UnitHeader::plain(UnitKind::Ack, 0, 1, 0, 12);
        a.encode(&mut b);
        assert_eq!(UnitHeader::decode(&b).unwrap(), a);
        let c = UnitHeader::plain(UnitKind::Control, 1, 1, 99, MAX_CONTROL + 1);
        c.encode(&mut b);
        assert!(UnitHeader::decode(&b).is_err());
    }

    #[test]
    fn down_units_name_the_path_and_incarnation_that_ended() {
        let d = UnitHeader::down(2, 5, 3, 9);
        let mut b = [0u8; UNIT_LEN];
        d.encode(&mut b);
        let got = UnitHeader::decode(&b).unwrap();
        assert_eq!(got, d);
        assert_eq!(
            (got.kind, got.path, got.epoch, got.transfer, got.seg),
            (UnitKind::Down, 2, 5, 3, 9)
        );
        let mut c = b;
        c[16..24].copy_from_slice(&(MAX_PATHS as u64).to_le_bytes());
        let e = UnitHeader::decode(&c).unwrap_err().to_string();
        assert!(e.contains("path-down unit for path 16"), "{e}");
        let mut c = b;
        c[28] = 1;
        assert!(
            UnitHeader::decode(&c).is_err(),
            "a path-down unit carries no payload"
        );
    }

    #[test]
    fn acks_round_trip_and_are_checked() {
        let a = Ack {
            cumulative: 5,
            selective: vec![(5, 0b1011), (7, u64::MAX)],
            delivered: vec![(1, 100), (3, 1 << 40)],
        };
        let b = a.encode();
        assert_eq!(b.len(), a.encoded_len());
        assert_eq!(Ack::decode(&b).unwrap(), a);
        assert!(Ack::decode(&b[..b.len() - 1]).is_err());
        let mut c = a.clone();
        c.selective = vec![(7, 1), (6, 1)];
        assert!(Ack::decode(&c.encode())
            .unwrap_err()
            .to_string()
            .contains("order"));
        c.selective = vec![(4, 1)];
        assert!(Ack::decode(&c.encode()).is_err());
        let mut big = b.clone();
        big[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(Ack::decode(&big).is_err());
    }
}
