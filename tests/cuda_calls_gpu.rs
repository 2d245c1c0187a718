//! Collectives on CUDA device buffers through the communicator, on a real GPU: every
//! collective kind × type × operator of tests/support/device_cases.rs, on 2 and 4 ranks
//! sharing GPU 0 as threads of this process, over TCP on loopback with the device data
//! staged through pinned host memory. Inputs are uploaded and outputs downloaded with
//! synchronous copies on the default stream, and the calls are ordered on the default
//! stream, so the downloads see the results only if the stream waited for the calls.
//!
//! Without a usable GPU each test prints SKIPPED and returns, unless
//! DMSC_CUDA_GPU_REQUIRED=1 (scripts/gpu-check.sh sets it), which turns the skip into a
//! failure. Built with `--features cuda` only.

#![cfg(feature = "cuda")]

#[path = "support/device_cases.rs"]
mod cases;

use cases::{every_case, CaseBuf};
use dmsc::call::Span;
use dmsc::{new_unique_id, Communicator, Config};
use dmsc_core::engine::MemKind;
use dmsc_transports::cuda::cuda_memory::CudaMemory;
use dmsc_transports::cuda::device_buffer::DeviceBuffer;
use dmsc_transports::cuda::device_memory::DeviceMemory;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

/// The tests that open sockets run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Whether GPU 0 is usable (after saying why not).
fn gpu() -> bool {
    let why = match CudaMemory::open(0).and_then(|mut m| DeviceBuffer::alloc(&mut m, 16)) {
        Ok(_) => return true,
        Err(e) => e.to_string(),
    };
    if std::env::var_os("DMSC_CUDA_GPU_REQUIRED").is_some_and(|v| v == "1") {
        panic!("no usable GPU ({why}) and DMSC_CUDA_GPU_REQUIRED=1");
    }
    eprintln!("SKIPPED: no usable GPU: {why}");
    false
}

struct GpuBuf(DeviceBuffer);

impl CaseBuf for GpuBuf {
    fn span(&self) -> Span {
        Span::in_memory(
            self.0.addr() as *const u8,
            self.0.len(),
            MemKind::Cuda { device: 0 },
        )
    }
}

fn every_collective_on_gpu(n: usize) {
    if !gpu() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("DMSC_SOCKET_IFNAME", "lo");
    let id = new_unique_id().expect("unique id");
    let start = Arc::new(Barrier::new(n));
    let hs: Vec<_> = (0..n)
        .map(|r| {
            let start = start.clone();
            std::thread::spawn(move || {
                let mut cfg = Config {
                    socket_ifname: Some("lo".into()),
                    ..Config::default()
                };
                cfg.engine.timeout = Duration::from_secs(60);
                let c = Communicator::init_with_id(&id, r, n, cfg).expect("init");
                let mut mem = CudaMemory::open(0).expect("GPU 0");
                mem.bind().expect("bind GPU 0");
                let mut mk = |len: usize| {
                    let b = DeviceBuffer::alloc(&mut mem, len).expect("cuMemAlloc");
                    b.upload(&vec![0xEE; len]).expect("upload the sentinel");
                    GpuBuf(b)
                };
                let cases = every_case(&c, &mut mk);
                start.wait();
                let count = cases.len();
                for (what, case) in cases {
                    for (b, bytes) in &case.inputs {
                        b.0.upload(bytes).expect("upload an input");
                    }
                    // SAFETY: the buffers live until after the downloads below, which the
                    // default stream orders after the call.
                    unsafe { c.run_call_on_stream(&case.call, 0) }
                        .unwrap_or_else(|e| panic!("{what} on {n} ranks: {e}"));
                    for (k, (b, want)) in case.outputs.iter().enumerate() {
                        let mut got = vec![0u8; want.len()];
                        b.0.download(&mut got).expect("download an output");
                        assert!(
                            got == *want,
                            "{what} on {n} ranks: output {k} on rank {r}: got {:?}..., want {:?}...",
                            &got[..got.len().min(16)],
                            &want[..want.len().min(16)]
                        );
                    }
                    assert!(c.async_error().is_none(), "{what}: {:?}", c.async_error());
                }
                if r == 0 {
                    eprintln!("{count} device-buffer cases passed on {n} ranks sharing GPU 0 (TCP staging)");
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("a rank failed");
    }
}

#[test]
fn every_collective_on_gpu_buffers_on_2_ranks_over_tcp_staging() {
    every_collective_on_gpu(2);
}

#[test]
fn every_collective_on_gpu_buffers_on_4_ranks_over_tcp_staging() {
    every_collective_on_gpu(4);
}
