//! GPU bench: the communicator's TCP staging of device buffers (device-to-host and back in
//! pipelined pieces through pinned memory, `src/device_call/`) against plain synchronous
//! `cuMemcpyDtoH` + `cuMemcpyHtoD` of the same bytes into pinned memory, on one GPU.
//!
//! One rank runs an in-place all-reduce of a device buffer (so the host collective does no
//! network transfer and the figure is the staging's own); the plain copy moves the buffer to
//! a pinned host buffer and back. Prints `FIGURE` lines: both throughputs (2 x size moved)
//! and staged / plain (the target: at least 80%). Without a CUDA driver or GPU it
//! says why and exits 0 (a skip); with `DMSC_CUDA_GPU_REQUIRED=1` it exits 1 instead.
//! Run by scripts/gpu-check.sh; `cargo bench --features cuda --bench gpu_staging`.

use dmsc::call::{Call, CollArgs, MemKind, Names, Span};
use dmsc::{CollKind, Communicator, Config, DataType, InitOptions, ReduceOp};
use dmsc_transports::cuda::cuda_memory::CudaMemory;
use dmsc_transports::cuda::device_buffer::DeviceBuffer;
use dmsc_transports::cuda::device_memory::{DeviceMemory, PinnedBuffer};
use std::net::TcpListener;
use std::time::Instant;

fn skip(why: &str) -> ! {
    if std::env::var_os("DMSC_CUDA_GPU_REQUIRED").is_some_and(|v| v == "1") {
        eprintln!("gpu_staging: {why} (and DMSC_CUDA_GPU_REQUIRED=1 forbids skipping)");
        std::process::exit(1);
    }
    println!("SKIPPED gpu_staging: {why}");
    std::process::exit(0);
}

fn main() {
    let mut mem = match CudaMemory::open(0) {
        Ok(m) => m,
        Err(e) => skip(&format!("no CUDA device to measure on: {e}")),
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let comm = Communicator::init(InitOptions {
        rank: 0,
        nranks: 1,
        store_addr: format!("127.0.0.1:{port}"),
        serve_store: true,
        config: Config::default(),
    })
    .expect("a 1-rank communicator");
    for mib in [64usize, 256] {
        let n = mib << 20;
        let buf = DeviceBuffer::alloc(&mut mem, n).expect("device memory");
        let pattern: Vec<u8> = (0..n / 4)
            .flat_map(|i| ((i % 1000) as f32).to_le_bytes())
            .collect();
        buf.upload(&pattern).expect("upload");
        let span = Span::in_memory(buf.addr() as *const u8, n, MemKind::Cuda { device: 0 });
        let args = CollArgs {
            kind: CollKind::AllReduce,
            dtype: DataType::Float32,
            op: ReduceOp::Sum,
            root: 0,
            input: None,
            output: span,
            count: None,
            factor: None,
        };
        let call = Call::collective(comm.shape(), args, &Names::RUST).expect("a valid call");
        let iters = 5;
        // SAFETY: `buf` lives past every call, each of which waits for its completion.
        let run = || unsafe { comm.run_call(&call) }.expect("the staged all-reduce");
        run();
        let t = Instant::now();
        for _ in 0..iters {
            run();
        }
        let staged = t.elapsed().as_secs_f64() / f64::from(iters);
        let mut back = vec![0u8; n];
        buf.download(&mut back).expect("download");
        assert!(
            back == pattern,
            "the staged all-reduce on 1 rank changed the data"
        );
        let mut pinned = mem.alloc_pinned(n).expect("pinned memory");
        // SAFETY: `n` bytes of pinned memory, alive for the loop below.
        let host = unsafe { std::slice::from_raw_parts_mut(pinned.as_mut_ptr(), n) };
        buf.download(host).expect("warm-up copy");
        let t = Instant::now();
        for _ in 0..iters {
            buf.download(host).expect("cuMemcpyDtoH");
            buf.upload(host).expect("cuMemcpyHtoD");
        }
        let plain = t.elapsed().as_secs_f64() / f64::from(iters);
        let gbs = |s: f64| 2.0 * n as f64 / s / 1e9;
        println!(
            "FIGURE gpu_staging {mib} MiB: staged (all-reduce on 1 rank, device to host and \
             back in pieces) {:.1} GB/s, plain cuMemcpyDtoH + cuMemcpyHtoD into pinned {:.1} \
             GB/s; staged/plain = {:.0}%",
            gbs(staged),
            gbs(plain),
            100.0 * plain / staged
        );
    }
}
