//! The agreement made when a communicator's device is attached: which path its device calls
//! take, decided alike on every rank from one host all-gather, so that the ranks' host jobs
//! stay matched whatever each rank sees by itself.
//!
//! Each rank contributes [`AGREE`] bytes ([`agreement`]): a flags byte, its GPU's UUID and
//! its process id. The paths, in order of preference ([`agreed`]):
//! 1. [`Path::Ipc`], device to device over CUDA IPC (`ipc_call`): every rank willing
//!    (`DMSC_CUDA_IPC` not `0`, every peer on this host), every rank's buffers on one GPU,
//!    and no two ranks in one process unless the device opens its own exports (CUDA cannot;
//!    the FAKE device can);
//! 2. [`Path::Direct`], the engine on the device buffers themselves (`stager::direct_and_run`):
//!    every rank willing (`DMSC_CUDA_DIRECT` not `0`, its transport carries the device's
//!    memory to every peer, as RDMA with dma-buf registration does, and its engine has the
//!    device's kernels), NCCL's GPUDirect RDMA;
//! 3. [`Path::Staged`] otherwise: through pinned host twins (`stager::stage_and_run`).

/// Bytes of one rank's part of the agreement: a flags byte ([`HAS_UUID`], [`IPC`],
/// [`DIRECT`]), the GPU UUID, the process id.
pub(crate) const AGREE: usize = 1 + 16 + 4;
/// Flag: the rank's device has a UUID.
const HAS_UUID: u8 = 1;
/// Flag: the rank would use CUDA IPC.
const IPC: u8 = 2;
/// Flag: the rank's engine can run its device calls on the device buffers.
const DIRECT: u8 = 4;

/// What one rank would do, exchanged rather than assumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Willing {
    /// CUDA IPC (`DMSC_CUDA_IPC` not `0` and every peer on this host).
    pub(crate) ipc: bool,
    /// The engine on device memory (`DMSC_CUDA_DIRECT` not `0`, and the transport and the
    /// engine's devices can).
    pub(crate) direct: bool,
}

/// How a communicator's device calls run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// Device to device over CUDA IPC, for the kinds it covers (the others stage).
    Ipc,
    /// The engine runs the call on the device buffers, with the device's kernels.
    Direct,
    /// Through pinned host memory.
    Staged,
}

/// Whether `DMSC_CUDA_DIRECT` (default on) lets the engine run device calls on the device
/// buffers where the transport carries them.
pub(crate) fn direct_allowed() -> bool {
    std::env::var("DMSC_CUDA_DIRECT").map_or(true, |v| v.trim() != "0")
}

/// This rank's part: its device's UUID (none if it could not say), what it would do, and its
/// process id.
pub(crate) fn agreement(uuid: Option<[u8; 16]>, willing: Willing) -> [u8; AGREE] {
    let mut b = [0u8; AGREE];
    if let Some(u) = uuid {
        b[0] |= HAS_UUID;
        b[1..17].copy_from_slice(&u);
    }
    if willing.ipc {
        b[0] |= IPC;
    }
    if willing.direct {
        b[0] |= DIRECT;
    }
    b[17..].copy_from_slice(&std::process::id().to_le_bytes());
    b
}

/// The path every rank takes, from every rank's [`agreement`] (the same answer everywhere).
pub(crate) fn agreed(all: &[u8], opens_own_exports: bool) -> Path {
    let parts: Vec<&[u8]> = all.chunks(AGREE).collect();
    let has = |p: &[u8], f: u8| p[0] & f == f;
    let one_gpu = parts
        .iter()
        .all(|p| has(p, HAS_UUID | IPC) && p[1..17] == parts[0][1..17]);
    let mut pids: Vec<&[u8]> = parts.iter().map(|p| &p[17..]).collect();
    pids.sort();
    pids.dedup();
    if one_gpu && (opens_own_exports || pids.len() == parts.len()) {
        Path::Ipc
    } else if parts.iter().all(|p| has(p, DIRECT)) {
        Path::Direct
    } else {
        Path::Staged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(uuid: Option<u8>, ipc: bool, direct: bool, pid: u32) -> [u8; AGREE] {
        let mut b = agreement(uuid.map(|u| [u; 16]), Willing { ipc, direct });
        b[17..].copy_from_slice(&pid.to_le_bytes());
        b
    }

    fn all(v: &[[u8; AGREE]]) -> Vec<u8> {
        v.concat()
    }

    #[test]
    fn ipc_needs_one_gpu_and_one_process_per_rank_unless_the_device_opens_its_own() {
        let gpu = |u: u8, pid: u32| part(Some(u), true, false, pid);
        assert_eq!(agreed(&all(&[gpu(1, 10), gpu(1, 11)]), false), Path::Ipc);
        assert_eq!(agreed(&all(&[gpu(1, 10), gpu(2, 11)]), true), Path::Staged);
        assert_eq!(agreed(&all(&[gpu(1, 10), gpu(1, 10)]), false), Path::Staged);
        assert_eq!(agreed(&all(&[gpu(1, 10), gpu(1, 10)]), true), Path::Ipc);
        let none = part(None, true, false, 11);
        assert_eq!(agreed(&all(&[gpu(0, 10), none]), true), Path::Staged);
        // One rank unwilling (DMSC_CUDA_IPC=0 there, or a peer off shared memory): nobody.
        let unwilling = part(Some(1), false, false, 11);
        assert_eq!(agreed(&all(&[gpu(1, 10), unwilling]), true), Path::Staged);
    }

    #[test]
    fn direct_needs_every_rank_and_yields_to_ipc() {
        let direct = |u: u8, pid: u32| part(Some(u), false, true, pid);
        // Ranks on different GPUs (or hosts), all able: the engine runs on device memory.
        assert_eq!(
            agreed(&all(&[direct(1, 10), direct(2, 11), direct(3, 12)]), false),
            Path::Direct
        );
        // One rank whose transport cannot carry device memory (or DMSC_CUDA_DIRECT=0): all
        // stage.
        let staged = part(Some(2), false, false, 11);
        assert_eq!(agreed(&all(&[direct(1, 10), staged]), false), Path::Staged);
        // Where IPC serves every rank, it wins.
        let both = |pid: u32| part(Some(1), true, true, pid);
        assert_eq!(agreed(&all(&[both(10), both(11)]), false), Path::Ipc);
        // Direct whatever the UUIDs say.
        assert_eq!(
            agreed(&all(&[part(None, false, true, 10), direct(1, 11)]), false),
            Path::Direct
        );
    }
}
