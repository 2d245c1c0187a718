//! A FAKE device for the communicator's tests of device buffers on machines without a GPU:
//! [`FakeDeviceMemory`] implements [`DeviceMemory`] with host memory pretending to be device
//! memory, and streams that are queues of commands run in order by one worker thread, the
//! way a GPU runs them (an event wait sees the record queued before it; a gate wait compares
//! cyclically, as `CU_STREAM_WAIT_VALUE_GEQ` does). Tests queue fake kernels
//! ([`FakeDeviceMemory::launch`]) to write inputs before a call and to read outputs after it,
//! which shows whether the call was ordered on the stream. A test can slow the fake copy
//! engine down and log every copy with when it was queued, started and ended
//! ([`FakeDeviceMemory::log_copies`]), which shows how the staging chunks and overlaps them.
//!
//! Nothing here touches CUDA. "Device addresses" are plain host addresses the test owns.

use super::device_memory::{DeviceMemory, PinnedBuffer};
use super::ipc_handle::IpcExport;
use super::ipc_memory::{IpcMemory, MappedPeer};
use super::stream_order::StreamOps;
use dmsc_core::device::recording::{Call as KernelCall, RecordingDevice};
use dmsc_core::device::Device;
use dmsc_core::engine::MemKind;
use dmsc_core::error::{Error, Result};
use dmsc_core::{DataType, ReduceOp};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

type Kernel = Box<dyn FnOnce() + Send>;

/// A command queued on a fake stream.
enum Cmd {
    /// A fake kernel.
    Run(Kernel),
    /// A copy of `len` bytes from address `src` to address `dst` (to the device when
    /// `to_device`, from it when `from_device`), queued at `queued`.
    Copy {
        dst: usize,
        src: usize,
        len: usize,
        to_device: bool,
        from_device: bool,
        queued: Instant,
    },
    /// Complete record number `n` of event `e`.
    Record { e: usize, n: u64 },
    /// Wait until record `n` of event `e` has completed.
    WaitEvent { e: usize, n: u64 },
    /// Wait until `(gate g - value) as i32 >= 0`.
    WaitGate { g: usize, value: u32 },
    /// Set gate `g` to `value`.
    WriteGate { g: usize, value: u32 },
}

#[derive(Default)]
struct State {
    /// Per stream: its queue, and whether its head command is running now.
    streams: BTreeMap<usize, (VecDeque<Cmd>, bool)>,
    /// Per event: (records made, records completed).
    events: Vec<(u64, u64)>,
    gates: Vec<u32>,
    next_stream: usize,
    stop: bool,
    /// Copies that ran, when [`FakeDeviceMemory::log_copies`] asked for them.
    copies: Option<Vec<CopyRecord>>,
    /// How long each copy takes (a fake copy engine's speed).
    copy_time: Duration,
    /// The GPU this fake claims to be (none: [`FAKE_UUID`], every fake's default).
    uuid: Option<[u8; 16]>,
    /// What the engine's FAKE kernels on this fake did ([`DeviceMemory::kernels`]).
    kernel_log: Arc<Mutex<Vec<KernelCall>>>,
}

/// A copy the FAKE device ran (see [`FakeDeviceMemory::log_copies`]).
#[derive(Clone, Debug)]
pub struct CopyRecord {
    /// To device memory (host to device, or device to device).
    pub to_device: bool,
    /// From device memory (device to host, or device to device).
    pub from_device: bool,
    /// The device address copied to (or, device to host, from).
    pub device: usize,
    /// Bytes.
    pub len: usize,
    /// When the copy was queued on its stream.
    pub queued: Instant,
    /// When it started running.
    pub started: Instant,
    /// When it ended.
    pub ended: Instant,
}

struct Inner {
    state: Mutex<State>,
    cond: Condvar,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stops the worker when the last clone of the fake is dropped.
struct Handle(Arc<Inner>);

impl Drop for Handle {
    fn drop(&mut self) {
        lock(&self.0.state).stop = true;
        self.0.cond.notify_all();
    }
}

/// The FAKE device (see the module documentation). Clones share the device.
#[derive(Clone)]
pub struct FakeDeviceMemory(Arc<Handle>);

/// A FAKE pinned buffer: ordinary host memory.
pub struct FakePinned(Vec<u8>);

impl PinnedBuffer for FakePinned {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr()
    }
}

impl Default for FakeDeviceMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeDeviceMemory {
    /// A fake device with its worker thread; stream 0 is the default stream.
    pub fn new() -> FakeDeviceMemory {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                next_stream: 1,
                ..State::default()
            }),
            cond: Condvar::new(),
        });
        let worker = inner.clone();
        std::thread::Builder::new()
            .name("dmsc-fake-gpu".into())
            .spawn(move || run(&worker))
            .expect("spawning the fake GPU's worker thread (tests only)");
        FakeDeviceMemory(Arc::new(Handle(inner)))
    }

    fn inner(&self) -> &Inner {
        &self.0 .0
    }

    fn push(&self, stream: usize, cmd: Cmd) {
        let mut s = lock(&self.inner().state);
        s.streams.entry(stream).or_default().0.push_back(cmd);
        self.inner().cond.notify_all();
    }

    /// Queue fake kernel `k` on `stream`.
    pub fn launch(&self, stream: usize, k: impl FnOnce() + Send + 'static) {
        self.push(stream, Cmd::Run(Box::new(k)));
    }

    /// Claim to be the GPU with `uuid` (every fake is the same GPU otherwise): its exports
    /// say so, and it refuses to open exports of another GPU, as CUDA IPC without peer access
    /// would. For tests of ranks on different GPUs.
    pub fn claim_gpu(&self, uuid: [u8; 16]) {
        lock(&self.inner().state).uuid = Some(uuid);
    }

    fn uuid(&self) -> [u8; 16] {
        lock(&self.inner().state).uuid.unwrap_or(FAKE_UUID)
    }

    /// How many operations the engine's FAKE kernels on this fake ran
    /// ([`DeviceMemory::kernels`]): above 0 once the engine ran a call on its buffers.
    pub fn kernel_ops(&self) -> usize {
        let log = lock(&self.inner().state).kernel_log.clone();
        let n = log.lock().unwrap_or_else(|p| p.into_inner()).len();
        n
    }

    /// From now on, make every copy take `copy_time` (a slow fake copy engine) and log the
    /// copies that run; the log so far is [`FakeDeviceMemory::copies`].
    pub fn log_copies(&self, copy_time: Duration) {
        let mut s = lock(&self.inner().state);
        s.copy_time = copy_time;
        s.copies.get_or_insert_with(Vec::new);
    }

    /// The copies run since [`FakeDeviceMemory::log_copies`], in the order they ended.
    pub fn copies(&self) -> Vec<CopyRecord> {
        lock(&self.inner().state).copies.clone().unwrap_or_default()
    }

    /// Wait until everything queued on `stream` so far has run (`cuStreamSynchronize`), or
    /// `timeout` passed (an error then, naming the stream).
    pub fn synchronize(&self, stream: usize, timeout: Duration) -> Result<()> {
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let d = done.clone();
        self.launch(stream, move || {
            *d.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
            d.1.notify_all();
        });
        let g = done.0.lock().unwrap_or_else(|p| p.into_inner());
        let (g, _) = done
            .1
            .wait_timeout_while(g, timeout, |ran| !*ran)
            .unwrap_or_else(|p| p.into_inner());
        if *g {
            Ok(())
        } else {
            Err(Error::internal(format!(
                "fake GPU: stream {stream} did not drain within {timeout:?}"
            )))
        }
    }
}

/// Whether `cmd` may run now.
fn runnable(s: &State, cmd: &Cmd) -> bool {
    match *cmd {
        Cmd::WaitEvent { e, n } => s.events[e].1 >= n,
        Cmd::WaitGate { g, value } => s.gates[g].wrapping_sub(value) as i32 >= 0,
        _ => true,
    }
}

/// The worker: runs the head command of any stream that can go on; kernels and copies run
/// outside the lock, so a long fake kernel never blocks the threads that queue work.
fn run(inner: &Inner) {
    let mut s = lock(&inner.state);
    loop {
        if s.stop {
            return;
        }
        let ready = s
            .streams
            .iter()
            .find(|(_, (q, busy))| !busy && q.front().is_some_and(|c| runnable(&s, c)))
            .map(|(&id, _)| id);
        let Some(id) = ready else {
            s = inner.cond.wait(s).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let entry = s.streams.get_mut(&id).expect("the stream just found");
        let cmd = entry.0.pop_front().expect("a head command");
        match cmd {
            Cmd::Record { e, n } => s.events[e].1 = s.events[e].1.max(n),
            Cmd::WriteGate { g, value } => s.gates[g] = value,
            Cmd::WaitEvent { .. } | Cmd::WaitGate { .. } => {}
            Cmd::Run(k) => {
                entry.1 = true;
                drop(s);
                k();
                s = lock(&inner.state);
                s.streams.get_mut(&id).expect("streams stay").1 = false;
            }
            Cmd::Copy {
                dst,
                src,
                len,
                to_device,
                from_device,
                queued,
            } => {
                entry.1 = true;
                let copy_time = s.copy_time;
                drop(s);
                let started = Instant::now();
                if !copy_time.is_zero() {
                    std::thread::sleep(copy_time);
                }
                // SAFETY: whoever queued the copy promised both ranges valid until it has
                // run (DeviceMemory::copy_to_host / copy_to_device); `ptr::copy` allows
                // overlap.
                unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, len) };
                let ended = Instant::now();
                s = lock(&inner.state);
                s.streams.get_mut(&id).expect("streams stay").1 = false;
                if let Some(log) = s.copies.as_mut() {
                    log.push(CopyRecord {
                        to_device,
                        from_device,
                        device: if to_device { dst } else { src },
                        len,
                        queued,
                        started,
                        ended,
                    });
                }
            }
        }
        inner.cond.notify_all();
    }
}

impl StreamOps for FakeDeviceMemory {
    type Stream = usize;
    type Event = usize;
    type Gate = usize;

    fn create_event(&mut self) -> Result<usize> {
        let mut s = lock(&self.inner().state);
        s.events.push((0, 0));
        Ok(s.events.len() - 1)
    }

    fn create_gate(&mut self, value: u32) -> Result<usize> {
        let mut s = lock(&self.inner().state);
        s.gates.push(value);
        Ok(s.gates.len() - 1)
    }

    fn record(&mut self, event: &usize, stream: usize) -> Result<()> {
        let n = {
            let mut s = lock(&self.inner().state);
            s.events[*event].0 += 1;
            s.events[*event].0
        };
        self.push(stream, Cmd::Record { e: *event, n });
        Ok(())
    }

    fn query(&mut self, event: &usize) -> Result<bool> {
        let s = lock(&self.inner().state);
        let (made, done) = s.events[*event];
        Ok(done >= made)
    }

    fn wait_event(&mut self, stream: usize, event: &usize) -> Result<()> {
        let n = lock(&self.inner().state).events[*event].0;
        self.push(stream, Cmd::WaitEvent { e: *event, n });
        Ok(())
    }

    fn wait_gate(&mut self, stream: usize, gate: &usize, value: u32) -> Result<()> {
        self.push(stream, Cmd::WaitGate { g: *gate, value });
        Ok(())
    }

    fn open_gate(&mut self, stream: usize, gate: &usize, value: u32) -> Result<()> {
        self.push(stream, Cmd::WriteGate { g: *gate, value });
        Ok(())
    }
}

impl DeviceMemory for FakeDeviceMemory {
    type Pinned = FakePinned;

    fn bind(&mut self) -> Result<()> {
        Ok(())
    }

    fn create_stream(&mut self) -> Result<usize> {
        let mut s = lock(&self.inner().state);
        let id = s.next_stream;
        s.next_stream += 1;
        s.streams.entry(id).or_default();
        Ok(id)
    }

    unsafe fn caller_stream(&mut self, raw: usize) -> usize {
        raw
    }

    fn alloc_pinned(&mut self, len: usize) -> Result<FakePinned> {
        Ok(FakePinned(vec![0; len]))
    }

    /// FAKE kernels: dmsc-core's recording device, running the host kernels on this fake's
    /// "device memory" (host memory) under the memory kind of CUDA device `ordinal`.
    fn kernels(&mut self, ordinal: u32) -> Result<Box<dyn Device>> {
        Ok(Box::new(RecordingDevice {
            log: lock(&self.inner().state).kernel_log.clone(),
            kind: MemKind::Cuda { device: ordinal },
        }))
    }

    unsafe fn copy_to_host(
        &mut self,
        stream: usize,
        dst: *mut u8,
        src: usize,
        len: usize,
    ) -> Result<()> {
        self.push(
            stream,
            Cmd::Copy {
                dst: dst as usize,
                src,
                len,
                to_device: false,
                from_device: true,
                queued: Instant::now(),
            },
        );
        Ok(())
    }

    unsafe fn copy_to_device(
        &mut self,
        stream: usize,
        dst: usize,
        src: *const u8,
        len: usize,
    ) -> Result<()> {
        self.push(
            stream,
            Cmd::Copy {
                dst,
                src: src as usize,
                len,
                to_device: true,
                from_device: false,
                queued: Instant::now(),
            },
        );
        Ok(())
    }
}

/// The FAKE IPC registry of this process: export `i` is the buffer `(address, len)`. Every
/// fake device is "the same GPU" (one UUID), as ranks sharing one GPU are.
static FAKE_IPC: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());
/// The first bytes of a FAKE IPC handle (a real one is the driver's opaque bytes).
const FAKE_IPC_MAGIC: &[u8; 16] = b"dmsc FAKE ipc\0\0\0";
/// The UUID every fake device claims unless told otherwise ([`FakeDeviceMemory::claim_gpu`]).
const FAKE_UUID: [u8; 16] = [0xFA; 16];

/// A peer buffer "mapped" by the FAKE IPC: the exporter's own address (ranks of a test are
/// threads of one process).
#[derive(Debug)]
pub struct FakeMapped {
    addr: usize,
    len: usize,
}

impl MappedPeer for FakeMapped {
    fn addr(&self) -> usize {
        self.addr
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl IpcMemory for FakeDeviceMemory {
    type Mapped = FakeMapped;

    fn export(&mut self, ptr: usize, len: usize) -> Result<IpcExport> {
        let device_uuid = self.uuid();
        let mut reg = FAKE_IPC.lock().unwrap_or_else(|p| p.into_inner());
        reg.push((ptr, len));
        let mut handle = [0u8; 64];
        handle[..16].copy_from_slice(FAKE_IPC_MAGIC);
        handle[16..24].copy_from_slice(&(reg.len() as u64 - 1).to_le_bytes());
        Ok(IpcExport {
            handle,
            offset: 0,
            len: len as u64,
            device_uuid,
        })
    }

    fn open_peer(&mut self, e: &IpcExport) -> Result<FakeMapped> {
        if &e.handle[..16] != FAKE_IPC_MAGIC {
            return Err(Error::invalid(
                "fake GPU: a CUDA IPC handle that the fake device did not export",
            ));
        }
        if e.device_uuid != self.uuid() {
            return Err(Error::usage(
                "fake GPU: the export is of another GPU than this one",
            ));
        }
        let id = u64::from_le_bytes(e.handle[16..24].try_into().expect("8 bytes")) as usize;
        let reg = FAKE_IPC.lock().unwrap_or_else(|p| p.into_inner());
        let Some(&(addr, len)) = reg.get(id) else {
            return Err(Error::invalid(format!(
                "fake GPU: no CUDA IPC export number {id}"
            )));
        };
        let end = e.offset.checked_add(e.len);
        if end.is_none_or(|end| end > len as u64) {
            return Err(Error::invalid(format!(
                "fake GPU: an export of {} bytes at offset {} of a {len}-byte buffer",
                e.len, e.offset
            )));
        }
        Ok(FakeMapped {
            addr: addr + e.offset as usize,
            len: e.len as usize,
        })
    }

    unsafe fn copy_device_to_device(
        &mut self,
        stream: usize,
        dst: usize,
        src: usize,
        len: usize,
    ) -> Result<()> {
        self.push(
            stream,
            Cmd::Copy {
                dst,
                src,
                len,
                to_device: true,
                from_device: true,
                queued: Instant::now(),
            },
        );
        Ok(())
    }

    fn device_uuid(&mut self) -> Result<[u8; 16]> {
        Ok(self.uuid())
    }

    fn opens_own_exports(&self) -> bool {
        true
    }

    fn reduces_on_stream(&self) -> bool {
        true
    }

    /// A fake kernel running dmsc-core's host reduction on the "device" bytes.
    unsafe fn reduce_on_stream(
        &mut self,
        stream: usize,
        dtype: DataType,
        op: ReduceOp,
        dst: usize,
        a: usize,
        b: usize,
        len: usize,
    ) -> Result<()> {
        op.check_dtype(dtype)?;
        let op = op.combiner();
        self.push(
            stream,
            Cmd::Run(Box::new(move || {
                // SAFETY: the caller's contract: the three ranges are valid until this runs;
                // the operands are copied first, so `dst` may be one of them.
                let (x, y) = unsafe {
                    (
                        std::slice::from_raw_parts(a as *const u8, len).to_vec(),
                        std::slice::from_raw_parts(b as *const u8, len).to_vec(),
                    )
                };
                let mut out = vec![0u8; len];
                match dmsc_core::reduce::reduce_into(dtype, op, &mut out, &x, &y) {
                    // SAFETY: as above.
                    Ok(()) => unsafe {
                        std::ptr::copy_nonoverlapping(out.as_ptr(), dst as *mut u8, len)
                    },
                    Err(e) => log::error!("fake GPU: a reduction kernel failed: {e}"),
                }
            })),
        );
        Ok(())
    }

    /// A fake kernel running dmsc-core's host division on the "device" bytes.
    unsafe fn divide_on_stream(
        &mut self,
        stream: usize,
        dtype: DataType,
        dst: usize,
        len: usize,
        n: usize,
    ) -> Result<()> {
        self.push(
            stream,
            Cmd::Run(Box::new(move || {
                // SAFETY: the caller's contract: `dst` holds `len` bytes until this runs.
                let d = unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, len) };
                if let Err(e) = dmsc_core::reduce::scale_div(dtype, d, n) {
                    log::error!("fake GPU: a division kernel failed: {e}");
                }
            })),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn stream_reductions_run_in_order_in_place_and_averages_divide() {
        let mut d = FakeDeviceMemory::new();
        assert!(d.reduces_on_stream());
        let s = d.create_stream().unwrap();
        let enc = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut a = enc(&[1.0, 2.0, 3.0]);
        let b = enc(&[4.0, 5.0, 6.0]);
        let c = enc(&[2.0, 9.0, 0.5]);
        let (pa, pb, pc) = (
            a.as_mut_ptr() as usize,
            b.as_ptr() as usize,
            c.as_ptr() as usize,
        );
        // SAFETY: the buffers live until the synchronize below.
        unsafe {
            // a = a + b, then a = a max c (in place, after the sum), then a /= 2.
            d.reduce_on_stream(s, DataType::Float32, ReduceOp::Sum, pa, pa, pb, 12)
                .unwrap();
            d.reduce_on_stream(s, DataType::Float32, ReduceOp::Max, pa, pc, pa, 12)
                .unwrap();
            d.divide_on_stream(s, DataType::Float32, pa, 12, 2).unwrap();
        }
        d.synchronize(s, T).unwrap();
        assert_eq!(a, enc(&[2.5, 4.5, 4.5]));
        // An operator the type has not is refused before anything is queued.
        // SAFETY: nothing is queued.
        let e = unsafe { d.reduce_on_stream(s, DataType::Float32, ReduceOp::BAnd, pa, pa, pb, 12) };
        assert!(e.is_err());
    }

    #[test]
    fn copies_and_kernels_run_in_stream_order_and_events_follow_them() {
        let mut d = FakeDeviceMemory::new();
        let s = d.create_stream().unwrap();
        let dev = Arc::new(Mutex::new(vec![0u8; 8]));
        let mut host = d.alloc_pinned(8).unwrap();
        let addr = dev.lock().unwrap().as_mut_ptr() as usize;
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // A kernel that holds the stream until released, then writes the "device" buffer.
        d.launch(s, move || {
            rx.recv_timeout(T).unwrap();
            // SAFETY: `dev` outlives the stream's work (synchronized below).
            unsafe { std::ptr::write_bytes(addr as *mut u8, 7, 8) };
        });
        // SAFETY: both buffers live until the synchronize below.
        unsafe { d.copy_to_host(s, host.as_mut_ptr(), addr, 8).unwrap() };
        let e = d.create_event().unwrap();
        d.record(&e, s).unwrap();
        assert!(
            !d.query(&e).unwrap(),
            "the event completed before the held kernel"
        );
        tx.send(()).unwrap();
        d.synchronize(s, T).unwrap();
        assert!(d.query(&e).unwrap());
        assert_eq!(
            host.0, [7; 8],
            "the copy ran before the kernel that wrote its source"
        );
        drop(dev);
    }

    #[test]
    fn logged_copies_say_direction_address_and_timing() {
        let mut d = FakeDeviceMemory::new();
        let s = d.create_stream().unwrap();
        {
            let d = &mut d;
            let mut dev = [5u8; 16];
            let mut host = d.alloc_pinned(16).unwrap();
            // Copies before the log is asked for are not logged.
            // SAFETY: both buffers live until the synchronize below.
            unsafe { d.copy_to_host(s, host.as_mut_ptr(), dev.as_ptr() as usize, 4) }.unwrap();
            d.synchronize(s, T).unwrap();
            d.log_copies(Duration::from_millis(2));
            // SAFETY: as above.
            unsafe {
                d.copy_to_host(s, host.as_mut_ptr(), dev.as_ptr() as usize + 4, 8)
                    .unwrap();
                d.copy_to_device(s, dev.as_mut_ptr() as usize, host.as_mut_ptr(), 8)
                    .unwrap();
            }
            d.synchronize(s, T).unwrap();
            let log = d.copies();
            assert_eq!(log.len(), 2, "{log:?}");
            assert!(!log[0].to_device && log[1].to_device);
            assert_eq!(log[0].device, dev.as_ptr() as usize + 4);
            assert_eq!((log[0].len, log[1].len), (8, 8));
            for r in &log {
                assert!(r.queued <= r.started && r.ended - r.started >= Duration::from_millis(2));
            }
            assert!(
                log[0].ended <= log[1].started,
                "one stream ran two copies at once"
            );
            assert_eq!(&host.0[..8], &[5; 8]);
        }
    }

    #[test]
    fn a_gate_wait_holds_its_stream_until_another_stream_opens_it() {
        let mut d = FakeDeviceMemory::new();
        let (a, b) = (d.create_stream().unwrap(), d.create_stream().unwrap());
        let g = d.create_gate(0).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        d.wait_gate(a, &g, 1).unwrap();
        let l = log.clone();
        d.launch(a, move || l.lock().unwrap().push("after the gate"));
        let l = log.clone();
        d.launch(b, move || l.lock().unwrap().push("opener"));
        d.synchronize(b, T).unwrap();
        assert_eq!(*log.lock().unwrap(), ["opener"]);
        d.open_gate(b, &g, 1).unwrap();
        d.synchronize(a, T).unwrap();
        assert_eq!(*log.lock().unwrap(), ["opener", "after the gate"]);
    }
}
