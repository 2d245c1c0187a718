//! Rendezvous: how the ranks of a job find each other before any collective runs.
//!
//! Two ways in, both ending at a small key-value store served by rank 0 (or by a standalone
//! `dmsc-store` process):
//!
//! * **From the environment** ([`mod@env`]): a launcher (dmscrun, torchrun, Open MPI's `mpirun`,
//!   Slurm's `srun`, or explicit `DMSC_*` variables) tells every process its rank, the world
//!   size and the store's `host:port`; rank 0 serves the store, everyone connects. This is
//!   torch.distributed's `env://` init with its `TCPStore`.
//! * **From a unique id** ([`unique_id`]): one process starts a store on an ephemeral port
//!   and hands a 128-byte [`UniqueId`] naming it to the others out of band (MPI broadcast, a
//!   file, a Python pickle). This is NCCL's `ncclGetUniqueId` / `ncclCommInitRank`.
//!
//! Under Slurm the store's host can come from the job's node list, expanded by
//! [`nodelist`] as `scontrol show hostnames` does.
//!
//! The store speaks the length-prefixed, bounded protocol of [`protocol`]. Everything here is
//! pure (no sockets): the server, the client and the random nonce live in
//! `dmsc-transports::store`.

pub mod env;
pub mod nodelist;
pub mod protocol;
pub mod unique_id;

pub use env::{detect, detect_from_process_env, env_duration, LaunchInfo, Launcher};
pub use protocol::{Request, Response};
pub use unique_id::UniqueId;
