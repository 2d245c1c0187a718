//! Collectives on device buffers through the communicator, on a FAKE device
//! (`FakeDeviceMemory`: host memory pretending to be device memory, streams run in order by
//! a worker thread): every collective kind, several types and operators, on 2 and 4 ranks as
//! threads of this process over loopback TCP. Each case writes its input with a fake kernel
//! queued on the caller's stream *before* the call (slowed down, so a call that did not wait
//! for it reads stale data), and reads its output with a fake kernel queued *after* the call
//! (which sees stale data unless the stream waited for the call).

#[path = "support/device_cases.rs"]
mod cases;

use cases::{collective, every_case, Case, CaseBuf};
use dmsc::call::{Call, CollArgs, Names, Span};
use dmsc::{new_unique_id, CollKind, Communicator, Config, DataType, ReduceOp};
use dmsc_core::engine::MemKind;
use dmsc_transports::cuda::device_memory::DeviceMemory;
use dmsc_transports::cuda::fake_device::FakeDeviceMemory;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DEV: MemKind = MemKind::Cuda { device: 0 };
const T: Duration = Duration::from_secs(30);
/// Bytes per staging copy: small, so every buffer takes several chunks.
const CHUNK: usize = 40;

/// The tests that open sockets run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// "Device memory": a host allocation the fake device reads and writes by address.
#[derive(Clone)]
struct DevBuf(Arc<Mutex<Vec<u8>>>);

impl CaseBuf for DevBuf {
    fn span(&self) -> Span {
        let g = self.0.lock().unwrap();
        Span::in_memory(g.as_ptr(), g.len(), DEV)
    }
}

impl DevBuf {
    fn new(len: usize) -> DevBuf {
        DevBuf(Arc::new(Mutex::new(vec![0xEE; len])))
    }
    fn addr(&self) -> usize {
        self.0.lock().unwrap().as_ptr() as usize
    }
}

/// Queue on `stream` a fake kernel that, after a pause, writes `bytes` to `buf`.
fn write_later(dev: &FakeDeviceMemory, stream: usize, buf: &DevBuf, bytes: Vec<u8>) {
    let (addr, len) = (buf.addr(), buf.len());
    assert_eq!(bytes.len(), len);
    dev.launch(stream, move || {
        std::thread::sleep(Duration::from_millis(5));
        // SAFETY: `buf` lives until the stream is synchronized at the end of the case.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, len) };
    });
}

/// Queue on `stream` a fake kernel that reads `buf`; the bytes arrive in the returned cell.
fn read_later(dev: &FakeDeviceMemory, stream: usize, buf: &DevBuf) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let (o, addr, len) = (out.clone(), buf.addr(), buf.len());
    dev.launch(stream, move || {
        // SAFETY: as in write_later.
        let s = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
        *o.lock().unwrap() = s.to_vec();
    });
    out
}

/// Run `case` on the caller's stream `stream`: inputs written before the call, outputs read
/// after it, all by fake kernels on that stream; check every output exactly.
fn run_case(
    c: &Communicator,
    dev: &FakeDeviceMemory,
    stream: usize,
    case: Case<DevBuf>,
    what: &str,
) {
    for (buf, bytes) in &case.inputs {
        write_later(dev, stream, buf, bytes.clone());
    }
    // SAFETY: the buffers live until the stream is synchronized below, after the call.
    unsafe { c.run_call_on_stream(&case.call, stream) }.unwrap_or_else(|e| panic!("{what}: {e}"));
    let seen: Vec<_> = case
        .outputs
        .iter()
        .map(|(b, _)| read_later(dev, stream, b))
        .collect();
    dev.synchronize(stream, T)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(c.async_error().is_none(), "{what}: {:?}", c.async_error());
    for (k, ((_, want), got)) in case.outputs.iter().zip(seen).enumerate() {
        let got = got.lock().unwrap();
        assert!(
            *got == *want,
            "{what}: output {k} on rank {}: got {:?}..., want {:?}...",
            c.rank(),
            &got[..got.len().min(16)],
            &want[..want.len().min(16)]
        );
    }
}

/// Rank `r` of `n` on loopback, with a fake device attached.
fn ranks(n: usize, body: impl Fn(&Communicator, &mut FakeDeviceMemory) + Send + Sync + 'static) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    ranks_locked(n, body);
}

/// As [`ranks`], with `DMSC_CUDA_IPC` set to `ipc` while the communicators start.
fn ranks_with_ipc(
    n: usize,
    ipc: &str,
    body: impl Fn(&Communicator, &mut FakeDeviceMemory) + Send + Sync + 'static,
) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("DMSC_CUDA_IPC", ipc);
    ranks_locked(n, body);
    std::env::remove_var("DMSC_CUDA_IPC");
}

fn ranks_locked(
    n: usize,
    body: impl Fn(&Communicator, &mut FakeDeviceMemory) + Send + Sync + 'static,
) {
    ranks_prepared(n, |_, _| {}, body);
}

/// As [`ranks`] (the caller holds `SERIAL`), with `prepare` run on each rank's fake device
/// before it is attached.
fn ranks_prepared(
    n: usize,
    prepare: impl Fn(usize, &FakeDeviceMemory) + Send + Sync + 'static,
    body: impl Fn(&Communicator, &mut FakeDeviceMemory) + Send + Sync + 'static,
) {
    ranks_configured(n, |_, _| {}, prepare, body);
}

/// As [`ranks_prepared`], with `configure` applied to each rank's configuration first.
fn ranks_configured(
    n: usize,
    configure: impl Fn(usize, &mut Config) + Send + Sync + 'static,
    prepare: impl Fn(usize, &FakeDeviceMemory) + Send + Sync + 'static,
    body: impl Fn(&Communicator, &mut FakeDeviceMemory) + Send + Sync + 'static,
) {
    let configure = Arc::new(configure);
    let prepare = Arc::new(prepare);
    std::env::set_var("DMSC_SOCKET_IFNAME", "lo");
    let id = new_unique_id().expect("unique id");
    let body = Arc::new(body);
    let hs: Vec<_> = (0..n)
        .map(|r| {
            let body = body.clone();
            let prepare = prepare.clone();
            let configure = configure.clone();
            std::thread::spawn(move || {
                let mut cfg = Config {
                    socket_ifname: Some("lo".into()),
                    ..Config::default()
                };
                cfg.engine.timeout = T;
                configure(r, &mut cfg);
                let c = Communicator::init_with_id(&id, r, n, cfg).expect("init");
                let mut dev = FakeDeviceMemory::new();
                prepare(r, &dev);
                c.use_device_memory(0, dev.clone(), CHUNK)
                    .expect("attach the fake device");
                body(&c, &mut dev);
            })
        })
        .collect();
    for h in hs {
        h.join().expect("a rank failed");
    }
}

/// Every case on `n` ranks, with `DMSC_CUDA_IPC` set to `ipc` ("1": the kinds it covers run
/// over the fake CUDA IPC, as all ranks are on this host; "0": everything is staged).
fn every_collective(n: usize, ipc: &str) {
    ranks_with_ipc(n, ipc, move |c, dev| {
        let stream = dev.create_stream().unwrap();
        let cases = every_case(c, &mut DevBuf::new);
        let count = cases.len();
        for (what, case) in cases {
            run_case(c, dev, stream, case, &format!("{what} on {n} ranks"));
        }
        if c.rank() == 0 {
            eprintln!("{count} device-buffer cases passed on {n} ranks (fake device)");
        }
    });
}

#[test]
fn every_collective_on_fake_device_buffers_on_2_ranks() {
    every_collective(2, "1");
}

#[test]
fn every_collective_staged_through_host_memory_on_2_and_4_ranks() {
    every_collective(2, "0");
    every_collective(4, "0");
}

#[test]
fn every_collective_on_fake_device_buffers_on_4_ranks() {
    every_collective(4, "1");
}

#[test]
fn the_calling_thread_is_not_blocked_by_the_callers_stream() {
    ranks(2, |c, dev| {
        let stream = dev.create_stream().unwrap();
        // A kernel holds the caller's stream until this thread has returned from the call.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(None));
        let rel = released.clone();
        dev.launch(stream, move || {
            *rel.lock().unwrap() = Some(rx.recv_timeout(Duration::from_secs(10)).is_ok());
        });
        let case = collective(
            c,
            CollKind::AllReduce,
            DataType::Float32,
            ReduceOp::Sum,
            &mut DevBuf::new,
        );
        for (buf, bytes) in &case.inputs {
            write_later(dev, stream, buf, bytes.clone());
        }
        // SAFETY: the buffers live until the stream is synchronized below.
        unsafe { c.run_call_on_stream(&case.call, stream) }.expect("submit");
        tx.send(()).expect("the held kernel is waiting");
        let seen = read_later(dev, stream, &case.outputs[0].0);
        dev.synchronize(stream, T).unwrap();
        assert_eq!(
            *released.lock().unwrap(),
            Some(true),
            "the call returned only after the caller's stream had run past the held kernel"
        );
        assert!(*seen.lock().unwrap() == case.outputs[0].1);
        // A host call after the device call runs after it on every rank.
        let mut v = vec![c.rank() as i64 + 1; 5];
        c.all_reduce_in_place(&mut v, ReduceOp::Sum)
            .expect("host all_reduce after a device one");
        assert_eq!(v, [3; 5]);
    });
}

#[test]
fn a_blocking_call_and_a_request_on_device_buffers_complete_with_the_data() {
    ranks(2, |c, dev| {
        // run_call: on the default stream (0), waited for.
        let case = collective(
            c,
            CollKind::AllGather,
            DataType::Int64,
            ReduceOp::Sum,
            &mut DevBuf::new,
        );
        let (buf, bytes) = &case.inputs[0];
        write_later(dev, 0, buf, bytes.clone());
        // SAFETY: the buffers live past the call, which waits.
        unsafe { c.run_call(&case.call) }.expect("run_call on device buffers");
        assert!(*case.outputs[0].0 .0.lock().unwrap() == case.outputs[0].1);
        // start_call: the request completes once the data is back in device memory.
        let case = collective(
            c,
            CollKind::AllReduce,
            DataType::Float32,
            ReduceOp::Max,
            &mut DevBuf::new,
        );
        let (buf, bytes) = &case.inputs[0];
        write_later(dev, 0, buf, bytes.clone());
        // SAFETY: the buffers outlive the request, waited for here.
        let req = unsafe { c.start_call(&case.call) };
        req.wait().expect("the request");
        assert!(*case.outputs[0].0 .0.lock().unwrap() == case.outputs[0].1);
        // start_call_on_stream: ordered on the caller's stream, completed with the data.
        let stream = dev.create_stream().unwrap();
        let case = collective(
            c,
            CollKind::ReduceScatter,
            DataType::Float64,
            ReduceOp::Min,
            &mut DevBuf::new,
        );
        let (buf, bytes) = &case.inputs[0];
        write_later(dev, stream, buf, bytes.clone());
        // SAFETY: the buffers outlive the request, waited for here.
        let req = unsafe { c.start_call_on_stream(&case.call, stream) };
        let seen = read_later(dev, stream, &case.outputs[0].0);
        req.wait().expect("the request on a stream");
        assert!(*case.outputs[0].0 .0.lock().unwrap() == case.outputs[0].1);
        dev.synchronize(stream, T).unwrap();
        assert!(*seen.lock().unwrap() == case.outputs[0].1);
    });
}

#[test]
fn a_failed_device_call_releases_the_stream_and_reports_the_error() {
    ranks(2, |c, dev| {
        let stream = dev.create_stream().unwrap();
        let case = collective(
            c,
            CollKind::AllReduce,
            DataType::Float32,
            ReduceOp::Sum,
            &mut DevBuf::new,
        );
        if c.rank() == 0 {
            c.abort();
            // SAFETY: the buffers live until the stream is synchronized below.
            match unsafe { c.run_call_on_stream(&case.call, stream) } {
                // Refused at once, or failed on the staging thread: either way the error is
                // the communicator's now, and the stream is not held.
                Ok(()) | Err(_) => {}
            }
            let after = read_later(dev, stream, &case.outputs[0].0);
            dev.synchronize(stream, T)
                .expect("the stream was left waiting on a failed call");
            assert!(!after.lock().unwrap().is_empty());
            assert!(c.async_error().is_some(), "the failure was not reported");
            // A request on device buffers carries the failure too.
            let case = collective(
                c,
                CollKind::AllReduce,
                DataType::Float32,
                ReduceOp::Sum,
                &mut DevBuf::new,
            );
            // SAFETY: the buffers outlive the request, waited for here.
            let req = unsafe { c.start_call(&case.call) };
            assert!(
                req.wait().is_err(),
                "a device call on an aborted communicator succeeded"
            );
        }
    });
}

#[test]
fn a_call_on_another_device_than_the_one_served_names_both() {
    ranks(1, |c, _dev| {
        let b = DevBuf::new(64);
        let other = Span::in_memory(b.span().ptr, 64, MemKind::Cuda { device: 3 });
        let args = CollArgs {
            kind: CollKind::AllReduce,
            dtype: DataType::Float32,
            op: ReduceOp::Sum,
            root: 0,
            input: None,
            output: other,
            count: None,
            factor: None,
        };
        let call = Call::collective(c.shape(), args, &Names::RUST).unwrap();
        // SAFETY: refused before any access.
        let e = unsafe { c.run_call_on_stream(&call, 0) }
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CUDA device 3") && e.contains("serves CUDA device 0"),
            "{e}"
        );
    });
}

#[test]
fn staging_is_pipelined_the_copy_of_the_next_piece_overlaps_the_transfer_of_this_one() {
    ranks_with_ipc(2, "0", |c, dev| {
        let stream = dev.create_stream().unwrap();
        // A slow fake copy engine, so each copy takes longer than the loopback transfer.
        dev.log_copies(Duration::from_millis(3));
        // 37 float64 elements in chunks of 40 bytes: 8 pieces of 5 elements (the last 2).
        let case = collective(
            c,
            CollKind::AllReduce,
            DataType::Float64,
            ReduceOp::Sum,
            &mut DevBuf::new,
        );
        let (inp, out) = (case.inputs[0].0.addr(), case.outputs[0].0.addr());
        run_case(c, dev, stream, case, "a pipelined all-reduce");
        let copies = dev.copies();
        let of = |base: usize, to_device: bool| {
            let mut v: Vec<_> = copies
                .iter()
                .filter(|r| r.to_device == to_device && (base..base + 37 * 8).contains(&r.device))
                .cloned()
                .collect();
            v.sort_by_key(|r| r.device);
            v
        };
        let (d2h, h2d) = (of(inp, false), of(out, true));
        // Chunked: one copy per piece and buffer, each at most a chunk, tiling the buffer.
        assert_eq!(d2h.len(), 8, "{d2h:?}");
        assert_eq!(h2d.len(), 8, "{h2d:?}");
        for (k, (a, b)) in d2h.iter().zip(&h2d).enumerate() {
            assert_eq!((a.device - inp, b.device - out), (k * 40, k * 40));
            assert_eq!((a.len, b.len), (if k < 7 { 40 } else { 16 }, a.len));
        }
        // Overlapped: piece 1's device-to-host copy started before piece 0's transfer was
        // complete (its copy back is queued the moment the staging sees the transfer done) ...
        assert!(
            d2h[1].started < h2d[0].queued,
            "piece 1 was copied only after piece 0 had crossed the network"
        );
        // ... and not staged whole: piece 0 had crossed the network and was on its way back
        // before the last piece was copied off the device.
        assert!(
            h2d[0].queued < d2h[7].started,
            "the whole buffer was staged before the collective started"
        );
    });
}

#[test]
fn in_place_calls_cut_into_pieces_are_exact_on_3_ranks() {
    use cases::{enc, reduce, val, C};
    ranks_with_ipc(3, "0", |c, dev| {
        let stream = dev.create_stream().unwrap();
        let (r, n) = (c.rank(), c.size());
        for kind in [CollKind::AllReduce, CollKind::Broadcast] {
            for dt in [DataType::Float32, DataType::Float16, DataType::Int32] {
                let buf = DevBuf::new(C * dt.size());
                let mine: Vec<f64> = (0..C).map(|i| val(r, i)).collect();
                let want: Vec<f64> = match kind {
                    CollKind::AllReduce => (0..C)
                        .map(|i| reduce(ReduceOp::Sum, (0..n).map(|q| val(q, i))))
                        .collect(),
                    _ => (0..C).map(|i| val(1, i)).collect(),
                };
                let args = CollArgs {
                    kind,
                    dtype: dt,
                    op: ReduceOp::Sum,
                    root: 1,
                    input: None,
                    output: buf.span(),
                    count: None,
                    factor: None,
                };
                let call = Call::collective(c.shape(), args, &Names::RUST).unwrap();
                let case = Case {
                    call,
                    inputs: vec![(buf.clone(), enc(dt, &mine))],
                    outputs: vec![(buf, enc(dt, &want))],
                };
                run_case(c, dev, stream, case, &format!("in-place {kind} {dt:?}"));
            }
        }
    });
}

/// dmsc-perf's device memory as a FAKE: [`DevBuf`]s ("device memory" the fake device reads
/// and writes), uploaded and downloaded by fake kernels on the default stream, waited for.
struct FakePerfDevice(FakeDeviceMemory);

struct FakePerfBuf(DevBuf, FakeDeviceMemory);

impl dmsc::perf::device::PerfDevice for FakePerfDevice {
    fn describe(&self) -> String {
        "fake cuda device 0".into()
    }
    fn alloc(&mut self, len: usize) -> dmsc::Result<Box<dyn dmsc::perf::device::PerfDeviceBuf>> {
        Ok(Box::new(FakePerfBuf(DevBuf::new(len), self.0.clone())))
    }
}

impl dmsc::perf::device::PerfDeviceBuf for FakePerfBuf {
    fn span(&self) -> Span {
        self.0.span()
    }
    fn upload(&mut self, src: &[u8]) -> dmsc::Result<()> {
        write_later(&self.1, 0, &self.0, src.to_vec());
        self.1.synchronize(0, T)
    }
    fn download(&self, dst: &mut [u8]) -> dmsc::Result<()> {
        let got = read_later(&self.1, 0, &self.0);
        self.1.synchronize(0, T)?;
        dst.copy_from_slice(&got.lock().unwrap());
        Ok(())
    }
}

#[test]
fn dmsc_perf_measures_and_checks_collectives_on_fake_device_buffers() {
    use dmsc::perf::{args::Options, run::benchmark_on, PerfOp};
    ranks_with_ipc(2, "0", |c, dev| {
        dev.log_copies(Duration::ZERO);
        for op in [PerfOp::AllReduce, PerfOp::AllGather, PerfOp::Broadcast] {
            for blocking in [false, true] {
                let mut o = Options::defaults(op);
                (o.min_bytes, o.max_bytes) = (64, 1024);
                (o.iters, o.warmup, o.check, o.agg_iters) = (2, 1, 1, 2);
                o.blocking = blocking;
                let mut fake = FakePerfDevice(dev.clone());
                let s = benchmark_on(c, &o, &mut std::io::sink(), Some(&mut fake))
                    .unwrap_or_else(|e| panic!("{op} blocking {blocking}: {e}"));
                assert_eq!(s.wrong_total, 0, "{op} blocking {blocking}");
                // 64 B to 1 KiB by factor 2, out of place and in place.
                assert_eq!(s.runs[0].rows.len(), 10, "{op}");
            }
        }
        // The measured calls went through the device staging: it copied device buffers.
        assert!(dev.copies().iter().any(|r| !r.to_device));
        // Collectives that dmsc-perf runs as groups stay on host buffers, and say so.
        let o = Options::defaults(PerfOp::Gather);
        let mut fake = FakePerfDevice(dev.clone());
        let e = benchmark_on(c, &o, &mut std::io::sink(), Some(&mut fake)).unwrap_err();
        assert!(e.to_string().contains("--device cuda") && e.to_string().contains("gather"));
    });
}

/// An all-gather's data movement over CUDA IPC on the FAKE device (its IPC is a FAKE too):
/// every rank exports its device buffer, the exports travel through the communicator (an
/// all-gather of host bytes, as NCCL's bootstrap exchanges them), every rank opens its peers'
/// and copies their ranges device to device into its own buffer.
fn ipc_all_gather(n: usize) {
    use dmsc_transports::cuda::ipc_handle::ENCODED_LEN;
    use dmsc_transports::cuda::ipc_memory::{IpcMemory, IpcPeers};
    ranks(n, |c, dev| {
        let (r, n) = (c.rank(), c.size());
        let stream = dev.create_stream().unwrap();
        let mine = DevBuf::new(64);
        write_later(
            dev,
            stream,
            &mine,
            (0..64).map(|i| (r * 64 + i) as u8).collect(),
        );
        dev.synchronize(stream, T).unwrap();
        let e = dev.export(mine.addr(), 64).unwrap().to_bytes();
        let mut all = vec![0u8; n * ENCODED_LEN];
        c.collective_bytes(
            CollKind::AllGather,
            Some(&e),
            &mut all,
            ENCODED_LEN,
            DataType::Uint8,
            ReduceOp::Sum,
            0,
        )
        .unwrap();
        let exports: Vec<Vec<u8>> = all.chunks(ENCODED_LEN).map(<[u8]>::to_vec).collect();
        let peers = IpcPeers::open(dev, r, &exports).unwrap();
        assert!(peers.peer(r).is_none());
        let out = DevBuf::new(n * 16);
        dev.log_copies(Duration::ZERO);
        // SAFETY: `out` and `mine` live until the stream is synchronized below, and every
        // rank keeps its buffer until all have copied (the barrier below).
        unsafe { peers.gather(dev, stream, mine.addr(), 16..32, out.addr()) }.unwrap();
        let got = read_later(dev, stream, &out);
        dev.synchronize(stream, T).unwrap();
        let want: Vec<u8> = (0..n)
            .flat_map(|q| (16..32).map(move |i| (q * 64 + i) as u8))
            .collect();
        assert_eq!(*got.lock().unwrap(), want, "rank {r}");
        let copies = dev.copies();
        assert_eq!(copies.len(), n, "{copies:?}");
        assert!(copies
            .iter()
            .all(|k| k.to_device && k.from_device && k.len == 16));
        // A range past a peer's buffer is refused naming the rank.
        let e = unsafe { peers.gather(dev, stream, mine.addr(), 60..70, out.addr()) }
            .unwrap_err()
            .to_string();
        assert!(e.contains("of rank") && e.contains("64 bytes"), "{e}");
        c.barrier().unwrap();
        drop(mine);
    });
}

#[test]
fn an_all_gather_over_fake_cuda_ipc_on_2_and_4_ranks() {
    ipc_all_gather(2);
    ipc_all_gather(4);
}

#[test]
fn fake_cuda_ipc_refuses_bad_exchanges_naming_the_rank() {
    use dmsc_transports::cuda::ipc_handle::{IpcExport, ENCODED_LEN};
    use dmsc_transports::cuda::ipc_memory::{IpcMemory, IpcPeers};
    let mut dev = FakeDeviceMemory::new();
    let b = DevBuf::new(8);
    let good = dev.export(b.addr(), 8).unwrap().to_bytes().to_vec();
    let short = vec![0u8; ENCODED_LEN - 1];
    let e = IpcPeers::open(&mut dev, 0, &[good.clone(), short])
        .err()
        .unwrap();
    assert!(e.to_string().contains("rank 1 sent 95 bytes"), "{e}");
    let foreign = IpcExport {
        handle: [1; 64],
        offset: 0,
        len: 8,
        device_uuid: [0xFA; 16],
    }
    .to_bytes()
    .to_vec();
    let e = IpcPeers::open(&mut dev, 0, &[good.clone(), foreign])
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("rank 1") && e.to_string().contains("did not export"),
        "{e}"
    );
    let e = IpcPeers::open(&mut dev, 2, &[good]).err().unwrap();
    assert!(e.to_string().contains("rank 2 is not among 1"), "{e}");
}

/// Every all-gather and broadcast case (several types, in place and not), on 2 and 4 ranks,
/// exact; with `ipc` "1" the FAKE device ran only device-to-device copies (CUDA IPC: no
/// payload through host memory), with "0" the staged path's device-to-host and host-to-device
/// copies.
fn ipc_cases(n: usize, ipc: &str) {
    let ipc_on = ipc == "1";
    ranks_with_ipc(n, ipc, move |c, dev| {
        assert!(
            c.peer_transports()
                .iter()
                .all(|t| *t == "self" || t.starts_with("shm")),
            "{:?}",
            c.peer_transports()
        );
        let stream = dev.create_stream().unwrap();
        for (dt, ops) in cases::types_and_ops() {
            let mut kinds: Vec<(CollKind, ReduceOp)> = vec![
                (CollKind::AllGather, ReduceOp::Sum),
                (CollKind::Broadcast, ReduceOp::Sum),
            ];
            for kind in [
                CollKind::AllReduce,
                CollKind::ReduceScatter,
                CollKind::Reduce,
            ] {
                kinds.extend(ops.iter().map(|&op| (kind, op)));
            }
            for (kind, op) in kinds {
                let case = collective(c, kind, dt, op, &mut DevBuf::new);
                dev.log_copies(Duration::ZERO);
                let seen = dev.copies().len();
                run_case(
                    c,
                    dev,
                    stream,
                    case,
                    &format!("{kind} {dt:?} {op:?} on {n} ranks"),
                );
                let copies = dev.copies().split_off(seen);
                let d2d = copies.iter().filter(|k| k.to_device && k.from_device);
                // A reduce-scatter or reduce over IPC copies nothing: its kernels read the
                // peers' inputs where they are.
                let copying = matches!(
                    kind,
                    CollKind::AllGather | CollKind::Broadcast | CollKind::AllReduce
                );
                if ipc_on {
                    assert!(
                        copying != copies.is_empty() && d2d.count() == copies.len(),
                        "{kind} {dt:?}: not device to device only: {copies:?}"
                    );
                } else {
                    assert!(
                        d2d.count() == 0 && !copies.is_empty(),
                        "{kind} {dt:?}: DMSC_CUDA_IPC=0 did not stage: {copies:?}"
                    );
                }
            }
        }
        // In place, with a count of 5 (odd, not a power of two): the rank's own block is
        // not copied, only the peers'.
        let (r, size) = (c.rank(), c.size());
        let out = DevBuf::new(size * 5 * 4);
        let want: Vec<u8> = (0..size * 5)
            .flat_map(|j| (j as u32 * 3 + 1).to_le_bytes())
            .collect();
        let mut before = vec![0xEEu8; size * 20];
        before[r * 20..(r + 1) * 20].copy_from_slice(&want[r * 20..(r + 1) * 20]);
        let args = CollArgs {
            kind: CollKind::AllGather,
            dtype: DataType::Int32,
            op: ReduceOp::Sum,
            root: 0,
            input: Some(Span::in_memory((out.addr() + r * 20) as *const u8, 20, DEV)),
            output: out.span(),
            count: None,
            factor: None,
        };
        let call = Call::collective(c.shape(), args, &Names::RUST).unwrap();
        let case = Case {
            call,
            inputs: vec![(out.clone(), before)],
            outputs: vec![(out.clone(), want)],
        };
        let seen = dev.copies().len();
        run_case(
            c,
            dev,
            stream,
            case,
            &format!("in-place all_gather on {n} ranks"),
        );
        if ipc_on {
            let copies = dev.copies().split_off(seen);
            assert_eq!(copies.len(), size - 1, "{copies:?}");
            assert!(copies
                .iter()
                .all(|k| k.to_device && k.from_device && k.len == 20));
        }
    });
}

#[test]
fn covered_collectives_run_device_to_device_over_fake_cuda_ipc_on_2_and_4_ranks() {
    ipc_cases(2, "1");
    ipc_cases(4, "1");
}

#[test]
fn dmsc_cuda_ipc_0_stages_every_collective_through_host_memory() {
    ipc_cases(2, "0");
}

/// Wait (bounded) for the communicator's asynchronous error.
fn async_error_soon(c: &Communicator) -> String {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(e) = c.async_error() {
            return e.to_string();
        }
        assert!(t0.elapsed() < T, "rank {}: no error reported", c.rank());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn mismatched_calls_over_fake_cuda_ipc_fail_on_every_rank_and_never_hang() {
    // Rank 0 gathers 8 elements per rank, rank 1 only 4: rank 0 would read past rank 1's
    // export, refuses, and both ranks learn it from the status exchange.
    ranks_with_ipc(2, "1", |c, dev| {
        let stream = dev.create_stream().unwrap();
        let count = if c.rank() == 0 { 8 } else { 4 };
        let (input, output) = (DevBuf::new(count * 4), DevBuf::new(2 * count * 4));
        let args = CollArgs {
            kind: CollKind::AllGather,
            dtype: DataType::Float32,
            op: ReduceOp::Sum,
            root: 0,
            input: Some(input.span()),
            output: output.span(),
            count: None,
            factor: None,
        };
        let call = Call::collective(c.shape(), args, &Names::RUST).unwrap();
        // SAFETY: the buffers live until the stream is synchronized below.
        unsafe { c.run_call_on_stream(&call, stream) }.unwrap();
        dev.synchronize(stream, T)
            .expect("the stream was left waiting on a failed call");
        let e = async_error_soon(c);
        if c.rank() == 0 {
            assert!(e.contains("rank 1") && e.contains("16 bytes"), "{e}");
        } else {
            assert!(e.contains("rank(s) [0]"), "{e}");
        }
    });
    // Ranks that disagree on a broadcast's root: each waits for the other's export, which
    // never comes; both fail naming the rank.
    ranks_with_ipc(2, "1", |c, dev| {
        let stream = dev.create_stream().unwrap();
        let buf = DevBuf::new(64);
        let args = CollArgs {
            kind: CollKind::Broadcast,
            dtype: DataType::Uint8,
            op: ReduceOp::Sum,
            root: 1 - c.rank(),
            input: Some(buf.span()),
            output: buf.span(),
            count: None,
            factor: None,
        };
        let call = Call::collective(c.shape(), args, &Names::RUST).unwrap();
        // SAFETY: as above.
        unsafe { c.run_call_on_stream(&call, stream) }.unwrap();
        dev.synchronize(stream, T)
            .expect("the stream was left waiting on a failed call");
        let e = async_error_soon(c);
        assert!(
            e.contains(&format!("rank {} sent no export", 1 - c.rank())),
            "{e}"
        );
    });
}

/// In-place all-reduces over the fake CUDA IPC, 37 elements (slices of unequal length on 3 and
/// 4 ranks), every operator including average: exact, and only the peers' slices are copied
/// (device to device), the rest being reduction kernels on the peers' inputs.
fn ipc_all_reduce_in_place(n: usize) {
    use cases::{enc, reduce, val};
    ranks_with_ipc(n, "1", move |c, dev| {
        let (r, n) = (c.rank(), c.size());
        let stream = dev.create_stream().unwrap();
        let count = 37;
        for dt in [DataType::Float32, DataType::Int32, DataType::Float64] {
            for op in [
                ReduceOp::Sum,
                ReduceOp::Avg,
                ReduceOp::Prod,
                ReduceOp::Max,
                ReduceOp::Min,
            ] {
                let buf = DevBuf::new(count * dt.size());
                let mine: Vec<f64> = (0..count).map(|i| val(r, i)).collect();
                let want: Vec<f64> = (0..count)
                    .map(|i| match op {
                        ReduceOp::Avg => (0..n).map(|q| val(q, i)).sum::<f64>() / n as f64,
                        op => reduce(op, (0..n).map(|q| val(q, i))),
                    })
                    .collect();
                let args = CollArgs {
                    kind: CollKind::AllReduce,
                    dtype: dt,
                    op,
                    root: 0,
                    input: None,
                    output: buf.span(),
                    count: None,
                    factor: None,
                };
                let call = Call::collective(c.shape(), args, &Names::RUST).unwrap();
                let case = Case {
                    call,
                    inputs: vec![(buf.clone(), enc(dt, &mine))],
                    outputs: vec![(buf.clone(), enc(dt, &want))],
                };
                dev.log_copies(Duration::ZERO);
                let seen = dev.copies().len();
                let what = format!("in-place all_reduce {dt:?} {op:?} on {n} ranks");
                run_case(c, dev, stream, case, &what);
                let copies = dev.copies().split_off(seen);
                assert_eq!(copies.len(), n - 1, "{what}: {copies:?}");
                assert!(
                    copies.iter().all(|k| k.to_device && k.from_device),
                    "{what}: {copies:?}"
                );
            }
        }
    });
}

#[test]
fn in_place_all_reduces_over_fake_cuda_ipc_with_every_operator_on_2_3_and_4_ranks() {
    ipc_all_reduce_in_place(2);
    ipc_all_reduce_in_place(3);
    ipc_all_reduce_in_place(4);
}

/// In-place reduce-scatters (the result in this rank's block of the one buffer) and reduces
/// (the root in place, the others not: each rank's own choice) over the fake CUDA IPC on 3
/// ranks: exact, and nothing staged through host memory.
#[test]
fn in_place_reduce_scatter_and_reduce_over_fake_cuda_ipc_on_3_ranks() {
    use cases::{enc, reduce, val};
    ranks_with_ipc(3, "1", |c, dev| {
        let (r, n) = (c.rank(), c.size());
        let stream = dev.create_stream().unwrap();
        let (count, dt) = (11, DataType::Float32);
        for op in [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Max] {
            dev.log_copies(Duration::ZERO);
            let seen = dev.copies().len();
            // Reduce-scatter in place: rank r's result lands in block r of its buffer; the
            // other blocks keep its input.
            let buf = DevBuf::new(n * count * 4);
            let mine: Vec<f64> = (0..n * count).map(|i| val(r, i)).collect();
            let mut want = mine.clone();
            for i in 0..count {
                want[r * count + i] = reduce(op, (0..n).map(|q| val(q, r * count + i)));
            }
            let args = CollArgs {
                kind: CollKind::ReduceScatter,
                dtype: dt,
                op,
                root: 0,
                input: Some(Span::in_memory(
                    (buf.addr() + r * count * 4) as *const u8,
                    count * 4,
                    DEV,
                )),
                output: buf.span(),
                count: Some(count),
                factor: None,
            };
            // NCCL's in-place layout: the output is the input's block of this rank.
            let args = CollArgs {
                input: Some(buf.span()),
                output: args.input.unwrap(),
                ..args
            };
            let call = Call::collective(c.shape(), args, &Names::RUST).unwrap();
            let case = Case {
                call,
                inputs: vec![(buf.clone(), enc(dt, &mine))],
                outputs: vec![(buf.clone(), enc(dt, &want))],
            };
            run_case(
                c,
                dev,
                stream,
                case,
                &format!("in-place reduce_scatter {op:?}"),
            );
            // Reduce to root 1, in place there, out of place elsewhere.
            let buf = DevBuf::new(count * 4);
            let out = DevBuf::new(count * 4);
            let mine: Vec<f64> = (0..count).map(|i| val(r, i)).collect();
            let root = 1;
            let args = CollArgs {
                kind: CollKind::Reduce,
                dtype: dt,
                op,
                root,
                input: Some(buf.span()),
                output: if r == root { buf.span() } else { out.span() },
                count: Some(count),
                factor: None,
            };
            let call = Call::collective(c.shape(), args, &Names::RUST).unwrap();
            let want = if r == root {
                enc(
                    dt,
                    &(0..count)
                        .map(|i| reduce(op, (0..n).map(|q| val(q, i))))
                        .collect::<Vec<_>>(),
                )
            } else {
                enc(dt, &mine)
            };
            let case = Case {
                call,
                inputs: vec![(buf.clone(), enc(dt, &mine))],
                outputs: vec![(buf.clone(), want)],
            };
            run_case(
                c,
                dev,
                stream,
                case,
                &format!("reduce {op:?}, root in place"),
            );
            let copies = dev.copies().split_off(seen);
            assert!(
                copies.iter().all(|k| k.to_device && k.from_device),
                "staged: {copies:?}"
            );
        }
    });
}

/// Ranks whose buffers are on different GPUs (FAKE devices claiming two UUIDs) agree at
/// attach not to use CUDA IPC: their calls stage through host memory, exactly.
#[test]
fn ranks_on_different_gpus_stage_instead_of_cuda_ipc() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    ranks_prepared(
        2,
        |r, dev| dev.claim_gpu([r as u8 + 1; 16]),
        |c, dev| {
            let stream = dev.create_stream().unwrap();
            for kind in [CollKind::AllGather, CollKind::AllReduce] {
                let case = collective(c, kind, DataType::Float32, ReduceOp::Sum, &mut DevBuf::new);
                dev.log_copies(Duration::ZERO);
                let seen = dev.copies().len();
                run_case(c, dev, stream, case, &format!("{kind} on two GPUs"));
                let copies = dev.copies().split_off(seen);
                assert!(
                    !copies.is_empty() && copies.iter().all(|k| !(k.to_device && k.from_device)),
                    "{kind}: not staged: {copies:?}"
                );
            }
        },
    );
}

/// Ranks as threads over RDMA on the FAKE fabric, whose FAKE dma-buf exporter lets it carry
/// the FAKE device's "GPU memory" (host memory), with `DMSC_CUDA_DIRECT` set to `direct`
/// while the devices are attached and every copy of the fake logged.
fn ranks_over_fake_rdma(
    n: usize,
    direct: &str,
    body: impl Fn(&Communicator, &mut FakeDeviceMemory) + Send + Sync + 'static,
) {
    use dmsc_transports::rdma::fake::FakeFabric;
    use dmsc_transports::rdma::fake_dmabuf::FakeDmabuf;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("DMSC_CUDA_DIRECT", direct);
    let fabric = FakeFabric::new(n);
    let configure = move |r: usize, cfg: &mut Config| {
        cfg.transport = dmsc_transports::connect::Choice::Rdma;
        cfg.shm = false;
        cfg.cma = false;
        cfg.verbs = Some(dmsc::VerbsSetup {
            provider: Arc::new(fabric.provider(&[r])),
            dmabuf: Some(Arc::new(|| Ok(Box::new(FakeDmabuf { refuse: false }) as _))),
        });
    };
    ranks_configured(n, configure, |_, dev| dev.log_copies(Duration::ZERO), body);
    std::env::remove_var("DMSC_CUDA_DIRECT");
}

/// Copies between the fake device's memory and host memory (staging's), as opposed to
/// copies within the device.
fn host_copies(dev: &FakeDeviceMemory) -> usize {
    dev.copies()
        .iter()
        .filter(|c| c.to_device != c.from_device)
        .count()
}

/// Every case on `n` ranks over the FAKE RDMA transport; with `direct` the collectives run
/// on the device buffers themselves (the fake's kernels, no copy through host memory) and
/// send/recv groups with sends to the rank itself stage; without, everything stages.
fn over_fake_rdma(n: usize, direct: bool) {
    ranks_over_fake_rdma(n, if direct { "1" } else { "0" }, move |c, dev| {
        assert_eq!(c.peer_transports()[(c.rank() + 1) % n], "rdma");
        let stream = dev.create_stream().unwrap();
        let (p2p, collectives): (Vec<_>, Vec<_>) = every_case(c, &mut DevBuf::new)
            .into_iter()
            .partition(|(what, _)| what.starts_with("send/recv"));
        assert!(!collectives.is_empty() && !p2p.is_empty());
        for (what, case) in collectives {
            run_case(
                c,
                dev,
                stream,
                case,
                &format!("{what} on {n} ranks over fake RDMA"),
            );
        }
        let (copies, kernels) = (host_copies(dev), dev.kernel_ops());
        if direct {
            assert_eq!(copies, 0, "rank {}: a collective was staged", c.rank());
            assert!(
                kernels > 0,
                "rank {}: the engine never used the kernels",
                c.rank()
            );
        } else {
            assert!(copies > 0, "rank {}: nothing was staged", c.rank());
            assert_eq!(
                kernels,
                0,
                "rank {}: DMSC_CUDA_DIRECT=0 ran kernels",
                c.rank()
            );
        }
        for (what, case) in p2p {
            run_case(
                c,
                dev,
                stream,
                case,
                &format!("{what} on {n} ranks over fake RDMA"),
            );
        }
        // Sends to this rank itself are copied by the host: the group stages.
        assert!(
            host_copies(dev) > copies,
            "rank {}: the group did not stage",
            c.rank()
        );
    });
}

#[test]
fn collectives_run_on_device_buffers_unstaged_where_the_transport_carries_them() {
    over_fake_rdma(2, true);
    over_fake_rdma(3, true);
}

#[test]
fn dmsc_cuda_direct_0_stages_what_the_transport_could_carry() {
    over_fake_rdma(2, false);
}
