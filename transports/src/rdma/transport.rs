//! The RDMA transport: engine frames moved by RDMA writes over several reliable-connected
//! queue pairs per peer, with failover between them.
//!
//! # The protocol
//!
//! Receiver-driven, as in NCCL's `net_ib.cc` (read for the design, never copied):
//! 1. A posted receive gets the next receive number from its peer and, once a mailbox slot
//!    (and a staging slot, if its memory could not be registered) is free, a clear-to-send
//!    ([`Cts`]) goes to the peer as a SEND: the destination address and rkey, the address
//!    and rkey of a 64-byte mailbox slot, and the whole frame header the receive expects.
//! 2. The sender's send of the same number waits for it, then checks its header against the
//!    expected one ([`FrameHeader::matches`]) before a byte moves. On a match it RDMA-writes
//!    the payload to the destination and then its frame header into the mailbox with
//!    RDMA WRITE WITH IMMEDIATE (immediate: the receive number), the write followed by a
//!    write-with-immediate that NCCL uses under adaptive routing. On a mismatch it writes only
//!    its header, with the mismatch bit in the immediate.
//! 3. The write-with-immediate consumes a receive at the peer, and reliable connection
//!    guarantees the payload landed before it. The receiver reads the header from the
//!    mailbox, checks it again, and completes the receive ([`Completion::Received`] with the
//!    sender's CRC, or [`Completion::BadHeader`]). The sender's send completes when the
//!    write-with-immediate's completion arrives.
//!
//! Control messages travel as SENDs too, cut into fragments that stay on one queue pair.
//!
//! **Credits.** Every SEND and write-with-immediate consumes a receive the peer posted on that
//! queue pair. Each side counts the receives its peer has posted for it (`credits`), spends one
//! per message, and gets them back in the head of every message the peer sends on that queue
//! pair, or in an explicit credit message when half have piled up. The last credit is kept
//! for credit messages, so both ends can always return credits and nothing waits on a
//! receiver that is not ready. Send work requests per queue pair are bounded likewise, and
//! the receives out per peer by the mailbox window.
//!
//! **Spraying and failover.** The queue pairs to a peer, on one port or several, are the
//! paths of the spraying core: its [`PathScheduler`] (core/src/spray/scheduler.rs) picks the
//! queue pair of every frame by `DMSC_SPRAY` (adaptive: earliest expected completion by the
//! rate measured from write completions; roundrobin; single) among those with credits and
//! send slots, measures each one's delivery rate and round trip from the completions of its
//! writes-with-immediate, suspects one that falls silent while another completes, and its
//! metrics are what [`Transport::path_metrics`] reports, as over TCP. Messages go
//! round-robin. A work request that fails (`IBV_WC_RETRY_EXC_ERR` and
//! the `IBV_WC_WR_FLUSH_ERR`s after it) takes its queue pair out of service: its frames whose
//! write-with-immediate was not acknowledged are written again on a healthy one (same
//! destination and mailbox, so a repeat is harmless), and its unacknowledged messages are sent
//! again. When no queue pair to a peer is left, the peer fails ([`Completion::PeerFailed`]),
//! naming each queue pair and why it failed. A failed queue pair is then rebuilt and
//! re-admitted (at most [`MAX_REBUILDS`] times), after the spraying core's backoff
//! ([`PathScheduler::redial_delay`], longer for a queue pair that flaps) and with its
//! probation window that grows with completions: the lower rank of the pair drains it (every
//! completion due taken, so that what succeeded completes and only what flushed is sent
//! again), resets it to INIT and sends [`Msg::Rebuild`] on a healthy queue pair; the higher
//! rank drains and resets its end, connects it to the new one and answers [`Msg::Ready`],
//! on which the lower rank connects too. A higher rank that sees a failure first asks with
//! [`Msg::Broken`]. Work request ids carry the queue pair's incarnation, so completions of
//! the old one are told apart.
//!
//! **Several ports.** The transport holds one [`VerbsContext`] per port; each queue pair is
//! on one (`Path::nic`) and reaches one port of the peer (`Path::remote_nic`). Its memory
//! and user registrations are registered on every port, and a clear-to-send carries the
//! receiver's rkey of every port, so any frame can go, or go again after a failure, on any
//! queue pair of any port.
//!
//! **Waiting.** Where every context has a completion channel
//! ([`VerbsContext::completion_fd`]), an idle [`Transport::poll`] arms them and sleeps in
//! `ppoll(2)` on them and on an eventfd its [`Waker`] writes; otherwise it backs off from
//! microseconds to a millisecond.
//!
//! **Registration.** User memory is registered through the engine's cache
//! ([`Transport::register`]). When `ibv_reg_mr` refuses with `ENOMEM` (the pinned-memory limit,
//! `RLIMIT_MEMLOCK`), the transport says so once and hands out a staged handle: frames in that
//! memory are copied through registered staging slots instead. GPU memory
//! ([`MemKind::Cuda`]) is accepted only where a [`DmabufExporter`] is set and every port has
//! `ibv_reg_dmabuf_mr` ([`RdmaTransport::use_dmabuf`]); it is then registered as a dma-buf
//! and never staged here (the staging copies use the CPU, which cannot read it). Otherwise it
//! is refused, with the reason logged once, and left to the communicator to stage.

use super::dmabuf_export::DmabufExporter;
use super::pool::SlotPool;
use super::qp_state::{QpAttrs, QpState};
use super::verbs::{
    Access, Mr, QpHandle, RecvWr, RemoteQp, SendOp, SendWr, Sge, VerbsContext, WcKind, WcStatus,
    WorkCompletion,
};
use super::wire::{imm_for, split_imm, Cts, Keys, Msg, CONTROL_FRAGMENT, MAX_NICS, MSG_SLOT};
use dmsc_core::engine::{
    Completion, MemKind, PathMetricsHandle, PeerPaths, RegHandle, Token, Transport, Waker,
};
use dmsc_core::error::{Error, Result};
use dmsc_core::spray::{Mode, PathScheduler};
use dmsc_core::types::Rank;
use dmsc_core::wire::{FrameHeader, HEADER_LEN};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Receives posted per queue pair (and so the credits a peer starts with).
pub const RECV_DEPTH: u32 = 32;
/// Send work requests outstanding per queue pair.
pub const SEND_DEPTH: u32 = 96;

const K_RECV: u64 = 1;
const K_MSG: u64 = 2;
const K_WRITE: u64 = 3;
const K_IMM: u64 = 4;
const IDX_MASK: u64 = (1 << 32) - 1;

/// Rebuilds of one queue pair before it stays out of service.
pub const MAX_REBUILDS: u32 = 3;

/// A work request id: kind (4 bits), peer (16), path (8), the path's epoch (4: completions
/// of a queue pair's earlier incarnation are told apart and ignored), index (32).
fn wr_id(kind: u64, peer: usize, path: usize, epoch: u8, idx: u64) -> u64 {
    (kind << 60)
        | ((peer as u64 & 0xffff) << 44)
        | ((path as u64 & 0xff) << 36)
        | ((epoch as u64 & 0xf) << 32)
        | (idx & IDX_MASK)
}

fn split_wr_id(id: u64) -> (u64, usize, usize, u8, u64) {
    (
        id >> 60,
        ((id >> 44) & 0xffff) as usize,
        ((id >> 36) & 0xff) as usize,
        ((id >> 32) & 0xf) as u8,
        id & IDX_MASK,
    )
}

/// Bytes a frame of `len` payload bytes puts on its queue pair, as the path scheduler counts
/// them: the payload and the trailer written with immediate (so a frame without payload, a
/// mismatch report, still counts).
fn wire_len(len: u32) -> u64 {
    len as u64 + HEADER_LEN as u64
}

/// What the transport did, readable from any thread (tests, reports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RdmaStats {
    /// Frames written.
    pub frames_written: u64,
    /// Frames written again on another queue pair after theirs failed.
    pub frames_rewritten: u64,
    /// Queue pairs taken out of service.
    pub paths_failed: u64,
    /// Registrations refused for lack of pinnable memory (then staged).
    pub registrations_staged: u64,
    /// Frames sent or received through staging slots.
    pub frames_staged: u64,
    /// Credit-only messages sent.
    pub credit_messages: u64,
    /// Messages (clear-to-sends, control) sent again after their queue pair failed.
    pub messages_resent: u64,
    /// Failed queue pairs rebuilt and back in service.
    pub paths_rebuilt: u64,
}

/// A registration as the transport keeps it.
#[derive(Clone, Copy, Debug)]
enum Reg {
    /// Registered on every port: the local and remote keys per port.
    Mr { lkeys: Keys, rkeys: Keys },
    /// `ibv_reg_mr` refused (pinned-memory limit): copy through staging slots.
    Staged,
}

pub(super) struct Path {
    pub(super) qp: QpHandle,
    /// The port (index into the transport's contexts) the queue pair is on.
    pub(super) nic: usize,
    /// The peer's port its queue pair is on (which of a clear-to-send's keys to use).
    pub(super) remote_nic: usize,
    pub(super) up: bool,
    pub(super) why: Option<String>,
    /// Receives the peer has posted for us on this queue pair and we have not consumed.
    pub(super) credits: u32,
    /// Receives we reposted and have not reported to the peer.
    pub(super) returned: u32,
    /// Our send work requests outstanding.
    pub(super) wrs: u32,
    /// Control fragments received so far.
    pub(super) reasm: Vec<u8>,
    /// Not reset for a rebuild before this (the spraying core's backoff after a failure,
    /// [`PathScheduler::redial_delay`]).
    redial_at: Option<Instant>,
    /// Incarnation (low 4 bits go into work request ids).
    pub(super) epoch: u8,
    /// The peer's queue pair, to connect to again when rebuilt.
    pub(super) remote: Option<RemoteQp>,
    /// Being rebuilt (draining, or reset).
    rebuilding: bool,
    /// Put in ERROR here while in service because the peer reported it failed (its flushes
    /// are then named so, not as a failure of their own).
    told: bool,
    /// Reset here (the lower rank) and waiting for the peer's [`Msg::Ready`].
    awaiting_ready: bool,
    /// Times rebuilt.
    rebuilds: u32,
    /// Receives of this incarnation completed with an error (all flushed: `RECV_DEPTH`).
    recv_flushed: u32,
    /// When it was last put back in service after a rebuild.
    reconnected: Option<Instant>,
}

impl Path {
    pub(super) fn new(qp: QpHandle, nic: usize) -> Path {
        Path {
            qp,
            nic,
            remote_nic: 0,
            up: true,
            why: None,
            credits: RECV_DEPTH,
            returned: 0,
            wrs: 0,
            reasm: Vec::new(),
            redial_at: None,
            epoch: 0,
            remote: None,
            rebuilding: false,
            told: false,
            awaiting_ready: false,
            rebuilds: 0,
            recv_flushed: 0,
            reconnected: None,
        }
    }

    /// Whether a request consuming `msgs` receives and `wrs` send slots fits.
    fn fits(&self, msgs: u32, wrs: u32) -> bool {
        self.up && self.credits > msgs && self.wrs + wrs <= SEND_DEPTH
    }
}

struct OutFrame {
    token: Token,
    header: FrameHeader,
    data: *const u8,
    /// Local keys per port; `None`: zero bytes, or memory that must be staged.
    lkey: Option<Keys>,
}

struct Writing {
    frame: OutFrame,
    cts: Cts,
    trailer: u32,
    stage: Option<u32>,
    /// The queue pair carrying it now (`None`: waiting to be posted again).
    path: Option<usize>,
    mismatch: bool,
}

struct InFrame {
    token: Token,
    expect: FrameHeader,
    dst: *mut u8,
    /// Remote keys per port; `None`: zero bytes, or memory that must be staged.
    rkey: Option<Keys>,
    mbox: Option<u32>,
    stage: Option<u32>,
}

/// A group of messages that must go on one queue pair (a control message's fragments, or
/// one clear-to-send).
struct Group {
    msgs: Vec<Msg>,
    /// The queue pair and completions still due, once posted.
    posted: Option<(usize, usize)>,
    /// A queue pair it must not go on ([`Msg::Ready`] for a queue pair the peer has not
    /// connected yet).
    avoid: Option<usize>,
}

pub(super) struct Peer {
    pub(super) paths: Vec<Path>,
    pub(super) mbox: SlotPool,
    pub(super) trailers: SlotPool,
    failed: bool,
    /// The peer said goodbye ([`Msg::Bye`]).
    closed: bool,
    next_path: usize,
    /// Which queue pair carries each frame: the spraying core's scheduling and metrics.
    sched: PathScheduler,
    // Receive side.
    recv_seq: u64,
    recvs: BTreeMap<u64, InFrame>,
    cts_due: VecDeque<u64>,
    // Send side.
    send_seq: u64,
    sends: BTreeMap<u64, OutFrame>,
    cts: HashMap<u64, Cts>,
    ready: VecDeque<u64>,
    writing: HashMap<u64, Writing>,
    // Messages.
    outbox: VecDeque<u64>,
    groups: HashMap<u64, Group>,
    next_group: u64,
}

impl Peer {
    /// `mode` and `seg` (the largest frame, bytes) for the path scheduler.
    pub(super) fn new(
        paths: Vec<Path>,
        mbox: SlotPool,
        trailers: SlotPool,
        mode: Mode,
        seg: u64,
    ) -> Peer {
        Peer {
            sched: PathScheduler::new(paths.len(), mode, seg, Instant::now()),
            paths,
            mbox,
            trailers,
            failed: false,
            closed: false,
            next_path: 0,
            recv_seq: 0,
            recvs: BTreeMap::new(),
            cts_due: VecDeque::new(),
            send_seq: 0,
            sends: BTreeMap::new(),
            cts: HashMap::new(),
            ready: VecDeque::new(),
            writing: HashMap::new(),
            outbox: VecDeque::new(),
            groups: HashMap::new(),
            next_group: 0,
        }
    }
}

struct Wake {
    woken: AtomicBool,
    /// An eventfd written by [`Waker::wake`], so that a transport sleeping on its
    /// completion channels wakes at once (`None` if eventfd failed: short sleeps then).
    fd: Option<std::os::fd::OwnedFd>,
}

impl Wake {
    fn new() -> Wake {
        // SAFETY: eventfd has no pointer arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        Wake {
            woken: AtomicBool::new(false),
            // SAFETY: a fresh descriptor that nothing else owns.
            fd: (fd >= 0).then(|| unsafe {
                <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
            }),
        }
    }

    /// Empty the eventfd.
    fn drain(&self) {
        if let Some(fd) = &self.fd {
            let mut v = 0u64;
            // SAFETY: reading 8 bytes into a u64 from our non-blocking eventfd.
            let _ = unsafe {
                libc::read(
                    std::os::fd::AsRawFd::as_raw_fd(fd),
                    (&mut v as *mut u64).cast(),
                    8,
                )
            };
        }
    }
}

impl Waker for Wake {
    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        if let Some(fd) = &self.fd {
            let one = 1u64;
            // SAFETY: writing 8 bytes from a u64 to our eventfd (never blocks: non-blocking).
            let _ = unsafe {
                libc::write(
                    std::os::fd::AsRawFd::as_raw_fd(fd),
                    (&one as *const u64).cast(),
                    8,
                )
            };
        }
    }
}

/// Longest sleep on the completion channels before looking again (the fake's progress, and
/// the path metrics, need a turn now and then).
const CHANNEL_NAP: Duration = Duration::from_millis(10);

/// Sleep until one of `fds` is readable or `wait` passes (`ppoll(2)`).
fn sleep_on(fds: &[std::os::fd::RawFd], wait: Duration) {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `p` holds `p.len()` valid pollfds and `ts` a valid timeout; no signal mask.
    // EINTR or an error only ends the sleep early.
    let _ = unsafe {
        libc::ppoll(
            p.as_mut_ptr(),
            p.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
}

/// The RDMA transport over one [`VerbsContext`] per port.
pub struct RdmaTransport {
    pub(super) rank: Rank,
    /// One context per port; queue pairs name theirs ([`Path::nic`]).
    pub(super) ctxs: Vec<Box<dyn VerbsContext>>,
    pub(super) provider: &'static str,
    pub(super) attrs: QpAttrs,
    /// Per rank (`None` for this rank).
    pub(super) peers: Vec<Option<Peer>>,
    /// Receive message slots: `(peer * paths + path) * RECV_DEPTH + i`.
    pub(super) rx: SlotPool,
    /// Send message slots.
    pub(super) tx: SlotPool,
    /// Owner of each send slot in use: (peer, group).
    tx_owner: HashMap<u32, (usize, u64)>,
    pub(super) stage_tx: SlotPool,
    pub(super) stage_rx: SlotPool,
    regs: HashMap<u64, Reg>,
    /// The regions of each registration of `regs`, one per port.
    reg_mrs: HashMap<u64, Vec<Mr>>,
    next_reg: u64,
    memlock_warned: bool,
    /// Where GPU memory gets its dma-buf for registration; `None`: GPU memory is not
    /// accepted (the communicator stages it through host memory), for the reason in
    /// `dmabuf_off`.
    dmabuf: Option<Box<dyn DmabufExporter>>,
    dmabuf_off: String,
    wake: Arc<Wake>,
    stats: Arc<Mutex<RdmaStats>>,
    wcs: Vec<WorkCompletion>,
    npaths: usize,
    /// The queue pairs reached RTS ([`super::connect::Prepared::finish`]).
    pub(super) connected: bool,
    /// Per-queue-pair metrics, published at most every [`PUBLISH_EVERY`] and at each failure.
    metrics: PathMetricsHandle,
    published: Instant,
}

/// How often the path metrics are published while frames move.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);

// SAFETY: the raw pointers held (frame sources and destinations) are lent by the engine under
// the `Transport` contract and used only by the thread that owns the transport; the verbs
// context is `Send` by its trait.
unsafe impl Send for RdmaTransport {}

impl RdmaTransport {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn from_parts(
        rank: Rank,
        ctxs: Vec<Box<dyn VerbsContext>>,
        provider: &'static str,
        attrs: QpAttrs,
        peers: Vec<Option<Peer>>,
        rx: SlotPool,
        tx: SlotPool,
        stage_tx: SlotPool,
        stage_rx: SlotPool,
        npaths: usize,
    ) -> RdmaTransport {
        RdmaTransport {
            rank,
            ctxs,
            provider,
            attrs,
            peers,
            rx,
            tx,
            tx_owner: HashMap::new(),
            stage_tx,
            stage_rx,
            regs: HashMap::new(),
            reg_mrs: HashMap::new(),
            next_reg: 0,
            memlock_warned: false,
            dmabuf: None,
            dmabuf_off: "dmsc was built without the cuda feature".into(),
            wake: Arc::new(Wake::new()),
            stats: Arc::new(Mutex::new(RdmaStats::default())),
            wcs: Vec::new(),
            npaths,
            connected: false,
            metrics: Arc::new(Mutex::new(Vec::new())),
            published: Instant::now(),
        }
    }

    /// Register GPU memory ([`MemKind::Cuda`]) through `exporter`'s dma-bufs
    /// (`ibv_reg_dmabuf_mr`), so that frames move between GPU memory and the adapter
    /// directly, where every port can. Otherwise (an `Err` says why the exporter is not
    /// there) GPU memory is not accepted and the communicator stages it through host
    /// memory; the reason is logged once.
    pub fn use_dmabuf(&mut self, exporter: Result<Box<dyn DmabufExporter>>) {
        let why_not = match exporter {
            Ok(x) => match self.ctxs.iter().position(|c| !c.supports_dmabuf()) {
                None => {
                    log::info!(
                        target: dmsc_core::subsys::NET,
                        "rank {}: RDMA registers GPU memory as dma-bufs ({})",
                        self.rank,
                        x.name()
                    );
                    self.dmabuf = Some(x);
                    self.dmabuf_off.clear();
                    return;
                }
                Some(i) => format!(
                    "port {i} cannot register dma-bufs (libibverbs without \
                     ibv_reg_dmabuf_mr, rdma-core 34 or later)"
                ),
            },
            Err(e) => e.to_string(),
        };
        log::info!(
            target: dmsc_core::subsys::NET,
            "rank {}: GPU memory over RDMA is staged through host memory: {why_not}",
            self.rank
        );
        self.dmabuf = None;
        self.dmabuf_off = why_not;
    }

    /// Whether GPU memory is registered as dma-bufs (else staged by the communicator).
    pub fn registers_gpu_memory(&self) -> bool {
        self.dmabuf.is_some()
    }

    /// Register GPU memory of `device` on every port through a dma-buf.
    fn register_dmabuf(&mut self, ptr: u64, len: usize, device: u32) -> Result<Vec<Mr>> {
        let Some(x) = &self.dmabuf else {
            return Err(Error::usage(format!(
                "the RDMA transport cannot register GPU memory here ({}); the communicator \
                 stages it through host memory",
                self.dmabuf_off
            )));
        };
        let range = x.export(ptr, len, device)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&range.fd);
        let mut mrs = Vec::with_capacity(self.ctxs.len());
        for ctx in &mut self.ctxs {
            match ctx.reg_dmabuf_mr(fd, range.offset, len, ptr, Access::REMOTE_WRITE) {
                Ok(m) => mrs.push(m),
                Err(e) => {
                    for (ctx, m) in self.ctxs.iter_mut().zip(mrs) {
                        ctx.dereg_mr(m);
                    }
                    return Err(e);
                }
            }
        }
        // The registrations hold the memory; the descriptor closes here (as NCCL does).
        Ok(mrs)
    }

    /// What the transport did so far, shared (read it after the engine took the transport).
    pub fn stats_handle(&self) -> Arc<Mutex<RdmaStats>> {
        self.stats.clone()
    }

    fn stat(&self, f: impl FnOnce(&mut RdmaStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The receive slot of (peer, path, i).
    pub(super) fn rx_slot(&self, peer: usize, path: usize, i: u32) -> u32 {
        ((peer * self.npaths + path) as u32) * RECV_DEPTH + i
    }

    /// Post receive slot `slot` on (peer, path).
    pub(super) fn post_rx(&mut self, peer: usize, path: usize, slot: u32) -> Result<()> {
        let pa = &self.peer(peer)?.paths[path];
        let (qp, epoch, nic) = (pa.qp, pa.epoch, pa.nic);
        let wr = RecvWr {
            wr_id: wr_id(K_RECV, peer, path, epoch, slot as u64),
            sge: Some(Sge {
                addr: self.rx.addr(slot),
                len: MSG_SLOT as u32,
                lkey: self.rx.lkey(nic),
            }),
        };
        // SAFETY: the slot is transport-owned registered memory that lives as long as the
        // context (pools are closed after the queue pairs are destroyed).
        unsafe { self.ctxs[nic].post_recv(qp, &wr) }
    }

    fn peer(&mut self, peer: Rank) -> Result<&mut Peer> {
        self.peers
            .get_mut(peer)
            .and_then(Option::as_mut)
            .ok_or_else(|| {
                Error::invalid(format!("rank {peer} is not a peer of rank {}", self.rank))
            })
    }

    fn lookup(&self, reg: Option<RegHandle>) -> Option<Reg> {
        reg.and_then(|h| self.regs.get(&h.key).copied())
    }

    fn queue_group(&mut self, peer: Rank, msgs: Vec<Msg>) {
        let Some(p) = self.peers.get_mut(peer).and_then(Option::as_mut) else {
            return;
        };
        let id = p.next_group;
        p.next_group += 1;
        p.groups.insert(
            id,
            Group {
                msgs,
                posted: None,
                avoid: None,
            },
        );
        p.outbox.push_back(id);
    }

    /// Post one message on (peer, path) from a fresh send slot; `owner` is its group.
    fn post_msg(&mut self, peer: Rank, path: usize, msg: &Msg, owner: Option<u64>) -> Result<()> {
        let slot = self
            .tx
            .alloc()
            .ok_or_else(|| Error::internal("RDMA send message slots exhausted"))?;
        let p = self.peers[peer].as_mut().expect("peer checked");
        let credits = std::mem::take(&mut p.paths[path].returned);
        let n = msg.encode(credits, self.tx.bytes_mut(slot));
        let pa = &mut p.paths[path];
        pa.credits -= 1;
        pa.wrs += 1;
        let (qp, epoch, nic) = (pa.qp, pa.epoch, pa.nic);
        if let Some(g) = owner {
            self.tx_owner.insert(slot, (peer, g));
        }
        let wr = SendWr {
            wr_id: wr_id(K_MSG, peer, path, epoch, slot as u64),
            sge: Some(Sge {
                addr: self.tx.addr(slot),
                len: n as u32,
                lkey: self.tx.lkey(nic),
            }),
            op: SendOp::Send,
        };
        // SAFETY: the slot stays ours until its completion (released in `on_msg_done`).
        unsafe { self.ctxs[nic].post_send(qp, &wr) }
    }

    /// Issue clear-to-sends, post writes and messages, return credits: everything that
    /// waits for a slot, a credit or a clear-to-send.
    fn pump(&mut self, out: &mut Vec<Completion>) -> Result<()> {
        for peer in 0..self.peers.len() {
            if self.peers[peer]
                .as_ref()
                .is_none_or(|p| p.failed || p.closed)
            {
                continue;
            }
            if let Err(e) = self.pump_peer(peer) {
                self.fail_peer(peer, e, out);
            }
        }
        Ok(())
    }

    fn pump_peer(&mut self, peer: Rank) -> Result<()> {
        // Clear-to-sends for receives waiting for a mailbox (and staging) slot.
        loop {
            let p = self.peers[peer].as_mut().expect("peer");
            let Some(&seq) = p.cts_due.front() else { break };
            let r = p.recvs.get(&seq).expect("due receive");
            let staged = r.rkey.is_none() && r.expect.len > 0;
            if p.mbox.available() == 0 || (staged && self.stage_rx.available() == 0) {
                break;
            }
            p.cts_due.pop_front();
            let mbox = p.mbox.alloc().expect("available");
            let stage = if staged { self.stage_rx.alloc() } else { None };
            let r = p.recvs.get_mut(&seq).expect("due receive");
            r.mbox = Some(mbox);
            r.stage = stage;
            let (addr, rkeys) = match (stage, r.rkey) {
                (Some(s), _) => (self.stage_rx.addr(s), self.stage_rx.rkeys()),
                (None, Some(k)) => (r.dst as u64, k),
                (None, None) => (0, [0; MAX_NICS]),
            };
            let cts = Cts {
                seq,
                addr,
                rkeys,
                mbox: p.mbox.addr(mbox),
                mbox_rkeys: p.mbox.rkeys(),
                expect: r.expect,
            };
            self.queue_group(peer, vec![Msg::Cts(cts)]);
        }
        // Sends whose clear-to-send arrived.
        loop {
            let p = self.peers[peer].as_mut().expect("peer");
            let Some((&seq, _)) = p.sends.iter().next() else {
                break;
            };
            if !p.cts.contains_key(&seq) || p.trailers.available() == 0 {
                break;
            }
            let f = p.sends.get(&seq).expect("present");
            let staged = f.lkey.is_none() && f.header.len > 0;
            let cts = p.cts[&seq];
            let mismatch = !f.header.matches(&cts.expect);
            if staged && !mismatch && self.stage_tx.available() == 0 {
                break;
            }
            let frame = p.sends.remove(&seq).expect("present");
            p.cts.remove(&seq);
            let trailer = p.trailers.alloc().expect("available");
            let mut h = [0u8; HEADER_LEN];
            frame.header.encode(&mut h);
            p.trailers.bytes_mut(trailer)[..HEADER_LEN].copy_from_slice(&h);
            let stage = if staged && !mismatch {
                let s = self.stage_tx.alloc().expect("available");
                let n = frame.header.len as usize;
                // SAFETY: the engine lent `n` readable bytes at `data` until completion.
                let src = unsafe { std::slice::from_raw_parts(frame.data, n) };
                self.stage_tx.bytes_mut(s)[..n].copy_from_slice(src);
                self.stat(|s| s.frames_staged += 1);
                Some(s)
            } else {
                None
            };
            let p = self.peers[peer].as_mut().expect("peer");
            p.writing.insert(
                seq,
                Writing {
                    frame,
                    cts,
                    trailer,
                    stage,
                    path: None,
                    mismatch,
                },
            );
            p.ready.push_back(seq);
        }
        // Writes ready to go (new, or again after a failure).
        loop {
            let p = self.peers[peer].as_mut().expect("peer");
            let Some(&seq) = p.ready.front() else { break };
            let w = &p.writing[&seq];
            let len = if w.mismatch { 0 } else { w.frame.header.len };
            let wrs = if len > 0 { 2 } else { 1 };
            // The spraying core picks the queue pair ([`PathScheduler::choose`], by
            // `DMSC_SPRAY`) among those with credits and send slots.
            let paths = &p.paths;
            let Some(path) = p
                .sched
                .choose(wire_len(len), Instant::now(), |i| paths[i].fits(1, wrs))
            else {
                break;
            };
            p.ready.pop_front();
            self.post_write(peer, seq, path, len)?;
        }
        // Messages, each group on one queue pair, round-robin.
        loop {
            let p = self.peers[peer].as_mut().expect("peer");
            let Some(&g) = p.outbox.front() else { break };
            let n = p.groups[&g].msgs.len() as u32;
            let avoid = p.groups[&g].avoid;
            let np = p.paths.len();
            let Some(path) = (0..np)
                .map(|k| (p.next_path + k) % np)
                .find(|&i| p.paths[i].fits(n, n) && avoid != Some(i))
            else {
                break;
            };
            if self.tx.available() < n as usize {
                break;
            }
            p.next_path = (path + 1) % np;
            p.outbox.pop_front();
            let group = p.groups.get_mut(&g).expect("queued group");
            group.posted = Some((path, n as usize));
            let msgs = group.msgs.clone();
            for m in &msgs {
                self.post_msg(peer, path, m, Some(g))?;
            }
        }
        // Credits: return them when half have piled up on a queue pair.
        for path in 0..self.npaths {
            let p = self.peers[peer].as_mut().expect("peer");
            let pa = &p.paths[path];
            if pa.up && pa.returned >= RECV_DEPTH / 2 && pa.credits >= 1 && pa.wrs < SEND_DEPTH {
                if self.tx.available() == 0 {
                    break;
                }
                self.post_msg(peer, path, &Msg::Credit, None)?;
                self.stat(|s| s.credit_messages += 1);
            }
        }
        Ok(())
    }

    fn post_write(&mut self, peer: Rank, seq: u64, path: usize, len: u32) -> Result<()> {
        let p = self.peers[peer].as_mut().expect("peer");
        let (nic, rnic) = (p.paths[path].nic, p.paths[path].remote_nic);
        let stage_lkey = self.stage_tx.lkey(nic);
        let w = p.writing.get_mut(&seq).expect("writing");
        w.path = Some(path);
        let (qp, epoch) = (p.paths[path].qp, p.paths[path].epoch);
        let (cts, trailer, mismatch) = (w.cts, w.trailer, w.mismatch);
        let src = match (w.stage, w.frame.lkey) {
            (Some(s), _) => Some((self.stage_tx.addr(s), stage_lkey)),
            (None, Some(k)) => Some((w.frame.data as u64, k[nic])),
            (None, None) => None,
        };
        let trailer_sge = Sge {
            addr: p.trailers.addr(trailer),
            len: HEADER_LEN as u32,
            lkey: p.trailers.lkey(nic),
        };
        let pa = &mut p.paths[path];
        pa.credits -= 1;
        pa.wrs += if len > 0 { 2 } else { 1 };
        p.sched.on_post(path, seq, wire_len(len), Instant::now());
        if len > 0 {
            let (addr, lkey) = src.ok_or_else(|| {
                Error::internal(format!(
                    "frame {seq} of {len} bytes has no registered source"
                ))
            })?;
            let wr = SendWr {
                wr_id: wr_id(K_WRITE, peer, path, epoch, seq),
                sge: Some(Sge { addr, len, lkey }),
                op: SendOp::Write {
                    remote_addr: cts.addr,
                    rkey: cts.rkeys[rnic],
                },
            };
            // SAFETY: the source is the engine's registered memory (lent until the send
            // completes) or a staging slot held until then.
            unsafe { self.ctxs[nic].post_send(qp, &wr)? };
        }
        let wr = SendWr {
            wr_id: wr_id(K_IMM, peer, path, epoch, seq),
            sge: Some(trailer_sge),
            op: SendOp::WriteImm {
                remote_addr: cts.mbox,
                rkey: cts.mbox_rkeys[rnic],
                imm: imm_for(seq, mismatch),
            },
        };
        // SAFETY: the trailer slot is held until the write-with-immediate completes.
        unsafe { self.ctxs[nic].post_send(qp, &wr)? };
        self.stat(|s| s.frames_written += 1);
        Ok(())
    }

    fn handle(&mut self, wc: WorkCompletion, out: &mut Vec<Completion>) -> Result<()> {
        let (kind, peer, path, epoch, idx) = split_wr_id(wc.wr_id);
        // A message slot is free once its completion is in, whatever became of it.
        let owner = if kind == K_MSG {
            self.tx.release(idx as u32);
            self.tx_owner.remove(&(idx as u32))
        } else {
            None
        };
        if self
            .peers
            .get(peer)
            .and_then(Option::as_ref)
            .is_none_or(|p| p.failed)
        {
            return Ok(());
        }
        if wc.status != WcStatus::Success && self.peers[peer].as_ref().is_some_and(|p| p.closed) {
            // The peer said goodbye ([`Msg::Bye`]) and tore its queue pairs down: errors on
            // them from then on are the close, not a failure.
            return Ok(());
        }
        let current = self.peers[peer].as_ref().expect("peer").paths.get(path);
        if current.is_none_or(|pa| pa.epoch & 0xf != epoch) {
            return Ok(()); // from an incarnation of the queue pair before its rebuild
        }
        if wc.status != WcStatus::Success {
            let pa = &mut self.peers[peer].as_mut().expect("peer").paths[path];
            if kind == K_RECV {
                pa.recv_flushed += 1;
            } else {
                pa.wrs = pa.wrs.saturating_sub(1);
            }
            self.path_down(peer, path, wc.status, true, out);
            self.rebuild_step(peer, path, out);
            return Ok(());
        }
        match kind {
            K_RECV => {
                let slot = idx as u32;
                {
                    let pa = &mut self.peers[peer].as_mut().expect("peer").paths[path];
                    pa.returned += 1;
                }
                match wc.kind {
                    WcKind::RecvImm => {
                        let imm = wc.imm.ok_or_else(|| {
                            Error::protocol("write with immediate completed without immediate data")
                        })?;
                        self.post_rx(peer, path, slot)?;
                        self.on_trailer(peer, imm, out)?;
                    }
                    _ => {
                        let n = wc.byte_len as usize;
                        let decoded = Msg::decode(&self.rx.bytes(slot)[..n.min(MSG_SLOT)]);
                        self.post_rx(peer, path, slot)?;
                        let (credits, msg) = decoded?;
                        self.on_msg(peer, path, credits, msg, out);
                    }
                }
            }
            K_MSG => {
                let p = self.peers[peer].as_mut().expect("peer");
                p.paths[path].wrs -= 1;
                if let Some((_, g)) = owner {
                    if let Some(group) = p.groups.get_mut(&g) {
                        if let Some((_, left)) = group.posted.as_mut() {
                            *left -= 1;
                            if *left == 0 {
                                p.groups.remove(&g);
                            }
                        }
                    }
                }
            }
            K_WRITE => {
                let p = self.peers[peer].as_mut().expect("peer");
                p.paths[path].wrs -= 1;
            }
            K_IMM => {
                let p = self.peers[peer].as_mut().expect("peer");
                p.paths[path].wrs -= 1;
                let seq = p.writing.keys().copied().find(|s| s & IDX_MASK == idx);
                let Some(seq) = seq else { return Ok(()) };
                if p.writing[&seq].path != Some(path) {
                    return Ok(()); // a late completion of a copy on a failed queue pair
                }
                let w = p.writing.remove(&seq).expect("present");
                p.sched.on_complete(path, seq, Instant::now());
                p.trailers.release(w.trailer);
                if let Some(s) = w.stage {
                    self.stage_tx.release(s);
                }
                out.push(Completion::Sent {
                    token: w.frame.token,
                });
            }
            _ => {
                return Err(Error::internal(format!(
                    "completion with unknown work request id {:#x}",
                    wc.wr_id
                )))
            }
        }
        Ok(())
    }

    fn on_msg(
        &mut self,
        peer: Rank,
        path: usize,
        credits: u32,
        msg: Msg,
        out: &mut Vec<Completion>,
    ) {
        let p = self.peers[peer].as_mut().expect("peer");
        p.paths[path].credits += credits;
        match msg {
            Msg::Cts(c) => {
                // A clear-to-send sent again after a failure may arrive twice.
                let waiting = p.sends.contains_key(&c.seq) || c.seq >= p.send_seq;
                if waiting && !p.writing.contains_key(&c.seq) {
                    p.cts.insert(c.seq, c);
                }
            }
            Msg::Control { last, bytes } => {
                let pa = &mut p.paths[path];
                pa.reasm.extend_from_slice(&bytes);
                if last {
                    out.push(Completion::Control {
                        peer,
                        payload: std::mem::take(&mut pa.reasm),
                    });
                }
            }
            Msg::Credit => {}
            Msg::Rebuild { path } => self.on_rebuild(peer, path as usize, out),
            Msg::Ready { path } => self.on_ready(peer, path as usize, out),
            Msg::Broken { path } => {
                // The peer's end fails for a while after our end was reset for a rebuild
                // (its requests find nobody): such reports are about the old incarnation.
                let recent = p.paths.get(path as usize).is_some_and(|pa| {
                    pa.reconnected
                        .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
                });
                if (path as usize) < self.npaths && !recent {
                    self.ask_rebuild(peer, path as usize, out);
                }
            }
            Msg::Bye => {
                if !p.closed {
                    p.closed = true;
                    out.push(Completion::Closed {
                        peer,
                        detail: "the peer closed its RDMA transport".into(),
                    });
                }
            }
        }
    }

    fn on_trailer(&mut self, peer: Rank, imm: u32, out: &mut Vec<Completion>) -> Result<()> {
        let (low, mismatch) = split_imm(imm);
        let p = self.peers[peer].as_mut().expect("peer");
        let Some(seq) = p
            .recvs
            .iter()
            .find(|(s, r)| (**s as u32 & 0x7fff_ffff) == low && r.mbox.is_some())
            .map(|(s, _)| *s)
        else {
            return Ok(()); // a repeat after failover of a receive already complete
        };
        let r = p.recvs.remove(&seq).expect("present");
        let mbox = r.mbox.expect("clear-to-send was sent");
        let got = FrameHeader::decode(&p.mbox.bytes(mbox)[..HEADER_LEN]);
        p.mbox.release(mbox);
        let got = got.map_err(|e| {
            Error::protocol(format!(
                "the completion trailer of receive {seq} from rank {peer}: {e}"
            ))
        })?;
        if mismatch || !got.matches(&r.expect) {
            if let Some(s) = r.stage {
                self.stage_rx.release(s);
            }
            out.push(Completion::BadHeader {
                token: r.token,
                peer,
                got,
            });
            return Ok(());
        }
        if let Some(s) = r.stage {
            let n = r.expect.len as usize;
            // SAFETY: the engine lent `n` writable bytes at `dst` until this completion; the
            // staging slot holds at least `n` (frames are at most a slot).
            unsafe { std::ptr::copy_nonoverlapping(self.stage_rx.bytes(s).as_ptr(), r.dst, n) };
            self.stage_rx.release(s);
            self.stat(|s| s.frames_staged += 1);
        }
        out.push(Completion::Received {
            token: r.token,
            crc: got.crc,
        });
        Ok(())
    }

    /// Take queue pair `path` to `peer` out of service and move its work to the others.
    /// `detected`: seen here (then the pair's lower rank rebuilds it), rather than told.
    fn path_down(
        &mut self,
        peer: Rank,
        path: usize,
        status: WcStatus,
        detected: bool,
        out: &mut Vec<Completion>,
    ) {
        let p = self.peers[peer].as_mut().expect("peer");
        let Some(pa) = p.paths.get_mut(path) else {
            return;
        };
        if pa.up {
            pa.up = false;
            // A flush after we put it in ERROR at the peer's report is the peer's failure;
            // an error of its own (the report crossed it) is named as itself.
            let told = std::mem::take(&mut pa.told);
            let why = if told && status == WcStatus::Flushed {
                format!("the peer reported it failed ({} here)", status.name())
            } else {
                status.name().to_string()
            };
            pa.why = Some(why.clone());
            pa.reasm.clear();
            let qpn = pa.qp.qpn;
            log::warn!(
                target: dmsc_core::subsys::NET,
                "rank {}: RDMA queue pair {path} (qpn {qpn}) to rank {peer} failed with {}; \
                 moving its work to the other queue pairs",
                self.rank,
                status.name()
            );
            // The frames whose write-with-immediate did not complete, in the order they
            // were posted: the spraying core's flights of the path (the same set as the
            // frames being written on it).
            let now = Instant::now();
            let mut again = p.sched.on_failed(path, now, &why);
            again.retain(|s| p.writing.get(s).is_some_and(|w| w.path == Some(path)));
            let mut rest: Vec<u64> = p
                .writing
                .iter()
                .filter(|(s, w)| w.path == Some(path) && !again.contains(s))
                .map(|(s, _)| *s)
                .collect();
            rest.sort_unstable();
            again.extend(rest);
            let n = again.len() as u64;
            let delay = p.sched.redial_delay(path, p.paths[path].rebuilds);
            p.paths[path].redial_at = Some(now + delay);
            for s in again.into_iter().rev() {
                p.writing.get_mut(&s).expect("present").path = None;
                p.ready.push_front(s);
            }
            let mut regroup: Vec<u64> = p
                .groups
                .iter()
                .filter(|(_, g)| g.posted.is_some_and(|(q, _)| q == path))
                .map(|(id, _)| *id)
                .collect();
            regroup.sort_unstable();
            let m = regroup.len() as u64;
            for g in regroup.into_iter().rev() {
                p.groups.get_mut(&g).expect("present").posted = None;
                p.outbox.push_front(g);
            }
            self.stat(|s| {
                s.paths_failed += 1;
                s.frames_rewritten += n;
                s.messages_resent += m;
            });
            self.publish();
            if detected {
                self.ask_rebuild(peer, path, out);
            }
        }
        let p = self.peers[peer].as_ref().expect("peer");
        if p.paths.iter().all(|pa| !pa.up) && !p.closed {
            let e = Error::PeerLost {
                peer,
                detail: format!(
                    "every RDMA queue pair to rank {peer} failed: {}",
                    self.describe_paths(peer)
                ),
            };
            self.fail_peer(peer, e, out);
        }
    }

    /// Rebuild a failed queue pair, or ask the peer to: the lower rank of the pair resets
    /// its end and sends [`Msg::Rebuild`]; the higher one sends [`Msg::Broken`]. Both go on
    /// a healthy queue pair; with none left, or after [`MAX_REBUILDS`], it stays down.
    fn ask_rebuild(&mut self, peer: Rank, path: usize, out: &mut Vec<Completion>) {
        let p = self.peers[peer].as_ref().expect("peer");
        if p.closed || p.failed || !p.paths.iter().any(|pa| pa.up) {
            return;
        }
        if p.paths[path].rebuilds >= MAX_REBUILDS || p.paths[path].rebuilding {
            return;
        }
        if self.rank > peer {
            self.queue_group(peer, vec![Msg::Broken { path: path as u8 }]);
            return;
        }
        self.begin_rebuild(peer, path, out);
    }

    /// Start draining `path` for a rebuild: if it is still in service, fail it so that
    /// what it holds flushes after the completions already due (the first flush takes it
    /// out of service and moves its work); the reset waits until every completion is in
    /// ([`RdmaTransport::rebuild_step`]).
    fn begin_rebuild(&mut self, peer: Rank, path: usize, out: &mut Vec<Completion>) {
        let pa = &mut self.peers[peer].as_mut().expect("peer").paths[path];
        pa.rebuilding = true;
        if pa.up {
            pa.told = true;
            let (qp, nic) = (pa.qp, pa.nic);
            if let Err(e) = self.ctxs[nic].modify_qp(qp, QpState::Error, &self.attrs, None) {
                self.fail_peer(peer, e, out);
                return;
            }
        }
        self.rebuild_step(peer, path, out);
    }

    /// ERROR (its outstanding requests flush, their completions are ignored by epoch),
    /// RESET, INIT, a new epoch, fresh counters and receives posted.
    fn reset_path(&mut self, peer: Rank, path: usize) -> Result<()> {
        let attrs = self.attrs;
        let pa = &mut self.peers[peer].as_mut().expect("peer").paths[path];
        let (qp, ctx) = (pa.qp, &mut self.ctxs[pa.nic]);
        ctx.modify_qp(qp, QpState::Error, &attrs, None)?;
        ctx.modify_qp(qp, QpState::Reset, &attrs, None)?;
        ctx.modify_qp(qp, QpState::Init, &attrs, None)?;
        pa.epoch = (pa.epoch + 1) & 0xf;
        pa.rebuilds += 1;
        pa.credits = RECV_DEPTH;
        pa.returned = 0;
        pa.wrs = 0;
        pa.recv_flushed = 0;
        pa.reasm.clear();
        for i in 0..RECV_DEPTH {
            let slot = self.rx_slot(peer, path, i);
            self.post_rx(peer, path, slot)?;
        }
        Ok(())
    }

    /// Connect a reset queue pair to the peer's again and put it back in service.
    fn reconnect(&mut self, peer: Rank, path: usize) -> Result<()> {
        let attrs = self.attrs;
        let pa = &mut self.peers[peer].as_mut().expect("peer").paths[path];
        let remote = pa.remote.ok_or_else(|| {
            Error::internal(format!(
                "queue pair {path} to rank {peer} has no remote end"
            ))
        })?;
        let attrs = QpAttrs {
            mtu: attrs.mtu.min(remote.addr.mtu),
            ..attrs
        };
        let ctx = &mut self.ctxs[pa.nic];
        ctx.modify_qp(pa.qp, QpState::Rtr, &attrs, Some(remote))?;
        ctx.modify_qp(pa.qp, QpState::Rts, &attrs, None)?;
        pa.up = true;
        pa.rebuilding = false;
        pa.awaiting_ready = false;
        pa.reconnected = Some(Instant::now());
        pa.redial_at = None;
        let epoch = 1 + pa.rebuilds;
        let p = self.peers[peer].as_mut().expect("peer");
        p.sched.readmit(path, Instant::now(), epoch);
        log::info!(
            target: dmsc_core::subsys::NET,
            "rank {}: RDMA queue pair {path} to rank {peer} rebuilt and back in service",
            self.rank
        );
        self.stat(|s| s.paths_rebuilt += 1);
        self.publish();
        Ok(())
    }

    /// The lower rank reset its end of `path`: take ours down (moving its work), reset it,
    /// connect it, and answer [`Msg::Ready`].
    fn on_rebuild(&mut self, peer: Rank, path: usize, out: &mut Vec<Completion>) {
        if self.rank < peer || path >= self.npaths {
            return; // only the lower rank rebuilds
        }
        if !self.peers[peer].as_ref().expect("peer").paths[path].rebuilding {
            self.begin_rebuild(peer, path, out);
        }
    }

    /// Once a queue pair being rebuilt is out of service and every completion of its
    /// requests is in (all receives flushed, no send outstanding), reset it. The lower rank
    /// then sends [`Msg::Rebuild`] and waits for [`Msg::Ready`]; the higher one (asked by
    /// [`Msg::Rebuild`]) connects at once to the peer's new end and answers [`Msg::Ready`].
    fn rebuild_step(&mut self, peer: Rank, path: usize, out: &mut Vec<Completion>) {
        let p = self.peers[peer].as_ref().expect("peer");
        let pa = &p.paths[path];
        let quiet = !pa.up && pa.recv_flushed >= RECV_DEPTH && pa.wrs == 0;
        if !pa.rebuilding || pa.awaiting_ready || !quiet || p.failed || p.closed {
            return;
        }
        // The lower rank starts the rebuild once the spraying core's backoff has passed
        // ([`RdmaTransport::progress`] comes back to it); the higher one follows at once.
        if self.rank < peer && pa.redial_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let r = self.reset_path(peer, path).and_then(|()| {
            if self.rank < peer {
                self.peers[peer].as_mut().expect("peer").paths[path].awaiting_ready = true;
                self.queue_group(peer, vec![Msg::Rebuild { path: path as u8 }]);
                Ok(())
            } else {
                self.reconnect(peer, path)?;
                self.queue_group(peer, vec![Msg::Ready { path: path as u8 }]);
                let p = self.peers[peer].as_mut().expect("peer");
                if let Some(g) = p.outbox.back().and_then(|g| p.groups.get_mut(g)) {
                    g.avoid = Some(path); // the peer's end is not connected until then
                }
                Ok(())
            }
        });
        if let Err(e) = r {
            self.fail_peer(peer, e, out);
        }
    }

    fn on_ready(&mut self, peer: Rank, path: usize, out: &mut Vec<Completion>) {
        let rebuilding = self.peers[peer]
            .as_ref()
            .expect("peer")
            .paths
            .get(path)
            .is_some_and(|pa| pa.awaiting_ready);
        if rebuilding {
            if let Err(e) = self.reconnect(peer, path) {
                self.fail_peer(peer, e, out);
            }
        }
    }

    fn describe_paths(&self, peer: Rank) -> String {
        let Some(p) = self.peers.get(peer).and_then(Option::as_ref) else {
            return String::new();
        };
        p.paths
            .iter()
            .enumerate()
            .map(|(i, pa)| match &pa.why {
                None => format!("qp {i} (qpn {}) up", pa.qp.qpn),
                Some(w) => format!("qp {i} (qpn {}) failed: {w}", pa.qp.qpn),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn fail_peer(&mut self, peer: Rank, error: Error, out: &mut Vec<Completion>) {
        let Some(p) = self.peers.get_mut(peer).and_then(Option::as_mut) else {
            return;
        };
        if p.failed {
            return;
        }
        p.failed = true;
        for pa in &p.paths {
            let _ = self.ctxs[pa.nic].modify_qp(pa.qp, QpState::Error, &self.attrs, None);
        }
        out.push(Completion::PeerFailed { peer, error });
    }

    /// Publish every queue pair's metrics ([`Transport::path_metrics`]): the spraying
    /// core's, as over TCP.
    fn publish(&mut self) {
        self.published = Instant::now();
        let taken = std::time::SystemTime::now();
        let v: Vec<PeerPaths> = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(peer, p)| p.as_ref().map(|p| (peer, p)))
            .map(|(peer, p)| {
                let paths: Vec<_> = (0..p.sched.len())
                    .map(|i| p.sched.metrics(i).clone())
                    .collect();
                PeerPaths {
                    peer,
                    bytes_duplicated: 0,
                    bytes_sent: paths.iter().map(|m| m.bytes_sent).sum(),
                    paths,
                    taken,
                }
            })
            .collect();
        *self.metrics.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }

    /// Queue pairs to a peer whose rebuild waits for its backoff and whose time has come.
    fn rebuilds_due(&mut self, out: &mut Vec<Completion>) {
        let now = Instant::now();
        for peer in 0..self.peers.len() {
            let Some(p) = self.peers[peer].as_ref() else {
                continue;
            };
            let due: Vec<usize> = (0..p.paths.len())
                .filter(|&i| {
                    let pa = &p.paths[i];
                    pa.rebuilding
                        && !pa.up
                        && !pa.awaiting_ready
                        && pa.redial_at.is_some_and(|t| now >= t)
                })
                .collect();
            for path in due {
                self.rebuild_step(peer, path, out);
            }
        }
    }

    fn progress(&mut self, out: &mut Vec<Completion>) -> Result<()> {
        if self.published.elapsed() >= PUBLISH_EVERY {
            self.publish();
        }
        self.rebuilds_due(out);
        self.pump(out)?;
        loop {
            let mut wcs = std::mem::take(&mut self.wcs);
            wcs.clear();
            let mut n = 0;
            for ctx in &mut self.ctxs {
                n += ctx.poll_cq(&mut wcs, 64)?;
            }
            // Successes first (stable): per queue pair every success precedes its first
            // error anyway, and across ports (one completion queue each) a peer's goodbye
            // on one is then seen before the errors its teardown caused on another.
            wcs.sort_by_key(|w| w.status != WcStatus::Success);
            for wc in wcs.drain(..) {
                self.handle(wc, out)?;
            }
            self.wcs = wcs;
            if n == 0 {
                break;
            }
            self.pump(out)?;
        }
        Ok(())
    }

    fn is_staged(&self, reg: Option<RegHandle>, len: u32) -> Result<Option<Keys>> {
        match (self.lookup(reg), len) {
            (_, 0) => Ok(None),
            (Some(Reg::Mr { lkeys, .. }), _) => Ok(Some(lkeys)),
            (Some(Reg::Staged), _) | (None, _) => {
                if len as usize > self.stage_tx.slot_bytes() {
                    return Err(Error::invalid(format!(
                        "an RDMA frame of {len} bytes in unregistered memory exceeds the \
                         staging slot of {} bytes (the engine's chunk size)",
                        self.stage_tx.slot_bytes()
                    )));
                }
                Ok(None)
            }
        }
    }
}

impl Transport for RdmaTransport {
    fn name(&self) -> &'static str {
        "rdma"
    }

    fn accepts(&self, kind: MemKind) -> bool {
        match kind {
            MemKind::Host => true,
            MemKind::Cuda { .. } => self.dmabuf.is_some(),
        }
    }

    fn needs_registration(&self, peer: Rank, kind: MemKind) -> bool {
        self.accepts(kind) && peer != self.rank
    }

    fn register(&mut self, ptr: *mut u8, len: usize, kind: MemKind) -> Result<RegHandle> {
        if let MemKind::Cuda { device } = kind {
            // Never staged here: the transport's staging copies with the CPU, which cannot
            // read GPU memory; without dma-bufs the communicator stages it instead.
            let mrs = self.register_dmabuf(ptr as u64, len, device)?;
            let (mut lkeys, mut rkeys) = ([0; MAX_NICS], [0; MAX_NICS]);
            for (i, m) in mrs.iter().enumerate() {
                lkeys[i] = m.lkey;
                rkeys[i] = m.rkey;
            }
            self.next_reg += 1;
            self.regs.insert(self.next_reg, Reg::Mr { lkeys, rkeys });
            self.reg_mrs.insert(self.next_reg, mrs);
            return Ok(RegHandle { key: self.next_reg });
        }
        let mut mrs = Vec::with_capacity(self.ctxs.len());
        let mut refused = None;
        for ctx in &mut self.ctxs {
            match ctx.reg_mr(ptr as u64, len, Access::REMOTE_WRITE) {
                Ok(m) => mrs.push(m),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        if refused.is_some() {
            for (ctx, m) in self.ctxs.iter_mut().zip(mrs.drain(..)) {
                ctx.dereg_mr(m);
            }
        }
        let reg = match refused.map_or(Ok(()), Err) {
            Ok(()) => {
                let (mut lkeys, mut rkeys) = ([0; MAX_NICS], [0; MAX_NICS]);
                for (i, m) in mrs.iter().enumerate() {
                    lkeys[i] = m.lkey;
                    rkeys[i] = m.rkey;
                }
                Reg::Mr { lkeys, rkeys }
            }
            Err(Error::System {
                errno: Some(libc::ENOMEM),
                detail,
                ..
            }) => {
                if !self.memlock_warned {
                    self.memlock_warned = true;
                    log::warn!(
                        target: dmsc_core::subsys::NET,
                        "rank {}: ibv_reg_mr refused {len} bytes ({detail}): the pinned-memory \
                         limit RLIMIT_MEMLOCK (`ulimit -l`) is too low; frames in memory that \
                         cannot be registered are copied through the transport's registered \
                         staging slots (slower). Raise the limit, e.g. `ulimit -l unlimited`.",
                        self.rank
                    );
                }
                self.stat(|s| s.registrations_staged += 1);
                Reg::Staged
            }
            Err(e) => return Err(e),
        };
        self.next_reg += 1;
        self.regs.insert(self.next_reg, reg);
        if !mrs.is_empty() {
            self.reg_mrs.insert(self.next_reg, mrs);
        }
        Ok(RegHandle { key: self.next_reg })
    }

    fn deregister(&mut self, handle: RegHandle) {
        self.regs.remove(&handle.key);
        for (ctx, m) in self
            .ctxs
            .iter_mut()
            .zip(self.reg_mrs.remove(&handle.key).unwrap_or_default())
        {
            ctx.dereg_mr(m);
        }
    }

    unsafe fn post_send_registered(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        reg: RegHandle,
        token: Token,
    ) -> Result<()> {
        let lkey = self.is_staged(Some(reg), header.len)?;
        let p = self.peer(peer)?;
        let seq = p.send_seq;
        p.send_seq += 1;
        p.sends.insert(
            seq,
            OutFrame {
                token,
                header: *header,
                data,
                lkey,
            },
        );
        Ok(())
    }

    unsafe fn post_recv_registered(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        reg: RegHandle,
        token: Token,
    ) -> Result<()> {
        let rkey = match self.lookup(Some(reg)) {
            Some(Reg::Mr { rkeys, .. }) if expect.len > 0 => Some(rkeys),
            _ => {
                self.is_staged(Some(reg), expect.len)?;
                None
            }
        };
        let p = self.peer(peer)?;
        let seq = p.recv_seq;
        p.recv_seq += 1;
        p.recvs.insert(
            seq,
            InFrame {
                token,
                expect: *expect,
                dst,
                rkey,
                mbox: None,
                stage: None,
            },
        );
        p.cts_due.push_back(seq);
        Ok(())
    }

    unsafe fn post_send(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        token: Token,
    ) -> Result<()> {
        // Unregistered (zero bytes, or staged): a handle no registration has.
        // SAFETY: forwarded contract; handle 0 is never issued, so the frame is staged.
        unsafe { self.post_send_registered(peer, header, data, RegHandle { key: 0 }, token) }
    }

    unsafe fn post_recv(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        token: Token,
    ) -> Result<()> {
        // SAFETY: forwarded contract; handle 0 is never issued, so the frame is staged.
        unsafe { self.post_recv_registered(peer, expect, dst, RegHandle { key: 0 }, token) }
    }

    fn send_control(&mut self, peer: Rank, payload: &[u8]) {
        if self
            .peers
            .get(peer)
            .and_then(Option::as_ref)
            .is_none_or(|p| p.failed || p.closed)
        {
            return;
        }
        let chunks: Vec<&[u8]> = if payload.is_empty() {
            vec![&[][..]]
        } else {
            payload.chunks(CONTROL_FRAGMENT).collect()
        };
        let n = chunks.len();
        let msgs = chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| Msg::Control {
                last: i + 1 == n,
                bytes: c.to_vec(),
            })
            .collect();
        self.queue_group(peer, msgs);
    }

    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<()> {
        let before = out.len();
        let deadline = Instant::now() + timeout;
        let mut nap = Duration::from_micros(5);
        loop {
            self.progress(out)?;
            if out.len() > before || timeout.is_zero() {
                return Ok(());
            }
            if self.wake.woken.swap(false, Ordering::AcqRel) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            let fds: Vec<_> = self.ctxs.iter().filter_map(|c| c.completion_fd()).collect();
            if fds.len() == self.ctxs.len() && !fds.is_empty() {
                // Completion channels: arm them, look once more (what completed before the
                // arming does not notify), then sleep until a completion or a wake.
                for c in &mut self.ctxs {
                    c.arm_notify()?;
                }
                self.progress(out)?;
                if out.len() > before {
                    return Ok(());
                }
                let mut fds = fds;
                let nap = match &self.wake.fd {
                    Some(w) => {
                        fds.push(std::os::fd::AsRawFd::as_raw_fd(w));
                        CHANNEL_NAP
                    }
                    None => Duration::from_millis(1),
                };
                sleep_on(
                    &fds,
                    nap.min(deadline.saturating_duration_since(Instant::now())),
                );
                self.wake.drain();
                continue;
            }
            // No completion channel: back off from a few microseconds to a millisecond,
            // never spinning hot for long.
            std::thread::sleep(nap.min(deadline - now));
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }

    fn cancel_all(&mut self) {
        // Stop the hardware first: in ERROR no queue pair reads or writes our memory, and
        // peers' writes into it fail.
        for p in self.peers.iter_mut().flatten() {
            for pa in &p.paths {
                let _ = self.ctxs[pa.nic].modify_qp(pa.qp, QpState::Error, &self.attrs, None);
            }
            p.failed = true;
            p.recvs.clear();
            p.cts_due.clear();
            p.sends.clear();
            p.cts.clear();
            p.ready.clear();
            p.writing.clear();
        }
        let mut sink = Vec::new();
        for ctx in &mut self.ctxs {
            let _ = ctx.poll_cq(&mut sink, usize::MAX);
        }
    }

    fn waker(&self) -> Arc<dyn Waker> {
        self.wake.clone()
    }

    fn path_metrics(&self) -> Option<PathMetricsHandle> {
        Some(self.metrics.clone())
    }

    fn describe_peer(&self, peer: Rank) -> Option<String> {
        Some(format!(
            "{} over {}: {}",
            self.name(),
            self.provider,
            self.describe_paths(peer)
        ))
    }
}

impl RdmaTransport {
    /// Close in good order: deliver what is queued (the engine's goodbye among it), then
    /// tell every peer with [`Msg::Bye`], waiting at most half a second in all.
    fn linger(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut sink = Vec::new();
        let busy = |t: &RdmaTransport| {
            t.peers
                .iter()
                .flatten()
                .any(|p| !p.failed && !p.closed && !p.groups.is_empty())
        };
        let mut said_bye = false;
        while Instant::now() < deadline {
            if self.progress(&mut sink).is_err() {
                return;
            }
            sink.clear();
            if !busy(self) {
                if said_bye {
                    return;
                }
                said_bye = true;
                for peer in 0..self.peers.len() {
                    if self.peers[peer]
                        .as_ref()
                        .is_some_and(|p| !p.failed && !p.closed)
                    {
                        self.queue_group(peer, vec![Msg::Bye]);
                    }
                }
                continue;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

impl Drop for RdmaTransport {
    fn drop(&mut self) {
        if self.connected {
            self.linger();
        }
        for p in self.peers.iter_mut().flatten() {
            for pa in &p.paths {
                self.ctxs[pa.nic].destroy_qp(pa.qp);
            }
            p.mbox.close(&mut self.ctxs);
            p.trailers.close(&mut self.ctxs);
        }
        self.regs.clear();
        for (_, mrs) in self.reg_mrs.drain() {
            for (ctx, m) in self.ctxs.iter_mut().zip(mrs) {
                ctx.dereg_mr(m);
            }
        }
        self.rx.close(&mut self.ctxs);
        self.tx.close(&mut self.ctxs);
        self.stage_tx.close(&mut self.ctxs);
        self.stage_rx.close(&mut self.ctxs);
    }
}
