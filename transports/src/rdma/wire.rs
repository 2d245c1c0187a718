//! What the RDMA transport sends besides payload bytes: the connection card published
//! through the bootstrap exchange, and the small messages that travel as SENDs (clear to
//! send, control fragments, credit returns). Little-endian, bounded, every length checked.
//!
//! The clear-to-send follows the receiver-driven design of NCCL's `net_ib.cc` (its `ncclIbSendFifo`
//! entries carry address, rkey, size and a tag the sender matches): here it also carries the
//! whole frame header the receive expects, so that the sender matches it before it writes a
//! byte.

use super::verbs::PortAddr;
use dmsc_core::error::{Error, Result};
use dmsc_core::wire::{FrameHeader, HEADER_LEN};

/// Bytes of one message slot (the largest SEND).
pub const MSG_SLOT: usize = 4096;
/// Bytes of a message's own header: type, reserved, credits returned.
pub const MSG_HEAD: usize = 8;
/// Bytes of control payload one fragment carries.
pub const CONTROL_FRAGMENT: usize = MSG_SLOT - MSG_HEAD - 4;

const CARD_MAGIC: u32 = 0x4249_4d44; // "DMIB"
const CARD_VERSION: u8 = 2;

/// Most ports (NICs) one rank uses; a clear-to-send carries a key for each.
pub const MAX_NICS: usize = 4;

/// One key per port of the rank that made them (unused entries 0).
pub type Keys = [u32; MAX_NICS];

/// One rank's connection card: its ports, and per peer the queue pair numbers it created for
/// that peer (addresses and keys of memory travel later, in each clear-to-send). Queue pair
/// `k` of a rank with `n` ports is on its port `k % n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Card {
    /// The ports (1 to [`MAX_NICS`]).
    pub addrs: Vec<PortAddr>,
    /// Queue pairs per peer.
    pub paths: u8,
    /// Per rank (this rank's own entry empty): its queue pair numbers.
    pub peers: Vec<PeerCard>,
}

/// A card's entry for one peer.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PeerCard {
    /// Queue pair numbers, one per path.
    pub qpns: Vec<u32>,
}

impl Card {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&CARD_MAGIC.to_le_bytes());
        b.push(CARD_VERSION);
        b.push(self.paths);
        b.push(self.addrs.len() as u8);
        for a in &self.addrs {
            b.extend_from_slice(&a.lid.to_le_bytes());
            b.extend_from_slice(&a.gid);
            b.extend_from_slice(&a.mtu.to_le_bytes());
        }
        b.extend_from_slice(&(self.peers.len() as u32).to_le_bytes());
        for p in &self.peers {
            b.push(p.qpns.len() as u8);
            for q in &p.qpns {
                b.extend_from_slice(&q.to_le_bytes());
            }
        }
        b
    }

    /// Decode the card of `rank`, expected to list `nranks` entries.
    pub fn decode(b: &[u8], rank: usize, nranks: usize) -> Result<Card> {
        let bad =
            |what: &str| Error::protocol(format!("rank {rank}'s RDMA connection card is {what}"));
        let mut r = Reader { b, at: 0 };
        if r.u32().ok_or_else(|| bad("truncated"))? != CARD_MAGIC {
            return Err(bad("not an RDMA card (bad magic)"));
        }
        let version = r.u8().ok_or_else(|| bad("truncated"))?;
        if version != CARD_VERSION {
            return Err(bad(&format!(
                "of version {version}, this build speaks {CARD_VERSION}"
            )));
        }
        let paths = r.u8().ok_or_else(|| bad("truncated"))?;
        let nics = r.u8().ok_or_else(|| bad("truncated"))? as usize;
        if nics == 0 || nics > MAX_NICS {
            return Err(bad(&format!(
                "for {nics} ports (1 to {MAX_NICS} are allowed)"
            )));
        }
        let mut addrs = Vec::with_capacity(nics);
        for _ in 0..nics {
            let lid = r.u16().ok_or_else(|| bad("truncated"))?;
            let gid: [u8; 16] = r
                .take(16)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| bad("truncated"))?;
            let mtu = r.u32().ok_or_else(|| bad("truncated"))?;
            addrs.push(PortAddr { lid, gid, mtu });
        }
        let n = r.u32().ok_or_else(|| bad("truncated"))? as usize;
        if n != nranks {
            return Err(bad(&format!("for {n} ranks, not {nranks}")));
        }
        let mut peers = Vec::with_capacity(n);
        for _ in 0..n {
            let k = r.u8().ok_or_else(|| bad("truncated"))? as usize;
            let qpns = (0..k)
                .map(|_| r.u32().ok_or_else(|| bad("truncated")))
                .collect::<Result<Vec<u32>>>()?;
            peers.push(PeerCard { qpns });
        }
        if r.at != b.len() {
            return Err(bad("followed by stray bytes"));
        }
        Ok(Card {
            addrs,
            paths,
            peers,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
    }
}

/// A receiver's clear-to-send for its receive number `seq` from this peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cts {
    /// The receive's number (the sender's send of the same number fills it).
    pub seq: u64,
    /// Where the payload goes.
    pub addr: u64,
    /// The keys of the region holding `addr`, one per port of the receiver (the sender
    /// uses the one of the port its queue pair reaches).
    pub rkeys: Keys,
    /// Where the completion trailer (the sender's frame header) goes.
    pub mbox: u64,
    /// The keys of the mailbox region, per port.
    pub mbox_rkeys: Keys,
    /// The header the receive expects.
    pub expect: FrameHeader,
}

/// A message carried by a SEND.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Clear to send.
    Cts(Cts),
    /// A fragment of a control message; `last` ends it.
    Control {
        /// Whether this fragment ends the message.
        last: bool,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Only credits (in the message head).
    Credit,
    /// The sender is closing its transport in good order: errors on its queue pairs from
    /// now on are the close, not a failure.
    Bye,
    /// From the lower rank of a pair: I reset queue pair `path` (now in INIT with receives
    /// posted); reset yours, connect it to mine and say [`Msg::Ready`].
    Rebuild {
        /// The queue pair's index.
        path: u8,
    },
    /// The answer to [`Msg::Rebuild`]: my queue pair `path` is in RTS again.
    Ready {
        /// The queue pair's index.
        path: u8,
    },
    /// From the higher rank of a pair: queue pair `path` failed here; please rebuild it.
    Broken {
        /// The queue pair's index.
        path: u8,
    },
}

const T_CTS: u8 = 1;
const T_CONTROL: u8 = 2;
const T_CREDIT: u8 = 3;
const T_BYE: u8 = 4;
const T_REBUILD: u8 = 5;
const T_READY: u8 = 6;
const T_BROKEN: u8 = 7;

impl Msg {
    /// Encode with `credits` returned into `out` (at most [`MSG_SLOT`] bytes); returns the
    /// length.
    pub fn encode(&self, credits: u32, out: &mut [u8]) -> usize {
        let ty = match self {
            Msg::Cts(_) => T_CTS,
            Msg::Control { .. } => T_CONTROL,
            Msg::Credit => T_CREDIT,
            Msg::Bye => T_BYE,
            Msg::Rebuild { .. } => T_REBUILD,
            Msg::Ready { .. } => T_READY,
            Msg::Broken { .. } => T_BROKEN,
        };
        out[..MSG_HEAD].fill(0);
        out[0] = ty;
        out[4..8].copy_from_slice(&credits.to_le_bytes());
        let body = &mut out[MSG_HEAD..];
        match self {
            Msg::Cts(c) => {
                let mut at = 0;
                let mut put = |b: &[u8]| {
                    body[at..at + b.len()].copy_from_slice(b);
                    at += b.len();
                };
                put(&c.seq.to_le_bytes());
                put(&c.addr.to_le_bytes());
                for k in c.rkeys {
                    put(&k.to_le_bytes());
                }
                put(&c.mbox.to_le_bytes());
                for k in c.mbox_rkeys {
                    put(&k.to_le_bytes());
                }
                let mut h = [0u8; HEADER_LEN];
                c.expect.encode(&mut h);
                put(&h);
                MSG_HEAD + at
            }
            Msg::Control { last, bytes } => {
                assert!(bytes.len() <= CONTROL_FRAGMENT, "fragment too long");
                body[0] = *last as u8;
                body[2..4].copy_from_slice(&(bytes.len() as u16).to_le_bytes());
                body[4..4 + bytes.len()].copy_from_slice(bytes);
                MSG_HEAD + 4 + bytes.len()
            }
            Msg::Credit | Msg::Bye => MSG_HEAD,
            Msg::Rebuild { path } | Msg::Ready { path } | Msg::Broken { path } => {
                body[0] = *path;
                MSG_HEAD + 1
            }
        }
    }

    /// Decode a received message: the credits it returns and the message.
    pub fn decode(b: &[u8]) -> Result<(u32, Msg)> {
        let bad = |what: String| Error::protocol(format!("RDMA message: {what}"));
        if b.len() < MSG_HEAD {
            return Err(bad(format!("{} bytes, shorter than its head", b.len())));
        }
        let credits = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
        let mut r = Reader {
            b: &b[MSG_HEAD..],
            at: 0,
        };
        let short = || bad(format!("type {} truncated at {} bytes", b[0], b.len()));
        let m = match b[0] {
            T_CTS => {
                let seq = r.u64().ok_or_else(short)?;
                let addr = r.u64().ok_or_else(short)?;
                let mut rkeys = [0; MAX_NICS];
                for k in &mut rkeys {
                    *k = r.u32().ok_or_else(short)?;
                }
                let mbox = r.u64().ok_or_else(short)?;
                let mut mbox_rkeys = [0; MAX_NICS];
                for k in &mut mbox_rkeys {
                    *k = r.u32().ok_or_else(short)?;
                }
                let h = r.take(HEADER_LEN).ok_or_else(short)?;
                Msg::Cts(Cts {
                    seq,
                    addr,
                    rkeys,
                    mbox,
                    mbox_rkeys,
                    expect: FrameHeader::decode(h)?,
                })
            }
            T_CONTROL => {
                let last = r.u8().ok_or_else(short)? != 0;
                r.u8().ok_or_else(short)?;
                let n = r.u16().ok_or_else(short)? as usize;
                let bytes = r.take(n).ok_or_else(short)?.to_vec();
                Msg::Control { last, bytes }
            }
            T_CREDIT => Msg::Credit,
            T_BYE => Msg::Bye,
            T_REBUILD => Msg::Rebuild {
                path: r.u8().ok_or_else(short)?,
            },
            T_READY => Msg::Ready {
                path: r.u8().ok_or_else(short)?,
            },
            T_BROKEN => Msg::Broken {
                path: r.u8().ok_or_else(short)?,
            },
            t => return Err(bad(format!("unknown type {t}"))),
        };
        Ok((credits, m))
    }
}

/// The immediate value of a completion trailer: the low 31 bits of the receive number, and
/// the top bit when the sender found the header it was asked for different from its own
/// (then no payload was written, and the trailer holds the sender's header).
pub fn imm_for(seq: u64, mismatch: bool) -> u32 {
    (seq as u32 & 0x7fff_ffff) | ((mismatch as u32) << 31)
}

/// Split an immediate value into (low bits of the receive number, mismatch).
pub fn split_imm(imm: u32) -> (u32, bool) {
    (imm & 0x7fff_ffff, imm >> 31 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmsc_core::types::{CollDesc, CollKind, DataType, ReduceOp};
    use dmsc_core::wire::FrameKind;

    fn header() -> FrameHeader {
        FrameHeader {
            kind: FrameKind::Data,
            seq: 5,
            desc: CollDesc {
                kind: CollKind::AllReduce,
                count: 100,
                dtype: DataType::Float32,
                op: ReduceOp::Sum,
                root: 0,
            },
            msg: 1,
            chunk: 2,
            offset: 4096,
            len: 400,
            aux: 0,
            crc: None,
        }
    }

    #[test]
    fn messages_round_trip_and_truncation_is_named() {
        let mut buf = [0u8; MSG_SLOT];
        let cts = Msg::Cts(Cts {
            seq: 1 << 40,
            addr: 0xdead_0000,
            rkeys: [7, 8, 0, 0],
            mbox: 0xbeef_0040,
            mbox_rkeys: [9, 10, 0, 0],
            expect: header(),
        });
        for m in [
            cts,
            Msg::Control {
                last: true,
                bytes: vec![1, 2, 3],
            },
            Msg::Credit,
            Msg::Bye,
            Msg::Rebuild { path: 3 },
            Msg::Ready { path: 1 },
            Msg::Broken { path: 7 },
        ] {
            let n = m.encode(42, &mut buf);
            assert_eq!(Msg::decode(&buf[..n]).unwrap(), (42, m.clone()));
            if n > MSG_HEAD {
                let e = Msg::decode(&buf[..n - 1]).unwrap_err().to_string();
                assert!(e.contains("truncated"), "{e}");
            }
        }
        buf[0] = 77;
        assert!(Msg::decode(&buf[..8])
            .unwrap_err()
            .to_string()
            .contains("unknown type 77"));
    }

    #[test]
    fn cards_round_trip_and_bad_cards_name_the_rank() {
        let c = Card {
            addrs: vec![
                PortAddr {
                    lid: 3,
                    gid: [1; 16],
                    mtu: 4096,
                },
                PortAddr {
                    lid: 4,
                    gid: [2; 16],
                    mtu: 2048,
                },
            ],
            paths: 2,
            peers: vec![
                PeerCard { qpns: vec![10, 11] },
                PeerCard::default(),
                PeerCard { qpns: vec![12, 13] },
            ],
        };
        let b = c.encode();
        assert_eq!(Card::decode(&b, 1, 3).unwrap(), c);
        let e = Card::decode(&b[..b.len() - 1], 4, 3)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rank 4's RDMA connection card is truncated"),
            "{e}"
        );
        let e = Card::decode(&b, 1, 4).unwrap_err().to_string();
        assert!(e.contains("for 3 ranks, not 4"), "{e}");
    }

    #[test]
    fn immediates_carry_the_number_and_the_mismatch_bit() {
        assert_eq!(split_imm(imm_for(5, false)), (5, false));
        assert_eq!(split_imm(imm_for((1 << 31) + 5, true)), (5, true));
    }
}
