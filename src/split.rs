//! Splitting a communicator into sub-communicators by color (`ncclCommSplit`,
//! `MPI_Comm_split`).
//!
//! Every rank of the parent calls [`Communicator::split`] with a color (or `None` to take
//! part in no new communicator) and a key. Ranks that pass the same color form one new
//! communicator, ordered by key and then by parent rank. The rendezvous runs over the parent
//! itself: one all-gather of `(color, key, nonce)` decides membership, ids and ranks, and a
//! second all-gather carries the listening addresses of the new meshes, so no store is
//! needed and all colors connect concurrently.

use crate::comm::Communicator;
use dmsc_core::codec::{le_u16, Reader};
use dmsc_core::{Error, Rank, Result};
use dmsc_transports::store::random_nonce;

/// Bytes of one rank's `(color, key, nonce)` record.
const RECORD: usize = 24;
/// Bytes of one rank's connection slot: two length bytes and up to 1022 bytes of its
/// connection record (a host card and its listening addresses).
const ADDR_SLOT: usize = 1024;
/// Color value meaning "no new communicator" on the wire.
const NO_COLOR: u64 = u64::MAX;

/// One parent rank's split request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    color: Option<u32>,
    key: i64,
    nonce: u64,
}

impl Record {
    fn encode(&self) -> [u8; RECORD] {
        let mut b = [0u8; RECORD];
        let c = self.color.map_or(NO_COLOR, u64::from);
        b[..8].copy_from_slice(&c.to_le_bytes());
        b[8..16].copy_from_slice(&self.key.to_le_bytes());
        b[16..].copy_from_slice(&self.nonce.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Record> {
        let mut r = Reader::new(b, "split record");
        let c = r.u64()?;
        let color = match c {
            NO_COLOR => None,
            c => Some(u32::try_from(c).map_err(|_| {
                Error::protocol(format!("split record carries an invalid color {c}"))
            })?),
        };
        Ok(Record {
            color,
            key: r.u64()? as i64,
            nonce: r.u64()?,
        })
    }
}

/// Members of `color`, as parent ranks in their new rank order (key, then parent rank).
fn members(records: &[Record], color: u32) -> Vec<Rank> {
    let mut m: Vec<Rank> = (0..records.len())
        .filter(|&r| records[r].color == Some(color))
        .collect();
    m.sort_by_key(|&r| (records[r].key, r));
    m
}

/// The new communicator's id: the nonce of its first member mixed with the color, so that
/// concurrent splits and different colors never share an id.
fn comm_id(records: &[Record], members: &[Rank], color: u32) -> u64 {
    let seed = records[members[0]].nonce ^ (u64::from(color) << 32 | members.len() as u64);
    // splitmix64 finalizer: spreads the mix over all bits.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Communicator {
    /// Split into sub-communicators (`ncclCommSplit`): ranks passing the same `color` form a
    /// new communicator whose ranks are ordered by `key`, ties broken by rank in this one.
    /// `color == None` (NCCL's `NCCL_SPLIT_NOCOLOR`) takes part in the call but joins
    /// nothing and gets `Ok(None)`. Every rank of this communicator must call `split`, like
    /// a collective. The new communicator inherits this one's settings and is independent
    /// of it afterwards.
    pub fn split(&self, color: Option<u32>, key: i64) -> Result<Option<Communicator>> {
        self.split_with_config(color, key, self.config.clone())
    }

    /// [`Communicator::split`] with settings for the new communicator instead of this one's
    /// (NCCL's `config` argument of `ncclCommSplit`). The new communicator listens on this
    /// one's interface whatever `config.socket_ifname` says, and authenticates its
    /// connections with this one's secret whatever `config.secret` says.
    pub fn split_with_config(
        &self,
        color: Option<u32>,
        key: i64,
        mut config: crate::config::Config,
    ) -> Result<Option<Communicator>> {
        config.secret.clone_from(&self.config.secret);
        if color == Some(u32::MAX) {
            return Err(Error::invalid(
                "split color must be below 4294967295 (pass None for no color)",
            ));
        }
        let n = self.size();
        let mine = Record {
            color,
            key,
            nonce: random_nonce()?,
        };
        let mut all = vec![0u8; RECORD * n];
        self.all_gather(&mine.encode(), &mut all)?;
        let records = all
            .chunks_exact(RECORD)
            .map(Record::decode)
            .collect::<Result<Vec<_>>>()?;

        let Some(color) = color else {
            // Still take part in the parent-wide address exchange.
            self.exchange_addresses(&[])?;
            return Ok(None);
        };
        let members = members(&records, color);
        let new_rank = members
            .iter()
            .position(|&r| r == self.rank())
            .ok_or_else(|| Error::internal("this rank is missing from its own split color"))?;
        let (engine, config, topology) = crate::connect::connect_engine(
            config.clone(),
            new_rank,
            members.len(),
            self.bind_ip,
            comm_id(&records, &members, color),
            &mut |addr: &[u8]| {
                let slots = self.exchange_addresses(addr)?;
                Ok(members.iter().map(|&r| slots[r].clone()).collect())
            },
        )?;
        Communicator::with_engine(engine, config, topology, None, self.bind_ip).map(Some)
    }

    /// All-gather one address per parent rank (empty for ranks joining nothing).
    fn exchange_addresses(&self, addr: &[u8]) -> Result<Vec<Vec<u8>>> {
        if addr.len() > ADDR_SLOT - 2 {
            return Err(Error::internal(format!(
                "listening address of {} bytes does not fit a {ADDR_SLOT}-byte slot",
                addr.len()
            )));
        }
        let mut slot = [0u8; ADDR_SLOT];
        slot[..2].copy_from_slice(&(addr.len() as u16).to_le_bytes());
        slot[2..2 + addr.len()].copy_from_slice(addr);
        let mut all = vec![0u8; ADDR_SLOT * self.size()];
        self.all_gather(&slot, &mut all)?;
        all.chunks_exact(ADDR_SLOT)
            .enumerate()
            .map(|(r, s)| {
                let len = le_u16(s, 0) as usize;
                if len > ADDR_SLOT - 2 {
                    return Err(Error::protocol(format!(
                        "rank {r} sent a split address of {len} bytes"
                    )));
                }
                Ok(s[2..2 + len].to_vec())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(color: Option<u32>, key: i64) -> Record {
        Record {
            color,
            key,
            nonce: 7,
        }
    }

    #[test]
    fn records_round_trip() {
        for r in [
            rec(None, -5),
            rec(Some(0), 0),
            rec(Some(u32::MAX - 1), i64::MIN),
        ] {
            assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn bad_color_on_the_wire_is_an_error() {
        let mut b = rec(Some(1), 0).encode();
        b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(Record::decode(&b).is_err());
    }

    #[test]
    fn members_are_ordered_by_key_then_rank() {
        let rs = [
            rec(Some(1), 3),
            rec(Some(2), 0),
            rec(Some(1), -1),
            rec(None, 0),
            rec(Some(1), 3),
        ];
        assert_eq!(members(&rs, 1), vec![2, 0, 4]);
        assert_eq!(members(&rs, 2), vec![1]);
        assert!(members(&rs, 9).is_empty());
    }

    #[test]
    fn colors_get_different_ids() {
        let rs = [rec(Some(0), 0), rec(Some(1), 0)];
        assert_ne!(comm_id(&rs, &[0], 0), comm_id(&rs, &[1], 1));
    }
}
