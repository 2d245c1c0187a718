//! The C layouts of libibverbs that the run-time loaded verbs path reads and writes.
//!
//! `ibv_post_send`, `ibv_post_recv`, `ibv_poll_cq` and `ibv_req_notify_cq` are `static inline`
//! functions of `<infiniband/verbs.h>` that call through `qp->context->ops` (or
//! `cq->context->ops`), so calling them from Rust needs the exact layout of
//! `struct ibv_context` and its `struct ibv_context_ops`, and of the work requests and
//! completions they take. Every struct here mirrors the one of the same name in rdma-core's
//! `<infiniband/verbs.h>` (rdma-core 44, the `IBVERBS_1.1` ABI, which rdma-core keeps
//! stable: new members only ever go at the ends, behind the extended `verbs_context`); the
//! members this crate never touches are kept as opaque padding of the same size.
//!
//! The layouts are not trusted by reading: the test `rdma::ibv_abi::tests::layouts_match_the_header`
//! compiles a C program against the installed `<infiniband/verbs.h>` that prints the size
//! of every struct and the offset of every member named here, and compares them with
//! `size_of`/`offset_of!`. It skips with a message where the header is absent, and fails
//! instead when `DMSC_REQUIRE_VERBS_H=1` (CI sets it after installing `libibverbs-dev`).
//!
//! Source: rdma-core's `libibverbs/verbs.h` (the installed header), read for the layouts.

#![allow(missing_docs)] // the members are the C members of the same names

use libc::{c_int, c_uint, c_void};

/// `struct ibv_device` (opaque: only its pointer travels).
#[repr(C)]
pub struct IbvDevice {
    _opaque: [u8; 0],
}

/// `struct ibv_srq`, `struct ibv_ah`, `struct ibv_mw` (opaque: pointers only).
#[repr(C)]
pub struct IbvOpaque {
    _opaque: [u8; 0],
}

/// `ops.poll_cq`.
pub type PollCqFn = unsafe extern "C" fn(cq: *mut IbvCq, num: c_int, wc: *mut IbvWc) -> c_int;
/// `ops.req_notify_cq`.
pub type ReqNotifyCqFn = unsafe extern "C" fn(cq: *mut IbvCq, solicited_only: c_int) -> c_int;
/// `ops.post_send`.
pub type PostSendFn =
    unsafe extern "C" fn(qp: *mut IbvQp, wr: *mut IbvSendWr, bad: *mut *mut IbvSendWr) -> c_int;
/// `ops.post_recv`.
pub type PostRecvFn =
    unsafe extern "C" fn(qp: *mut IbvQp, wr: *mut IbvRecvWr, bad: *mut *mut IbvRecvWr) -> c_int;

/// `struct ibv_context_ops`: 32 function pointers, of which the data path calls four.
#[repr(C)]
pub struct IbvContextOps {
    /// `_compat_query_device` … `_compat_create_cq` (11 pointers).
    _before_poll: [*mut c_void; 11],
    pub poll_cq: Option<PollCqFn>,
    pub req_notify_cq: Option<ReqNotifyCqFn>,
    /// `_compat_cq_event` … `_compat_destroy_qp` (12 pointers).
    _before_post: [*mut c_void; 12],
    pub post_send: Option<PostSendFn>,
    pub post_recv: Option<PostRecvFn>,
    /// `_compat_create_ah` … `_compat_async_event` (5 pointers).
    _after: [*mut c_void; 5],
}

/// `struct ibv_context`.
#[repr(C)]
pub struct IbvContext {
    pub device: *mut IbvDevice,
    pub ops: IbvContextOps,
    pub cmd_fd: c_int,
    pub async_fd: c_int,
    pub num_comp_vectors: c_int,
    pub mutex: libc::pthread_mutex_t,
    pub abi_compat: *mut c_void,
}

/// `struct ibv_pd`.
#[repr(C)]
pub struct IbvPd {
    pub context: *mut IbvContext,
    pub handle: u32,
}

/// `struct ibv_comp_channel`.
#[repr(C)]
pub struct IbvCompChannel {
    pub context: *mut IbvContext,
    pub fd: c_int,
    pub refcnt: c_int,
}

/// `struct ibv_cq`.
#[repr(C)]
pub struct IbvCq {
    pub context: *mut IbvContext,
    pub channel: *mut IbvCompChannel,
    pub cq_context: *mut c_void,
    pub handle: u32,
    pub cqe: c_int,
    pub mutex: libc::pthread_mutex_t,
    pub cond: libc::pthread_cond_t,
    pub comp_events_completed: u32,
    pub async_events_completed: u32,
}

/// `struct ibv_qp`.
#[repr(C)]
pub struct IbvQp {
    pub context: *mut IbvContext,
    pub qp_context: *mut c_void,
    pub pd: *mut IbvPd,
    pub send_cq: *mut IbvCq,
    pub recv_cq: *mut IbvCq,
    pub srq: *mut IbvOpaque,
    pub handle: u32,
    pub qp_num: u32,
    pub state: c_uint,
    pub qp_type: c_uint,
    pub mutex: libc::pthread_mutex_t,
    pub cond: libc::pthread_cond_t,
    pub events_completed: u32,
}

/// `struct ibv_mr`.
#[repr(C)]
pub struct IbvMr {
    pub context: *mut IbvContext,
    pub pd: *mut IbvPd,
    pub addr: *mut c_void,
    pub length: usize,
    pub handle: u32,
    pub lkey: u32,
    pub rkey: u32,
}

/// `union ibv_gid` (as its `raw` bytes; aligned to 8 by its `global` member of two
/// `__be64`, which makes `struct ibv_qp_attr` 144 bytes, not 140).
#[repr(C, align(8))]
#[derive(Clone, Copy, Default)]
pub struct IbvGid {
    pub raw: [u8; 16],
}

/// `struct ibv_port_attr`.
#[repr(C)]
#[derive(Default)]
pub struct IbvPortAttr {
    pub state: c_uint,
    pub max_mtu: c_uint,
    pub active_mtu: c_uint,
    pub gid_tbl_len: c_int,
    pub port_cap_flags: u32,
    pub max_msg_sz: u32,
    pub bad_pkey_cntr: u32,
    pub qkey_viol_cntr: u32,
    pub pkey_tbl_len: u16,
    pub lid: u16,
    pub sm_lid: u16,
    pub lmc: u8,
    pub max_vl_num: u8,
    pub sm_sl: u8,
    pub subnet_timeout: u8,
    pub init_type_reply: u8,
    pub active_width: u8,
    pub active_speed: u8,
    pub phys_state: u8,
    pub link_layer: u8,
    pub flags: u8,
    pub port_cap_flags2: u16,
}

/// `struct ibv_sge`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IbvSge {
    pub addr: u64,
    pub length: u32,
    pub lkey: u32,
}

/// `struct ibv_send_wr`, with the `wr` union as its `rdma` member (the `atomic` member,
/// the largest, sets the union's size: the rest is padding) and the trailing `bind_mw`/`tso`
/// union opaque.
#[repr(C)]
pub struct IbvSendWr {
    pub wr_id: u64,
    pub next: *mut IbvSendWr,
    pub sg_list: *mut IbvSge,
    pub num_sge: c_int,
    pub opcode: c_uint,
    pub send_flags: c_uint,
    /// Network byte order.
    pub imm_data: u32,
    /// `wr.rdma.remote_addr`.
    pub remote_addr: u64,
    /// `wr.rdma.rkey`.
    pub rkey: u32,
    _wr_rest: [u32; 5],
    /// `qp_type.xrc.remote_srqn`.
    pub remote_srqn: u32,
    _bind_mw_tso: [u64; 6],
}

impl IbvSendWr {
    /// An all-zero work request.
    pub fn zeroed() -> IbvSendWr {
        // SAFETY: every member is an integer, a raw pointer or an array of them, for which
        // all-zero bytes are a valid value (null pointers).
        unsafe { std::mem::zeroed() }
    }
}

/// `struct ibv_recv_wr`.
#[repr(C)]
pub struct IbvRecvWr {
    pub wr_id: u64,
    pub next: *mut IbvRecvWr,
    pub sg_list: *mut IbvSge,
    pub num_sge: c_int,
}

/// `struct ibv_wc`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IbvWc {
    pub wr_id: u64,
    pub status: c_uint,
    pub opcode: c_uint,
    pub vendor_err: u32,
    pub byte_len: u32,
    /// Network byte order (when `wc_flags & IBV_WC_WITH_IMM`).
    pub imm_data: u32,
    pub qp_num: u32,
    pub src_qp: u32,
    pub wc_flags: c_uint,
    pub pkey_index: u16,
    pub slid: u16,
    pub sl: u8,
    pub dlid_path_bits: u8,
}

/// `struct ibv_qp_cap`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IbvQpCap {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

/// `struct ibv_qp_init_attr`.
#[repr(C)]
pub struct IbvQpInitAttr {
    pub qp_context: *mut c_void,
    pub send_cq: *mut IbvCq,
    pub recv_cq: *mut IbvCq,
    pub srq: *mut IbvOpaque,
    pub cap: IbvQpCap,
    pub qp_type: c_uint,
    pub sq_sig_all: c_int,
}

/// `struct ibv_global_route`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IbvGlobalRoute {
    pub dgid: IbvGid,
    pub flow_label: u32,
    pub sgid_index: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
}

/// `struct ibv_ah_attr`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IbvAhAttr {
    pub grh: IbvGlobalRoute,
    pub dlid: u16,
    pub sl: u8,
    pub src_path_bits: u8,
    pub static_rate: u8,
    pub is_global: u8,
    pub port_num: u8,
}

/// `struct ibv_qp_attr`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IbvQpAttr {
    pub qp_state: c_uint,
    pub cur_qp_state: c_uint,
    pub path_mtu: c_uint,
    pub path_mig_state: c_uint,
    pub qkey: u32,
    pub rq_psn: u32,
    pub sq_psn: u32,
    pub dest_qp_num: u32,
    pub qp_access_flags: c_uint,
    pub cap: IbvQpCap,
    pub ah_attr: IbvAhAttr,
    pub alt_ah_attr: IbvAhAttr,
    pub pkey_index: u16,
    pub alt_pkey_index: u16,
    pub en_sqd_async_notify: u8,
    pub sq_draining: u8,
    pub max_rd_atomic: u8,
    pub max_dest_rd_atomic: u8,
    pub min_rnr_timer: u8,
    pub port_num: u8,
    pub timeout: u8,
    pub retry_cnt: u8,
    pub rnr_retry: u8,
    pub alt_port_num: u8,
    pub alt_timeout: u8,
    pub rate_limit: u32,
}

// Enumerations and flags (`<infiniband/verbs.h>`), the ones used.

pub const IBV_PORT_ACTIVE: c_uint = 4;
pub const IBV_LINK_LAYER_INFINIBAND: u8 = 1;
pub const IBV_LINK_LAYER_ETHERNET: u8 = 2;

pub const IBV_ACCESS_LOCAL_WRITE: c_int = 1;
pub const IBV_ACCESS_REMOTE_WRITE: c_int = 1 << 1;

pub const IBV_QPT_RC: c_uint = 2;

pub const IBV_QPS_RESET: c_uint = 0;
pub const IBV_QPS_INIT: c_uint = 1;
pub const IBV_QPS_RTR: c_uint = 2;
pub const IBV_QPS_RTS: c_uint = 3;
pub const IBV_QPS_SQD: c_uint = 4;
pub const IBV_QPS_SQE: c_uint = 5;
pub const IBV_QPS_ERR: c_uint = 6;

pub const IBV_QP_STATE: c_int = 1 << 0;
pub const IBV_QP_ACCESS_FLAGS: c_int = 1 << 3;
pub const IBV_QP_PKEY_INDEX: c_int = 1 << 4;
pub const IBV_QP_PORT: c_int = 1 << 5;
pub const IBV_QP_AV: c_int = 1 << 7;
pub const IBV_QP_PATH_MTU: c_int = 1 << 8;
pub const IBV_QP_TIMEOUT: c_int = 1 << 9;
pub const IBV_QP_RETRY_CNT: c_int = 1 << 10;
pub const IBV_QP_RNR_RETRY: c_int = 1 << 11;
pub const IBV_QP_RQ_PSN: c_int = 1 << 12;
pub const IBV_QP_MAX_QP_RD_ATOMIC: c_int = 1 << 13;
pub const IBV_QP_MIN_RNR_TIMER: c_int = 1 << 15;
pub const IBV_QP_SQ_PSN: c_int = 1 << 16;
pub const IBV_QP_MAX_DEST_RD_ATOMIC: c_int = 1 << 17;
pub const IBV_QP_DEST_QPN: c_int = 1 << 20;

pub const IBV_WR_RDMA_WRITE: c_uint = 0;
pub const IBV_WR_RDMA_WRITE_WITH_IMM: c_uint = 1;
pub const IBV_WR_SEND: c_uint = 2;
pub const IBV_SEND_SIGNALED: c_uint = 1 << 1;

pub const IBV_WC_SUCCESS: c_uint = 0;
pub const IBV_WC_LOC_LEN_ERR: c_uint = 1;
pub const IBV_WC_LOC_PROT_ERR: c_uint = 4;
pub const IBV_WC_WR_FLUSH_ERR: c_uint = 5;
pub const IBV_WC_REM_ACCESS_ERR: c_uint = 10;
pub const IBV_WC_RETRY_EXC_ERR: c_uint = 12;
pub const IBV_WC_RNR_RETRY_EXC_ERR: c_uint = 13;
pub const IBV_WC_RECV: c_uint = 1 << 7;
pub const IBV_WC_RECV_RDMA_WITH_IMM: c_uint = (1 << 7) + 1;
pub const IBV_WC_WITH_IMM: c_uint = 1 << 1;

/// `enum ibv_mtu` (1 to 5) from bytes, and back.
pub fn mtu_enum(bytes: u32) -> c_uint {
    match bytes {
        256 => 1,
        512 => 2,
        1024 => 3,
        2048 => 4,
        _ => 5,
    }
}

/// Bytes of an `enum ibv_mtu` value (0 for an unknown one).
pub fn mtu_bytes(e: c_uint) -> u32 {
    match e {
        1..=5 => 128 << e,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdma::verbs::WC_STATUS_NAMES;
    use std::mem::{offset_of, size_of};
    use std::path::Path;

    /// `(C struct, C member path, Rust offset)`.
    fn offsets() -> Vec<(&'static str, &'static str, usize)> {
        macro_rules! o {
            ($c:literal, $cm:literal, $r:ty, $rm:ident) => {
                ($c, $cm, offset_of!($r, $rm))
            };
        }
        vec![
            o!("ibv_context", "device", IbvContext, device),
            o!("ibv_context", "ops", IbvContext, ops),
            o!("ibv_context", "cmd_fd", IbvContext, cmd_fd),
            o!("ibv_context", "async_fd", IbvContext, async_fd),
            o!(
                "ibv_context",
                "num_comp_vectors",
                IbvContext,
                num_comp_vectors
            ),
            o!("ibv_context", "mutex", IbvContext, mutex),
            o!("ibv_context", "abi_compat", IbvContext, abi_compat),
            o!("ibv_context_ops", "poll_cq", IbvContextOps, poll_cq),
            o!(
                "ibv_context_ops",
                "req_notify_cq",
                IbvContextOps,
                req_notify_cq
            ),
            o!("ibv_context_ops", "post_send", IbvContextOps, post_send),
            o!("ibv_context_ops", "post_recv", IbvContextOps, post_recv),
            o!("ibv_pd", "context", IbvPd, context),
            o!("ibv_pd", "handle", IbvPd, handle),
            o!("ibv_comp_channel", "context", IbvCompChannel, context),
            o!("ibv_comp_channel", "fd", IbvCompChannel, fd),
            o!("ibv_comp_channel", "refcnt", IbvCompChannel, refcnt),
            o!("ibv_cq", "context", IbvCq, context),
            o!("ibv_cq", "channel", IbvCq, channel),
            o!("ibv_cq", "cq_context", IbvCq, cq_context),
            o!("ibv_cq", "handle", IbvCq, handle),
            o!("ibv_cq", "cqe", IbvCq, cqe),
            o!("ibv_cq", "mutex", IbvCq, mutex),
            o!("ibv_cq", "cond", IbvCq, cond),
            o!(
                "ibv_cq",
                "comp_events_completed",
                IbvCq,
                comp_events_completed
            ),
            o!(
                "ibv_cq",
                "async_events_completed",
                IbvCq,
                async_events_completed
            ),
            o!("ibv_qp", "context", IbvQp, context),
            o!("ibv_qp", "qp_context", IbvQp, qp_context),
            o!("ibv_qp", "pd", IbvQp, pd),
            o!("ibv_qp", "send_cq", IbvQp, send_cq),
            o!("ibv_qp", "recv_cq", IbvQp, recv_cq),
            o!("ibv_qp", "srq", IbvQp, srq),
            o!("ibv_qp", "handle", IbvQp, handle),
            o!("ibv_qp", "qp_num", IbvQp, qp_num),
            o!("ibv_qp", "state", IbvQp, state),
            o!("ibv_qp", "qp_type", IbvQp, qp_type),
            o!("ibv_qp", "mutex", IbvQp, mutex),
            o!("ibv_qp", "cond", IbvQp, cond),
            o!("ibv_qp", "events_completed", IbvQp, events_completed),
            o!("ibv_mr", "context", IbvMr, context),
            o!("ibv_mr", "pd", IbvMr, pd),
            o!("ibv_mr", "addr", IbvMr, addr),
            o!("ibv_mr", "length", IbvMr, length),
            o!("ibv_mr", "handle", IbvMr, handle),
            o!("ibv_mr", "lkey", IbvMr, lkey),
            o!("ibv_mr", "rkey", IbvMr, rkey),
            o!("ibv_port_attr", "state", IbvPortAttr, state),
            o!("ibv_port_attr", "max_mtu", IbvPortAttr, max_mtu),
            o!("ibv_port_attr", "active_mtu", IbvPortAttr, active_mtu),
            o!("ibv_port_attr", "gid_tbl_len", IbvPortAttr, gid_tbl_len),
            o!(
                "ibv_port_attr",
                "port_cap_flags",
                IbvPortAttr,
                port_cap_flags
            ),
            o!("ibv_port_attr", "max_msg_sz", IbvPortAttr, max_msg_sz),
            o!("ibv_port_attr", "bad_pkey_cntr", IbvPortAttr, bad_pkey_cntr),
            o!(
                "ibv_port_attr",
                "qkey_viol_cntr",
                IbvPortAttr,
                qkey_viol_cntr
            ),
            o!("ibv_port_attr", "pkey_tbl_len", IbvPortAttr, pkey_tbl_len),
            o!("ibv_port_attr", "lid", IbvPortAttr, lid),
            o!("ibv_port_attr", "sm_lid", IbvPortAttr, sm_lid),
            o!("ibv_port_attr", "lmc", IbvPortAttr, lmc),
            o!("ibv_port_attr", "max_vl_num", IbvPortAttr, max_vl_num),
            o!("ibv_port_attr", "sm_sl", IbvPortAttr, sm_sl),
            o!(
                "ibv_port_attr",
                "subnet_timeout",
                IbvPortAttr,
                subnet_timeout
            ),
            o!(
                "ibv_port_attr",
                "init_type_reply",
                IbvPortAttr,
                init_type_reply
            ),
            o!("ibv_port_attr", "active_width", IbvPortAttr, active_width),
            o!("ibv_port_attr", "active_speed", IbvPortAttr, active_speed),
            o!("ibv_port_attr", "phys_state", IbvPortAttr, phys_state),
            o!("ibv_port_attr", "link_layer", IbvPortAttr, link_layer),
            o!("ibv_port_attr", "flags", IbvPortAttr, flags),
            o!(
                "ibv_port_attr",
                "port_cap_flags2",
                IbvPortAttr,
                port_cap_flags2
            ),
            o!("ibv_sge", "addr", IbvSge, addr),
            o!("ibv_sge", "length", IbvSge, length),
            o!("ibv_sge", "lkey", IbvSge, lkey),
            o!("ibv_send_wr", "wr_id", IbvSendWr, wr_id),
            o!("ibv_send_wr", "next", IbvSendWr, next),
            o!("ibv_send_wr", "sg_list", IbvSendWr, sg_list),
            o!("ibv_send_wr", "num_sge", IbvSendWr, num_sge),
            o!("ibv_send_wr", "opcode", IbvSendWr, opcode),
            o!("ibv_send_wr", "send_flags", IbvSendWr, send_flags),
            o!("ibv_send_wr", "imm_data", IbvSendWr, imm_data),
            o!("ibv_send_wr", "wr.rdma.remote_addr", IbvSendWr, remote_addr),
            o!("ibv_send_wr", "wr.rdma.rkey", IbvSendWr, rkey),
            o!(
                "ibv_send_wr",
                "qp_type.xrc.remote_srqn",
                IbvSendWr,
                remote_srqn
            ),
            o!("ibv_send_wr", "bind_mw", IbvSendWr, _bind_mw_tso),
            o!("ibv_recv_wr", "wr_id", IbvRecvWr, wr_id),
            o!("ibv_recv_wr", "next", IbvRecvWr, next),
            o!("ibv_recv_wr", "sg_list", IbvRecvWr, sg_list),
            o!("ibv_recv_wr", "num_sge", IbvRecvWr, num_sge),
            o!("ibv_wc", "wr_id", IbvWc, wr_id),
            o!("ibv_wc", "status", IbvWc, status),
            o!("ibv_wc", "opcode", IbvWc, opcode),
            o!("ibv_wc", "vendor_err", IbvWc, vendor_err),
            o!("ibv_wc", "byte_len", IbvWc, byte_len),
            o!("ibv_wc", "imm_data", IbvWc, imm_data),
            o!("ibv_wc", "qp_num", IbvWc, qp_num),
            o!("ibv_wc", "src_qp", IbvWc, src_qp),
            o!("ibv_wc", "wc_flags", IbvWc, wc_flags),
            o!("ibv_wc", "pkey_index", IbvWc, pkey_index),
            o!("ibv_wc", "slid", IbvWc, slid),
            o!("ibv_wc", "sl", IbvWc, sl),
            o!("ibv_wc", "dlid_path_bits", IbvWc, dlid_path_bits),
            o!("ibv_qp_cap", "max_send_wr", IbvQpCap, max_send_wr),
            o!("ibv_qp_cap", "max_recv_wr", IbvQpCap, max_recv_wr),
            o!("ibv_qp_cap", "max_send_sge", IbvQpCap, max_send_sge),
            o!("ibv_qp_cap", "max_recv_sge", IbvQpCap, max_recv_sge),
            o!("ibv_qp_cap", "max_inline_data", IbvQpCap, max_inline_data),
            o!("ibv_qp_init_attr", "qp_context", IbvQpInitAttr, qp_context),
            o!("ibv_qp_init_attr", "send_cq", IbvQpInitAttr, send_cq),
            o!("ibv_qp_init_attr", "recv_cq", IbvQpInitAttr, recv_cq),
            o!("ibv_qp_init_attr", "srq", IbvQpInitAttr, srq),
            o!("ibv_qp_init_attr", "cap", IbvQpInitAttr, cap),
            o!("ibv_qp_init_attr", "qp_type", IbvQpInitAttr, qp_type),
            o!("ibv_qp_init_attr", "sq_sig_all", IbvQpInitAttr, sq_sig_all),
            o!("ibv_global_route", "dgid", IbvGlobalRoute, dgid),
            o!("ibv_global_route", "flow_label", IbvGlobalRoute, flow_label),
            o!("ibv_global_route", "sgid_index", IbvGlobalRoute, sgid_index),
            o!("ibv_global_route", "hop_limit", IbvGlobalRoute, hop_limit),
            o!(
                "ibv_global_route",
                "traffic_class",
                IbvGlobalRoute,
                traffic_class
            ),
            o!("ibv_ah_attr", "grh", IbvAhAttr, grh),
            o!("ibv_ah_attr", "dlid", IbvAhAttr, dlid),
            o!("ibv_ah_attr", "sl", IbvAhAttr, sl),
            o!("ibv_ah_attr", "src_path_bits", IbvAhAttr, src_path_bits),
            o!("ibv_ah_attr", "static_rate", IbvAhAttr, static_rate),
            o!("ibv_ah_attr", "is_global", IbvAhAttr, is_global),
            o!("ibv_ah_attr", "port_num", IbvAhAttr, port_num),
            o!("ibv_qp_attr", "qp_state", IbvQpAttr, qp_state),
            o!("ibv_qp_attr", "cur_qp_state", IbvQpAttr, cur_qp_state),
            o!("ibv_qp_attr", "path_mtu", IbvQpAttr, path_mtu),
            o!("ibv_qp_attr", "path_mig_state", IbvQpAttr, path_mig_state),
            o!("ibv_qp_attr", "qkey", IbvQpAttr, qkey),
            o!("ibv_qp_attr", "rq_psn", IbvQpAttr, rq_psn),
            o!("ibv_qp_attr", "sq_psn", IbvQpAttr, sq_psn),
            o!("ibv_qp_attr", "dest_qp_num", IbvQpAttr, dest_qp_num),
            o!("ibv_qp_attr", "qp_access_flags", IbvQpAttr, qp_access_flags),
            o!("ibv_qp_attr", "cap", IbvQpAttr, cap),
            o!("ibv_qp_attr", "ah_attr", IbvQpAttr, ah_attr),
            o!("ibv_qp_attr", "alt_ah_attr", IbvQpAttr, alt_ah_attr),
            o!("ibv_qp_attr", "pkey_index", IbvQpAttr, pkey_index),
            o!("ibv_qp_attr", "alt_pkey_index", IbvQpAttr, alt_pkey_index),
            o!(
                "ibv_qp_attr",
                "en_sqd_async_notify",
                IbvQpAttr,
                en_sqd_async_notify
            ),
            o!("ibv_qp_attr", "sq_draining", IbvQpAttr, sq_draining),
            o!("ibv_qp_attr", "max_rd_atomic", IbvQpAttr, max_rd_atomic),
            o!(
                "ibv_qp_attr",
                "max_dest_rd_atomic",
                IbvQpAttr,
                max_dest_rd_atomic
            ),
            o!("ibv_qp_attr", "min_rnr_timer", IbvQpAttr, min_rnr_timer),
            o!("ibv_qp_attr", "port_num", IbvQpAttr, port_num),
            o!("ibv_qp_attr", "timeout", IbvQpAttr, timeout),
            o!("ibv_qp_attr", "retry_cnt", IbvQpAttr, retry_cnt),
            o!("ibv_qp_attr", "rnr_retry", IbvQpAttr, rnr_retry),
            o!("ibv_qp_attr", "alt_port_num", IbvQpAttr, alt_port_num),
            o!("ibv_qp_attr", "alt_timeout", IbvQpAttr, alt_timeout),
            o!("ibv_qp_attr", "rate_limit", IbvQpAttr, rate_limit),
        ]
    }

    /// `(C type, Rust size)`.
    fn sizes() -> Vec<(&'static str, usize)> {
        vec![
            ("struct ibv_context", size_of::<IbvContext>()),
            ("struct ibv_context_ops", size_of::<IbvContextOps>()),
            ("struct ibv_pd", size_of::<IbvPd>()),
            ("struct ibv_comp_channel", size_of::<IbvCompChannel>()),
            ("struct ibv_cq", size_of::<IbvCq>()),
            ("struct ibv_qp", size_of::<IbvQp>()),
            ("struct ibv_mr", size_of::<IbvMr>()),
            ("union ibv_gid", size_of::<IbvGid>()),
            ("struct ibv_port_attr", size_of::<IbvPortAttr>()),
            ("struct ibv_sge", size_of::<IbvSge>()),
            ("struct ibv_send_wr", size_of::<IbvSendWr>()),
            ("struct ibv_recv_wr", size_of::<IbvRecvWr>()),
            ("struct ibv_wc", size_of::<IbvWc>()),
            ("struct ibv_qp_cap", size_of::<IbvQpCap>()),
            ("struct ibv_qp_init_attr", size_of::<IbvQpInitAttr>()),
            ("struct ibv_global_route", size_of::<IbvGlobalRoute>()),
            ("struct ibv_ah_attr", size_of::<IbvAhAttr>()),
            ("struct ibv_qp_attr", size_of::<IbvQpAttr>()),
        ]
    }

    /// `(C constant, Rust value)`: the enumerators the Rust side hard-codes.
    fn constants() -> Vec<(&'static str, i64)> {
        let mut v: Vec<(&'static str, i64)> = vec![
            ("IBV_PORT_ACTIVE", IBV_PORT_ACTIVE as i64),
            (
                "IBV_LINK_LAYER_INFINIBAND",
                IBV_LINK_LAYER_INFINIBAND as i64,
            ),
            ("IBV_LINK_LAYER_ETHERNET", IBV_LINK_LAYER_ETHERNET as i64),
            ("IBV_ACCESS_LOCAL_WRITE", IBV_ACCESS_LOCAL_WRITE as i64),
            ("IBV_ACCESS_REMOTE_WRITE", IBV_ACCESS_REMOTE_WRITE as i64),
            ("IBV_QPT_RC", IBV_QPT_RC as i64),
            ("IBV_QPS_RESET", IBV_QPS_RESET as i64),
            ("IBV_QPS_INIT", IBV_QPS_INIT as i64),
            ("IBV_QPS_RTR", IBV_QPS_RTR as i64),
            ("IBV_QPS_RTS", IBV_QPS_RTS as i64),
            ("IBV_QPS_SQD", IBV_QPS_SQD as i64),
            ("IBV_QPS_SQE", IBV_QPS_SQE as i64),
            ("IBV_QPS_ERR", IBV_QPS_ERR as i64),
            ("IBV_QP_STATE", IBV_QP_STATE as i64),
            ("IBV_QP_ACCESS_FLAGS", IBV_QP_ACCESS_FLAGS as i64),
            ("IBV_QP_PKEY_INDEX", IBV_QP_PKEY_INDEX as i64),
            ("IBV_QP_PORT", IBV_QP_PORT as i64),
            ("IBV_QP_AV", IBV_QP_AV as i64),
            ("IBV_QP_PATH_MTU", IBV_QP_PATH_MTU as i64),
            ("IBV_QP_TIMEOUT", IBV_QP_TIMEOUT as i64),
            ("IBV_QP_RETRY_CNT", IBV_QP_RETRY_CNT as i64),
            ("IBV_QP_RNR_RETRY", IBV_QP_RNR_RETRY as i64),
            ("IBV_QP_RQ_PSN", IBV_QP_RQ_PSN as i64),
            ("IBV_QP_MAX_QP_RD_ATOMIC", IBV_QP_MAX_QP_RD_ATOMIC as i64),
            ("IBV_QP_MIN_RNR_TIMER", IBV_QP_MIN_RNR_TIMER as i64),
            ("IBV_QP_SQ_PSN", IBV_QP_SQ_PSN as i64),
            (
                "IBV_QP_MAX_DEST_RD_ATOMIC",
                IBV_QP_MAX_DEST_RD_ATOMIC as i64,
            ),
            ("IBV_QP_DEST_QPN", IBV_QP_DEST_QPN as i64),
            ("IBV_WR_RDMA_WRITE", IBV_WR_RDMA_WRITE as i64),
            (
                "IBV_WR_RDMA_WRITE_WITH_IMM",
                IBV_WR_RDMA_WRITE_WITH_IMM as i64,
            ),
            ("IBV_WR_SEND", IBV_WR_SEND as i64),
            ("IBV_SEND_SIGNALED", IBV_SEND_SIGNALED as i64),
            ("IBV_WC_RECV", IBV_WC_RECV as i64),
            (
                "IBV_WC_RECV_RDMA_WITH_IMM",
                IBV_WC_RECV_RDMA_WITH_IMM as i64,
            ),
            ("IBV_WC_WITH_IMM", IBV_WC_WITH_IMM as i64),
            ("IBV_MTU_256", mtu_enum(256) as i64),
            ("IBV_MTU_4096", mtu_enum(4096) as i64),
        ];
        for (i, n) in WC_STATUS_NAMES.iter().enumerate() {
            v.push((n, i as i64));
        }
        v
    }

    fn c_program() -> String {
        let mut s = String::from(
            "#include <stdio.h>\n#include <stddef.h>\n#include <infiniband/verbs.h>\n\
             int main(void) {\n",
        );
        for (t, _) in sizes() {
            s += &format!("  printf(\"size {t} %zu\\n\", sizeof({t}));\n");
        }
        for (t, m, _) in offsets() {
            s += &format!("  printf(\"offset {t}.{m} %zu\\n\", offsetof(struct {t}, {m}));\n");
        }
        for (c, _) in constants() {
            s += &format!("  printf(\"const {c} %lld\\n\", (long long)({c}));\n");
        }
        s + "  return 0;\n}\n"
    }

    fn expected() -> Vec<String> {
        let mut v: Vec<String> = sizes()
            .into_iter()
            .map(|(t, n)| format!("size {t} {n}"))
            .collect();
        v.extend(
            offsets()
                .into_iter()
                .map(|(t, m, o)| format!("offset {t}.{m} {o}")),
        );
        v.extend(
            constants()
                .into_iter()
                .map(|(c, n)| format!("const {c} {n}")),
        );
        v
    }

    #[test]
    fn layouts_match_the_header() {
        let required = std::env::var("DMSC_REQUIRE_VERBS_H").is_ok_and(|v| v == "1");
        let header = ["/usr/include/infiniband/verbs.h"]
            .into_iter()
            .any(|h| Path::new(h).exists());
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        if !header {
            assert!(
                !required,
                "DMSC_REQUIRE_VERBS_H=1 but <infiniband/verbs.h> is missing: install libibverbs-dev"
            );
            eprintln!(
                "SKIP rdma::ibv_abi layout check: <infiniband/verbs.h> not found (install \
                 libibverbs-dev to run it)"
            );
            return;
        }
        let dir = std::env::temp_dir().join(format!("dmsc-ibv-abi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("layout.c");
        let exe = dir.join("layout");
        std::fs::write(&src, c_program()).unwrap();
        let out = match std::process::Command::new(&cc)
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                assert!(
                    !required,
                    "DMSC_REQUIRE_VERBS_H=1 but `{cc}` cannot run: {e}"
                );
                eprintln!("SKIP rdma::ibv_abi layout check: the C compiler `{cc}` cannot run: {e}");
                return;
            }
        };
        assert!(
            out.status.success(),
            "compiling the layout probe against <infiniband/verbs.h> failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let run = std::process::Command::new(&exe).output().unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert!(run.status.success(), "the layout probe failed");
        let got: Vec<String> = String::from_utf8(run.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let want = expected();
        assert_eq!(got.len(), want.len(), "the probe printed a different list");
        let diffs: Vec<String> = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g != w)
            .map(|(g, w)| format!("C: {g}   Rust: {w}"))
            .collect();
        assert!(
            diffs.is_empty(),
            "Rust layouts differ from <infiniband/verbs.h>:\n{}",
            diffs.join("\n")
        );
        eprintln!(
            "rdma::ibv_abi: {} sizes, offsets and constants equal the header's",
            want.len()
        );
    }

    #[test]
    fn mtu_conversions() {
        for b in [256, 512, 1024, 2048, 4096] {
            assert_eq!(mtu_bytes(mtu_enum(b)), b);
        }
        assert_eq!(mtu_bytes(0), 0);
    }
}
