//! The narrow verbs interface the RDMA transport is written against.
//!
//! It names only what a reliable-connected transport of RDMA writes needs: open a port of a
//! device, register memory regions, create one completion queue and reliable-connected
//! queue pairs, walk a queue pair through RESET → INIT → RTR → RTS, post send work requests
//! (RDMA WRITE, RDMA WRITE with immediate, SEND) and receive work requests, and poll
//! completions. Two implementations exist: [`super::fake::FakeVerbs`], an in-memory fabric
//! with real verbs semantics that runs the whole transport in tests, and
//! [`super::sys`], the loader of the system's libibverbs.
//!
//! The vocabulary follows libibverbs (rdma-core) and its manual pages, read for the model:
//! `ibv_reg_mr(3)` (access flags, lkey/rkey, `ENOMEM` when `RLIMIT_MEMLOCK` is exceeded),
//! `ibv_post_send(3)` (opcodes, scatter entries, `IBV_SEND_SIGNALED`, immediate data),
//! `ibv_post_recv(3)`, `ibv_poll_cq(3)` (work completion status and opcodes, completions in
//! order per queue pair, `IBV_WC_WR_FLUSH_ERR` after an error) and `ibv_modify_qp(3)` (the
//! attributes each transition requires).

use super::qp_state::{QpAttrs, QpState};
use dmsc_core::error::Result;

/// Permissions of a memory region (`IBV_ACCESS_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Local writes (receives land in it): `IBV_ACCESS_LOCAL_WRITE`.
    pub local_write: bool,
    /// Peers may RDMA-write into it: `IBV_ACCESS_REMOTE_WRITE`.
    pub remote_write: bool,
}

impl Access {
    /// Readable by local work requests only (a send source).
    pub const LOCAL: Access = Access {
        local_write: false,
        remote_write: false,
    };
    /// Local and remote writes (a write target, a receive buffer).
    pub const REMOTE_WRITE: Access = Access {
        local_write: true,
        remote_write: true,
    };
}

/// A registered memory region: its keys and the handle that deregisters it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mr {
    /// The implementation's handle.
    pub id: u64,
    /// Key that local work requests name.
    pub lkey: u32,
    /// Key that peers name in RDMA writes into the region.
    pub rkey: u32,
    /// First byte.
    pub addr: u64,
    /// Bytes.
    pub len: usize,
}

/// A queue pair created by [`VerbsContext::create_qp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QpHandle {
    /// The queue pair number, unique on its device.
    pub qpn: u32,
}

/// A port's addressing, published to peers so they can reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortAddr {
    /// Local identifier (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// The GID at the selected index (RoCE needs it; InfiniBand uses it across subnets).
    pub gid: [u8; 16],
    /// Active MTU in bytes (256 to 4096).
    pub mtu: u32,
}

/// What a queue pair needs to know about its remote end to move to RTR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteQp {
    /// The remote port.
    pub addr: PortAddr,
    /// The remote queue pair number.
    pub qpn: u32,
}

/// One scatter/gather entry: `len` bytes at `addr` inside the region of `lkey`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sge {
    /// First byte.
    pub addr: u64,
    /// Bytes.
    pub len: u32,
    /// The local key of the region holding them.
    pub lkey: u32,
}

/// What a send work request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOp {
    /// `IBV_WR_RDMA_WRITE` to `remote_addr` in the region of `rkey`.
    Write {
        /// Destination address at the peer.
        remote_addr: u64,
        /// The peer's key of the destination region.
        rkey: u32,
    },
    /// `IBV_WR_RDMA_WRITE_WITH_IMM`: a write that also consumes a receive at the peer and
    /// completes it with `imm`.
    WriteImm {
        /// Destination address at the peer.
        remote_addr: u64,
        /// The peer's key of the destination region.
        rkey: u32,
        /// Immediate data delivered in the receive completion.
        imm: u32,
    },
    /// `IBV_WR_SEND`: the payload lands in the peer's next posted receive.
    Send,
}

/// A send work request (one scatter entry; `sge: None` for a zero-length request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendWr {
    /// Returned in the completion.
    pub wr_id: u64,
    /// The local bytes.
    pub sge: Option<Sge>,
    /// What to do with them.
    pub op: SendOp,
}

/// A receive work request (one scatter entry; `None` for write-with-immediate only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvWr {
    /// Returned in the completion.
    pub wr_id: u64,
    /// Where an incoming SEND's payload lands.
    pub sge: Option<Sge>,
}

/// `ibv_wc_status`, the statuses the transport tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WcStatus {
    /// `IBV_WC_SUCCESS`.
    Success,
    /// `IBV_WC_LOC_LEN_ERR`: a SEND longer than the receive's buffer.
    LocalLength,
    /// `IBV_WC_LOC_PROT_ERR`: a scatter entry outside the region of its lkey.
    LocalProtection,
    /// `IBV_WC_REM_ACCESS_ERR`: the peer refused a write (bad rkey, out of bounds, no
    /// remote write permission).
    RemoteAccess,
    /// `IBV_WC_RNR_RETRY_EXC_ERR`: the peer had no receive posted, `rnr_retry` times.
    RnrRetryExceeded,
    /// `IBV_WC_RETRY_EXC_ERR`: the peer did not acknowledge within `timeout`, `retry`
    /// times (link down, peer gone).
    RetryExceeded,
    /// `IBV_WC_WR_FLUSH_ERR`: flushed because the queue pair is in the error state.
    Flushed,
    /// Any other `ibv_wc_status` value (its number): a failure the transport treats as the
    /// queue pair's loss, like the named ones.
    Other(u32),
}

/// The names of `enum ibv_wc_status`, indexed by value (as `ibv_wc_status_str(3)` names them).
pub const WC_STATUS_NAMES: [&str; 24] = [
    "IBV_WC_SUCCESS",
    "IBV_WC_LOC_LEN_ERR",
    "IBV_WC_LOC_QP_OP_ERR",
    "IBV_WC_LOC_EEC_OP_ERR",
    "IBV_WC_LOC_PROT_ERR",
    "IBV_WC_WR_FLUSH_ERR",
    "IBV_WC_MW_BIND_ERR",
    "IBV_WC_BAD_RESP_ERR",
    "IBV_WC_LOC_ACCESS_ERR",
    "IBV_WC_REM_INV_REQ_ERR",
    "IBV_WC_REM_ACCESS_ERR",
    "IBV_WC_REM_OP_ERR",
    "IBV_WC_RETRY_EXC_ERR",
    "IBV_WC_RNR_RETRY_EXC_ERR",
    "IBV_WC_LOC_RDD_VIOL_ERR",
    "IBV_WC_REM_INV_RD_REQ_ERR",
    "IBV_WC_REM_ABORT_ERR",
    "IBV_WC_INV_EECN_ERR",
    "IBV_WC_INV_EEC_STATE_ERR",
    "IBV_WC_FATAL_ERR",
    "IBV_WC_RESP_TIMEOUT_ERR",
    "IBV_WC_GENERAL_ERR",
    "IBV_WC_TM_ERR",
    "IBV_WC_TM_RNDV_INCOMPLETE",
];

impl WcStatus {
    /// The libibverbs name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            WcStatus::Success => "IBV_WC_SUCCESS",
            WcStatus::LocalLength => "IBV_WC_LOC_LEN_ERR",
            WcStatus::LocalProtection => "IBV_WC_LOC_PROT_ERR",
            WcStatus::RemoteAccess => "IBV_WC_REM_ACCESS_ERR",
            WcStatus::RnrRetryExceeded => "IBV_WC_RNR_RETRY_EXC_ERR",
            WcStatus::RetryExceeded => "IBV_WC_RETRY_EXC_ERR",
            WcStatus::Flushed => "IBV_WC_WR_FLUSH_ERR",
            WcStatus::Other(code) => WC_STATUS_NAMES
                .get(code as usize)
                .copied()
                .unwrap_or("IBV_WC_(unknown status)"),
        }
    }

    /// The status of `ibv_wc_status` value `code`.
    pub fn from_code(code: u32) -> WcStatus {
        match code {
            0 => WcStatus::Success,
            1 => WcStatus::LocalLength,
            4 => WcStatus::LocalProtection,
            5 => WcStatus::Flushed,
            10 => WcStatus::RemoteAccess,
            12 => WcStatus::RetryExceeded,
            13 => WcStatus::RnrRetryExceeded,
            c => WcStatus::Other(c),
        }
    }
}

/// Which kind of work request a completion is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WcKind {
    /// A send work request (any [`SendOp`]).
    Send,
    /// A receive consumed by a SEND (`IBV_WC_RECV`).
    Recv,
    /// A receive consumed by a write with immediate (`IBV_WC_RECV_RDMA_WITH_IMM`).
    RecvImm,
}

/// A work completion (`ibv_wc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkCompletion {
    /// The work request's id.
    pub wr_id: u64,
    /// Its queue pair.
    pub qpn: u32,
    /// Success or why not.
    pub status: WcStatus,
    /// Send or receive (meaningful for receives only when `status` is success).
    pub kind: WcKind,
    /// Bytes received (receives).
    pub byte_len: u32,
    /// Immediate data ([`WcKind::RecvImm`]).
    pub imm: Option<u32>,
}

/// A port of a device, as listed before opening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// Port number (1-based).
    pub port: u8,
    /// Whether the port is `ACTIVE`.
    pub active: bool,
    /// `InfiniBand` or `Ethernet` (RoCE).
    pub link_layer: String,
}

/// A device, as listed before opening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its name (`mlx5_0`).
    pub name: String,
    /// Its ports.
    pub ports: Vec<PortInfo>,
}

/// What lists and opens devices (`ibv_get_device_list`, `ibv_open_device`).
pub trait VerbsProvider: Send + Sync {
    /// A short name for logs (`"fake"`, `"libibverbs"`).
    fn name(&self) -> &'static str;

    /// The devices and their ports.
    fn devices(&self) -> Result<Vec<DeviceInfo>>;

    /// Open port `port` of device `device`, with the GID at `gid_index`, and allocate its
    /// protection domain and one completion queue of `cq_depth` entries.
    fn open(
        &self,
        device: &str,
        port: u8,
        gid_index: u8,
        cq_depth: usize,
    ) -> Result<Box<dyn VerbsContext>>;
}

/// One opened port: a protection domain, a completion queue, and the queue pairs and memory
/// regions made on it. Owned by one thread.
pub trait VerbsContext: Send {
    /// The port's address, to publish.
    fn port_addr(&self) -> PortAddr;

    /// Register `len` bytes at `addr` with `access` (`ibv_reg_mr`). An error of kind
    /// `System` with errno `ENOMEM` means the pinned-memory limit (`RLIMIT_MEMLOCK`) refused it.
    fn reg_mr(&mut self, addr: u64, len: usize, access: Access) -> Result<Mr>;

    /// Register `len` bytes of the dma-buf `fd` from byte `offset`, addressed in work
    /// requests from `iova` (`ibv_reg_dmabuf_mr`, rdma-core 34 and later): how device memory
    /// that its driver exports as a dma-buf (a GPU's, `cuMemGetHandleForAddressRange`) is
    /// registered without being mapped into the process. An error of kind `Usage` means the
    /// library or device cannot do it at all. Deregistered with [`VerbsContext::dereg_mr`].
    fn reg_dmabuf_mr(
        &mut self,
        fd: std::os::fd::RawFd,
        offset: u64,
        len: usize,
        iova: u64,
        access: Access,
    ) -> Result<Mr>;

    /// Whether [`VerbsContext::reg_dmabuf_mr`] can work here at all (the library has it).
    fn supports_dmabuf(&self) -> bool;

    /// Deregister (`ibv_dereg_mr`).
    fn dereg_mr(&mut self, mr: Mr);

    /// Create a reliable-connected queue pair on the context's completion queue, in
    /// [`QpState::Reset`], with room for `max_send` and `max_recv` outstanding requests.
    fn create_qp(&mut self, max_send: u32, max_recv: u32) -> Result<QpHandle>;

    /// Move `qp` to `to` (`ibv_modify_qp`); `remote` is required for RTR. Transitions other
    /// than the ones of [`QpState::can_move_to`] are refused.
    fn modify_qp(
        &mut self,
        qp: QpHandle,
        to: QpState,
        attrs: &QpAttrs,
        remote: Option<RemoteQp>,
    ) -> Result<()>;

    /// The state `qp` is in (`ibv_query_qp`).
    fn qp_state(&self, qp: QpHandle) -> Result<QpState>;

    /// Destroy `qp` (`ibv_destroy_qp`); its outstanding requests are gone.
    fn destroy_qp(&mut self, qp: QpHandle);

    /// Post a send work request (signaled).
    ///
    /// # Safety
    /// The bytes of `wr.sge` must stay valid and unmodified until its completion is polled
    /// (or the queue pair is destroyed).
    unsafe fn post_send(&mut self, qp: QpHandle, wr: &SendWr) -> Result<()>;

    /// Post a receive work request.
    ///
    /// # Safety
    /// The bytes of `wr.sge` must stay valid for writes until its completion is polled (or
    /// the queue pair is destroyed).
    unsafe fn post_recv(&mut self, qp: QpHandle, wr: &RecvWr) -> Result<()>;

    /// Append up to `max` completions to `out` (`ibv_poll_cq`); returns how many.
    fn poll_cq(&mut self, out: &mut Vec<WorkCompletion>, max: usize) -> Result<usize>;

    /// A file descriptor that becomes readable when a completion arrives after
    /// [`VerbsContext::arm_notify`] (a completion channel, `ibv_create_comp_channel(3)`), or
    /// `None` when completions can only be polled.
    fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Consume the notifications delivered so far (`ibv_get_cq_event`, `ibv_ack_cq_events`)
    /// and ask for one at the next completion (`ibv_req_notify_cq(3)`). Completions that
    /// arrived before the call do not notify: poll once more after arming.
    fn arm_notify(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_their_names() {
        for (code, name) in WC_STATUS_NAMES.iter().enumerate() {
            assert_eq!(WcStatus::from_code(code as u32).name(), *name, "{code}");
        }
        assert_eq!(WcStatus::from_code(12), WcStatus::RetryExceeded);
        assert_eq!(WcStatus::from_code(13), WcStatus::RnrRetryExceeded);
        assert_eq!(WcStatus::from_code(5), WcStatus::Flushed);
        assert_eq!(WcStatus::from_code(99).name(), "IBV_WC_(unknown status)");
    }
}
