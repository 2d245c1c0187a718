//! [`VerbsContext`] over the system's libibverbs: one opened port of one device, its
//! protection domain, one completion queue, and the reliable-connected queue pairs and
//! memory regions made on them.
//!
//! The exported verbs come from [`IbvLib`] (resolved at run time); the inline ones
//! (`ibv_post_send`, `ibv_post_recv`, `ibv_poll_cq`) call through `context->ops` exactly as
//! `<infiniband/verbs.h>` does, over the layouts of [`super::ibv_abi`], which a test checks
//! against the installed header. Errors name the verb, the device and port, and the errno.
//!
//! Transitions follow `ibv_modify_qp(3)` and NCCL's `net_ib.cc` (read, never copied):
//! INIT takes the port, P_Key index 0 and local/remote write access; RTR the remote QPN,
//! the path MTU, receive PSN 0, one responder resource and `min_rnr_timer` 12, with a
//! global route header (the remote GID, the local GID index, hop limit 255) on RoCE or when
//! the remote port has no LID; RTS send PSN 0, `timeout`, `retry_cnt` and `rnr_retry`.
//!
//! What has run: opening on a host with rdma-core but no device (the error path). No RDMA
//! device or Soft-RoCE was available on the machines this was written on, so the queue pair
//! and data paths have run only over the fake ([`super::fake`]), never on real verbs.

use super::ibv_abi::*;
use super::ibv_lib::IbvLib;
use super::qp_state::{QpAttrs, QpState};
use super::verbs::{
    Access, Mr, PortAddr, QpHandle, RecvWr, RemoteQp, SendOp, SendWr, VerbsContext, WcKind,
    WcStatus, WorkCompletion,
};
use dmsc_core::error::{Error, Result};
use libc::{c_int, c_void};
use std::collections::HashMap;
use std::ffi::CStr;
use std::ptr::null_mut;

/// Most completions read per `ibv_poll_cq` call.
const POLL_BATCH: usize = 32;

/// The errno of the last failed libc or libibverbs call on this thread.
fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `Ok` for a verb's zero return, else the error naming `what` with the verb's errno.
fn verb_result(rc: c_int, what: impl FnOnce() -> String) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    Err(Error::errno(what(), rc_errno(rc)))
}

/// An errno from a verb that returns it (or -1 with `errno` set, as some providers do).
fn rc_errno(rc: c_int) -> i32 {
    if rc > 0 {
        rc
    } else if rc < 0 {
        last_errno()
    } else {
        0
    }
}

/// One opened port of a device (see the module docs).
pub struct SysContext {
    lib: &'static IbvLib,
    /// `mlx5_0:1`, for messages.
    name: String,
    port: u8,
    gid_index: u8,
    /// RoCE: every address carries a GRH.
    ethernet: bool,
    addr: PortAddr,
    ctx: *mut IbvContext,
    pd: *mut IbvPd,
    /// The completion channel (non-blocking), whose fd the transport sleeps on.
    channel: *mut IbvCompChannel,
    cq: *mut IbvCq,
    qps: HashMap<u32, *mut IbvQp>,
    /// Registrations by id: a counter, never reused, so a stale [`Mr`] cannot name a later
    /// registration that `ibv_reg_mr` placed at the same address.
    mrs: HashMap<u64, *mut IbvMr>,
    last_mr: u64,
    wc: Vec<IbvWc>,
}

// SAFETY: libibverbs objects may be used from any thread (libibverbs(7): the library is
// thread-safe); a `SysContext` is owned, and its objects used, by one thread at a time.
unsafe impl Send for SysContext {}

/// The names of `list`'s `n` devices.
///
/// # Safety
/// `list` must be a list of `n` devices from `ibv_get_device_list`, not yet freed.
unsafe fn device_names(lib: &IbvLib, list: *mut *mut IbvDevice, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            // SAFETY: i < n entries of a live list (the caller's contract).
            let d = unsafe { *list.add(i) };
            // SAFETY: `d` is a device of the list; the name is NUL-terminated and lives
            // as long as the list.
            let p = unsafe { (lib.get_device_name)(d) };
            if p.is_null() {
                String::from("?")
            } else {
                // SAFETY: non-null, NUL-terminated (above).
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        })
        .collect()
}

impl SysContext {
    /// Open port `port` of `device` with the GID at `gid_index`, and allocate its
    /// protection domain and a completion queue of `cq_depth` entries.
    pub fn open(device: &str, port: u8, gid_index: u8, cq_depth: usize) -> Result<SysContext> {
        let lib = IbvLib::get().map_err(Error::usage)?;
        let name = format!("{device}:{port}");
        let mut n: c_int = 0;
        // SAFETY: `n` is a valid out-parameter.
        let list = unsafe { (lib.get_device_list)(&mut n) };
        if list.is_null() {
            let e = last_errno();
            let why = if e == libc::ENOSYS {
                " (the kernel has no RDMA support)".to_string()
            } else {
                String::new()
            };
            return Err(Error::usage(format!(
                "no RDMA device: ibv_get_device_list failed: {}{why}",
                std::io::Error::from_raw_os_error(e)
            )));
        }
        // SAFETY: `list` holds `n` devices and is freed below, after the last use of them.
        let names = unsafe { device_names(lib, list, n.max(0) as usize) };
        let found = names.iter().position(|d| d == device);
        let ctx = found.map(|i| {
            // SAFETY: `i` indexes the live list; opening a listed device.
            unsafe { (lib.open_device)(*list.add(i)) }
        });
        let open_errno = last_errno();
        // SAFETY: `list` came from ibv_get_device_list; an opened device stays open after
        // the list is freed (ibv_get_device_list(3)).
        unsafe { (lib.free_device_list)(list) };
        let ctx = match ctx {
            None if names.is_empty() => {
                return Err(Error::usage(format!(
                    "no RDMA device: ibv_get_device_list lists none (asked for {name})"
                )))
            }
            None => {
                return Err(Error::invalid(format!(
                    "RDMA device {device} not found; libibverbs lists: {}",
                    names.join(", ")
                )))
            }
            Some(c) if c.is_null() => {
                return Err(Error::errno(
                    format!("ibv_open_device({device})"),
                    open_errno,
                ))
            }
            Some(c) => c,
        };
        let mut me = SysContext {
            lib,
            name,
            port,
            gid_index,
            ethernet: false,
            addr: PortAddr {
                lid: 0,
                gid: [0; 16],
                mtu: 0,
            },
            ctx,
            pd: null_mut(),
            channel: null_mut(),
            cq: null_mut(),
            qps: HashMap::new(),
            mrs: HashMap::new(),
            last_mr: 0,
            wc: vec![IbvWc::default(); POLL_BATCH],
        };
        // From here on, Drop releases whatever was made.
        me.query_port()?;
        // SAFETY: `ctx` is an open device context.
        me.pd = unsafe { (lib.alloc_pd)(ctx) };
        if me.pd.is_null() {
            return Err(Error::errno(
                format!("ibv_alloc_pd on {}", me.name),
                last_errno(),
            ));
        }
        // SAFETY: `ctx` is open.
        me.channel = unsafe { (lib.create_comp_channel)(ctx) };
        if me.channel.is_null() {
            return Err(Error::errno(
                format!("ibv_create_comp_channel on {}", me.name),
                last_errno(),
            ));
        }
        // SAFETY: the channel was just created; its fd is a plain descriptor.
        let fd = unsafe { (*me.channel).fd };
        // SAFETY: fcntl on a descriptor we own; non-blocking, so that draining its events in
        // `arm_notify` stops at EAGAIN (ibv_get_cq_event(3)).
        let ok = unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) == 0
        };
        if !ok {
            return Err(Error::errno(
                format!("fcntl(O_NONBLOCK) on the completion channel of {}", me.name),
                last_errno(),
            ));
        }
        let cqe = c_int::try_from(cq_depth.max(1)).unwrap_or(c_int::MAX);
        // SAFETY: `ctx` and the channel are live; completion vector 0.
        me.cq = unsafe { (lib.create_cq)(ctx, cqe, null_mut(), me.channel, 0) };
        if me.cq.is_null() {
            return Err(Error::errno(
                format!("ibv_create_cq of {cqe} entries on {}", me.name),
                last_errno(),
            ));
        }
        Ok(me)
    }

    /// Read the port's state, LID, MTU, link layer and the GID at the selected index.
    fn query_port(&mut self) -> Result<()> {
        let mut pa = IbvPortAttr::default();
        // SAFETY: `ctx` is open; `pa` is a full `struct ibv_port_attr`, at least as large as
        // the `_compat_ibv_port_attr` the exported function fills.
        let rc = unsafe { (self.lib.query_port)(self.ctx, self.port, &mut pa) };
        verb_result(rc, || format!("ibv_query_port({})", self.name))?;
        if pa.state != IBV_PORT_ACTIVE {
            return Err(Error::usage(format!(
                "RDMA port {} is not active (state {})",
                self.name, pa.state
            )));
        }
        self.ethernet = pa.link_layer == IBV_LINK_LAYER_ETHERNET;
        let mut gid = IbvGid::default();
        // SAFETY: `ctx` is open; `gid` is a valid `union ibv_gid`.
        let rc = unsafe {
            (self.lib.query_gid)(self.ctx, self.port, c_int::from(self.gid_index), &mut gid)
        };
        verb_result(rc, || {
            format!(
                "ibv_query_gid({}, DMSC_IB_GID_INDEX={})",
                self.name, self.gid_index
            )
        })?;
        if self.ethernet && gid.raw == [0; 16] {
            return Err(Error::invalid(format!(
                "RDMA port {} is RoCE and its GID at DMSC_IB_GID_INDEX={} is empty; pick a \
                 populated index (show_gids lists them; RoCE v2 is often 3)",
                self.name, self.gid_index
            )));
        }
        self.addr = PortAddr {
            lid: pa.lid,
            gid: gid.raw,
            mtu: mtu_bytes(pa.active_mtu),
        };
        Ok(())
    }

    /// Take every event delivered on the channel so far (acknowledging each).
    fn drain_events(&mut self) -> Result<()> {
        loop {
            let mut cq: *mut IbvCq = null_mut();
            let mut cq_ctx: *mut c_void = null_mut();
            // SAFETY: the channel is live and non-blocking; both out-parameters are valid.
            let rc = unsafe { (self.lib.get_cq_event)(self.channel, &mut cq, &mut cq_ctx) };
            if rc != 0 {
                let e = last_errno();
                if e == libc::EAGAIN || e == libc::EWOULDBLOCK {
                    return Ok(());
                }
                return Err(Error::errno(
                    format!("ibv_get_cq_event on {}", self.name),
                    e,
                ));
            }
            // SAFETY: `cq` is the queue the event was for (ours); one event acknowledged.
            unsafe { (self.lib.ack_cq_events)(cq, 1) };
        }
    }

    fn qp(&self, qp: QpHandle) -> Result<*mut IbvQp> {
        self.qps.get(&qp.qpn).copied().ok_or_else(|| {
            Error::internal(format!(
                "queue pair {} is not one of {}'s",
                qp.qpn, self.name
            ))
        })
    }
}

/// The attributes and mask of the move to `to` of a queue pair on port `port` (GID
/// index `gid_index`; `ethernet`: RoCE).
#[allow(clippy::too_many_arguments)]
fn transition(
    port: u8,
    gid_index: u8,
    ethernet: bool,
    qpn: u32,
    to: QpState,
    attrs: &QpAttrs,
    remote: Option<RemoteQp>,
) -> Result<(IbvQpAttr, c_int)> {
    let mut a = IbvQpAttr::default();
    let mask = match to {
        QpState::Reset => {
            a.qp_state = IBV_QPS_RESET;
            IBV_QP_STATE
        }
        QpState::Error => {
            a.qp_state = IBV_QPS_ERR;
            IBV_QP_STATE
        }
        QpState::Init => {
            a.qp_state = IBV_QPS_INIT;
            a.pkey_index = 0;
            a.port_num = port;
            a.qp_access_flags = (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE) as u32;
            IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS
        }
        QpState::Rtr => {
            let r = remote.ok_or_else(|| {
                Error::internal(format!("queue pair {qpn}: RTR needs the remote end"))
            })?;
            a.qp_state = IBV_QPS_RTR;
            a.path_mtu = mtu_enum(attrs.mtu);
            a.dest_qp_num = r.qpn;
            a.rq_psn = 0;
            a.max_dest_rd_atomic = 1;
            a.min_rnr_timer = 12;
            a.ah_attr.dlid = r.addr.lid;
            a.ah_attr.port_num = port;
            if ethernet || r.addr.lid == 0 {
                a.ah_attr.is_global = 1;
                a.ah_attr.grh.dgid = IbvGid { raw: r.addr.gid };
                a.ah_attr.grh.sgid_index = gid_index;
                a.ah_attr.grh.hop_limit = 255;
            }
            IBV_QP_STATE
                | IBV_QP_AV
                | IBV_QP_PATH_MTU
                | IBV_QP_DEST_QPN
                | IBV_QP_RQ_PSN
                | IBV_QP_MAX_DEST_RD_ATOMIC
                | IBV_QP_MIN_RNR_TIMER
        }
        QpState::Rts => {
            a.qp_state = IBV_QPS_RTS;
            a.sq_psn = 0;
            a.timeout = attrs.timeout;
            a.retry_cnt = attrs.retry_cnt;
            a.rnr_retry = attrs.rnr_retry;
            a.max_rd_atomic = 1;
            IBV_QP_STATE
                | IBV_QP_SQ_PSN
                | IBV_QP_TIMEOUT
                | IBV_QP_RETRY_CNT
                | IBV_QP_RNR_RETRY
                | IBV_QP_MAX_QP_RD_ATOMIC
        }
    };
    Ok((a, mask))
}

/// The completion of `wc`.
fn completion(wc: &IbvWc) -> WorkCompletion {
    let status = WcStatus::from_code(wc.status);
    let kind = match wc.opcode {
        IBV_WC_RECV => WcKind::Recv,
        IBV_WC_RECV_RDMA_WITH_IMM => WcKind::RecvImm,
        _ => WcKind::Send,
    };
    WorkCompletion {
        wr_id: wc.wr_id,
        qpn: wc.qp_num,
        status,
        kind,
        byte_len: wc.byte_len,
        imm: (status == WcStatus::Success && wc.wc_flags & IBV_WC_WITH_IMM != 0)
            .then(|| u32::from_be(wc.imm_data)),
    }
}

/// The C send work request of `wr` (its scatter entry in `sge`).
fn send_wr(wr: &SendWr, sge: &mut IbvSge) -> IbvSendWr {
    let mut w = IbvSendWr::zeroed();
    w.wr_id = wr.wr_id;
    if let Some(s) = wr.sge {
        *sge = IbvSge {
            addr: s.addr,
            length: s.len,
            lkey: s.lkey,
        };
        w.sg_list = sge;
        w.num_sge = 1;
    }
    w.send_flags = IBV_SEND_SIGNALED;
    match wr.op {
        SendOp::Write { remote_addr, rkey } => {
            w.opcode = IBV_WR_RDMA_WRITE;
            w.remote_addr = remote_addr;
            w.rkey = rkey;
        }
        SendOp::WriteImm {
            remote_addr,
            rkey,
            imm,
        } => {
            w.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
            w.remote_addr = remote_addr;
            w.rkey = rkey;
            w.imm_data = imm.to_be();
        }
        SendOp::Send => w.opcode = IBV_WR_SEND,
    }
    w
}

impl VerbsContext for SysContext {
    fn port_addr(&self) -> PortAddr {
        self.addr
    }

    fn reg_mr(&mut self, addr: u64, len: usize, access: Access) -> Result<Mr> {
        let mut flags = 0;
        if access.local_write || access.remote_write {
            flags |= IBV_ACCESS_LOCAL_WRITE; // remote write requires local write
        }
        if access.remote_write {
            flags |= IBV_ACCESS_REMOTE_WRITE;
        }
        // SAFETY: `pd` is live; the kernel pins and checks the range itself and fails
        // (EFAULT) on memory the process does not map.
        let mr = unsafe { (self.lib.reg_mr)(self.pd, addr as *mut c_void, len, flags) };
        if mr.is_null() {
            let e = last_errno();
            let hint = if e == libc::ENOMEM {
                " (the pinned-memory limit, RLIMIT_MEMLOCK: ulimit -l)"
            } else {
                ""
            };
            return Err(Error::errno(
                format!(
                    "ibv_reg_mr of {len} bytes at {addr:#x} on {}{hint}",
                    self.name
                ),
                e,
            ));
        }
        // SAFETY: `mr` is the region just registered.
        let (lkey, rkey) = unsafe { ((*mr).lkey, (*mr).rkey) };
        self.last_mr += 1;
        let id = self.last_mr;
        self.mrs.insert(id, mr);
        Ok(Mr {
            id,
            lkey,
            rkey,
            addr,
            len,
        })
    }

    fn reg_dmabuf_mr(
        &mut self,
        fd: std::os::fd::RawFd,
        offset: u64,
        len: usize,
        iova: u64,
        access: Access,
    ) -> Result<Mr> {
        let Some(reg) = self.lib.reg_dmabuf_mr else {
            return Err(Error::usage(format!(
                "this libibverbs has no ibv_reg_dmabuf_mr (IBVERBS_1.12, rdma-core 34 or \
                 later), so {} cannot register device memory as a dma-buf",
                self.name
            )));
        };
        let mut flags = 0;
        if access.local_write || access.remote_write {
            flags |= IBV_ACCESS_LOCAL_WRITE; // remote write requires local write
        }
        if access.remote_write {
            flags |= IBV_ACCESS_REMOTE_WRITE;
        }
        // SAFETY: `pd` is live; the kernel checks the descriptor, and the range against the
        // dma-buf's size, itself (EBADF, EINVAL).
        let mr = unsafe { reg(self.pd, offset, len, iova, fd, flags) };
        if mr.is_null() {
            let e = last_errno();
            return Err(Error::errno(
                format!(
                    "ibv_reg_dmabuf_mr of {len} bytes at offset {offset} of dma-buf fd {fd} \
                     on {}",
                    self.name
                ),
                e,
            ));
        }
        // SAFETY: `mr` is the region just registered.
        let (lkey, rkey) = unsafe { ((*mr).lkey, (*mr).rkey) };
        self.last_mr += 1;
        let id = self.last_mr;
        self.mrs.insert(id, mr);
        Ok(Mr {
            id,
            lkey,
            rkey,
            addr: iova,
            len,
        })
    }

    fn supports_dmabuf(&self) -> bool {
        self.lib.reg_dmabuf_mr.is_some()
    }

    fn dereg_mr(&mut self, mr: Mr) {
        let Some(p) = self.mrs.remove(&mr.id) else {
            return;
        };
        // SAFETY: `p` is a region of this context, deregistered once (removed above).
        let rc = unsafe { (self.lib.dereg_mr)(p) };
        if rc != 0 {
            log::warn!(target: dmsc_core::subsys::NET,
                "ibv_dereg_mr on {} failed: {}", self.name,
                std::io::Error::from_raw_os_error(rc_errno(rc)));
        }
    }

    fn create_qp(&mut self, max_send: u32, max_recv: u32) -> Result<QpHandle> {
        let mut init = IbvQpInitAttr {
            qp_context: null_mut(),
            send_cq: self.cq,
            recv_cq: self.cq,
            srq: null_mut(),
            cap: IbvQpCap {
                max_send_wr: max_send,
                max_recv_wr: max_recv,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            qp_type: IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: `pd` and `cq` are live; `init` is a valid `struct ibv_qp_init_attr`.
        let qp = unsafe { (self.lib.create_qp)(self.pd, &mut init) };
        if qp.is_null() {
            return Err(Error::errno(
                format!(
                    "ibv_create_qp (RC, {max_send} sends, {max_recv} receives) on {}",
                    self.name
                ),
                last_errno(),
            ));
        }
        // SAFETY: `qp` was just created.
        let qpn = unsafe { (*qp).qp_num };
        self.qps.insert(qpn, qp);
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
        let p = self.qp(qp)?;
        self.qp_state(qp)?.check_move(to, qp.qpn)?;
        let (mut a, mask) = transition(
            self.port,
            self.gid_index,
            self.ethernet,
            qp.qpn,
            to,
            attrs,
            remote,
        )?;
        // SAFETY: `p` is a live queue pair of this context; `a` is a valid attribute set
        // whose `mask` names the members filled.
        let rc = unsafe { (self.lib.modify_qp)(p, &mut a, mask) };
        verb_result(rc, || {
            format!(
                "ibv_modify_qp(queue pair {} on {} to {})",
                qp.qpn,
                self.name,
                to.name()
            )
        })?;
        Ok(())
    }

    fn qp_state(&self, qp: QpHandle) -> Result<QpState> {
        let p = self.qp(qp)?;
        let mut a = IbvQpAttr::default();
        // SAFETY: all-zero bytes are a valid `struct ibv_qp_init_attr` (null pointers).
        let mut init: IbvQpInitAttr = unsafe { std::mem::zeroed() };
        // SAFETY: `p` is live; both out-parameters are valid.
        let rc = unsafe { (self.lib.query_qp)(p, &mut a, IBV_QP_STATE, &mut init) };
        verb_result(rc, || {
            format!("ibv_query_qp(queue pair {} on {})", qp.qpn, self.name)
        })?;
        match a.qp_state {
            IBV_QPS_RESET => Ok(QpState::Reset),
            IBV_QPS_INIT => Ok(QpState::Init),
            IBV_QPS_RTR => Ok(QpState::Rtr),
            IBV_QPS_RTS => Ok(QpState::Rts),
            IBV_QPS_SQE | IBV_QPS_ERR => Ok(QpState::Error),
            s => Err(Error::internal(format!(
                "queue pair {} on {} is in state {s} (SQD or unknown), which dmsc never asks for",
                qp.qpn, self.name
            ))),
        }
    }

    fn destroy_qp(&mut self, qp: QpHandle) {
        let Some(p) = self.qps.remove(&qp.qpn) else {
            return;
        };
        // SAFETY: `p` is a queue pair of this context, destroyed once (removed above).
        let rc = unsafe { (self.lib.destroy_qp)(p) };
        if rc != 0 {
            log::warn!(target: dmsc_core::subsys::NET,
                "ibv_destroy_qp(queue pair {} on {}) failed: {}", qp.qpn, self.name,
                std::io::Error::from_raw_os_error(rc_errno(rc)));
        }
    }

    unsafe fn post_send(&mut self, qp: QpHandle, wr: &SendWr) -> Result<()> {
        let p = self.qp(qp)?;
        let mut sge = IbvSge::default();
        let mut w = send_wr(wr, &mut sge);
        let mut bad: *mut IbvSendWr = null_mut();
        // SAFETY: `ctx` is open and its ops table is the provider's (layout checked against
        // the header); `p` is live; `w` and `sge` outlive the call, which copies them into
        // the send queue. The bytes `sge` names are the caller's contract.
        let rc = unsafe {
            match (*self.ctx).ops.post_send {
                Some(f) => f(p, &mut w, &mut bad),
                None => libc::EOPNOTSUPP,
            }
        };
        verb_result(rc, || {
            format!("ibv_post_send on queue pair {} of {}", qp.qpn, self.name)
        })?;
        Ok(())
    }

    unsafe fn post_recv(&mut self, qp: QpHandle, wr: &RecvWr) -> Result<()> {
        let p = self.qp(qp)?;
        let mut sge = wr.sge.map(|s| IbvSge {
            addr: s.addr,
            length: s.len,
            lkey: s.lkey,
        });
        let mut w = IbvRecvWr {
            wr_id: wr.wr_id,
            next: null_mut(),
            sg_list: sge.as_mut().map_or(null_mut(), |s| s as *mut IbvSge),
            num_sge: c_int::from(sge.is_some()),
        };
        let mut bad: *mut IbvRecvWr = null_mut();
        // SAFETY: as for `post_send`: live objects, checked layouts, the caller's bytes.
        let rc = unsafe {
            match (*self.ctx).ops.post_recv {
                Some(f) => f(p, &mut w, &mut bad),
                None => libc::EOPNOTSUPP,
            }
        };
        verb_result(rc, || {
            format!("ibv_post_recv on queue pair {} of {}", qp.qpn, self.name)
        })?;
        Ok(())
    }

    fn poll_cq(&mut self, out: &mut Vec<WorkCompletion>, max: usize) -> Result<usize> {
        let mut total = 0;
        while total < max {
            let want = (max - total).min(self.wc.len());
            // SAFETY: `cq` is live and its context's ops are the provider's; `wc` has room
            // for `want` entries.
            let n = unsafe {
                match (*self.ctx).ops.poll_cq {
                    Some(f) => f(self.cq, want as c_int, self.wc.as_mut_ptr()),
                    None => -1,
                }
            };
            if n < 0 {
                return Err(Error::System {
                    context: format!("ibv_poll_cq on {}", self.name),
                    errno: None,
                    detail: format!("returned {n} (the completion queue is broken or overrun)"),
                });
            }
            let n = n as usize;
            out.extend(self.wc[..n].iter().map(completion));
            total += n;
            if n < want {
                break;
            }
        }
        Ok(total)
    }

    fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        // SAFETY: the channel is live for the life of the context.
        (!self.channel.is_null()).then(|| unsafe { (*self.channel).fd })
    }

    fn arm_notify(&mut self) -> Result<()> {
        self.drain_events()?;
        // SAFETY: `cq` is live and its context's ops are the provider's; 0: every
        // completion notifies, not only solicited ones.
        let rc = unsafe {
            match (*self.ctx).ops.req_notify_cq {
                Some(f) => f(self.cq, 0),
                None => libc::EOPNOTSUPP,
            }
        };
        verb_result(rc, || format!("ibv_req_notify_cq on {}", self.name))?;
        Ok(())
    }
}

impl Drop for SysContext {
    fn drop(&mut self) {
        let lib = self.lib;
        if !self.channel.is_null() {
            // Acknowledge any event read but not yet acknowledged (ibv_destroy_cq waits for
            // them); an error here only means there was none.
            let _ = self.drain_events();
        }
        // SAFETY (every call below): each object was made on this context, is released
        // once, and queue pairs and regions go before the completion queue, protection
        // domain and device they depend on.
        for (_, qp) in self.qps.drain() {
            unsafe { (lib.destroy_qp)(qp) };
        }
        for (_, mr) in self.mrs.drain() {
            unsafe { (lib.dereg_mr)(mr) };
        }
        if !self.cq.is_null() {
            unsafe { (lib.destroy_cq)(self.cq) };
        }
        if !self.channel.is_null() {
            unsafe { (lib.destroy_comp_channel)(self.channel) };
        }
        if !self.pd.is_null() {
            unsafe { (lib.dealloc_pd)(self.pd) };
        }
        unsafe { (lib.close_device)(self.ctx) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_requests_and_completions_convert() {
        let mut sge = IbvSge::default();
        let wr = SendWr {
            wr_id: 7,
            sge: Some(super::super::verbs::Sge {
                addr: 0x1000,
                len: 64,
                lkey: 3,
            }),
            op: SendOp::WriteImm {
                remote_addr: 0x2000,
                rkey: 9,
                imm: 0x0102_0304,
            },
        };
        let w = send_wr(&wr, &mut sge);
        assert_eq!(
            (w.wr_id, w.num_sge, w.opcode),
            (7, 1, IBV_WR_RDMA_WRITE_WITH_IMM)
        );
        assert_eq!((w.remote_addr, w.rkey), (0x2000, 9));
        assert_eq!(w.imm_data.to_ne_bytes(), [1, 2, 3, 4], "network byte order");
        assert_eq!((sge.addr, sge.length, sge.lkey), (0x1000, 64, 3));
        assert_eq!(w.send_flags, IBV_SEND_SIGNALED);
        let zero = send_wr(
            &SendWr {
                wr_id: 1,
                sge: None,
                op: SendOp::Send,
            },
            &mut sge,
        );
        assert!(zero.sg_list.is_null() && zero.num_sge == 0 && zero.opcode == IBV_WR_SEND);

        let wc = IbvWc {
            wr_id: 5,
            status: IBV_WC_SUCCESS,
            opcode: IBV_WC_RECV_RDMA_WITH_IMM,
            imm_data: 0xdead_beefu32.to_be(),
            wc_flags: IBV_WC_WITH_IMM,
            qp_num: 77,
            ..IbvWc::default()
        };
        let c = completion(&wc);
        assert_eq!((c.wr_id, c.qpn, c.kind), (5, 77, WcKind::RecvImm));
        assert_eq!(c.imm, Some(0xdead_beef));
        for (code, want) in [
            (IBV_WC_RETRY_EXC_ERR, WcStatus::RetryExceeded),
            (IBV_WC_RNR_RETRY_EXC_ERR, WcStatus::RnrRetryExceeded),
            (IBV_WC_WR_FLUSH_ERR, WcStatus::Flushed),
            (IBV_WC_REM_ACCESS_ERR, WcStatus::RemoteAccess),
            (IBV_WC_LOC_PROT_ERR, WcStatus::LocalProtection),
            (IBV_WC_LOC_LEN_ERR, WcStatus::LocalLength),
            (19, WcStatus::Other(19)),
        ] {
            let c = completion(&IbvWc {
                status: code,
                ..IbvWc::default()
            });
            assert_eq!(c.status, want);
            assert_eq!(c.imm, None);
        }
        assert_eq!(WcStatus::Other(19).name(), "IBV_WC_FATAL_ERR");
    }

    #[test]
    fn transitions_carry_what_ibv_modify_qp_requires() {
        let attrs = QpAttrs {
            timeout: 18,
            retry_cnt: 6,
            rnr_retry: 7,
            mtu: 2048,
        };
        let (a, m) = transition(2, 3, false, 9, QpState::Init, &attrs, None).unwrap();
        assert_eq!((a.qp_state, a.port_num, a.pkey_index), (IBV_QPS_INIT, 2, 0));
        assert_eq!(
            a.qp_access_flags,
            (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE) as u32
        );
        assert_eq!(
            m,
            IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS
        );
        let remote = |lid| RemoteQp {
            addr: PortAddr {
                lid,
                gid: [7; 16],
                mtu: 4096,
            },
            qpn: 0x55,
        };
        // InfiniBand, remote with a LID: no global route header.
        let (a, m) = transition(1, 3, false, 9, QpState::Rtr, &attrs, Some(remote(12))).unwrap();
        assert_eq!(
            (a.qp_state, a.dest_qp_num, a.path_mtu),
            (IBV_QPS_RTR, 0x55, 4)
        );
        assert_eq!(
            (a.ah_attr.dlid, a.ah_attr.is_global, a.ah_attr.port_num),
            (12, 0, 1)
        );
        assert_eq!(
            (a.rq_psn, a.max_dest_rd_atomic, a.min_rnr_timer),
            (0, 1, 12)
        );
        assert_eq!(
            m,
            IBV_QP_STATE
                | IBV_QP_AV
                | IBV_QP_PATH_MTU
                | IBV_QP_DEST_QPN
                | IBV_QP_RQ_PSN
                | IBV_QP_MAX_DEST_RD_ATOMIC
                | IBV_QP_MIN_RNR_TIMER
        );
        // RoCE: the remote GID, the local GID index, hop limit 255.
        let (a, _) = transition(1, 3, true, 9, QpState::Rtr, &attrs, Some(remote(0))).unwrap();
        assert_eq!(a.ah_attr.is_global, 1);
        assert_eq!(a.ah_attr.grh.dgid.raw, [7; 16]);
        assert_eq!(
            (a.ah_attr.grh.sgid_index, a.ah_attr.grh.hop_limit),
            (3, 255)
        );
        assert!(transition(1, 0, false, 9, QpState::Rtr, &attrs, None).is_err());
        let (a, m) = transition(1, 0, false, 9, QpState::Rts, &attrs, None).unwrap();
        assert_eq!(
            (
                a.qp_state,
                a.timeout,
                a.retry_cnt,
                a.rnr_retry,
                a.sq_psn,
                a.max_rd_atomic
            ),
            (IBV_QPS_RTS, 18, 6, 7, 0, 1)
        );
        assert_eq!(
            m,
            IBV_QP_STATE
                | IBV_QP_SQ_PSN
                | IBV_QP_TIMEOUT
                | IBV_QP_RETRY_CNT
                | IBV_QP_RNR_RETRY
                | IBV_QP_MAX_QP_RD_ATOMIC
        );
        for (to, st) in [
            (QpState::Error, IBV_QPS_ERR),
            (QpState::Reset, IBV_QPS_RESET),
        ] {
            let (a, m) = transition(1, 0, false, 9, to, &attrs, None).unwrap();
            assert_eq!((a.qp_state, m), (st, IBV_QP_STATE));
        }
    }

    #[test]
    fn opening_without_a_device_says_so() {
        // This host has no RDMA device (and its kernel no RDMA support): with rdma-core
        // installed the reason is "no RDMA device", without it the library is named.
        let e = match SysContext::open("mlx5_0", 1, 0, 64) {
            Ok(_) => {
                eprintln!("an RDMA device mlx5_0 exists here; nothing to check");
                return;
            }
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("no RDMA device")
                || e.contains("cannot be loaded")
                || e.contains("RDMA device mlx5_0 not found"),
            "{e}"
        );
    }
}
