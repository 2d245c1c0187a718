//! FAKE verbs: an in-memory fabric with the semantics of real verbs, so that the whole RDMA
//! transport (connection, writes, spraying over queue pairs, failover) runs in tests on
//! machines without an RDMA device.
//!
//! It is a fake, not an emulator of any wire protocol. What it keeps of the verbs model
//! (`ibv_post_send(3)`, `ibv_poll_cq(3)`, `ibv_modify_qp(3)`, IBA vol. 1 §9.7 and §10.3):
//! - work requests are processed in order per queue pair and complete in that order;
//! - local scatter entries are checked against the region of their lkey
//!   (`IBV_WC_LOC_PROT_ERR`), RDMA writes against the peer's region of the rkey, its bounds
//!   and its remote-write permission (`IBV_WC_REM_ACCESS_ERR`, which also fails the
//!   responder);
//! - a SEND or write with immediate needs a posted receive at the peer: without one the
//!   request waits (receiver not ready) and is retried; after `rnr_retry` attempts
//!   (7: forever) it fails with `IBV_WC_RNR_RETRY_EXC_ERR`;
//! - a peer that does not answer (its queue pair in error, reset or gone) fails the request
//!   with `IBV_WC_RETRY_EXC_ERR`, and an injected fault does the same on demand (one
//!   request, or every request from and to a device whose cable is pulled);
//! - an error puts the queue pair in ERROR: every outstanding and later work request
//!   completes with `IBV_WC_WR_FLUSH_ERR`;
//! - registration past an injected pinned-memory limit fails with `ENOMEM`, as `ibv_reg_mr`
//!   does under `RLIMIT_MEMLOCK`.
//!
//! Processing happens when any context posts or polls, under one lock for the whole fabric,
//! so a write's bytes are copied before its completion can be polled.

use super::qp_state::{QpAttrs, QpState};
use super::verbs::{
    Access, DeviceInfo, Mr, PortAddr, PortInfo, QpHandle, RecvWr, RemoteQp, SendOp, SendWr, Sge,
    VerbsContext, VerbsProvider, WcKind, WcStatus, WorkCompletion,
};
use dmsc_core::error::{Error, Result};
use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct FakeMr {
    addr: u64,
    len: usize,
    access: Access,
    /// Counted against the pinned-memory limit (not a dma-buf's).
    pinned: bool,
}

struct FakeQp {
    state: QpState,
    attrs: QpAttrs,
    remote: Option<(usize, u32)>,
    sq: VecDeque<SendWr>,
    rq: VecDeque<RecvWr>,
    rnr_attempts: u32,
    max_send: u32,
    max_recv: u32,
}

struct FakeDev {
    name: String,
    mrs: HashMap<u32, FakeMr>,
    pinned: usize,
    memlock: Option<usize>,
    qps: HashMap<u32, FakeQp>,
    cq: FakeCq,
    /// The completion channel's pipe (read end, write end), when channels are on.
    channel: Option<(RawFd, RawFd)>,
    /// Notify at the first completion pushed after this many (armed), else `None`.
    armed_at: Option<u64>,
    /// `poll_cq` calls on the device.
    polls: u64,
    /// Send requests processed (any outcome) since the fault was armed.
    processed: u64,
    /// Fail the send request processed when `processed` reaches this.
    fail_at: Option<u64>,
    /// The link goes down for good when `processed` reaches this: every request from or to
    /// the device fails from then on.
    down_at: Option<u64>,
    /// Send requests completed (any outcome) since the fabric was made.
    completed: u64,
    /// FAKE dma-buf registration: whether [`VerbsContext::reg_dmabuf_mr`] works on it, and
    /// how many it made.
    dmabuf: bool,
    dmabuf_regs: u64,
    open: bool,
    /// FAKE link speed in bytes per second (`None`: as fast as memory).
    rate: Option<f64>,
    /// With a link speed: when the link has sent what it was given so far.
    link_free: Option<Instant>,
}

/// A completion queue that counts what was ever pushed (for notifications).
#[derive(Default)]
struct FakeCq {
    q: VecDeque<WorkCompletion>,
    pushed: u64,
}

impl FakeCq {
    fn push_back(&mut self, wc: WorkCompletion) {
        self.q.push_back(wc);
        self.pushed += 1;
    }
    fn clear(&mut self) {
        self.q.clear();
    }
}

struct Fabric {
    /// Contexts opened from now on get a completion channel.
    channels: bool,
    devs: Vec<FakeDev>,
    next_key: u32,
    next_qpn: u32,
    remote_access_errors: u64,
    rnr_waits: u64,
    log: Vec<String>,
}

/// A fabric of fake devices, each with one active port, all linked to each other. Clones
/// share the fabric.
#[derive(Clone)]
pub struct FakeFabric {
    inner: Arc<Mutex<Fabric>>,
}

impl FakeFabric {
    /// A fabric of `n` devices named `fake0`, `fake1`, ...
    pub fn new(n: usize) -> FakeFabric {
        let devs = (0..n)
            .map(|i| FakeDev {
                name: format!("fake{i}"),
                mrs: HashMap::new(),
                pinned: 0,
                memlock: None,
                qps: HashMap::new(),
                cq: FakeCq::default(),
                channel: None,
                armed_at: None,
                polls: 0,
                processed: 0,
                fail_at: None,
                down_at: None,
                completed: 0,
                dmabuf: true,
                dmabuf_regs: 0,
                rate: None,
                link_free: None,
                open: false,
            })
            .collect();
        FakeFabric {
            inner: Arc::new(Mutex::new(Fabric {
                channels: false,
                devs,
                next_key: 0x100,
                next_qpn: 0x40,
                remote_access_errors: 0,
                rnr_waits: 0,
                log: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Fabric> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A provider that sees only the devices of `devices` (one host's view).
    pub fn provider(&self, devices: &[usize]) -> FakeVerbs {
        FakeVerbs {
            fabric: self.clone(),
            visible: devices.to_vec(),
        }
    }

    /// Make the `nth` (0-based) send request that device `dev` processes from now on fail
    /// with `IBV_WC_RETRY_EXC_ERR`, as a cable pulled mid-transfer would: its queue pair
    /// goes to ERROR and flushes the rest.
    pub fn inject_retry_exceeded(&self, dev: usize, nth: u64) {
        let mut f = self.lock();
        let d = &mut f.devs[dev];
        d.processed = 0;
        d.fail_at = Some(nth);
    }

    /// Pull device `dev`'s cable once it has processed `after` more send requests: from
    /// then on every request it sends, and every request sent to it, fails with
    /// `IBV_WC_RETRY_EXC_ERR` (its queue pairs, and their peers', go to ERROR), and stays so
    /// through rebuilds. A NIC of a host with several dying mid-transfer.
    pub fn pull_cable(&self, dev: usize, after: u64) {
        let mut f = self.lock();
        let d = &mut f.devs[dev];
        d.processed = 0;
        d.down_at = Some(after);
    }

    /// FAKE feature: whether device `dev` registers dma-bufs (yes by default), as a device
    /// and library with `ibv_reg_dmabuf_mr` do.
    pub fn set_dmabuf(&self, dev: usize, supported: bool) {
        self.lock().devs[dev].dmabuf = supported;
    }

    /// Dma-buf registrations device `dev` made.
    pub fn dmabuf_registrations(&self, dev: usize) -> u64 {
        self.lock().devs[dev].dmabuf_regs
    }

    /// FAKE feature: limit device `dev`'s link to `bytes_per_sec` (`None`: unlimited). Each
    /// send request with a payload then occupies the link for its length over that rate:
    /// the next one on any of the device's queue pairs is processed only once the link is
    /// free, so a slow NIC (or a congested port) completes proportionally fewer bytes.
    pub fn set_link_rate(&self, dev: usize, bytes_per_sec: Option<f64>) {
        let mut f = self.lock();
        let d = &mut f.devs[dev];
        d.rate = bytes_per_sec.filter(|r| *r > 0.0);
        d.link_free = None;
    }

    /// Give contexts opened from now on a completion channel (a pipe that turns readable
    /// at the first completion after [`VerbsContext::arm_notify`]), as
    /// `ibv_create_comp_channel` does.
    pub fn enable_channels(&self) {
        self.lock().channels = true;
    }

    /// `poll_cq` calls made on device `dev` so far.
    pub fn polls(&self, dev: usize) -> u64 {
        self.lock().devs[dev].polls
    }

    /// Send requests device `dev` has completed so far, whatever their outcome.
    pub fn requests(&self, dev: usize) -> u64 {
        self.lock().devs[dev].completed
    }

    /// Refuse registrations on `dev` beyond `bytes` pinned in all (`None`: no limit).
    pub fn set_memlock_limit(&self, dev: usize, bytes: Option<usize>) {
        self.lock().devs[dev].memlock = bytes;
    }

    /// Device `dev`'s host dies: its queue pairs and regions vanish without a word, and
    /// peers' requests to it go unanswered (`IBV_WC_RETRY_EXC_ERR`).
    pub fn crash(&self, dev: usize) {
        let mut f = self.lock();
        let d = &mut f.devs[dev];
        d.open = false;
        d.qps.clear();
        d.mrs.clear();
        d.cq.clear();
    }

    /// How many writes the fabric refused with `IBV_WC_REM_ACCESS_ERR`.
    pub fn remote_access_errors(&self) -> u64 {
        self.lock().remote_access_errors
    }

    /// How many times a request found no receive posted at its peer.
    pub fn rnr_waits(&self) -> u64 {
        self.lock().rnr_waits
    }

    /// Bytes registered on `dev` now.
    pub fn pinned(&self, dev: usize) -> usize {
        self.lock().devs[dev].pinned
    }

    /// Queue pairs of `dev` in the ERROR state.
    pub fn qps_in_error(&self, dev: usize) -> usize {
        let f = self.lock();
        f.devs[dev]
            .qps
            .values()
            .filter(|q| q.state == QpState::Error)
            .count()
    }

    /// What went wrong so far, one line per error completion.
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }
}

/// A [`VerbsProvider`] over a [`FakeFabric`].
pub struct FakeVerbs {
    fabric: FakeFabric,
    visible: Vec<usize>,
}

impl VerbsProvider for FakeVerbs {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        let f = self.fabric.lock();
        Ok(self
            .visible
            .iter()
            .map(|&i| DeviceInfo {
                name: f.devs[i].name.clone(),
                ports: vec![PortInfo {
                    port: 1,
                    active: true,
                    link_layer: "InfiniBand".into(),
                }],
            })
            .collect())
    }

    fn open(
        &self,
        device: &str,
        port: u8,
        _gid_index: u8,
        _cq_depth: usize,
    ) -> Result<Box<dyn VerbsContext>> {
        let mut f = self.fabric.lock();
        let dev = self
            .visible
            .iter()
            .copied()
            .find(|&i| f.devs[i].name == device)
            .ok_or_else(|| Error::invalid(format!("no fake device {device}")))?;
        if port != 1 {
            return Err(Error::invalid(format!("{device} has no port {port}")));
        }
        f.devs[dev].open = true;
        if f.channels && f.devs[dev].channel.is_none() {
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two descriptors pipe2 returns.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
                return Err(Error::io(
                    "pipe2 for a fake completion channel",
                    &std::io::Error::last_os_error(),
                ));
            }
            f.devs[dev].channel = Some((fds[0], fds[1]));
        }
        Ok(Box::new(FakeContext {
            fabric: self.fabric.clone(),
            dev,
        }))
    }
}

/// One opened fake device.
pub struct FakeContext {
    fabric: FakeFabric,
    dev: usize,
}

fn addr_of(dev: usize) -> PortAddr {
    let mut gid = [0u8; 16];
    gid[0] = 0xfe;
    gid[1] = 0x80;
    gid[8..16].copy_from_slice(&(dev as u64).to_be_bytes());
    PortAddr {
        lid: dev as u16 + 1,
        gid,
        mtu: 4096,
    }
}

impl Fabric {
    /// Write to the channel of every armed device that got a completion since it armed.
    fn notify(&mut self) {
        for d in &mut self.devs {
            let (Some(at), Some((_, w))) = (d.armed_at, d.channel) else {
                continue;
            };
            if d.cq.pushed > at {
                d.armed_at = None;
                // SAFETY: `w` is the write end of this device's pipe, open while the
                // context is; one byte from a valid buffer.
                let _ = unsafe { libc::write(w, [1u8].as_ptr().cast(), 1) };
            }
        }
    }

    /// Put `qpn` of `dev` in ERROR and flush what it holds.
    fn fail_qp(&mut self, dev: usize, qpn: u32) {
        let d = &mut self.devs[dev];
        let Some(q) = d.qps.get_mut(&qpn) else { return };
        q.state = QpState::Error;
        for wr in q.sq.drain(..) {
            d.cq.push_back(WorkCompletion {
                wr_id: wr.wr_id,
                qpn,
                status: WcStatus::Flushed,
                kind: WcKind::Send,
                byte_len: 0,
                imm: None,
            });
        }
        for wr in q.rq.drain(..) {
            d.cq.push_back(WorkCompletion {
                wr_id: wr.wr_id,
                qpn,
                status: WcStatus::Flushed,
                kind: WcKind::Recv,
                byte_len: 0,
                imm: None,
            });
        }
    }

    /// Complete the head of `qpn`'s send queue with `status`; an error fails the queue pair.
    fn complete_head(&mut self, dev: usize, qpn: u32, status: WcStatus) {
        let d = &mut self.devs[dev];
        let q = d.qps.get_mut(&qpn).expect("queue pair being processed");
        let wr = q.sq.pop_front().expect("a head to complete");
        q.rnr_attempts = 0;
        d.completed += 1;
        d.cq.push_back(WorkCompletion {
            wr_id: wr.wr_id,
            qpn,
            status,
            kind: WcKind::Send,
            byte_len: 0,
            imm: None,
        });
        if status != WcStatus::Success {
            let name = d.name.clone();
            self.log.push(format!(
                "{name} qp {qpn}: wr {} {}",
                wr.wr_id,
                status.name()
            ));
            self.fail_qp(dev, qpn);
        }
    }

    fn local_ok(&self, dev: usize, sge: &Sge) -> bool {
        self.devs[dev].mrs.get(&sge.lkey).is_some_and(|m| {
            sge.addr >= m.addr && sge.addr + sge.len as u64 <= m.addr + m.len as u64
        })
    }

    fn remote_ok(&self, dev: usize, rkey: u32, addr: u64, len: u32) -> bool {
        self.devs[dev].mrs.get(&rkey).is_some_and(|m| {
            m.access.remote_write && addr >= m.addr && addr + len as u64 <= m.addr + m.len as u64
        })
    }

    /// Process the send queues of every device as far as they go.
    fn progress(&mut self) {
        for dev in 0..self.devs.len() {
            let qpns: Vec<u32> = self.devs[dev].qps.keys().copied().collect();
            for qpn in qpns {
                while self.step(dev, qpn) {}
            }
        }
    }

    /// Process the head of one send queue; false when it cannot (empty, waiting).
    fn step(&mut self, dev: usize, qpn: u32) -> bool {
        let Some(q) = self.devs[dev].qps.get(&qpn) else {
            return false;
        };
        if q.state != QpState::Rts {
            return false;
        }
        let Some(wr) = q.sq.front().copied() else {
            return false;
        };
        let (rnr_retry, remote) = (q.attrs.rnr_retry, q.remote);
        if let (Some(rate), Some(sge)) = (self.devs[dev].rate, &wr.sge) {
            // A rate-limited link: wait until it has sent what it holds, then take this.
            let now = Instant::now();
            let d = &mut self.devs[dev];
            if d.link_free.is_some_and(|t| t > now) {
                return false;
            }
            let busy = Duration::from_secs_f64(sge.len as f64 / rate);
            d.link_free = Some(d.link_free.map_or(now, |t| t.max(now)) + busy);
        }
        let down = |d: &FakeDev| d.down_at.is_some_and(|a| d.processed >= a);
        if down(&self.devs[dev]) || remote.is_some_and(|(rd, _)| down(&self.devs[rd])) {
            self.devs[dev].processed += 1;
            self.complete_head(dev, qpn, WcStatus::RetryExceeded);
            return true;
        }
        let d = &mut self.devs[dev];
        if d.fail_at == Some(d.processed) {
            d.fail_at = None;
            d.processed += 1;
            self.complete_head(dev, qpn, WcStatus::RetryExceeded);
            return true;
        }
        let Some((rdev, rqpn)) = remote else {
            self.complete_head(dev, qpn, WcStatus::RetryExceeded);
            return true;
        };
        let peer_state = self.devs[rdev].qps.get(&rqpn).map(|r| r.state);
        if self.devs[rdev].open && matches!(peer_state, Some(QpState::Init | QpState::Reset)) {
            // The peer has not connected yet: the requester retransmits, as hardware does
            // until its timeout.
            return false;
        }
        let peer_alive =
            self.devs[rdev].open && matches!(peer_state, Some(QpState::Rtr | QpState::Rts));
        if !peer_alive {
            self.devs[dev].processed += 1;
            self.complete_head(dev, qpn, WcStatus::RetryExceeded);
            return true;
        }
        if let Some(sge) = &wr.sge {
            if !self.local_ok(dev, sge) {
                self.devs[dev].processed += 1;
                self.complete_head(dev, qpn, WcStatus::LocalProtection);
                return true;
            }
        }
        let len = wr.sge.map_or(0, |s| s.len);
        let consumes = !matches!(wr.op, SendOp::Write { .. });
        if consumes && self.devs[rdev].qps[&rqpn].rq.is_empty() {
            self.rnr_waits += 1;
            let q = self.devs[dev].qps.get_mut(&qpn).expect("present");
            q.rnr_attempts += 1;
            if rnr_retry != 7 && q.rnr_attempts > rnr_retry as u32 {
                self.devs[dev].processed += 1;
                self.complete_head(dev, qpn, WcStatus::RnrRetryExceeded);
                return true;
            }
            return false;
        }
        self.devs[dev].processed += 1;
        match wr.op {
            SendOp::Write { remote_addr, rkey }
            | SendOp::WriteImm {
                remote_addr, rkey, ..
            } => {
                if !self.remote_ok(rdev, rkey, remote_addr, len) {
                    self.remote_access_errors += 1;
                    let name = self.devs[rdev].name.clone();
                    self.log.push(format!(
                        "{name} refused a write of {len} bytes at {remote_addr:#x} with rkey {rkey:#x}"
                    ));
                    self.complete_head(dev, qpn, WcStatus::RemoteAccess);
                    self.fail_qp(rdev, rqpn);
                    return true;
                }
                if let Some(sge) = wr.sge {
                    // SAFETY: both ranges lie inside registered regions (checked above), and
                    // the posters promised to keep them valid until completion
                    // (`VerbsContext::post_send` / the region's owner). They may overlap only
                    // on loopback to the same buffer, hence `copy`.
                    unsafe {
                        std::ptr::copy(
                            sge.addr as *const u8,
                            remote_addr as *mut u8,
                            sge.len as usize,
                        )
                    };
                }
                if let SendOp::WriteImm { imm, .. } = wr.op {
                    let r = self.devs[rdev]
                        .qps
                        .get_mut(&rqpn)
                        .expect("present")
                        .rq
                        .pop_front()
                        .expect("checked non-empty");
                    self.devs[rdev].cq.push_back(WorkCompletion {
                        wr_id: r.wr_id,
                        qpn: rqpn,
                        status: WcStatus::Success,
                        kind: WcKind::RecvImm,
                        byte_len: len,
                        imm: Some(imm),
                    });
                }
                self.complete_head(dev, qpn, WcStatus::Success);
            }
            SendOp::Send => {
                let r = self.devs[rdev]
                    .qps
                    .get_mut(&rqpn)
                    .expect("present")
                    .rq
                    .pop_front()
                    .expect("checked non-empty");
                let room = r.sge.map_or(0, |s| s.len);
                let fits = len <= room && r.sge.is_none_or(|s| self.local_ok(rdev, &s));
                if !fits {
                    self.devs[rdev].cq.push_back(WorkCompletion {
                        wr_id: r.wr_id,
                        qpn: rqpn,
                        status: WcStatus::LocalLength,
                        kind: WcKind::Recv,
                        byte_len: 0,
                        imm: None,
                    });
                    self.fail_qp(rdev, rqpn);
                    // The responder NAKs: a remote operational error at the requester.
                    self.complete_head(dev, qpn, WcStatus::RemoteAccess);
                    return true;
                }
                if let (Some(s), Some(d)) = (wr.sge, r.sge) {
                    // SAFETY: both ranges lie inside registered regions (checked), the
                    // receive's buffer is at least `s.len` bytes, and both posters keep
                    // their memory valid until completion.
                    unsafe {
                        std::ptr::copy(s.addr as *const u8, d.addr as *mut u8, s.len as usize)
                    };
                }
                self.devs[rdev].cq.push_back(WorkCompletion {
                    wr_id: r.wr_id,
                    qpn: rqpn,
                    status: WcStatus::Success,
                    kind: WcKind::Recv,
                    byte_len: len,
                    imm: None,
                });
                self.complete_head(dev, qpn, WcStatus::Success);
            }
        }
        true
    }
}

impl FakeContext {
    fn qp_mut(f: &mut Fabric, dev: usize, qp: QpHandle) -> Result<&mut FakeQp> {
        f.devs[dev]
            .qps
            .get_mut(&qp.qpn)
            .ok_or_else(|| Error::internal(format!("no queue pair {}", qp.qpn)))
    }
}

impl VerbsContext for FakeContext {
    fn port_addr(&self) -> PortAddr {
        addr_of(self.dev)
    }

    fn reg_mr(&mut self, addr: u64, len: usize, access: Access) -> Result<Mr> {
        let mut f = self.fabric.lock();
        let d = &f.devs[self.dev];
        if d.memlock.is_some_and(|lim| d.pinned + len > lim) {
            return Err(Error::errno(
                format!("ibv_reg_mr of {len} bytes on {}", d.name),
                libc::ENOMEM,
            ));
        }
        f.next_key += 1;
        let key = f.next_key;
        let d = &mut f.devs[self.dev];
        d.pinned += len;
        d.mrs.insert(
            key,
            FakeMr {
                addr,
                len,
                access,
                pinned: true,
            },
        );
        Ok(Mr {
            id: key as u64,
            lkey: key,
            rkey: key,
            addr,
            len,
        })
    }

    /// FAKE: there is no device memory behind the descriptor. The region is the `len` bytes
    /// at `iova` in this process (tests stand host memory in for a GPU's), checked like any
    /// other; the descriptor must be open, and the device must allow dma-bufs
    /// ([`FakeFabric::set_dmabuf`]). It is not pinned (a dma-buf's memory is the exporter's).
    fn reg_dmabuf_mr(
        &mut self,
        fd: RawFd,
        offset: u64,
        len: usize,
        iova: u64,
        access: Access,
    ) -> Result<Mr> {
        let mut f = self.fabric.lock();
        let d = &f.devs[self.dev];
        if !d.dmabuf {
            return Err(Error::usage(format!(
                "ibv_reg_dmabuf_mr on {}: FAKE device without dma-buf support",
                d.name
            )));
        }
        // SAFETY: F_GETFD only inspects the descriptor table.
        if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(Error::errno(
                format!("ibv_reg_dmabuf_mr of {len} bytes at offset {offset}: fd {fd}"),
                libc::EBADF,
            ));
        }
        f.next_key += 1;
        let key = f.next_key;
        let d = &mut f.devs[self.dev];
        d.dmabuf_regs += 1;
        d.mrs.insert(
            key,
            FakeMr {
                addr: iova,
                len,
                access,
                pinned: false,
            },
        );
        Ok(Mr {
            id: key as u64,
            lkey: key,
            rkey: key,
            addr: iova,
            len,
        })
    }

    fn supports_dmabuf(&self) -> bool {
        self.fabric.lock().devs[self.dev].dmabuf
    }

    fn dereg_mr(&mut self, mr: Mr) {
        let mut f = self.fabric.lock();
        let d = &mut f.devs[self.dev];
        if let Some(m) = d.mrs.remove(&mr.lkey).filter(|m| m.pinned) {
            d.pinned -= m.len;
        }
    }

    fn create_qp(&mut self, max_send: u32, max_recv: u32) -> Result<QpHandle> {
        let mut f = self.fabric.lock();
        f.next_qpn += 1;
        let qpn = f.next_qpn;
        f.devs[self.dev].qps.insert(
            qpn,
            FakeQp {
                state: QpState::Reset,
                attrs: QpAttrs::default(),
                remote: None,
                sq: VecDeque::new(),
                rq: VecDeque::new(),
                rnr_attempts: 0,
                max_send,
                max_recv,
            },
        );
        Ok(QpHandle { qpn })
    }

    fn modify_qp(
        &mut self,
        qp: QpHandle,
        to: QpState,
        attrs: &QpAttrs,
        remote: Option<RemoteQp>,
    ) -> Result<()> {
        attrs.validate()?;
        let mut f = self.fabric.lock();
        let rdev = remote.map(|r| r.addr.lid as usize - 1);
        if let Some(rd) = rdev {
            if rd >= f.devs.len() {
                return Err(Error::invalid(format!(
                    "queue pair {}: remote lid {} is not on the fabric",
                    qp.qpn,
                    rd + 1
                )));
            }
        }
        let q = Self::qp_mut(&mut f, self.dev, qp)?;
        q.state.check_move(to, qp.qpn)?;
        if to == QpState::Rtr {
            let r = remote.ok_or_else(|| {
                Error::internal(format!("queue pair {}: RTR needs the remote end", qp.qpn))
            })?;
            q.remote = Some((rdev.expect("remote given"), r.qpn));
        }
        q.attrs = *attrs;
        match to {
            QpState::Error => f.fail_qp(self.dev, qp.qpn),
            QpState::Reset => {
                let q = Self::qp_mut(&mut f, self.dev, qp)?;
                q.sq.clear();
                q.rq.clear();
                q.remote = None;
                q.state = QpState::Reset;
            }
            _ => Self::qp_mut(&mut f, self.dev, qp)?.state = to,
        }
        f.notify();
        Ok(())
    }

    fn qp_state(&self, qp: QpHandle) -> Result<QpState> {
        let mut f = self.fabric.lock();
        Ok(Self::qp_mut(&mut f, self.dev, qp)?.state)
    }

    fn destroy_qp(&mut self, qp: QpHandle) {
        self.fabric.lock().devs[self.dev].qps.remove(&qp.qpn);
    }

    unsafe fn post_send(&mut self, qp: QpHandle, wr: &SendWr) -> Result<()> {
        let mut f = self.fabric.lock();
        let dev = self.dev;
        let q = Self::qp_mut(&mut f, dev, qp)?;
        if !q.state.accepts_send() {
            return Err(Error::internal(format!(
                "post_send on queue pair {} in {}",
                qp.qpn,
                q.state.name()
            )));
        }
        if q.sq.len() >= q.max_send as usize {
            return Err(Error::errno(
                format!("post_send: queue pair {} send queue full", qp.qpn),
                libc::ENOMEM,
            ));
        }
        if q.state == QpState::Error {
            f.devs[dev].cq.push_back(WorkCompletion {
                wr_id: wr.wr_id,
                qpn: qp.qpn,
                status: WcStatus::Flushed,
                kind: WcKind::Send,
                byte_len: 0,
                imm: None,
            });
            f.notify();
            return Ok(());
        }
        q.sq.push_back(*wr);
        while f.step(dev, qp.qpn) {}
        f.notify();
        Ok(())
    }

    unsafe fn post_recv(&mut self, qp: QpHandle, wr: &RecvWr) -> Result<()> {
        let mut f = self.fabric.lock();
        let dev = self.dev;
        let q = Self::qp_mut(&mut f, dev, qp)?;
        if !q.state.accepts_recv() {
            return Err(Error::internal(format!(
                "post_recv on queue pair {} in RESET",
                qp.qpn
            )));
        }
        if q.rq.len() >= q.max_recv as usize {
            return Err(Error::errno(
                format!("post_recv: queue pair {} receive queue full", qp.qpn),
                libc::ENOMEM,
            ));
        }
        if q.state == QpState::Error {
            f.devs[dev].cq.push_back(WorkCompletion {
                wr_id: wr.wr_id,
                qpn: qp.qpn,
                status: WcStatus::Flushed,
                kind: WcKind::Recv,
                byte_len: 0,
                imm: None,
            });
            f.notify();
            return Ok(());
        }
        q.rq.push_back(*wr);
        Ok(())
    }

    fn poll_cq(&mut self, out: &mut Vec<WorkCompletion>, max: usize) -> Result<usize> {
        let mut f = self.fabric.lock();
        f.progress();
        f.notify();
        f.devs[self.dev].polls += 1;
        let cq = &mut f.devs[self.dev].cq.q;
        let n = cq.len().min(max);
        out.extend(cq.drain(..n));
        Ok(n)
    }

    fn completion_fd(&self) -> Option<RawFd> {
        self.fabric.lock().devs[self.dev].channel.map(|(r, _)| r)
    }

    fn arm_notify(&mut self) -> Result<()> {
        let mut f = self.fabric.lock();
        let d = &mut f.devs[self.dev];
        let Some((r, _)) = d.channel else {
            return Ok(());
        };
        let mut buf = [0u8; 64];
        // SAFETY: `r` is the read end of this device's non-blocking pipe; `buf` is valid
        // for its length. Drains the notifications delivered so far.
        while unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        d.armed_at = Some(d.cq.pushed);
        Ok(())
    }
}

impl Drop for FakeContext {
    fn drop(&mut self) {
        let mut f = self.fabric.lock();
        let d = &mut f.devs[self.dev];
        d.open = false;
        d.qps.clear();
        d.mrs.clear();
        d.pinned = 0;
        d.cq.clear();
        d.armed_at = None;
        if let Some((r, w)) = d.channel.take() {
            // SAFETY: the pipe's descriptors, owned by the device and closed once (taken).
            unsafe {
                libc::close(r);
                libc::close(w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        fabric: FakeFabric,
        a: Box<dyn VerbsContext>,
        b: Box<dyn VerbsContext>,
        qa: QpHandle,
        qb: QpHandle,
    }

    fn pair(attrs: QpAttrs) -> Pair {
        let fabric = FakeFabric::new(2);
        let pa = fabric.provider(&[0]);
        let pb = fabric.provider(&[1]);
        let mut a = pa.open("fake0", 1, 0, 64).unwrap();
        let mut b = pb.open("fake1", 1, 0, 64).unwrap();
        let qa = a.create_qp(16, 16).unwrap();
        let qb = b.create_qp(16, 16).unwrap();
        for (c, q) in [(&mut a, qa), (&mut b, qb)] {
            c.modify_qp(q, QpState::Init, &attrs, None).unwrap();
        }
        let ra = RemoteQp {
            addr: a.port_addr(),
            qpn: qa.qpn,
        };
        let rb = RemoteQp {
            addr: b.port_addr(),
            qpn: qb.qpn,
        };
        a.modify_qp(qa, QpState::Rtr, &attrs, Some(rb)).unwrap();
        b.modify_qp(qb, QpState::Rtr, &attrs, Some(ra)).unwrap();
        a.modify_qp(qa, QpState::Rts, &attrs, None).unwrap();
        b.modify_qp(qb, QpState::Rts, &attrs, None).unwrap();
        Pair {
            fabric,
            a,
            b,
            qa,
            qb,
        }
    }

    fn poll(c: &mut Box<dyn VerbsContext>) -> Vec<WorkCompletion> {
        let mut v = Vec::new();
        c.poll_cq(&mut v, 64).unwrap();
        v
    }

    #[test]
    fn a_write_lands_and_a_write_outside_the_region_is_refused() {
        let mut p = pair(QpAttrs::default());
        let src = [7u8; 64];
        let mut dst = vec![0u8; 64];
        let ms = p.a.reg_mr(src.as_ptr() as u64, 64, Access::LOCAL).unwrap();
        let md =
            p.b.reg_mr(dst.as_mut_ptr() as u64, 64, Access::REMOTE_WRITE)
                .unwrap();
        let wr = |id, off: u64, len| SendWr {
            wr_id: id,
            sge: Some(Sge {
                addr: ms.addr,
                len,
                lkey: ms.lkey,
            }),
            op: SendOp::Write {
                remote_addr: md.addr + off,
                rkey: md.rkey,
            },
        };
        // SAFETY: `src` and `dst` outlive the polls below.
        unsafe { p.a.post_send(p.qa, &wr(1, 32, 32)).unwrap() };
        let c = poll(&mut p.a);
        assert_eq!(c[0].status, WcStatus::Success);
        assert_eq!(&dst[..32], &[0; 32]);
        assert_eq!(&dst[32..], &[7; 32]);
        // One byte past the end: refused, the queue pair fails, the next request flushes.
        // SAFETY: as above.
        unsafe { p.a.post_send(p.qa, &wr(2, 33, 32)).unwrap() };
        // SAFETY: as above.
        unsafe { p.a.post_send(p.qa, &wr(3, 0, 8)).unwrap() };
        let c = poll(&mut p.a);
        assert_eq!(
            c.iter().map(|c| (c.wr_id, c.status)).collect::<Vec<_>>(),
            vec![(2, WcStatus::RemoteAccess), (3, WcStatus::Flushed)]
        );
        assert_eq!(p.fabric.remote_access_errors(), 1);
        assert_eq!(p.a.qp_state(p.qa).unwrap(), QpState::Error);
        assert_eq!(&dst[..32], &[0; 32], "a refused write must not land");
    }

    #[test]
    fn a_send_without_a_receive_waits_then_fails_after_rnr_retries() {
        let mut p = pair(QpAttrs {
            rnr_retry: 2,
            ..QpAttrs::default()
        });
        let wr = SendWr {
            wr_id: 9,
            sge: None,
            op: SendOp::Send,
        };
        // SAFETY: no memory involved.
        unsafe { p.a.post_send(p.qa, &wr).unwrap() };
        // Posting is the first attempt (NAK), polling retries: retry 1 NAK, retry 2 NAK,
        // and then the request fails.
        assert!(poll(&mut p.a).is_empty(), "first retry waits");
        let c = poll(&mut p.a);
        assert_eq!(c[0].status, WcStatus::RnrRetryExceeded);
        assert!(p.fabric.rnr_waits() >= 3);
    }

    #[test]
    fn write_with_imm_consumes_a_receive_in_order_and_retry_exceeded_flushes() {
        let mut p = pair(QpAttrs::default());
        for id in 0..3 {
            // SAFETY: no memory involved.
            unsafe {
                p.b.post_recv(
                    p.qb,
                    &RecvWr {
                        wr_id: id,
                        sge: None,
                    },
                )
                .unwrap()
            };
        }
        let dst = [0u8; 8];
        let m =
            p.b.reg_mr(dst.as_ptr() as u64, 8, Access::REMOTE_WRITE)
                .unwrap();
        let imm = |id, v| SendWr {
            wr_id: id,
            sge: None,
            op: SendOp::WriteImm {
                remote_addr: m.addr,
                rkey: m.rkey,
                imm: v,
            },
        };
        p.fabric.inject_retry_exceeded(0, 1);
        for id in 10..13 {
            // SAFETY: no local memory.
            unsafe { p.a.post_send(p.qa, &imm(id, id as u32 * 2)).unwrap() };
        }
        let c = poll(&mut p.a);
        assert_eq!(
            c.iter().map(|c| (c.wr_id, c.status)).collect::<Vec<_>>(),
            vec![
                (10, WcStatus::Success),
                (11, WcStatus::RetryExceeded),
                (12, WcStatus::Flushed)
            ]
        );
        let r = poll(&mut p.b);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].wr_id, r[0].imm, r[0].kind),
            (0, Some(20), WcKind::RecvImm)
        );
        // The peer's queue pair is healthy; its sends now find nobody answering.
        // SAFETY: no memory involved.
        unsafe {
            p.b.post_send(
                p.qb,
                &SendWr {
                    wr_id: 5,
                    sge: None,
                    op: SendOp::Send,
                },
            )
            .unwrap()
        };
        let r = poll(&mut p.b);
        assert_eq!(r[0].status, WcStatus::RetryExceeded);
    }

    #[test]
    fn registration_past_the_memlock_limit_is_enomem() {
        let p = pair(QpAttrs::default());
        let mut a = p.a;
        p.fabric.set_memlock_limit(0, Some(4096));
        let buf = vec![0u8; 8192];
        let e = a
            .reg_mr(buf.as_ptr() as u64, 8192, Access::LOCAL)
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::System {
                    errno: Some(libc::ENOMEM),
                    ..
                }
            ),
            "{e:?}"
        );
        a.reg_mr(buf.as_ptr() as u64, 4096, Access::LOCAL).unwrap();
        assert_eq!(p.fabric.pinned(0), 4096);
    }

    #[test]
    fn transitions_out_of_order_are_refused() {
        let f = FakeFabric::new(1);
        let mut c = f.provider(&[0]).open("fake0", 1, 0, 8).unwrap();
        let q = c.create_qp(4, 4).unwrap();
        let e = c
            .modify_qp(q, QpState::Rts, &QpAttrs::default(), None)
            .unwrap_err();
        assert!(e.to_string().contains("RESET to RTS"), "{e}");
    }
}
