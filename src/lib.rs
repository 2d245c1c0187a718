//! # dmsc
//!
//! Collective communication for distributed AI training and inference (the facade crate).
//! PLACEHOLDER API being filled in: signatures are final, bodies are not yet.

pub use dmsc_core::{Algo, CollDesc, CollKind, DataType, Error, Rank, ReduceOp, Result};

/// A group of ranks that run collectives together.
pub struct Communicator {
    _p: (),
}

impl Communicator {
    /// Join the communicator described by the environment (dmscrun, torchrun, Open MPI, Slurm).
    pub fn from_env() -> Result<Communicator> {
        unimplemented!()
    }
    /// This process's rank.
    pub fn rank(&self) -> usize {
        unimplemented!()
    }
    /// Number of ranks.
    pub fn size(&self) -> usize {
        unimplemented!()
    }
    /// Untyped collective over byte buffers. `count` follows NCCL's convention for `kind`
    /// (see `CollKind`). `input == None` means in place (NCCL's in-place layout: for
    /// all_gather the rank's input is `output[rank*count..]`, for reduce_scatter the output
    /// lands at... the caller passes the full buffer as `output`).
    /// Root is used by broadcast and reduce. Not for AllToAllV / SendRecv.
    #[allow(clippy::too_many_arguments)]
    pub fn collective_bytes(
        &self,
        kind: CollKind,
        input: Option<&[u8]>,
        output: &mut [u8],
        count: usize,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        let _ = (kind, input, output, count, dtype, op, root);
        unimplemented!()
    }
    /// Send `send` to rank `to` and receive `recv` from rank `from` concurrently (a group).
    pub fn send_recv_bytes(&self, send: &[u8], to: usize, recv: &mut [u8], from: usize) -> Result<()> {
        let _ = (send, to, recv, from);
        unimplemented!()
    }
    /// Block until every rank has called barrier.
    pub fn barrier(&self) -> Result<()> {
        unimplemented!()
    }
}
