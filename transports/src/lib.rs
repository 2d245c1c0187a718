//! # dmsc-transports
//!
//! The I/O half of dmsc: transports that implement `dmsc-core`'s traits, and the TCP
//! rendezvous store with network-interface selection.
#![warn(missing_docs)]

pub mod auth;
mod cma;
pub(crate) mod conn;
pub mod connect;
pub mod cuda;
mod id_hash;
pub mod ifaddr;
pub mod rdma;
pub mod route;
pub mod shm;
pub mod store;
pub mod tcp;
mod wake;

/// Entry points of the fuzz targets in `fuzz/` (not a stable API).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
