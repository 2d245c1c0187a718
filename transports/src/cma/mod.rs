//! Single-copy transfer between ranks on one host: large chunks pass by reference and the
//! receiver copies them straight out of the sender's memory with `process_vm_readv(2)`
//! (cross-memory attach, as in Open MPI's `vader` BTL and MPICH's `nemesis` LMT).
//!
//! Over loopback TCP every byte is copied twice (into the sender's socket buffer, out of the
//! receiver's) and walks the TCP stack in between; on a two-core host that copy work, not
//! the link, bounds bandwidth. [`CmaTransport`] wraps a transport: for peers that passed the
//! [`handshake`] it replaces each data frame of at least [`REF_MIN`] bytes with a
//! [`DATA_REF`] frame carrying a 32-byte descriptor (address, length, id, epoch),
//! sent in the same order on the same connection, so matching and header checks are those of
//! the wrapped transport. The receiver copies the chunk to its destination and acknowledges
//! it on the control connection; only then is the sender's chunk complete and its memory free
//! for reuse.
//!
//! Withdrawal: when the sender's operation fails, `cancel_all` bumps the sender's epoch
//! before returning, and the caller may then free the memory. A receiver reads the epoch
//! *after* copying and fails the chunk when it moved, so a chunk copied from withdrawn memory
//! is never delivered as data (the orderings are in [`epoch`], with their loom model).
//!
//! Registration belongs to the wrapped transport: [`Transport::needs_registration`],
//! [`Transport::register`] and [`Transport::deregister`] are forwarded, and a registered
//! posting passes through unchanged, never by reference (the descriptor would lie in memory
//! the handle does not cover, and the receiver pulls into its own memory without one). The
//! two ends of a pair thus agree on which frames go by reference as long as their wrapped
//! transports agree on which peers need registration, which the trait asks of them.

mod epoch;
pub(crate) mod handshake;
mod remote;

pub(crate) use epoch::{address as epoch_address, new_epoch};
pub(crate) use handshake::{negotiate, PeerMemory};

use crate::id_hash::IdMap;
use dmsc_core::engine::{Completion, MemKind, RegHandle, Token, Transport, Waker};
use dmsc_core::error::{Error, Result};
use dmsc_core::sync::AtomicU64;
use dmsc_core::wire::{FrameHeader, FrameKind};
use dmsc_core::Rank;
use std::sync::Arc;
use std::time::Duration;

/// Smallest chunk passed by reference over TCP; smaller ones are cheaper to copy through the
/// socket than to acknowledge. Both ends of a pair wrap the same transport, so they agree.
pub const REF_MIN: u32 = 64 << 10;
/// Smallest chunk passed by reference over shared memory, where copying through the rings is
/// cheap: measured on the development VM (2 ranks, all-reduce busbw), rings beat the
/// reference's acknowledgement round trip at 128 KiB (8.0 against 5.7-6.3 GB/s), tie at
/// 256 KiB, and lose from 1 MiB on (5.3 against 6.0 GB/s; 4.7 against 6.2 at 4 MiB).
/// The same holds with more ranks than cores, where each acknowledgement waits for the
/// sender to be scheduled again: 4 ranks on 2 cores, halving-doubling all-reduce, interleaved
/// runs on 2026-12-06: 256 KiB took 97-116 us with this threshold against 152-265 us with
/// [`REF_MIN`]; 16 MiB (the planner's choice) 6.4-7.7 ms against 8.0-8.7 ms.
pub const SHM_REF_MIN: u32 = 256 << 10;
/// Bytes of a descriptor.
const DESC_LEN: usize = 32;
/// First byte of an acknowledgement on the control connection, in the range of tags the
/// engine reserves for transports.
const ACK_TAG: u8 = 0xC1;
const _: () = assert!(ACK_TAG >= dmsc_core::engine::control::FIRST_TRANSPORT_TAG);
/// A chunk passed by reference: the payload is a descriptor of where the chunk lies in the
/// sender's memory (a transport frame kind, [`dmsc_core::wire::TRANSPORT_KINDS`]).
pub(crate) const DATA_REF: FrameKind = FrameKind::Transport(0x81);

/// The bit of the tokens this layer gives the inner transport for its own postings (chunks by
/// reference), so that every other completion passes back without a lookup: the engine's
/// tokens (an epoch in the high half, a slot index in the low) have it clear until their
/// epoch reaches 2^31, and one that has it is remembered in `ops` like the others.
const OWN: Token = 1 << 63;

/// One posted operation of the wrapped transport that is not passed through.
enum Op {
    /// An engine posting whose token has the [`OWN`] bit, under an id of this layer's.
    Plain { token: Token },
    /// A chunk sent by reference: complete once the descriptor left and the peer acked.
    RefSend {
        token: Token,
        _desc: Box<[u8; DESC_LEN]>,
        sent: bool,
        acked: bool,
    },
    /// A chunk received by reference: the descriptor lands in `desc`, the data at `dst`.
    RefRecv {
        token: Token,
        peer: Rank,
        expect: FrameHeader,
        desc: Box<[u8; DESC_LEN]>,
        dst: *mut u8,
        len: usize,
    },
}

/// A transport whose large same-host chunks move by cross-memory attach.
pub(crate) struct CmaTransport {
    inner: Box<dyn Transport>,
    /// Per rank: how to reach its memory, when the pair agreed on CMA.
    peers: Vec<Option<PeerMemory>>,
    /// Bumped when this side withdraws its posted sends; read remotely by receivers (see
    /// [`epoch::new_epoch`] for why it is never freed).
    epoch: &'static AtomicU64,
    next: u64,
    ops: IdMap<Op>,
    scratch: Vec<Completion>,
    /// Acks queued so far (to know when one must be flushed).
    acks: u64,
    name: &'static str,
    /// Smallest chunk passed by reference ([`REF_MIN`] over TCP, [`SHM_REF_MIN`] over shared
    /// memory).
    ref_min: u32,
}

// SAFETY: the raw destination pointers in `ops` are lent by the engine under the
// `Transport` contract (valid until completion or `cancel_all`) and are only used by the
// thread that owns the transport.
unsafe impl Send for CmaTransport {}

/// The little-endian `u64` at byte `i` of a descriptor.
fn desc_word(desc: &[u8; DESC_LEN], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&desc[i..i + 8]);
    u64::from_le_bytes(a)
}

impl CmaTransport {
    /// Wrap `inner`; `peers[r]` says how to reach rank `r`'s memory (`None`: by socket).
    /// Chunks of `ref_min` bytes and more pass by reference ([`REF_MIN`] over TCP,
    /// [`SHM_REF_MIN`] over shared memory); both ends of a pair must pass the
    /// same value.
    pub(crate) fn new(
        inner: Box<dyn Transport>,
        peers: Vec<Option<PeerMemory>>,
        epoch: &'static AtomicU64,
        ref_min: u32,
    ) -> CmaTransport {
        let name = match inner.name() {
            "tcp-uring" => "tcp-uring+cma",
            "tcp-socket" => "tcp-socket+cma",
            "shm" => "shm+cma",
            _ => "tcp+cma",
        };
        CmaTransport {
            inner,
            peers,
            epoch,
            next: 0,
            ops: IdMap::default(),
            scratch: Vec::new(),
            acks: 0,
            name,
            ref_min,
        }
    }

    fn by_ref(&self, peer: Rank, h: &FrameHeader) -> bool {
        h.kind == FrameKind::Data
            && h.len >= self.ref_min
            && self.peers.get(peer).is_some_and(|p| p.is_some())
    }

    /// A token of this layer's own (its [`OWN`] bit set, never reused).
    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next | OWN
    }

    /// The inner transport's token for a plain posting of the engine's `token`: the same
    /// token (nothing to remember, completions pass back as they come), unless it has the
    /// [`OWN`] bit, which then goes through `ops` under an id of this layer's.
    fn plain(&mut self, token: Token) -> Token {
        if token & OWN == 0 {
            return token;
        }
        let id = self.id();
        self.ops.insert(id, Op::Plain { token });
        id
    }

    /// Copy a chunk announced by `desc` from `peer` to `dst`, then acknowledge it.
    fn pull(&mut self, peer: Rank, desc: &[u8; DESC_LEN], dst: *mut u8, len: usize) -> Result<()> {
        let word = |i: usize| desc_word(desc, i);
        let (addr, dlen, id, announced) = (word(0), word(8), word(16), word(24));
        if dlen != len as u64 {
            return Err(Error::protocol(format!(
                "rank {peer} announced a chunk of {dlen} bytes where {len} were expected"
            )));
        }
        let mem = self.peers[peer].ok_or_else(|| Error::internal("pull from a socket peer"))?;
        // SAFETY: `dst` was lent for `len` bytes by the engine with the receive.
        unsafe { remote::read(mem.pid, addr, dst, len) }.map_err(|e| {
            Error::io(
                format!(
                    "copying a {len}-byte chunk from rank {peer} (pid {})",
                    mem.pid
                ),
                &e,
            )
        })?;
        let unchanged = epoch::unchanged_after_copy(announced, || {
            remote::read_u64(mem.pid, mem.epoch_addr).map_err(|e| {
                Error::io(
                    format!("reading the epoch of rank {peer} (pid {})", mem.pid),
                    &e,
                )
            })
        })?;
        if !unchanged {
            return Err(Error::PeerLost {
                peer,
                detail: "it withdrew a chunk while this rank was copying it (its operation failed)"
                    .into(),
            });
        }
        let mut ack = [0u8; 9];
        ack[0] = ACK_TAG;
        ack[1..].copy_from_slice(&id.to_le_bytes());
        self.inner.send_control(peer, &ack);
        self.acks += 1;
        Ok(())
    }

    fn on_completion(&mut self, c: Completion, out: &mut Vec<Completion>) {
        let passes = match &c {
            Completion::Sent { token }
            | Completion::Received { token, .. }
            | Completion::BadHeader { token, .. } => token & OWN == 0,
            _ => false,
        };
        if passes {
            out.push(c);
            return;
        }
        match c {
            Completion::Sent { token: t } => match self.ops.remove(&t) {
                Some(Op::Plain { token }) => out.push(Completion::Sent { token }),
                Some(Op::RefSend {
                    token,
                    _desc,
                    acked,
                    ..
                }) => {
                    if acked {
                        out.push(Completion::Sent { token });
                    } else {
                        self.ops.insert(
                            t,
                            Op::RefSend {
                                token,
                                _desc,
                                sent: true,
                                acked,
                            },
                        );
                    }
                }
                Some(other) => {
                    self.ops.insert(t, other);
                }
                None => {}
            },
            Completion::Received { token: t, crc } => match self.ops.remove(&t) {
                Some(Op::Plain { token }) => out.push(Completion::Received { token, crc }),
                Some(Op::RefRecv {
                    token,
                    peer,
                    expect,
                    desc,
                    dst,
                    len,
                }) => {
                    let announced = desc_word(&desc, 8);
                    if announced != len as u64 {
                        // The same frame with another length: report it as the header
                        // difference it is (a mismatch between the ranks' calls).
                        let mut got = expect;
                        got.len = u32::try_from(announced).unwrap_or(u32::MAX);
                        out.push(Completion::BadHeader { token, peer, got });
                        return;
                    }
                    match self.pull(peer, &desc, dst, len) {
                        // The descriptor frame carried the chunk's header, CRC included.
                        Ok(()) => out.push(Completion::Received { token, crc }),
                        Err(error) => out.push(Completion::PeerFailed { peer, error }),
                    }
                }
                Some(other) => {
                    self.ops.insert(t, other);
                }
                None => {}
            },
            Completion::BadHeader {
                token: t,
                peer,
                got,
            } => {
                let token = match self.ops.remove(&t) {
                    Some(Op::Plain { token })
                    | Some(Op::RefRecv { token, .. })
                    | Some(Op::RefSend { token, .. }) => token,
                    None => return,
                };
                out.push(Completion::BadHeader { token, peer, got });
            }
            Completion::Control { peer, payload } if payload.first() == Some(&ACK_TAG) => {
                let Some(id) = payload
                    .get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                else {
                    out.push(Completion::PeerFailed {
                        peer,
                        error: Error::protocol(format!("rank {peer} sent a malformed chunk ack")),
                    });
                    return;
                };
                // An ack for an operation withdrawn by `cancel_all` is stale: ignore it
                // (ids are never reused).
                match self.ops.remove(&id) {
                    Some(Op::RefSend {
                        token,
                        _desc,
                        sent: true,
                        ..
                    }) => out.push(Completion::Sent { token }),
                    Some(Op::RefSend { token, _desc, .. }) => {
                        self.ops.insert(
                            id,
                            Op::RefSend {
                                token,
                                _desc,
                                sent: false,
                                acked: true,
                            },
                        );
                    }
                    Some(other) => {
                        self.ops.insert(id, other);
                        out.push(Completion::PeerFailed {
                            peer,
                            error: Error::protocol(format!(
                                "rank {peer} acknowledged a chunk that was not sent by reference"
                            )),
                        });
                    }
                    None => {}
                }
            }
            other => out.push(other),
        }
    }
}

impl Drop for CmaTransport {
    fn drop(&mut self) {
        // Whatever a peer still reads after this is withdrawn memory.
        epoch::withdraw(self.epoch);
    }
}

impl Transport for CmaTransport {
    fn name(&self) -> &'static str {
        self.name
    }

    fn peer_transport(&self, peer: Rank) -> &'static str {
        match self.peers.get(peer) {
            Some(Some(_)) => self.name,
            _ => self.inner.peer_transport(peer),
        }
    }

    unsafe fn post_send(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        token: Token,
    ) -> Result<()> {
        if !self.by_ref(peer, header) {
            let t = self.plain(token);
            // SAFETY: forwarded under the caller's contract.
            return unsafe { self.inner.post_send(peer, header, data, t) };
        }
        let id = self.id();
        let mut desc = Box::new([0u8; DESC_LEN]);
        desc[0..8].copy_from_slice(&(data as u64).to_le_bytes());
        desc[8..16].copy_from_slice(&u64::from(header.len).to_le_bytes());
        desc[16..24].copy_from_slice(&id.to_le_bytes());
        desc[24..32].copy_from_slice(&epoch::current(self.epoch).to_le_bytes());
        let mut h = *header;
        h.kind = DATA_REF;
        h.len = DESC_LEN as u32;
        let ptr = desc.as_ptr();
        self.ops.insert(
            id,
            Op::RefSend {
                token,
                _desc: desc,
                sent: false,
                acked: false,
            },
        );
        // SAFETY: the descriptor is boxed in `ops` and outlives the send; `data` stays valid
        // until the ack under the caller's contract.
        unsafe { self.inner.post_send(peer, &h, ptr, id) }
    }

    unsafe fn post_recv(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        token: Token,
    ) -> Result<()> {
        if !self.by_ref(peer, expect) {
            let t = self.plain(token);
            // SAFETY: forwarded under the caller's contract.
            return unsafe { self.inner.post_recv(peer, expect, dst, t) };
        }
        let id = self.id();
        let mut desc = Box::new([0u8; DESC_LEN]);
        let ptr = desc.as_mut_ptr();
        let mut h = *expect;
        h.kind = DATA_REF;
        h.len = DESC_LEN as u32;
        self.ops.insert(
            id,
            Op::RefRecv {
                token,
                peer,
                expect: *expect,
                desc,
                dst,
                len: expect.len as usize,
            },
        );
        // SAFETY: the descriptor buffer is boxed in `ops` until the receive completes or is
        // cancelled.
        unsafe { self.inner.post_recv(peer, &h, ptr, id) }
    }

    fn needs_registration(&self, peer: Rank, kind: MemKind) -> bool {
        self.inner.needs_registration(peer, kind)
    }

    fn register(&mut self, ptr: *mut u8, len: usize, kind: MemKind) -> Result<RegHandle> {
        self.inner.register(ptr, len, kind)
    }

    fn deregister(&mut self, handle: RegHandle) {
        self.inner.deregister(handle)
    }

    unsafe fn post_send_registered(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        reg: RegHandle,
        token: Token,
    ) -> Result<()> {
        let t = self.plain(token);
        // SAFETY: forwarded under the caller's contract; `reg` is the wrapped transport's.
        unsafe { self.inner.post_send_registered(peer, header, data, reg, t) }
    }

    unsafe fn post_recv_registered(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        reg: RegHandle,
        token: Token,
    ) -> Result<()> {
        let t = self.plain(token);
        // SAFETY: forwarded under the caller's contract; `reg` is the wrapped transport's.
        unsafe { self.inner.post_recv_registered(peer, expect, dst, reg, t) }
    }

    fn send_control(&mut self, peer: Rank, payload: &[u8]) {
        self.inner.send_control(peer, payload);
    }

    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<()> {
        let mut got = std::mem::take(&mut self.scratch);
        got.clear();
        let mut r = self.inner.poll(&mut got, timeout);
        // Acks queued while handling completions must reach the wire now: the engine may
        // not poll again before its next operation, and the sender waits for them.
        loop {
            let before = self.acks;
            for c in got.drain(..) {
                self.on_completion(c, out);
            }
            if r.is_err() || self.acks == before {
                break;
            }
            r = self.inner.poll(&mut got, Duration::ZERO);
        }
        got.clear();
        self.scratch = got;
        r
    }

    fn cancel_all(&mut self) {
        // Withdraw first: a receiver that copies after this sees the new epoch and fails.
        epoch::withdraw(self.epoch);
        self.inner.cancel_all();
        self.ops.clear();
    }

    fn waker(&self) -> Arc<dyn Waker> {
        self.inner.waker()
    }

    fn describe_peer(&self, peer: Rank) -> Option<String> {
        self.inner.describe_peer(peer)
    }

    fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.inner.wait_fds()
    }

    fn prepare_wait(&mut self) -> bool {
        // This layer's acks travel as the inner transport's control messages, so the inner
        // transport knows all there is to do.
        self.inner.prepare_wait()
    }

    fn end_wait(&mut self) {
        self.inner.end_wait()
    }

    fn watch_fds(&mut self, fds: &[std::os::fd::RawFd]) -> bool {
        self.inner.watch_fds(fds)
    }

    fn path_metrics(&self) -> Option<dmsc_core::engine::PathMetricsHandle> {
        self.inner.path_metrics()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmsc_core::sync::Ordering;
    use dmsc_core::{CollDesc, CollKind, DataType, ReduceOp};
    use std::sync::Mutex;

    /// What the wrapped fake transport saw, and what it will report next.
    #[derive(Default)]
    struct Seen {
        /// (peer, header, data address, token)
        sends: Vec<(Rank, FrameHeader, usize, Token)>,
        recvs: Vec<(Rank, FrameHeader, usize, Token)>,
        controls: Vec<(Rank, Vec<u8>)>,
        next: Vec<Completion>,
        cancelled: bool,
        /// Handles of registered postings, in order; registrations made (address, length).
        handles: Vec<RegHandle>,
        registered: Vec<(usize, usize)>,
    }

    /// The FAKE wrapped transport: records what it is given. It claims to need registered
    /// memory for every peer, which only the registration test relies on (the others post
    /// through the plain methods, as the engine does for transports that do not register).
    struct Fake(Arc<Mutex<Seen>>);

    struct NoWake;
    impl Waker for NoWake {
        fn wake(&self) {}
    }

    impl Transport for Fake {
        fn name(&self) -> &'static str {
            "tcp-socket"
        }
        unsafe fn post_send(
            &mut self,
            p: Rank,
            h: &FrameHeader,
            d: *const u8,
            t: Token,
        ) -> Result<()> {
            self.0.lock().unwrap().sends.push((p, *h, d as usize, t));
            Ok(())
        }
        unsafe fn post_recv(
            &mut self,
            p: Rank,
            h: &FrameHeader,
            d: *mut u8,
            t: Token,
        ) -> Result<()> {
            self.0.lock().unwrap().recvs.push((p, *h, d as usize, t));
            Ok(())
        }
        fn needs_registration(&self, _: Rank, _: dmsc_core::engine::MemKind) -> bool {
            true
        }
        fn register(
            &mut self,
            ptr: *mut u8,
            len: usize,
            _: dmsc_core::engine::MemKind,
        ) -> Result<RegHandle> {
            let mut s = self.0.lock().unwrap();
            s.registered.push((ptr as usize, len));
            Ok(RegHandle {
                key: s.registered.len() as u64,
            })
        }
        unsafe fn post_send_registered(
            &mut self,
            p: Rank,
            h: &FrameHeader,
            d: *const u8,
            reg: RegHandle,
            t: Token,
        ) -> Result<()> {
            let mut s = self.0.lock().unwrap();
            s.sends.push((p, *h, d as usize, t));
            s.handles.push(reg);
            Ok(())
        }
        unsafe fn post_recv_registered(
            &mut self,
            p: Rank,
            h: &FrameHeader,
            d: *mut u8,
            reg: RegHandle,
            t: Token,
        ) -> Result<()> {
            let mut s = self.0.lock().unwrap();
            s.recvs.push((p, *h, d as usize, t));
            s.handles.push(reg);
            Ok(())
        }
        fn send_control(&mut self, p: Rank, payload: &[u8]) {
            self.0.lock().unwrap().controls.push((p, payload.to_vec()));
        }
        fn poll(&mut self, out: &mut Vec<Completion>, _: Duration) -> Result<()> {
            out.append(&mut self.0.lock().unwrap().next);
            Ok(())
        }
        fn cancel_all(&mut self) {
            self.0.lock().unwrap().cancelled = true;
        }
        fn waker(&self) -> Arc<dyn Waker> {
            Arc::new(NoWake)
        }
    }

    fn header(len: u32) -> FrameHeader {
        FrameHeader {
            kind: FrameKind::Data,
            seq: 1,
            desc: CollDesc {
                kind: CollKind::AllReduce,
                count: 1 << 20,
                dtype: DataType::Float32,
                op: ReduceOp::Sum,
                root: 0,
            },
            msg: 0,
            chunk: 0,
            offset: 0,
            len,
            aux: 0,
            crc: None,
        }
    }

    /// A CMA transport whose only peer (rank 1) is this very process.
    fn setup() -> (CmaTransport, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let epoch = new_epoch();
        let me = PeerMemory {
            pid: std::process::id() as i32,
            epoch_addr: epoch_address(epoch),
        };
        let t = CmaTransport::new(
            Box::new(Fake(seen.clone())),
            vec![None, Some(me)],
            epoch,
            REF_MIN,
        );
        (t, seen)
    }

    fn poll(t: &mut CmaTransport) -> Vec<Completion> {
        let mut out = vec![];
        t.poll(&mut out, Duration::ZERO).unwrap();
        out
    }

    fn ack_for(id: u64) -> Completion {
        let mut p = vec![ACK_TAG];
        p.extend_from_slice(&id.to_le_bytes());
        Completion::Control {
            peer: 1,
            payload: p,
        }
    }

    #[test]
    fn small_frames_and_socket_peers_pass_through() {
        let (mut t, seen) = setup();
        let buf = vec![0u8; 1 << 20];
        // SAFETY: buf outlives the transport's use of it in this test.
        unsafe {
            t.post_send(1, &header(100), buf.as_ptr(), 7).unwrap();
            t.post_send(0, &header(1 << 20), buf.as_ptr(), 8).unwrap();
        }
        let s = seen.lock().unwrap().sends.clone();
        assert_eq!(s[0].1.kind, FrameKind::Data);
        assert_eq!(s[1].1, header(1 << 20));
        let ids = (s[0].3, s[1].3);
        seen.lock().unwrap().next = vec![
            Completion::Sent { token: ids.1 },
            Completion::Sent { token: ids.0 },
        ];
        let got = poll(&mut t);
        assert!(matches!(
            got[..],
            [Completion::Sent { token: 8 }, Completion::Sent { token: 7 }]
        ));
    }

    #[test]
    fn plain_postings_keep_the_engines_token_unless_it_has_this_layers_bit() {
        let (mut t, seen) = setup();
        let mut buf = [0u8; 64];
        let high = OWN | 5;
        // SAFETY: buf outlives the transport's use of it in this test.
        unsafe {
            t.post_send(1, &header(64), buf.as_ptr(), 7).unwrap();
            t.post_recv(1, &header(64), buf.as_mut_ptr(), high).unwrap();
        }
        let sent = seen.lock().unwrap().sends[0].3;
        let posted = seen.lock().unwrap().recvs[0].3;
        assert_eq!(sent, 7, "a plain send's token passes through unchanged");
        assert_ne!(
            posted, high,
            "a token with the OWN bit is remembered under an id"
        );
        assert!(t.ops.len() == 1);
        seen.lock().unwrap().next = vec![
            Completion::Received {
                token: posted,
                crc: None,
            },
            Completion::Sent { token: sent },
        ];
        let got = poll(&mut t);
        assert!(matches!(
            got[..],
            [
                Completion::Received { token, crc: None },
                Completion::Sent { token: 7 }
            ] if token == high
        ));
        assert!(t.ops.is_empty());
    }

    #[test]
    fn a_send_by_reference_completes_after_both_the_descriptor_and_the_ack() {
        for ack_first in [false, true] {
            let (mut t, seen) = setup();
            let buf = vec![5u8; REF_MIN as usize];
            // SAFETY: buf outlives the operation.
            unsafe { t.post_send(1, &header(REF_MIN), buf.as_ptr(), 42).unwrap() };
            let (_, h, desc_addr, id) = seen.lock().unwrap().sends[0];
            assert_eq!((h.kind, h.len), (DATA_REF, DESC_LEN as u32));
            // SAFETY: the descriptor is boxed inside the transport and still alive.
            let desc = unsafe { std::slice::from_raw_parts(desc_addr as *const u8, DESC_LEN) };
            assert_eq!(&desc[0..8], &(buf.as_ptr() as u64).to_le_bytes());
            assert_eq!(&desc[8..16], &u64::from(REF_MIN).to_le_bytes());
            let (first, second) = if ack_first {
                (ack_for(id), Completion::Sent { token: id })
            } else {
                (Completion::Sent { token: id }, ack_for(id))
            };
            seen.lock().unwrap().next.push(first);
            assert!(poll(&mut t).is_empty(), "complete before both events");
            seen.lock().unwrap().next.push(second);
            assert!(matches!(poll(&mut t)[..], [Completion::Sent { token: 42 }]));
        }
    }

    /// Post a by-reference receive of `src` and deliver a descriptor for it; returns the
    /// completions and the destination.
    fn receive(
        src: &[u8],
        stale: bool,
        announced_len: u64,
    ) -> (Vec<Completion>, Vec<u8>, Arc<Mutex<Seen>>) {
        let (mut t, seen) = setup();
        let mut dst = vec![0u8; src.len()];
        // SAFETY: dst outlives the operation.
        unsafe {
            t.post_recv(1, &header(src.len() as u32), dst.as_mut_ptr(), 9)
                .unwrap()
        };
        let (_, h, desc_addr, id) = seen.lock().unwrap().recvs[0];
        assert_eq!(h.kind, DATA_REF);
        let mut d = [0u8; DESC_LEN];
        d[0..8].copy_from_slice(&(src.as_ptr() as u64).to_le_bytes());
        d[8..16].copy_from_slice(&announced_len.to_le_bytes());
        d[16..24].copy_from_slice(&77u64.to_le_bytes());
        let epoch = t.epoch.load(Ordering::SeqCst) + u64::from(stale);
        d[24..32].copy_from_slice(&epoch.to_le_bytes());
        // SAFETY: the descriptor buffer is boxed inside the transport, 32 bytes long.
        unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), desc_addr as *mut u8, DESC_LEN) };
        seen.lock().unwrap().next.push(Completion::Received {
            token: id,
            crc: Some(0xc0ffee),
        });
        let got = poll(&mut t);
        (got, dst, seen)
    }

    #[test]
    fn a_receive_by_reference_copies_the_chunk_and_acks_it() {
        let src: Vec<u8> = (0..REF_MIN as usize * 3).map(|i| (i % 251) as u8).collect();
        let (got, dst, seen) = receive(&src, false, src.len() as u64);
        // The CRC of the descriptor frame's header is the chunk's: it passes through.
        assert!(matches!(
            got[..],
            [Completion::Received {
                token: 9,
                crc: Some(0xc0ffee)
            }]
        ));
        assert_eq!(dst, src);
        let c = seen.lock().unwrap().controls.clone();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].1[0], ACK_TAG);
        assert_eq!(&c[0].1[1..], &77u64.to_le_bytes());
    }

    #[test]
    fn a_withdrawn_chunk_is_never_delivered() {
        let src = vec![1u8; REF_MIN as usize];
        // The announced epoch is not the sender's current one: withdrawn.
        let (got, _, seen) = receive(&src, true, src.len() as u64);
        assert!(matches!(
            &got[..],
            [Completion::PeerFailed {
                peer: 1,
                error: Error::PeerLost { .. }
            }]
        ));
        assert!(
            seen.lock().unwrap().controls.is_empty(),
            "no ack for a withdrawn chunk"
        );
    }

    #[test]
    fn a_wrong_length_is_reported_as_a_header_difference() {
        let src = vec![1u8; REF_MIN as usize];
        let (got, _, seen) = receive(&src, false, 12);
        assert!(matches!(
            &got[..],
            [Completion::BadHeader { token: 9, peer: 1, got }]
                if got.len == 12 && got.kind == FrameKind::Data
        ));
        assert!(seen.lock().unwrap().controls.is_empty());
    }

    #[test]
    fn cancel_bumps_the_epoch_and_stale_acks_are_ignored() {
        let (mut t, seen) = setup();
        let buf = vec![0u8; REF_MIN as usize];
        // SAFETY: buf outlives the operation (cancelled below).
        unsafe { t.post_send(1, &header(REF_MIN), buf.as_ptr(), 1).unwrap() };
        let id = seen.lock().unwrap().sends[0].3;
        let before = t.epoch.load(Ordering::SeqCst);
        t.cancel_all();
        assert!(seen.lock().unwrap().cancelled);
        assert_eq!(t.epoch.load(Ordering::SeqCst), before + 1);
        seen.lock().unwrap().next = vec![Completion::Sent { token: id }, ack_for(id)];
        assert!(poll(&mut t).is_empty());
    }

    #[test]
    fn registration_is_the_wrapped_transports_and_registered_frames_never_go_by_reference() {
        let (mut t, seen) = setup();
        assert!(t.needs_registration(1, dmsc_core::engine::MemKind::Host));
        let mut buf = vec![3u8; 2 * REF_MIN as usize];
        let reg = t
            .register(
                buf.as_mut_ptr(),
                buf.len(),
                dmsc_core::engine::MemKind::Host,
            )
            .unwrap();
        assert_eq!(
            seen.lock().unwrap().registered,
            [(buf.as_ptr() as usize, buf.len())]
        );
        // A large frame to a CMA peer, posted registered: unchanged, with the handle.
        // SAFETY: buf outlives the operations.
        unsafe {
            t.post_send_registered(1, &header(2 * REF_MIN), buf.as_ptr(), reg, 11)
                .unwrap();
            t.post_recv_registered(1, &header(2 * REF_MIN), buf.as_mut_ptr(), reg, 12)
                .unwrap();
        }
        let (send, recv, handles) = {
            let s = seen.lock().unwrap();
            (s.sends[0], s.recvs[0], s.handles.clone())
        };
        assert_eq!(
            (send.1, send.2),
            (header(2 * REF_MIN), buf.as_ptr() as usize)
        );
        assert_eq!(
            (recv.1, recv.2),
            (header(2 * REF_MIN), buf.as_ptr() as usize)
        );
        assert_eq!(handles, [reg, reg]);
        seen.lock().unwrap().next = vec![
            Completion::Sent { token: send.3 },
            Completion::Received {
                token: recv.3,
                crc: None,
            },
        ];
        assert!(matches!(
            poll(&mut t)[..],
            [
                Completion::Sent { token: 11 },
                Completion::Received { token: 12, .. }
            ]
        ));
    }
}
