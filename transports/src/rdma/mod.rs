//! RDMA verbs: engine frames moved by RDMA writes from registered memory over several
//! reliable-connected queue pairs per peer.
//!
//! - [`verbs`]: the narrow verbs interface the transport is written against;
//! - [`qp_state`]: the queue pair state machine and its attributes;
//! - [`fake`]: an in-memory fabric with real verbs semantics (tests, benchmarks);
//! - [`sys`]: the system's verbs: devices and ports from sysfs, opening through libibverbs;
//! - [`ibv_abi`]: the C layouts of `<infiniband/verbs.h>` the verbs path uses (checked);
//! - [`ibv_lib`]: libibverbs' exported functions, resolved at run time;
//! - [`sys_context`]: [`verbs::VerbsContext`] over libibverbs;
//! - [`hca`]: `DMSC_IB_HCA` and `DMSC_IB_GID_INDEX`;
//! - [`options`]: every `DMSC_IB_*` setting;
//! - [`wire`]: the connection card and the messages that travel as SENDs;
//! - [`pool`]: registered slot arenas;
//! - [`dmabuf_export`]: device memory as dma-bufs, for registering GPU memory (with the
//!   `cuda` feature over the CUDA driver: `crate::cuda::dmabuf`);
//! - [`transport`]: the [`dmsc_core::engine::Transport`] implementation;
//! - [`connect`](mod@connect): setup over the bootstrap exchange;
//! - [`fallback`]: use RDMA where a device is found, else say why once and let TCP serve.
//!
//! Sources, read for the design and never copied: the libibverbs manual pages
//! (`ibv_reg_mr(3)`, `ibv_create_qp(3)`, `ibv_modify_qp(3)`, `ibv_post_send(3)`,
//! `ibv_post_recv(3)`, `ibv_poll_cq(3)`), the InfiniBand Architecture Specification vol. 1
//! (chapters 9 and 10 on reliable connection and queue pair states), and NCCL's
//! `src/transport/net_ib.cc` (receiver-posted clear-to-send FIFO, RDMA write then
//! write-with-immediate, several queue pairs per connection, `NCCL_IB_HCA`).

pub mod connect;
pub mod dmabuf_export;
pub mod fake;
pub mod fake_dmabuf;
pub mod fallback;
pub mod hca;
pub mod ibv_abi;
pub mod ibv_lib;
pub mod options;
pub mod pool;
pub mod qp_state;
pub mod sys;
pub mod sys_context;
pub mod transport;
pub mod verbs;
pub mod wire;

#[cfg(test)]
mod tests;

pub use connect::{connect, prepare, Prepared};
pub use options::RdmaOptions;
pub use transport::{RdmaStats, RdmaTransport};
