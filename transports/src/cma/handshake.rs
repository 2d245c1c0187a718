//! Deciding, per pair of ranks, whether chunks may move by cross-memory attach.
//!
//! Over each new data connection both sides send a [`Record`]: their pid, the address and
//! value of a random probe word, and the address of their withdrawal epoch. Each side then
//! tries to read the other's probe word with `process_vm_readv`; only a side that reads back
//! the exact 64-bit value knows it reaches the very process at the other end of the socket
//! (same host, same pid namespace, and permission to read its memory). Both sides then
//! exchange that verdict, and the pair uses CMA only when both succeeded, so the two ends
//! always agree on how chunks travel. Every phase writes to all peers before reading from
//! any, so no ordering of ranks can deadlock.

use super::remote;
use crate::auth::TimedStream;
use dmsc_core::error::{Error, Result};
use dmsc_core::wire::{le_u32, le_u64};
use dmsc_core::Rank;
use std::io::{Read, Write};
use std::sync::OnceLock;
use std::time::Instant;

const MAGIC: u32 = u32::from_le_bytes(*b"DCMA");
/// Bytes of an encoded [`Record`].
pub(crate) const RECORD_LEN: usize = 40;

/// What one side tells the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// The side is willing to use CMA (`DMSC_CMA` not `0`).
    pub willing: bool,
    /// Its process id.
    pub pid: u32,
    /// Address of its probe word.
    pub probe_addr: u64,
    /// Value of its probe word.
    pub probe_value: u64,
    /// Address of its withdrawal epoch (see [`super::CmaTransport`]).
    pub epoch_addr: u64,
}

impl Record {
    pub(crate) fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&u32::from(self.willing).to_le_bytes());
        b[8..12].copy_from_slice(&self.pid.to_le_bytes());
        b[16..24].copy_from_slice(&self.probe_addr.to_le_bytes());
        b[24..32].copy_from_slice(&self.probe_value.to_le_bytes());
        b[32..40].copy_from_slice(&self.epoch_addr.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8; RECORD_LEN]) -> Result<Record> {
        let u32_at = |i: usize| le_u32(b, i);
        let u64_at = |i: usize| le_u64(b, i);
        if u32_at(0) != MAGIC {
            return Err(Error::protocol(format!(
                "bad memory-attach record magic {:#010x}",
                u32_at(0)
            )));
        }
        let willing = match u32_at(4) {
            0 => false,
            1 => true,
            f => return Err(Error::protocol(format!("bad memory-attach flags {f}"))),
        };
        if u32_at(12) != 0 {
            return Err(Error::protocol(format!(
                "memory-attach record has non-zero reserved bytes {:#010x}",
                u32_at(12)
            )));
        }
        Ok(Record {
            willing,
            pid: u32_at(8),
            probe_addr: u64_at(16),
            probe_value: u64_at(24),
            epoch_addr: u64_at(32),
        })
    }
}

/// How to reach a peer's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeerMemory {
    /// The peer's process id.
    pub pid: i32,
    /// Address of the peer's withdrawal epoch.
    pub epoch_addr: u64,
}

/// This process's probe word: a random value at a fixed address, set once.
fn probe() -> &'static u64 {
    static PROBE: OnceLock<Box<u64>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let v = crate::store::random_nonce().unwrap_or_else(|_| {
            // No randomness source: a value that no reader can guess in advance still
            // rejects unrelated processes (they would have to hold the same value).
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ u64::from(std::process::id()).rotate_left(32)
        });
        Box::new(v | 1)
    })
}

/// Under Yama `ptrace_scope=1` a process may only read its descendants, and dmscrun's ranks
/// are siblings: allow any process of the same user to attach, as Open MPI does for CMA.
fn allow_same_user_readers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if scope == "1" {
            // SAFETY: prctl with integer arguments only; failure leaves the setting as it was.
            unsafe {
                libc::prctl(libc::PR_SET_PTRACER, libc::PR_SET_PTRACER_ANY, 0, 0, 0);
            }
        }
    });
}

fn io_err(what: &str, peer: Rank, e: std::io::Error) -> Error {
    Error::io(
        format!("{what} rank {peer} during the memory-attach handshake"),
        &e,
    )
}

fn set_deadline<S: TimedStream + ?Sized>(s: &S, deadline: Instant, peer: Rank) -> Result<()> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(std::time::Duration::from_millis(10));
    s.read_timeout(Some(left))
        .map_err(|e| io_err("setting a read timeout towards", peer, e))
}

/// Run the handshake over every peer's data stream (`streams[i]` connects to `peers[i]`).
/// Returns, per entry, how to reach that peer's memory, or `None` when chunks to and from it
/// go over the socket.
pub(crate) fn negotiate<S: TimedStream + ?Sized>(
    streams: &mut [&mut S],
    peers: &[Rank],
    willing: bool,
    epoch_addr: u64,
    deadline: Instant,
) -> Result<Vec<Option<PeerMemory>>> {
    if willing {
        allow_same_user_readers();
    }
    let p = probe();
    let mine = Record {
        willing,
        pid: std::process::id(),
        probe_addr: p as *const u64 as u64,
        probe_value: *p,
        epoch_addr,
    }
    .encode();
    for (s, &peer) in streams.iter_mut().zip(peers) {
        s.write_all(&mine)
            .map_err(|e| io_err("sending a record to", peer, e))?;
    }
    let mut theirs = Vec::with_capacity(streams.len());
    for (s, &peer) in streams.iter_mut().zip(peers) {
        set_deadline(&**s, deadline, peer)?;
        let mut b = [0u8; RECORD_LEN];
        s.read_exact(&mut b)
            .map_err(|e| io_err("reading the record of", peer, e))?;
        theirs.push(Record::decode(&b)?);
    }
    // Phase two: can this side read the other's probe word?
    let verdicts: Vec<bool> = theirs
        .iter()
        .map(|r| {
            willing
                && r.willing
                && i32::try_from(r.pid).is_ok()
                && remote::read_u64(r.pid as i32, r.probe_addr).ok() == Some(r.probe_value)
        })
        .collect();
    for ((s, &peer), &v) in streams.iter_mut().zip(peers).zip(&verdicts) {
        s.write_all(&[u8::from(v)])
            .map_err(|e| io_err("sending a verdict to", peer, e))?;
    }
    let mut out = Vec::with_capacity(streams.len());
    for (i, (s, &peer)) in streams.iter_mut().zip(peers).enumerate() {
        let mut b = [0u8; 1];
        s.read_exact(&mut b)
            .map_err(|e| io_err("reading the verdict of", peer, e))?;
        s.read_timeout(None)
            .map_err(|e| io_err("clearing a read timeout towards", peer, e))?;
        let both = verdicts[i] && b[0] == 1;
        out.push(both.then_some(PeerMemory {
            pid: theirs[i].pid as i32,
            epoch_addr: theirs[i].epoch_addr,
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    #[test]
    fn record_round_trip_and_rejects_garbage() {
        let r = Record {
            willing: true,
            pid: 77,
            probe_addr: 0x7fff_0000_1000,
            probe_value: 0xdead_beef_cafe_f00d,
            epoch_addr: 0x5555_0000_2000,
        };
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        let mut b = r.encode();
        b[0] ^= 1;
        assert!(Record::decode(&b).is_err());
        let mut b = r.encode();
        b[4] = 7;
        assert!(Record::decode(&b).is_err());
        let mut b = r.encode();
        b[13] = 1;
        let e = Record::decode(&b).unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
    }

    #[test]
    fn two_ends_in_one_process_agree() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let epoch = Box::new(0u64);
        let ea = &*epoch as *const u64 as u64;
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let t = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            negotiate(&mut [&mut s], &[0], true, ea, deadline).unwrap()
        });
        let (mut s, _) = l.accept().unwrap();
        let a = negotiate(&mut [&mut s], &[1], true, ea, deadline).unwrap();
        let b = t.join().unwrap();
        let want = Some(PeerMemory {
            pid: std::process::id() as i32,
            epoch_addr: ea,
        });
        assert_eq!(a, vec![want]);
        assert_eq!(b, vec![want]);
    }

    #[test]
    fn one_unwilling_end_turns_it_off_for_both() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let t = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            negotiate(&mut [&mut s], &[0], false, 0, deadline).unwrap()
        });
        let (mut s, _) = l.accept().unwrap();
        assert_eq!(
            negotiate(&mut [&mut s], &[1], true, 0, deadline).unwrap(),
            vec![None]
        );
        assert_eq!(t.join().unwrap(), vec![None]);
    }
}
