//! [`IpcMemory`]: the device-memory operations of CUDA IPC between ranks of one host, as
//! NCCL's P2P transport uses them: export a device buffer ([`IpcExport`], sent to the peers
//! over any byte channel), open a peer's export (map its buffer into this process), and copy
//! device to device on a stream (a copy engine's `cuMemcpyDtoDAsync`). On top of these,
//! [`IpcPeers`] opens every peer's export of one exchange and gathers peer ranges into local
//! device memory.
//!
//! Implemented over the CUDA driver by `cuda_memory::CudaMemory` (with the `cuda` feature:
//! `cuIpcGetMemHandle`, `cuIpcOpenMemHandle`, `cuMemcpyDtoDAsync`; compile-checked only, no
//! GPU was available) and by the FAKE device ([`super::fake_device::FakeDeviceMemory`]), whose
//! "IPC" maps nothing: an export names a buffer in a process-wide registry of the fake, so
//! ranks that are threads of one test process run the exchange and the copies without a GPU.
//! The communicator's all-gather, broadcast, all-reduce, reduce-scatter and reduce on device
//! buffers use it when every rank is on one host (`dmsc`'s `device_call::ipc_call`). Sources: CUDA Driver API reference, "Interprocess Communication" and
//! "Memory Management"; NCCL's P2P transport design (read for design only).

use super::device_memory::DeviceMemory;
use super::ipc_handle::{IpcExport, ENCODED_LEN};
use dmsc_core::error::{Error, Result};
use dmsc_core::{DataType, ReduceOp};

/// A peer's buffer mapped into this process; unmapped when dropped.
pub trait MappedPeer: Send {
    /// The peer's buffer's first byte, as a device address of this process.
    fn addr(&self) -> usize;
    /// Its length in bytes.
    fn len(&self) -> usize;
    /// Whether it holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// CUDA IPC on one device, on top of its [`DeviceMemory`] operations.
pub trait IpcMemory: DeviceMemory {
    /// A mapped peer buffer.
    type Mapped: MappedPeer;

    /// Export `len` bytes of this device's memory at `ptr` for a peer process of this host.
    fn export(&mut self, ptr: usize, len: usize) -> Result<IpcExport>;
    /// Map a peer's export (on this same device) into this process.
    fn open_peer(&mut self, export: &IpcExport) -> Result<Self::Mapped>;
    /// Queue on `stream` a copy of `len` bytes from device address `src` to device address
    /// `dst` (this process's addresses, mapped peer buffers included).
    ///
    /// # Safety
    /// Both ranges are valid device memory until the copy has run on `stream`.
    unsafe fn copy_device_to_device(
        &mut self,
        stream: Self::Stream,
        dst: usize,
        src: usize,
        len: usize,
    ) -> Result<()>;

    /// The UUID of this device's GPU (ranks whose buffers are on one GPU share it; CUDA IPC
    /// between different GPUs needs peer access, not supported yet).
    fn device_uuid(&mut self) -> Result<[u8; 16]>;

    /// Whether this process can open its own exports. CUDA cannot (`cuIpcOpenMemHandle` on a
    /// handle of the calling process fails), so ranks that are threads of one process stage
    /// through host memory on a GPU; the FAKE device's registry can.
    fn opens_own_exports(&self) -> bool {
        false
    }

    /// Whether [`IpcMemory::reduce_on_stream`] and [`IpcMemory::divide_on_stream`] queue
    /// kernels on this device; when not, the communicator stages reductions through host
    /// memory. The FAKE device and the driver (`cuda_memory::CudaMemory`, through
    /// `stream_kernels`) do.
    fn reduces_on_stream(&self) -> bool {
        false
    }

    /// Queue on `stream` the kernel `dst[i] = a[i] ⊕ b[i]` over `len` bytes of `dtype`
    /// elements, `⊕` being `op`'s pairwise combiner ([`ReduceOp::combiner`]); `dst` may be
    /// `a` or `b` (elementwise). Errors where [`IpcMemory::reduces_on_stream`] is false.
    ///
    /// # Safety
    /// The three ranges are valid device memory (mapped peer buffers included) until the
    /// kernel has run on `stream`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn reduce_on_stream(
        &mut self,
        stream: Self::Stream,
        dtype: DataType,
        op: ReduceOp,
        dst: usize,
        a: usize,
        b: usize,
        len: usize,
    ) -> Result<()> {
        let _ = (stream, dst, a, b, len);
        Err(Error::usage(format!(
            "this device queues no {op} reduction of {dtype} on a stream"
        )))
    }

    /// Queue on `stream` the division of every `dtype` element of the `len` bytes at `dst` by
    /// `n` (the last step of [`ReduceOp::Avg`]). Errors where
    /// [`IpcMemory::reduces_on_stream`] is false.
    ///
    /// # Safety
    /// As [`IpcMemory::reduce_on_stream`].
    unsafe fn divide_on_stream(
        &mut self,
        stream: Self::Stream,
        dtype: DataType,
        dst: usize,
        len: usize,
        n: usize,
    ) -> Result<()> {
        let _ = (stream, dst, len, n);
        Err(Error::usage(format!(
            "this device queues no division of {dtype} on a stream"
        )))
    }
}

/// The peers' buffers of one exchange, mapped: entry `r` is rank `r`'s (none for this rank).
pub struct IpcPeers<M> {
    me: usize,
    mapped: Vec<Option<M>>,
}

impl<M: MappedPeer> IpcPeers<M> {
    /// Open every peer's export: `exports[r]` is rank `r`'s encoded [`IpcExport`]; this
    /// rank's own (`me`) is not opened.
    pub fn open<D>(dev: &mut D, me: usize, exports: &[Vec<u8>]) -> Result<IpcPeers<M>>
    where
        D: IpcMemory<Mapped = M>,
    {
        if me >= exports.len() {
            return Err(Error::invalid(format!(
                "CUDA IPC exchange: rank {me} is not among {} exports",
                exports.len()
            )));
        }
        let mut mapped = Vec::with_capacity(exports.len());
        for (r, bytes) in exports.iter().enumerate() {
            if r == me {
                mapped.push(None);
                continue;
            }
            if bytes.len() != ENCODED_LEN {
                return Err(Error::protocol(format!(
                    "CUDA IPC exchange: rank {r} sent {} bytes, not an export of {ENCODED_LEN}",
                    bytes.len()
                )));
            }
            let e = IpcExport::from_bytes(bytes)?;
            let m = dev.open_peer(&e).map_err(|err| {
                Error::usage(format!("CUDA IPC: opening rank {r}'s buffer failed: {err}"))
            })?;
            mapped.push(Some(m));
        }
        Ok(IpcPeers { me, mapped })
    }

    /// Rank `r`'s mapped buffer (none for this rank).
    pub fn peer(&self, r: usize) -> Option<&M> {
        self.mapped.get(r).and_then(Option::as_ref)
    }

    /// Queue on `stream` copies of bytes `range` of every peer's buffer into `dst`, one block
    /// of `range.len()` bytes per rank in rank order; this rank's block comes from `own`
    /// (its exported buffer). An all-gather's data movement over IPC. A range past a peer's
    /// buffer is refused before anything is queued.
    ///
    /// # Safety
    /// `dst` holds `ranks * range.len()` bytes of device memory and `own` this rank's buffer,
    /// both valid until the copies have run on `stream`; the peers keep their buffers alive
    /// and unchanged until then (the exchange's protocol).
    pub unsafe fn gather<D>(
        &self,
        dev: &mut D,
        stream: D::Stream,
        own: usize,
        range: std::ops::Range<usize>,
        dst: usize,
    ) -> Result<()>
    where
        D: IpcMemory<Mapped = M>,
        D::Stream: Copy,
    {
        let n = range.len();
        // Every range is checked before any copy is queued: a refused gather queued nothing.
        let mut srcs = Vec::with_capacity(self.mapped.len());
        for (r, m) in self.mapped.iter().enumerate() {
            srcs.push(match m {
                None if r == self.me => own,
                None => {
                    return Err(Error::internal(format!(
                        "CUDA IPC gather: rank {r}'s buffer is not mapped"
                    )))
                }
                Some(m) => {
                    if range.end > m.len() {
                        return Err(Error::invalid(format!(
                            "CUDA IPC gather: bytes {range:?} of rank {r}'s buffer of {} bytes",
                            m.len()
                        )));
                    }
                    m.addr()
                }
            });
        }
        for (r, src) in srcs.into_iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { dev.copy_device_to_device(stream, dst + r * n, src + range.start, n)? };
        }
        Ok(())
    }
}
