//! The devices an engine runs operations with: one per kind of memory, each with the staging
//! slots and scratch memory it allocated and the peers whose frames in its memory are posted
//! registered.
//!
//! An engine starts with one device (the host's, or whichever it was built with) and may be
//! given more ([`Engine::add_device`]): a CUDA device next to the host one, so that calls on
//! GPU buffers run on the GPU's kernels while host calls keep the CPU's. Each operation runs
//! wholly on the device of its buffers' memory kind: its copies, reductions, checksums,
//! staging slots and scratch all come from that device, so the engine never hands one
//! device's memory to another's kernels. Whether the transport can carry that memory is the
//! transport's to say ([`Transport::accepts`]); NCCL makes the same split between its
//! reduction kernels (per device) and its transports (per peer).

use super::registration::registered_peers;
use super::staging::StagingPool;
use super::transport::Transport;
use super::{Engine, EngineConfig, MemKind, OpMemory};
use crate::device::{Device, DeviceBuffer};
use crate::error::{Error, Result};
use crate::types::Rank;

/// One device of an engine and what it allocated for the engine's operations.
///
/// Memory other than the host's is never freed while the engine runs: freeing GPU memory
/// (`cuMemFree`) synchronizes the device, and so would wait for a caller's stream that waits
/// for the operation in progress. Such buffers, once replaced by larger ones, are parked and
/// freed with the slot, and they grow by doubling, so that little is parked.
///
/// The fields drop in order: the buffers before the device that allocated them.
pub(crate) struct DeviceSlot {
    pub(crate) pool: StagingPool,
    pub(crate) scratch: Option<DeviceBuffer>,
    /// The premultiplied input of a `PreMulSum` ([`Engine::run_collective_premul`]).
    pub(crate) premul: Option<DeviceBuffer>,
    /// Replaced buffers of a device other than the host's, freed with the slot.
    parked: Vec<DeviceBuffer>,
    /// Per rank: frames in this device's memory are posted registered (empty: none is).
    pub(crate) reg_peers: Vec<bool>,
    /// What copies, reduces and checksums payload bytes in this memory.
    pub(crate) device: Box<dyn Device>,
}

impl DeviceSlot {
    /// `device` for rank `rank` of `nranks` over `t`, with staging slots of `slot_bytes`
    /// (at most `max_slots`).
    pub(crate) fn new(
        device: Box<dyn Device>,
        t: &dyn Transport,
        rank: Rank,
        nranks: usize,
        slot_bytes: usize,
        max_slots: usize,
    ) -> DeviceSlot {
        let reg_peers = registered_peers(t, rank, nranks, device.kind());
        DeviceSlot {
            pool: StagingPool::new(slot_bytes, max_slots),
            scratch: None,
            premul: None,
            parked: Vec::new(),
            reg_peers,
            device,
        }
    }

    /// Let go of `b`, whose registrations are forgotten already: freed now if it is host
    /// memory, parked until the slot goes otherwise.
    pub(crate) fn discard(&mut self, b: DeviceBuffer) {
        if b.kind() != MemKind::Host {
            self.parked.push(b);
        }
    }

    /// The size to allocate for at least `need` bytes replacing a buffer of `old` bytes:
    /// `need` for host memory, at least twice `old` otherwise (see the type's docs).
    pub(crate) fn grown(&self, need: usize, old: usize) -> usize {
        if self.device.kind() == MemKind::Host {
            need
        } else {
            need.max(old.saturating_mul(2))
        }
    }
}

/// Staging slots per device: enough for the window towards every peer.
pub(super) fn staging_slots(cfg: &EngineConfig, nranks: usize) -> usize {
    (cfg.window * nranks.max(2)).max(4)
}

impl Engine {
    /// Give this engine a device for another kind of memory (a GPU's beside the host's), so
    /// that operations on buffers of that kind run with it. An operation on a kind runs only
    /// where the transport also accepts it ([`Engine::runs_on`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a device for that kind is attached already.
    pub fn add_device(&mut self, device: Box<dyn Device>) -> Result<()> {
        let kind = device.kind();
        if let Some(d) = self.devices.iter().find(|d| d.device.kind() == kind) {
            return Err(Error::invalid(format!(
                "this engine has a device for {kind} already ({})",
                d.device.name()
            )));
        }
        let slot = DeviceSlot::new(
            device,
            &*self.transport,
            self.rank,
            self.nranks,
            self.cfg.chunk_bytes,
            staging_slots(&self.cfg, self.nranks),
        );
        self.devices.push(slot);
        Ok(())
    }

    /// Make `pick(slot)` of device `dev` hold at least `need` bytes: a larger buffer replaces
    /// a smaller one (sized by [`DeviceSlot::grown`]), the old one's registrations forgotten
    /// ([`Engine::forget_buffer`]).
    pub(super) fn ensure_buffer(
        &mut self,
        dev: usize,
        need: usize,
        pick: fn(&mut DeviceSlot) -> &mut Option<DeviceBuffer>,
    ) -> Result<()> {
        let d = &mut self.devices[dev];
        let have = pick(d).as_ref().map(DeviceBuffer::len);
        if have.is_some_and(|h| h >= need) {
            return Ok(());
        }
        let new = d.device.alloc(d.grown(need, have.unwrap_or(0)))?;
        if let Some(old) = pick(d).replace(new) {
            self.forget_buffer(dev, old);
        }
        Ok(())
    }

    /// True when the transport carries `kind` memory to every peer (whether or not a device
    /// of the engine works on it yet).
    pub fn transport_accepts(&self, kind: MemKind) -> bool {
        self.transport.accepts(kind)
    }

    /// True when operations on `kind` memory run here unstaged: a device of the engine works
    /// on it and the transport carries it to every peer.
    pub fn runs_on(&self, kind: MemKind) -> bool {
        self.devices.iter().any(|d| d.device.kind() == kind) && self.transport.accepts(kind)
    }

    /// The device of the operation's memory: every non-empty buffer must be of one kind, a
    /// device of this engine must work on it, and the transport must accept it. Returns the
    /// device's index in `self.devices`.
    pub(super) fn device_for(&self, mem: &OpMemory) -> Result<usize> {
        let named = [("input", &mem.input), ("output", &mem.output)];
        let groups = mem.group.iter().map(|r| ("group buffer", r));
        let mut chosen: Option<(usize, &'static str, MemKind)> = None;
        for (what, r) in named.into_iter().chain(groups) {
            if r.len == 0 {
                continue;
            }
            if let Some((_, first, kind)) = chosen {
                if r.kind != kind {
                    return Err(Error::invalid(format!(
                        "the {first} is {kind} but the {what} is {}: one operation works on \
                         one kind of memory",
                        r.kind
                    )));
                }
                continue;
            }
            let Some(i) = self.devices.iter().position(|d| d.device.kind() == r.kind) else {
                let served: Vec<String> = self
                    .devices
                    .iter()
                    .map(|d| format!("{} ({})", d.device.kind(), d.device.name()))
                    .collect();
                return Err(Error::invalid(format!(
                    "the {what} is {} but this communicator's devices work on {}",
                    r.kind,
                    served.join(" and ")
                )));
            };
            if !self.transport.accepts(r.kind) {
                return Err(Error::invalid(format!(
                    "the {what} is {}, which the {} transport does not accept",
                    r.kind,
                    self.transport.name()
                )));
            }
            chosen = Some((i, what, r.kind));
        }
        Ok(chosen.map_or(0, |(i, _, _)| i))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::tests::{MemNet, MemTransport};
    use super::super::{EngineConfig, Region};
    use super::*;
    use crate::device::recording::{Call, RecordingDevice};
    use crate::plan::{self, PlanConfig};
    use crate::types::{Algo, CollDesc, CollKind, DataType, ReduceOp};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Host memory the FAKE GPU device and transport of these tests pass off as a GPU's.
    const GPU: MemKind = MemKind::Cuda { device: 0 };

    fn desc(count: usize) -> CollDesc {
        CollDesc {
            kind: CollKind::AllReduce,
            count,
            dtype: DataType::Float32,
            op: ReduceOp::Avg,
            root: 0,
        }
    }

    /// Rank `rank`'s tree all-reduce (average) of `input` on memory of `kind`.
    fn all_reduce(e: &mut Engine, kind: MemKind, input: &mut [f32]) -> Result<Vec<f32>> {
        let (rank, n, count) = (e.rank(), e.nranks(), input.len());
        let pc = PlanConfig {
            algo: Some(Algo::Tree),
            segment_bytes: 256,
            ..PlanConfig::default()
        };
        let sched = plan::plan(&desc(count), rank, n, false, &pc)?;
        let mut output = vec![0f32; count];
        let region = |p: *mut f32| Region {
            kind,
            ..Region::host(p as *mut u8, count * 4)
        };
        let mem = OpMemory {
            input: region(input.as_mut_ptr()),
            output: region(output.as_mut_ptr()),
            group: vec![],
        };
        // SAFETY: both buffers live until the call returns and nothing else uses them.
        unsafe { e.run_collective(desc(count), sched, mem) }?;
        Ok(output)
    }

    fn tally(log: &Mutex<Vec<Call>>) -> (usize, usize) {
        let log = log.lock().unwrap();
        let reduced = log
            .iter()
            .map(|c| if let Call::Reduce(b) = c { *b } else { 0 })
            .sum();
        let allocs = log.iter().filter(|c| matches!(c, Call::Alloc(_))).count();
        (reduced, allocs)
    }

    #[test]
    fn each_operation_runs_on_the_device_of_its_memory_and_no_other() {
        let (n, count) = (3usize, 3001usize);
        let net = MemNet::new(n, None);
        let threads: Vec<_> = (0..n)
            .map(|rank| {
                let mut t = MemTransport::new(rank, n, net.clone());
                t.device_kind = Some(GPU);
                std::thread::spawn(move || {
                    let cfg = EngineConfig {
                        chunk_bytes: 512,
                        timeout: Duration::from_secs(20),
                        checksum: true,
                        ..EngineConfig::default()
                    };
                    let (host_log, gpu_log) = (Arc::default(), Arc::default());
                    let host = RecordingDevice::host(Arc::clone(&host_log));
                    let mut e = Engine::with_device(Box::new(t), Box::new(host), rank, n, cfg);
                    assert!(!e.runs_on(GPU), "no GPU device yet");
                    let gpu = RecordingDevice {
                        log: Arc::clone(&gpu_log),
                        kind: GPU,
                    };
                    e.add_device(Box::new(gpu)).unwrap();
                    assert!(e.runs_on(GPU) && e.runs_on(MemKind::Host));
                    let mut input: Vec<f32> = (0..count).map(|i| (rank * 3 + i) as f32).collect();
                    let on_gpu = all_reduce(&mut e, GPU, &mut input).unwrap();
                    let (gpu_reduced, gpu_allocs) = tally(&gpu_log);
                    assert!(
                        gpu_reduced > 0 && gpu_allocs > 0,
                        "rank {rank}: {gpu_log:?}"
                    );
                    assert!(
                        host_log.lock().unwrap().is_empty(),
                        "rank {rank}: the host device worked on a GPU operation: {host_log:?}"
                    );
                    let gpu_calls = gpu_log.lock().unwrap().len();
                    let on_host = all_reduce(&mut e, MemKind::Host, &mut input).unwrap();
                    assert!(tally(&host_log).0 > 0, "rank {rank}: {host_log:?}");
                    assert_eq!(
                        gpu_log.lock().unwrap().len(),
                        gpu_calls,
                        "rank {rank}: the GPU device worked on a host operation"
                    );
                    // A second device for the same memory, and an operation mixing kinds.
                    let again = RecordingDevice {
                        log: Arc::default(),
                        kind: GPU,
                    };
                    let err = e.add_device(Box::new(again)).unwrap_err().to_string();
                    assert!(
                        err.contains("has a device for CUDA device 0 memory already"),
                        "{err}"
                    );
                    let mut out = vec![0f32; 4];
                    let mixed = OpMemory {
                        input: Region {
                            kind: GPU,
                            ..Region::host(input.as_mut_ptr() as *mut u8, 16)
                        },
                        output: Region::host(out.as_mut_ptr() as *mut u8, 16),
                        group: vec![],
                    };
                    let err = e.device_for(&mixed).unwrap_err().to_string();
                    assert!(
                        err.contains(
                            "the input is CUDA device 0 memory but the output is host memory"
                        ),
                        "{err}"
                    );
                    (on_gpu, on_host)
                })
            })
            .collect();
        for t in threads {
            let (on_gpu, on_host) = t.join().unwrap();
            for (i, (g, h)) in on_gpu.iter().zip(&on_host).enumerate() {
                let want = (0..n).map(|r| (r * 3 + i) as f32).sum::<f32>() / n as f32;
                assert!(
                    (g - want).abs() <= want.abs() * 1e-6,
                    "element {i}: {g}, want {want}"
                );
                // The host round averaged the averages: the same values again.
                assert!(
                    (h - want).abs() <= want.abs() * 1e-5,
                    "element {i}: {h}, want {want}"
                );
            }
        }
    }

    #[test]
    fn memory_without_a_device_or_refused_by_the_transport_is_named() {
        let net = MemNet::new(2, None);
        let mut e = Engine::new(
            Box::new(MemTransport::new(0, 2, net)),
            0,
            2,
            EngineConfig::default(),
        );
        let mut buf = [0u8; 16];
        let gpu = |b: &mut [u8; 16]| Region {
            kind: GPU,
            ..Region::host(b.as_mut_ptr(), 16)
        };
        let mem = OpMemory {
            input: gpu(&mut buf),
            output: gpu(&mut buf),
            group: vec![],
        };
        let err = e.device_for(&mem).unwrap_err().to_string();
        assert!(
            err.contains("the input is CUDA device 0 memory but this communicator's devices work on host memory (host)"),
            "{err}"
        );
        let gpu_dev = RecordingDevice {
            log: Arc::default(),
            kind: GPU,
        };
        e.add_device(Box::new(gpu_dev)).unwrap();
        assert!(!e.runs_on(GPU), "the transport does not carry GPU memory");
        let err = e.device_for(&mem).unwrap_err().to_string();
        assert!(
            err.contains("which the mem transport does not accept"),
            "{err}"
        );
    }
}
