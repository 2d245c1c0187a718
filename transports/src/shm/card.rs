//! What each rank publishes about its host in the rendezvous exchange, and the test of
//! whether two ranks share one.
//!
//! Two ranks may use shared memory only when they run on one kernel (the same boot id), in
//! one IPC namespace, and in one network namespace (the abstract Unix socket that hands the
//! segment over belongs to the network namespace). The card is only a first sieve: the link
//! is then proven by connecting to the peer's socket, authenticating with the job's secret
//! and mapping the segment it hands over; a pair that fails any step is an error, never a
//! silent fall-back to something else.

use dmsc_core::error::{Error, Result};
use dmsc_core::wire::{le_u32, le_u64};
use std::os::unix::fs::MetadataExt;

const MAGIC: u32 = u32::from_le_bytes(*b"DSH1");
/// Bytes of an encoded card.
pub const CARD_LEN: usize = 56;

/// One rank's host identity and shared-memory listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Card {
    /// The rank offers shared memory (`DMSC_SHM` not `0`).
    pub willing: bool,
    /// Inode of the rank's IPC namespace.
    pub ipc_ns: u64,
    /// Inode of the rank's network namespace.
    pub net_ns: u64,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`), as 16 bytes.
    pub boot_id: [u8; 16],
    /// Name of the rank's listener (see `sock::listen`).
    pub nonce: [u8; 16],
}

impl Card {
    /// This process's card, with `nonce` naming its listener (`None`: not willing).
    pub fn local(nonce: Option<[u8; 16]>) -> Result<Card> {
        let ns = |which: &str| -> Result<u64> {
            std::fs::metadata(format!("/proc/self/ns/{which}"))
                .map(|m| m.ino())
                .map_err(|e| Error::io(format!("reading /proc/self/ns/{which}"), &e))
        };
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map_err(|e| Error::io("reading /proc/sys/kernel/random/boot_id", &e))?;
        Ok(Card {
            willing: nonce.is_some(),
            ipc_ns: ns("ipc")?,
            net_ns: ns("net")?,
            boot_id: parse_boot_id(&boot)?,
            nonce: nonce.unwrap_or([0; 16]),
        })
    }

    /// True when `other` runs on this card's host, in the same namespaces, and both offer
    /// shared memory.
    pub fn shares_host(&self, other: &Card) -> bool {
        self.willing && other.willing && self.host_key() == other.host_key()
    }

    /// What identifies the card's host: boot id, IPC and network namespaces. Ranks with
    /// equal keys are on one host for the topology whether or not they offer shared memory
    /// (a network namespace with its own IPC namespace is a host of its own: nothing
    /// same-host reaches across).
    pub fn host_key(&self) -> ([u8; 16], u64, u64) {
        (self.boot_id, self.ipc_ns, self.net_ns)
    }

    /// The abstract Unix socket name of the rank's shared-memory listener (open only while
    /// a communicator is being set up).
    pub fn socket_name(&self) -> Vec<u8> {
        super::sock::name(&self.nonce)
    }

    /// The card's bytes.
    pub fn encode(&self) -> [u8; CARD_LEN] {
        let mut b = [0u8; CARD_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4] = u8::from(self.willing);
        b[8..16].copy_from_slice(&self.ipc_ns.to_le_bytes());
        b[16..24].copy_from_slice(&self.net_ns.to_le_bytes());
        b[24..40].copy_from_slice(&self.boot_id);
        b[40..56].copy_from_slice(&self.nonce);
        b
    }

    /// Decode the card that starts `b` (rank `rank`'s, for error messages).
    pub fn decode(b: &[u8], rank: usize) -> Result<Card> {
        if b.len() < CARD_LEN || le_u32(b, 0) != MAGIC {
            return Err(Error::protocol(format!(
                "rank {rank} published no host card (is it running an older dmsc?)"
            )));
        }
        if b[4] > 1 || b[5..8].iter().any(|&x| x != 0) {
            return Err(Error::protocol(format!(
                "rank {rank} published a host card with bad flags"
            )));
        }
        let arr = |i: usize| -> [u8; 16] { b[i..i + 16].try_into().unwrap_or([0; 16]) };
        Ok(Card {
            willing: b[4] == 1,
            ipc_ns: le_u64(b, 8),
            net_ns: le_u64(b, 16),
            boot_id: arr(24),
            nonce: arr(40),
        })
    }
}

/// This host's name (the kernel's `hostname`, per UTS namespace), or `localhost` when it
/// cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The 16 bytes of a boot id such as `1b4e28ba-2fa1-11d2-883f-0016d3cca427`.
fn parse_boot_id(s: &str) -> Result<[u8; 16]> {
    let hex: Vec<u8> = s.trim().bytes().filter(|&c| c != b'-').collect();
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    if hex.len() != 32 {
        return Err(Error::protocol(format!(
            "unreadable boot id {:?}",
            s.trim()
        )));
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => out[i] = h << 4 | l,
            _ => {
                return Err(Error::protocol(format!(
                    "unreadable boot id {:?}",
                    s.trim()
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_round_trip_and_garbage_is_an_error() {
        let c = Card::local(Some([9; 16])).unwrap();
        assert_eq!(Card::decode(&c.encode(), 3).unwrap(), c);
        let e = Card::decode(b"127.0.0.1:5000", 3).unwrap_err().to_string();
        assert!(e.contains("rank 3"), "{e}");
        let mut b = c.encode();
        b[4] = 7;
        assert!(Card::decode(&b, 3).is_err());
    }

    #[test]
    fn hosts_differ_by_boot_id_or_namespace_and_unwilling_ranks_share_nothing() {
        let a = Card::local(Some([1; 16])).unwrap();
        let b = Card::local(Some([2; 16])).unwrap();
        assert!(a.shares_host(&b));
        assert!(!a.shares_host(&Card {
            ipc_ns: a.ipc_ns + 1,
            ..b
        }));
        assert!(!a.shares_host(&Card {
            net_ns: a.net_ns + 1,
            ..b
        }));
        assert!(!a.shares_host(&Card {
            boot_id: [0; 16],
            ..b
        }));
        assert!(!a.shares_host(&Card::local(None).unwrap()));
    }

    #[test]
    fn boot_ids_parse() {
        let id = parse_boot_id("1b4e28ba-2fa1-11d2-883f-0016d3cca427\n").unwrap();
        assert_eq!(id[0], 0x1b);
        assert_eq!(id[15], 0x27);
        assert!(parse_boot_id("xyz").is_err());
    }
}
