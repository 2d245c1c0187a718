//! [`UniqueId`]: the 128-byte token that names a job's rendezvous store.
//!
//! Modelled on NCCL's `ncclUniqueId` (`NCCL_UNIQUE_ID_BYTES` = 128, produced by
//! `ncclGetUniqueId` and passed to every rank out of band, typically by an MPI broadcast). As
//! in NCCL's bootstrap, the id carries the address of a listening socket (here: the store)
//! and a random magic that tells this job from any other (here: the 64-bit `nonce`, also a
//! good key prefix). Unlike NCCL's, our id is versioned, checksummed and validated, so a
//! truncated or corrupted id is an error instead of a connection to nowhere. It also carries
//! a random 32-byte job secret: every connection of a job joined through the id (store and
//! data) authenticates with it ([`crate::auth`]), so whoever holds the id is in the job and
//! nobody else is. Treat the id as a credential.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! 0..4    magic "DMSU"          24..28  IPv6 scope id (0 for IPv4)
//! 4       version (2)           28..32  zero
//! 5       family (4 or 6)       32..40  nonce
//! 6..8    store port            40..48  FNV-1a 64 checksum of bytes 0..40 and 48..80
//! 8..24   store IP (IPv4 in 8..12, the rest zero)    48..80  job secret
//!                                                    80..128 zero (reserved)
//! ```
//!
//! The nonce and the secret must come from a real random source; that is I/O, so this pure
//! crate takes them as parameters and `dmsc-transports` generates them.

use crate::error::{Error, Result};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

const MAGIC: [u8; 4] = *b"DMSU";
const VERSION: u8 = 2;
const CHECKED: usize = 40;
const SECRET: std::ops::Range<usize> = 48..80;

/// A job's rendezvous token: the store's address, a random job nonce and the job's secret,
/// 128 bytes on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UniqueId {
    store: SocketAddr,
    nonce: u64,
    secret: [u8; 32],
}

impl UniqueId {
    /// Size of the encoded id in bytes, as NCCL's `NCCL_UNIQUE_ID_BYTES`.
    pub const SIZE: usize = 128;

    /// An id naming the store at `store`, for the job identified by `nonce` whose connections
    /// authenticate with `secret`. The address must be one other hosts can connect to:
    /// neither unspecified (`0.0.0.0`, `::`) nor port 0.
    pub fn new(store: SocketAddr, nonce: u64, secret: [u8; 32]) -> Result<UniqueId> {
        if store.port() == 0 {
            return Err(Error::invalid(format!(
                "unique id store address {store} has port 0"
            )));
        }
        if store.ip().is_unspecified() {
            return Err(Error::invalid(format!(
                "unique id store address {store} is unspecified: give the address ranks \
                 should connect to"
            )));
        }
        Ok(UniqueId {
            store,
            nonce,
            secret,
        })
    }

    /// The store's address.
    pub fn store_addr(&self) -> SocketAddr {
        self.store
    }

    /// The random job nonce.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    /// The job's secret: every connection of the job proves knowledge of it.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Encode into the 128-byte form.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[6..8].copy_from_slice(&self.store.port().to_le_bytes());
        match self.store {
            SocketAddr::V4(a) => {
                b[5] = 4;
                b[8..12].copy_from_slice(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                b[5] = 6;
                b[8..24].copy_from_slice(&a.ip().octets());
                b[24..28].copy_from_slice(&a.scope_id().to_le_bytes());
            }
        }
        b[32..40].copy_from_slice(&self.nonce.to_le_bytes());
        b[SECRET].copy_from_slice(&self.secret);
        let sum = checksum(&b);
        b[40..48].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Decode and validate the 128-byte form. Every defect (length, magic, version, family,
    /// checksum, non-zero reserved bytes, unusable address) is an [`Error::InvalidArgument`]
    /// that says which.
    pub fn from_bytes(bytes: &[u8]) -> Result<UniqueId> {
        let bad = |why: String| Error::invalid(format!("not a valid dmsc unique id: {why}"));
        if bytes.len() != Self::SIZE {
            return Err(bad(format!(
                "it has {} bytes, expected {}",
                bytes.len(),
                Self::SIZE
            )));
        }
        if bytes[0..4] != MAGIC {
            return Err(bad(format!("bad magic {:02x?}", &bytes[0..4])));
        }
        if bytes[4] != VERSION {
            return Err(bad(format!(
                "version {} is not supported (this build makes version {VERSION})",
                bytes[4]
            )));
        }
        let sum = u64::from_le_bytes(arr(&bytes[40..48]));
        if sum != checksum(bytes) {
            return Err(bad("checksum mismatch (corrupted in transit?)".into()));
        }
        if bytes[28..32]
            .iter()
            .chain(&bytes[SECRET.end..])
            .any(|&b| b != 0)
        {
            return Err(bad("reserved bytes are not zero".into()));
        }
        let port = u16::from_le_bytes(arr(&bytes[6..8]));
        let store = match bytes[5] {
            4 => {
                if bytes[12..28].iter().any(|&b| b != 0) {
                    return Err(bad("IPv4 id with bytes after the address".into()));
                }
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(arr::<4>(&bytes[8..12]))), port)
            }
            6 => SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(arr::<16>(&bytes[8..24])),
                port,
                0,
                u32::from_le_bytes(arr(&bytes[24..28])),
            )),
            f => return Err(bad(format!("address family {f} is neither 4 nor 6"))),
        };
        let nonce = u64::from_le_bytes(arr(&bytes[32..40]));
        UniqueId::new(store, nonce, arr(&bytes[SECRET])).map_err(|e| bad(e.to_string()))
    }

    /// The 128 bytes as 256 lower-case hex digits, for environment variables and logs.
    pub fn to_hex(&self) -> String {
        self.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parse the form [`to_hex`](Self::to_hex) writes (upper or lower case).
    pub fn from_hex(s: &str) -> Result<UniqueId> {
        let s = s.trim();
        if s.len() != 2 * Self::SIZE || !s.is_ascii() {
            return Err(Error::invalid(format!(
                "not a valid dmsc unique id: expected {} hex digits, got {} characters",
                2 * Self::SIZE,
                s.chars().count()
            )));
        }
        let mut bytes = [0u8; Self::SIZE];
        for (i, b) in bytes.iter_mut().enumerate() {
            let pair = &s.as_bytes()[2 * i..2 * i + 2];
            // Not `u8::from_str_radix`, which also takes a sign ("+f").
            *b = hex_digit(pair[0])
                .zip(hex_digit(pair[1]))
                .map(|(hi, lo)| (hi << 4) | lo)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "not a valid dmsc unique id: {:?} at offset {} is not hex",
                        &s[2 * i..2 * i + 2],
                        2 * i
                    ))
                })?;
        }
        UniqueId::from_bytes(&bytes)
    }
}

impl fmt::Debug for UniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UniqueId(store={}, nonce={:016x})",
            self.store, self.nonce
        )
    }
}

impl fmt::Display for UniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The value of one hexadecimal digit (either case).
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Copy a slice of known length into an array (the callers' ranges are constant).
fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}

/// The checksum of an encoded id (bytes 0..40 and the secret).
fn checksum(b: &[u8]) -> u64 {
    fnv1a(b[..CHECKED].iter().chain(&b[SECRET]))
}

/// 64-bit FNV-1a: a checksum against corruption, not an authenticator.
fn fnv1a<'a>(data: impl Iterator<Item = &'a u8>) -> u64 {
    data.fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> [UniqueId; 2] {
        [
            UniqueId::new(
                "10.1.2.3:29500".parse().unwrap(),
                0xdead_beef_0123_4567,
                [0x5a; 32],
            )
            .unwrap(),
            UniqueId::new("[fe80::1%3]:1".parse().unwrap(), u64::MAX, [0xff; 32]).unwrap(),
        ]
    }

    #[test]
    fn round_trips() {
        for id in ids() {
            let b = id.to_bytes();
            assert_eq!(b.len(), 128);
            assert_eq!(UniqueId::from_bytes(&b).unwrap(), id);
            assert_eq!(UniqueId::from_hex(&id.to_hex()).unwrap(), id);
            assert_eq!(UniqueId::from_hex(&id.to_hex().to_uppercase()).unwrap(), id);
        }
        assert_eq!(ids()[1].store_addr().to_string(), "[fe80::1%3]:1");
    }

    #[test]
    fn rejects_unusable_addresses() {
        assert!(UniqueId::new("0.0.0.0:5".parse().unwrap(), 1, [1; 32]).is_err());
        assert!(UniqueId::new("1.2.3.4:0".parse().unwrap(), 1, [1; 32]).is_err());
    }

    #[test]
    fn every_corruption_is_caught() {
        let b = ids()[0].to_bytes();
        let msg = |bytes: &[u8]| UniqueId::from_bytes(bytes).unwrap_err().to_string();
        assert!(msg(&b[..127]).contains("127 bytes"));
        for i in 0..128 {
            let mut c = b;
            c[i] ^= 0x40;
            let e = msg(&c);
            assert!(
                e.starts_with("invalid argument: not a valid dmsc unique id"),
                "{e}"
            );
        }
        assert!(UniqueId::from_hex("zz").is_err());
        assert!(UniqueId::from_hex(&"g".repeat(256)).is_err());
        assert!(UniqueId::from_hex(&"\u{e9}".repeat(128)).is_err());
        // A sign is not a hex digit (u8::from_str_radix would take "+f").
        let mut hex = ids()[0].to_hex();
        hex.replace_range(0..2, "+4");
        let e = UniqueId::from_hex(&hex).unwrap_err().to_string();
        assert!(e.contains("\"+4\" at offset 0 is not hex"), "{e}");
    }
}
