//! The communicator's entry points for calls on device buffers: which device memory serves
//! them ([`Communicator::use_device_memory`], or the CUDA driver with the `cuda` feature),
//! and running a call ordered on the caller's stream ([`Communicator::run_call_on_stream`]).

use super::agreement::{agreed, agreement, direct_allowed, Path, Willing, AGREE};
use super::stager::{DeviceCalls, Stager, StagingSettings};
use crate::call::Call;
use crate::comm::Communicator;
use crate::request::Request;
use dmsc_core::engine::executor::JobSlot;
use dmsc_core::engine::MemKind;
use dmsc_core::{Error, Result};
use dmsc_transports::cuda::device_memory::DeviceMemory;
use dmsc_transports::cuda::ipc_memory::IpcMemory;
use std::sync::Arc;

/// Bytes per staging copy when the driver serves the device calls.
#[cfg(feature = "cuda")]
const CHUNK: usize = 4 << 20;
/// Copies in flight per buffer.
const SLOTS: usize = 4;

impl Communicator {
    /// Serve this communicator's calls on CUDA device `ordinal`'s buffers with `dev`, staged
    /// through pinned host memory in copies of `chunk` bytes, or device to device over CUDA IPC
    /// where every rank is on this host (see the `device_call` module's documentation). Every
    /// rank attaches its device at the same point of its calls (a host all-gather agrees
    /// whether CUDA IPC serves them, on every communicator of more than one rank, so that
    /// ranks that judge it differently still run the same jobs). Without this, the first device
    /// call opens the device through the CUDA driver (with the `cuda` feature). Tests attach
    /// `dmsc_transports::cuda::fake_device::FakeDeviceMemory` here. Errors if device calls
    /// are served already, or `chunk` is 0.
    pub fn use_device_memory<D>(&self, ordinal: u32, dev: D, chunk: usize) -> Result<()>
    where
        D: IpcMemory + 'static,
        D::Stream: Send,
        D::Event: Send,
        D::Gate: Send,
    {
        if chunk == 0 {
            return Err(Error::invalid(
                "use_device_memory: chunk must be above 0 bytes",
            ));
        }
        let mut g = self.device.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = g.as_ref() {
            return Err(Error::usage(format!(
                "use_device_memory: CUDA device {} already serves this communicator's device calls",
                d.ordinal()
            )));
        }
        *g = Some(self.start_stager(dev, ordinal, chunk)?);
        Ok(())
    }

    fn start_stager<D>(
        &self,
        mut dev: D,
        ordinal: u32,
        chunk: usize,
    ) -> Result<Arc<dyn DeviceCalls>>
    where
        D: IpcMemory + 'static,
        D::Stream: Send,
        D::Event: Send,
        D::Gate: Send,
    {
        // Every rank of more than one runs the agreement, whatever it sees itself, so that
        // the ranks' jobs stay matched and they all decide alike.
        let path = if self.size() > 1 {
            let willing = Willing {
                ipc: self.ipc_willing(),
                direct: self.direct_willing(&mut dev, ordinal),
            };
            self.agree(&mut dev, willing)?
        } else {
            Path::Staged
        };
        log::info!(
            target: dmsc_core::subsys::INIT,
            "rank {}: device calls on CUDA device {ordinal} take the {path:?} path",
            self.rank()
        );
        let settings = StagingSettings {
            chunk,
            slots: SLOTS,
            timeout: self.config.engine.timeout,
        };
        let stager = Stager::start(
            dev,
            ordinal,
            self.exec.clone(),
            self.failure.clone(),
            settings,
            self.rank(),
            self.size(),
            path,
        )?;
        Ok(Arc::new(stager))
    }

    /// Whether this rank would run device calls over CUDA IPC: every peer is on this host
    /// (served by shared memory) and `DMSC_CUDA_IPC` is not `0`.
    fn ipc_willing(&self) -> bool {
        super::ipc_call::ipc_allowed() && super::ipc_call::all_on_this_host(self.peer_transports())
    }

    /// Whether this rank's engine can run device calls on the buffers of device `ordinal`
    /// themselves: `DMSC_CUDA_DIRECT` is not `0`, the transport carries that memory to every
    /// peer, and the engine takes the device's kernels (attached here; they stay attached if
    /// the ranks then agree otherwise, unused).
    fn direct_willing<D: DeviceMemory>(&self, dev: &mut D, ordinal: u32) -> bool {
        let kind = MemKind::Cuda { device: ordinal };
        if !direct_allowed() || !self.exec.with_engine(|e| e.transport_accepts(kind)) {
            return false;
        }
        // Attached by an earlier attempt that failed later on.
        if self.exec.with_engine(|e| e.runs_on(kind)) {
            return true;
        }
        let attached = dev.kernels(ordinal).and_then(|k| {
            self.exec
                .with_engine(|e| e.add_device(k).map(|()| e.runs_on(kind)))
        });
        attached.unwrap_or_else(|e| {
            log::warn!(
                target: dmsc_core::subsys::INIT,
                "rank {}: the engine cannot run calls on CUDA device {ordinal} memory, they \
                 stage through host memory: {e}",
                self.rank()
            );
            false
        })
    }

    /// The path of this communicator's device calls (`agreement::agreed`): a host
    /// all-gather of each rank's GPU UUID, process id and what it would do, so every rank
    /// decides alike. Runs while the device calls are being attached (none is in flight).
    fn agree<D: IpcMemory>(&self, dev: &mut D, willing: Willing) -> Result<Path> {
        use super::ipc_call::host_all_gather;
        let mut mine = agreement(dev.device_uuid().ok(), willing);
        let mut all = vec![0u8; AGREE * self.size()];
        let call = host_all_gather(&mut mine, &mut all);
        // SAFETY: both buffers are this function's, alive until the job has run (blocking).
        if let Some(job) = unsafe { self.job(&call) }? {
            self.run_blocking(job)?;
        }
        Ok(agreed(&all, dev.opens_own_exports()))
    }

    /// The device calls of device `ordinal`, opened through the driver on first use.
    fn device_calls(&self, ordinal: u32) -> Result<Arc<dyn DeviceCalls>> {
        let mut g = self.device.lock().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(d) if d.ordinal() == ordinal => return Ok(d.clone()),
            Some(d) => {
                return Err(Error::usage(format!(
                    "the call's buffers are CUDA device {ordinal} memory, but this communicator \
                     serves CUDA device {} (one device per communicator, as in NCCL)",
                    d.ordinal()
                )))
            }
            None => {}
        }
        let d = self.open_device(ordinal)?;
        *g = Some(d.clone());
        Ok(d)
    }

    #[cfg(feature = "cuda")]
    fn open_device(&self, ordinal: u32) -> Result<Arc<dyn DeviceCalls>> {
        let dev = dmsc_transports::cuda::cuda_memory::CudaMemory::open(ordinal)?;
        self.start_stager(dev, ordinal, CHUNK)
    }

    #[cfg(not(feature = "cuda"))]
    fn open_device(&self, ordinal: u32) -> Result<Arc<dyn DeviceCalls>> {
        Err(Error::usage(format!(
            "the call's buffers are CUDA device {ordinal} memory, but dmsc was built without \
             its `cuda` feature (rebuild with `--features cuda`)"
        )))
    }

    /// Queue `call` (on device buffers) ordered on `stream`; its slot gets the result.
    ///
    /// # Safety
    /// As [`Communicator::run_call_on_stream`].
    pub(crate) unsafe fn device_slot(&self, call: &Call, stream: usize) -> Result<Arc<JobSlot>> {
        let ordinal = match call.memory() {
            MemKind::Cuda { device } => device,
            MemKind::Host => {
                return Err(Error::internal(
                    "a host call was sent to the device staging",
                ))
            }
        };
        let calls = self.device_calls(ordinal)?;
        let build = |c: &Call, on: MemKind| self.job_parts_on(c, on);
        // SAFETY: forwarded contract.
        unsafe { calls.submit(call, stream, &build) }
    }

    /// Wait until the device calls submitted so far have handed their jobs to the engine, so
    /// a host call runs after them on every rank.
    pub(crate) fn drain_device_calls(&self) {
        let d = self
            .device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(d) = d {
            d.drain();
        }
    }

    /// Run `call` ordered on the caller's CUDA stream `stream` (a `cudaStream_t` as an
    /// address; 0 for the default stream), as NCCL does: the call starts after the work
    /// queued on the stream before it, the stream's later work waits for the call, and this
    /// returns without waiting for either. Errors of the arguments come back here; failures
    /// while the call runs go to [`Communicator::async_error`] (and release the stream).
    /// A call on host buffers runs to completion here, and must come with stream 0.
    ///
    /// # Safety
    /// As [`Communicator::run_call`], until the stream has passed the call; `stream` is 0 or
    /// a live stream of the buffers' device, live until then.
    pub unsafe fn run_call_on_stream(&self, call: &Call, stream: usize) -> Result<()> {
        if call.memory() == MemKind::Host {
            if stream != 0 {
                return Err(host_stream(stream));
            }
            // SAFETY: forwarded contract.
            return unsafe { self.run_call(call) };
        }
        // SAFETY: forwarded contract.
        unsafe { self.device_slot(call, stream) }.map(drop)
    }

    /// Start `call` ordered on the caller's CUDA stream `stream` (0: the default stream),
    /// as [`Communicator::run_call_on_stream`], and return its request, which completes
    /// once the device buffers hold the results (or with the failure). A call on host
    /// buffers is [`Communicator::start_call`], and must come with stream 0.
    ///
    /// # Safety
    /// As [`Communicator::run_call_on_stream`], and until the request has completed.
    pub unsafe fn start_call_on_stream<'a>(&self, call: &Call, stream: usize) -> Request<'a> {
        if call.memory() == MemKind::Host {
            if stream != 0 {
                return Request::done(Err(host_stream(stream)));
            }
            // SAFETY: forwarded contract.
            return unsafe { self.start_call(call) };
        }
        // SAFETY: forwarded contract.
        match unsafe { self.device_slot(call, stream) } {
            Ok(slot) => Request::new(slot, None),
            Err(e) => Request::done(Err(e)),
        }
    }
}

/// The error of a stream given with host buffers.
fn host_stream(stream: usize) -> Error {
    Error::usage(format!(
        "stream {stream:#x} given for a call on host memory: a stream orders calls on CUDA \
         device buffers only"
    ))
}
