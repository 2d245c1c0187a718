//! # dmsc-scheduler
//!
//! The control layer above dmsc, after draft-yang-dmsc-distributed-model: model descriptions
//! and their segmentation into pipeline stages ([`segment`], one [`cost`] model), stage
//! placement from a link matrix that dmsc itself measures ([`probe`]), and the `dmsc-serve`
//! binary.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// The planners index several parallel arrays by stage and layer; indices read better there.
#![allow(clippy::needless_range_loop)]

pub mod cluster;
pub mod cost;
pub mod error;
pub mod model;
pub mod placement;
pub mod probe;
pub mod profiles;
pub mod segment;

pub use error::{Error, Result};
pub mod aggregate;
pub mod clock;
pub mod durable;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod gateway;
pub mod mlp;
pub mod policy;
pub mod registry;
pub mod scheduler;
pub mod store;
pub mod task;
pub mod worker;
