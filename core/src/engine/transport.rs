//! The contract between the engine and a transport.
//!
//! A transport moves frames between this rank and its peers. The engine posts sends and
//! receives of whole frames (a [`FrameHeader`] plus a payload in caller or staging memory)
//! and collects [`Completion`]s from [`Transport::poll`]. Frames to one peer are delivered in
//! the order they were posted, and receives from one peer are matched in the order they were
//! posted; the transport checks each arriving header against the one the receive expects
//! ([`FrameHeader::matches`]) and reports a difference instead of writing the payload where
//! it does not belong.
//!
//! The shape fits the three transports dmsc targets: TCP (a byte stream per path), RDMA verbs
//! (posted send/receive work requests on registered memory, completions from a CQ) and CUDA
//! (device pointers, completions from events). Memory stays owned by the engine; a transport
//! only holds raw pointers between post and completion, which is why the posting methods are
//! `unsafe`.
//!
//! A transport that needs memory registered (RDMA, CUDA) says so per peer
//! ([`Transport::needs_registration`]); the engine then registers the memory it posts
//! through its registration cache ([`super::regcache`], which calls [`Transport::register`]
//! on a miss) and posts with the handle ([`Transport::post_send_registered`],
//! [`Transport::post_recv_registered`]). Every registration method has a default, so a
//! transport that does not register (TCP, shared memory) implements none of them.

use super::memory::{MemKind, RegHandle};
use crate::error::{Error, Result};
use crate::types::Rank;
use crate::wire::FrameHeader;
use std::time::Duration;

/// An opaque value the engine attaches to a posted operation and gets back on completion.
pub type Token = u64;

/// What a transport reports from [`Transport::poll`].
#[derive(Debug)]
pub enum Completion {
    /// A posted send completed; its payload memory may be reused.
    Sent {
        /// The send's token.
        token: Token,
    },
    /// A posted receive completed; its payload landed in full.
    Received {
        /// The receive's token.
        token: Token,
        /// The CRC32C the sender put in the frame's header ([`FrameHeader::crc`]), which the
        /// engine checks against the payload. A transport passes it through unchanged.
        crc: Option<u32>,
    },
    /// A frame arrived from `peer` whose header differs from the one the receive expected.
    /// Payloads of large frames are never read before their header is checked; a small frame
    /// (read together with its header in one system call) may have left bytes in the
    /// receive's memory, which is why the operation then fails. The stream from `peer` is no
    /// longer usable.
    BadHeader {
        /// The receive's token.
        token: Token,
        /// The sender.
        peer: Rank,
        /// The header that arrived.
        got: FrameHeader,
    },
    /// A control message arrived (out of band with the data frames).
    Control {
        /// The sender.
        peer: Rank,
        /// Its encoded payload (see [`super::control`]).
        payload: Vec<u8>,
    },
    /// The connection to a peer failed; every operation posted to it is void.
    PeerFailed {
        /// The peer.
        peer: Rank,
        /// What happened.
        error: Error,
    },
    /// The peer's control channel ended (closed, or reset by its kernel); reported once per
    /// peer. Data frames that arrived before stay valid: the engine decides whether the peer
    /// left in good order (it said goodbye first) or died, and whether the operation in
    /// progress still needs it.
    Closed {
        /// The peer.
        peer: Rank,
        /// What was observed, e.g. `connection closed by the peer`.
        detail: String,
    },
}

/// Per-path metrics of the paths to one peer (transports with several paths per peer).
#[derive(Clone, Debug)]
pub struct PeerPaths {
    /// The peer.
    pub peer: Rank,
    /// Each path's metrics.
    pub paths: Vec<crate::spray::PathMetrics>,
    /// Bytes sent to the peer as tail duplicates.
    pub bytes_duplicated: u64,
    /// Bytes sent to the peer in all (segment payloads, duplicates included).
    pub bytes_sent: u64,
    /// When these figures were taken.
    pub taken: std::time::SystemTime,
}

/// Where a transport publishes its path metrics; readable from any thread.
pub type PathMetricsHandle = std::sync::Arc<std::sync::Mutex<Vec<PeerPaths>>>;

/// Wakes a thread blocked in [`Transport::poll`] from any other thread (abort).
pub trait Waker: Send + Sync {
    /// Make the current or next `poll` return promptly.
    fn wake(&self);
}

/// A transport connecting this rank to every other rank of a communicator.
pub trait Transport: Send {
    /// A short name for logs (`"tcp-uring"`, `"tcp-socket"`, ...).
    fn name(&self) -> &'static str;

    /// The name of what carries frames to `peer` (e.g. `"shm"`, `"shm+cma"`, `"tcp-uring"`),
    /// for reports; transports that route peers to several transports name each peer's.
    fn peer_transport(&self, _peer: Rank) -> &'static str {
        self.name()
    }

    /// Descriptors that become readable when this transport has work for [`Transport::poll`]
    /// once [`Transport::prepare_wait`] returned false: what a router that serves peers
    /// through several transports blocks on while it waits in another one. Empty: the
    /// transport cannot be waited for that way.
    fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
        Vec::new()
    }

    /// About to block outside this transport: arrange for [`Transport::wait_fds`] to become
    /// readable when work arrives (e.g. raise a doorbell). Returns true when `poll` would
    /// make progress right now (then do not block).
    fn prepare_wait(&mut self) -> bool {
        true
    }

    /// The wait outside this transport is over (lower the doorbell; look at everything at
    /// the next `poll`).
    fn end_wait(&mut self) {}

    /// Make a blocking [`Transport::poll`] also return when one of `fds` (another
    /// transport's [`Transport::wait_fds`]) is readable. Returns false when this transport
    /// cannot.
    fn watch_fds(&mut self, _fds: &[std::os::fd::RawFd]) -> bool {
        false
    }

    /// Whether frames may be posted from and to memory of `kind` (host memory by default).
    fn accepts(&self, kind: MemKind) -> bool {
        kind == MemKind::Host
    }

    /// Whether frames to and from `peer` in memory of `kind` must be posted with a
    /// registration ([`Transport::post_send_registered`], [`Transport::post_recv_registered`]).
    /// False by default: such a transport never sees [`Transport::register`].
    ///
    /// The engine asks once per peer when it is created; the answer must not change. Both
    /// ends of a pair must give the same answer where a layer in between changes the frames
    /// it carries by it (the CMA wrapper posts registered frames unchanged, never by
    /// reference).
    fn needs_registration(&self, _peer: Rank, _kind: MemKind) -> bool {
        false
    }

    /// Register the `len` bytes at `ptr`, memory of `kind` (an RDMA memory region, a pinned
    /// or IPC-exported CUDA range), and return a handle that this transport, and only this
    /// one, understands. The engine calls it through its registration cache
    /// ([`super::regcache`]), for page-aligned ranges that contain the buffers it posts,
    /// and calls [`Transport::deregister`] before the memory may go. `ptr` is an address
    /// for a driver: the transport does not access the memory until a posting lends it.
    fn register(&mut self, _ptr: *mut u8, _len: usize, kind: MemKind) -> Result<RegHandle> {
        Err(Error::internal(format!(
            "the {} transport does not register memory ({kind})",
            self.name()
        )))
    }

    /// Release a registration made by [`Transport::register`]. Nothing posted uses it any
    /// more; the handle is never used again.
    fn deregister(&mut self, _handle: RegHandle) {}

    /// [`Transport::post_send`] of a payload that lies inside the range registered as `reg`.
    /// The engine calls it for every frame of at least one byte to a peer for which
    /// [`Transport::needs_registration`] is true (zero-byte frames go through `post_send`).
    /// By default the handle is ignored.
    ///
    /// # Safety
    /// As for [`Transport::post_send`]; moreover `reg` was returned by this transport's
    /// [`Transport::register`] for a range containing the `header.len` bytes at `data`, and
    /// is not deregistered before the send completes or is cancelled.
    unsafe fn post_send_registered(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        _reg: RegHandle,
        token: Token,
    ) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.post_send(peer, header, data, token) }
    }

    /// [`Transport::post_recv`] into memory that lies inside the range registered as `reg`
    /// (see [`Transport::post_send_registered`]).
    ///
    /// # Safety
    /// As for [`Transport::post_recv`]; moreover `reg` was returned by this transport's
    /// [`Transport::register`] for a range containing the `expect.len` bytes at `dst`, and
    /// is not deregistered before the receive completes or is cancelled.
    unsafe fn post_recv_registered(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        _reg: RegHandle,
        token: Token,
    ) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.post_recv(peer, expect, dst, token) }
    }

    /// Post a data frame to `peer`: `header` followed by `header.len` bytes at `data`.
    ///
    /// # Safety
    /// `data` must be valid for reads of `header.len` bytes and stay valid and unmodified
    /// until the matching [`Completion::Sent`] is returned or [`Transport::cancel_all`]
    /// returns.
    unsafe fn post_send(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        token: Token,
    ) -> Result<()>;

    /// Post the receive of the next data frame from `peer` into `dst` (`expect.len` bytes).
    ///
    /// # Safety
    /// `dst` must be valid for writes of `expect.len` bytes, not be accessed by anyone else,
    /// and stay valid until the matching completion is returned or
    /// [`Transport::cancel_all`] returns.
    unsafe fn post_recv(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        token: Token,
    ) -> Result<()>;

    /// Queue a control message to `peer`. Best effort: a failed peer is ignored.
    fn send_control(&mut self, peer: Rank, payload: &[u8]);

    /// Make progress and append completions to `out`, waiting at most `timeout` for the
    /// first one (zero: do not block).
    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<()>;

    /// Withdraw every posted operation. When this returns, the transport holds no pointer
    /// into engine or caller memory. Streams with partially transferred frames are left
    /// unusable; the engine fails the communicator after calling this.
    fn cancel_all(&mut self);

    /// A handle that interrupts [`Transport::poll`] from another thread.
    fn waker(&self) -> std::sync::Arc<dyn Waker>;

    /// What the transport knows about its links to `peer`, for error messages (e.g. the
    /// state of each path and why it failed).
    fn describe_peer(&self, _peer: Rank) -> Option<String> {
        None
    }

    /// Where the transport publishes per-path metrics, if it has several paths per peer.
    fn path_metrics(&self) -> Option<PathMetricsHandle> {
        None
    }
}
