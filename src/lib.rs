//! # dmsc
//!
//! Collective communication for distributed AI training and inference: all-reduce (ring and
//! double binary tree), reduce-scatter, all-gather, broadcast, reduce, all-to-all(v), barrier
//! and grouped send/recv between processes, over TCP driven by io_uring.
//!
//! ```no_run
//! use dmsc::{Communicator, ReduceOp};
//! let comm = Communicator::from_env()?;          // under dmscrun, torchrun, mpirun, srun
//! let mut grad = vec![comm.rank() as f32; 1 << 20];
//! comm.all_reduce_in_place(&mut grad, ReduceOp::Avg)?;
//! # Ok::<(), dmsc::Error>(())
//! ```
#![warn(missing_docs)]

mod banner;
pub mod call;
mod comm;
pub mod config;
mod connect;
mod device_call;
mod element;
mod group;
pub mod launch;
pub mod log_settings;
pub mod logger;
mod ops;
pub mod perf;
mod plan_cache;
mod request;
mod shrink;
pub mod size;
mod split;
mod store_link;
mod topology_probe;

/// This crate's version, as the init banner and `DMSC_DEBUG=VERSION` print it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use comm::{new_local_unique_id, new_unique_id, release_unique_id, Communicator, InitOptions};
pub use config::{Config, VerbsSetup};
pub use device_call::pointer::cuda_device_of;
pub use dmsc_core::auth::Secret;
pub use dmsc_core::bootstrap::UniqueId;
pub use dmsc_core::engine::{AbortHandle, PeerPaths};
pub use dmsc_core::spray::{Mode as SprayMode, PathMetrics, PathState};
pub use dmsc_core::topology::{Link, Topology};
pub use dmsc_core::{Algo, CollDesc, CollKind, DataType, Error, Rank, ReduceOp, Result};
pub use element::Element;
pub use group::Group;
pub use half::{bf16, f16};
pub use request::Request;
