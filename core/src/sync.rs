//! The synchronization primitives of dmsc's lock-free and blocking hand-offs, behind one
//! switch: the standard library's normally, [loom]'s when built with `--cfg loom`, so that
//! the model tests (`#[cfg(loom)]`, named `loom_*`) explore every interleaving and every
//! weak-memory outcome the C11 model allows of the code that really runs.
//!
//! Run them with
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p dmsc-core loom`
//! (and `-p dmsc-transports`, `-p dmsc --lib`). The pattern is tokio's and crossbeam's
//! (`loom` docs, "Examples"). `Arc` stays the standard one: loom's cannot hold trait objects
//! (`Arc<dyn Waker>`), and reference counting is not ours to check.
//!
//! [loom]: https://docs.rs/loom

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub use loom::sync::{Condvar, Mutex, MutexGuard};

#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub use std::sync::{Condvar, Mutex, MutexGuard};
