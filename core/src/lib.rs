//! # dmsc-core
//!
//! The transport-independent heart of dmsc: data types and reduction kernels, collective
//! algorithms as pure per-rank [`schedule::Schedule`]s, an in-memory simulator that executes
//! the schedules of N ranks (the oracle of every algorithm test), the alpha-beta cost model
//! that picks an algorithm, the wire format, rendezvous protocol and environment detection,
//! and the engine that walks a schedule over any [`engine::Transport`].
//!
//! This crate performs no I/O of its own: transports implement its traits.
#![warn(missing_docs)]

pub mod auth;
pub mod bootstrap;
pub mod codec;
pub mod device;
pub mod engine;
pub mod error;
pub mod log_rank;
pub mod model;
pub mod plan;
pub mod reduce;
pub mod schedule;
pub mod sim;
pub mod spray;
pub mod subsys;
#[doc(hidden)]
pub mod sync;
pub mod topology;
pub mod types;
pub mod wire;

pub use error::{Error, Result};
pub use types::{Algo, CollDesc, CollKind, DataType, Rank, ReduceOp};
