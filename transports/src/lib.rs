//! # dmsc-transports
//!
//! The I/O half of dmsc: transports that implement `dmsc-core`'s traits, and the TCP
//! rendezvous store with network-interface selection.
#![warn(missing_docs)]

mod cma;
pub mod ifaddr;
pub mod store;
pub mod tcp;
