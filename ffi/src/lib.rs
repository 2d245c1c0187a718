//! # libdmsc: the C ABI of dmsc
//!
//! Builds `libdmsc.so` (SONAME `libdmsc.so.0`) and `libdmsc.a`. Their interface,
//! `include/dmsc.h`, is generated from the signatures and doc comments of this crate by
//! cbindgen (configuration: `ffi/cbindgen.toml`; refresh with
//! `DMSC_BLESS=1 cargo test -p dmsc-ffi --test header`, which CI runs without
//! `DMSC_BLESS` to fail on a stale header). The doc comments are written for C users.
//!
//! The API is modelled on NCCL's `nccl.h` (NVIDIA NCCL 2.x, `src/nccl.h.in`): the same
//! names with the `dmsc` prefix, NCCL's argument order, NCCL's numeric values of the result
//! codes, data types and reduction operators it shares, a versioned config struct like
//! `ncclConfig_t`, `ncclGetLastError` (here per thread), `ncclCommSplit`, `ncclCommShrink`,
//! and `ncclGroupStart`/`ncclGroupEnd`. Additions: `dmscCommInitFromEnv`, all-to-all(v),
//! barrier, and `*Async` variants returning MPI-style requests (`dmscTest`, `dmscWait`,
//! `dmscRequestFree`). With host buffers the stream argument
//! must be NULL; with the `cuda` feature, device buffers are recognised and take a stream
//! (the engine does not run collectives on device memory yet).
//!
//! Layout: `guard` is the boundary every exported function goes through (catch_unwind,
//! error codes, last error); `handle` the registry behind opaque handles; `validate` turns
//! C arguments into an `op::Op`; `dispatch` runs, records (`group`) or posts (`request`)
//! it. `path_metrics` reports the network paths of packet spraying.
// The exported names are NCCL's, with the dmsc prefix: dmscResult_t, dmscSuccess, ...
#![allow(non_camel_case_types, non_snake_case, clippy::enum_variant_names)]
// Each exported function's doc comment states its pointer contract for C callers; a Rust
// `# Safety` section would only repeat it in the header.
#![allow(clippy::missing_safety_doc)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

mod args;
mod collectives;
mod comm;
mod config;
mod dispatch;
mod finalize;
mod group;
mod guard;
mod handle;
mod init;
mod last_error;
mod nonblocking;
mod op;
mod path_metrics;
mod premul;
mod request;
mod result;
mod topology;
mod types;
mod validate;
mod version;
