//! The CUDA checks that need a GPU (issue 12), run by scripts/gpu-check.sh: the CUDA device's
//! kernels against the host device for every type and op, its copies and CRC32C, pointer
//! classification, and the stream ordering on the real driver. Without a driver or a GPU
//! each test prints SKIPPED and returns, unless DMSC_CUDA_GPU_REQUIRED=1 (gpu-check.sh sets
//! it), which makes a missing GPU a failure.
#![cfg(feature = "cuda")]

use cudarc::driver::result;
use dmsc_core::device::{Device, DeviceBuffer, HostDevice};
use dmsc_core::engine::MemKind;
use dmsc_core::{DataType, ReduceOp};
use dmsc_transports::cuda::cuda_streams::{CudaStreams, StreamHandle};
use dmsc_transports::cuda::device::CudaDevice;
use dmsc_transports::cuda::pointer::memory_kind;
use dmsc_transports::cuda::stream_order::{StreamOps, StreamOrder};
use std::time::{Duration, Instant};

/// GPU 0, or None (after saying why) when this machine has none.
fn gpu() -> Option<CudaDevice> {
    let why = match CudaDevice::open(0) {
        Ok(d) => return Some(d),
        Err(e) => e.to_string(),
    };
    if std::env::var_os("DMSC_CUDA_GPU_REQUIRED").is_some_and(|v| v == "1") {
        panic!("no usable GPU ({why}) and DMSC_CUDA_GPU_REQUIRED=1");
    }
    eprintln!("SKIPPED: no usable GPU: {why}");
    None
}

/// `n` elements of `dtype` from a fixed LCG: random bits, and for floats every other one a
/// small value.
fn values(dtype: DataType, n: usize, seed: u64) -> Vec<u8> {
    let size = dtype.size();
    let mut out = vec![0u8; n * size];
    let mut x = seed;
    for i in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = x >> 11;
        let bits = if i % 2 == 0 || !dtype.is_float() {
            r
        } else {
            let v = (r % 4001) as f64 / 8.0 - 250.0;
            match dtype {
                DataType::Float16 => half::f16::from_f64(v).to_bits() as u64,
                DataType::Bfloat16 => half::bf16::from_f64(v).to_bits() as u64,
                DataType::Float32 => (v as f32).to_bits() as u64,
                _ => v.to_bits(),
            }
        };
        out[i * size..(i + 1) * size].copy_from_slice(&bits.to_le_bytes()[..size]);
    }
    out
}

fn is_nan(dtype: DataType, bits: u64) -> bool {
    match dtype {
        DataType::Float16 => bits & 0x7fff > 0x7c00,
        DataType::Bfloat16 => bits & 0x7fff > 0x7f80,
        DataType::Float32 => bits & 0x7fff_ffff > 0x7f80_0000,
        DataType::Float64 => bits & (u64::MAX >> 1) > 0x7ff0_0000_0000_0000,
        _ => false,
    }
}

fn assert_same(what: &str, dtype: DataType, want: &[u8], got: &[u8]) {
    let size = dtype.size();
    for i in 0..want.len() / size {
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w[..size].copy_from_slice(&b[i * size..(i + 1) * size]);
            u64::from_le_bytes(w)
        };
        let (w, g) = (word(want), word(got));
        if w != g && !(is_nan(dtype, w) && is_nan(dtype, g)) {
            panic!("{what} on {dtype}: element {i} is {g:#x} on the GPU, {w:#x} on the host");
        }
    }
}

/// The premul_sum factors of the two inputs: fractional for floats, whole for integers.
fn factors(dtype: DataType) -> (f64, f64) {
    if dtype.is_float() {
        (0.3, -1.7)
    } else {
        (3.0, -7.0)
    }
}

/// `out = a ⊕ b` as the engine runs `op` (premultiply in place, combine, divide over 3
/// ranks) on device `d`.
///
/// # Safety
/// The three buffers hold `n` bytes of `d`'s memory each.
unsafe fn combine(d: &mut dyn Device, dtype: DataType, op: ReduceOp, bufs: [*mut u8; 3], n: usize) {
    let [a, b, out] = bufs;
    let (fa, fb) = factors(dtype);
    // SAFETY: forwarded.
    unsafe {
        if op == ReduceOp::PreMulSum {
            d.scale_mul(dtype, a, a, n, fa).unwrap();
            d.scale_mul(dtype, b, b, n, fb).unwrap();
        }
        d.reduce_into(dtype, op, out, a, b, n).unwrap();
        if op == ReduceOp::Avg {
            d.scale_div(dtype, out, n, 3).unwrap();
        }
    }
}

#[test]
fn device_reductions_match_the_host_for_every_type_and_op() {
    let Some(mut gpu) = gpu() else { return };
    let mut checked = 0;
    for dtype in DataType::ALL {
        for op in ReduceOp::ALL {
            if op.check_dtype(dtype).is_err() {
                continue;
            }
            // 2^20 + 3 elements: more than one launch's 4096 × 256 threads.
            for elems in [1usize, 1000, (1 << 20) + 3] {
                let n = elems * dtype.size();
                let (a, b) = (values(dtype, elems, 7), values(dtype, elems, 8));
                let words = |b: &[u8]| {
                    let mut v = vec![0u64; b.len().div_ceil(8)];
                    // SAFETY: `v` holds at least b.len() bytes.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            b.as_ptr(),
                            v.as_mut_ptr() as *mut u8,
                            b.len(),
                        )
                    };
                    v
                };
                let (mut ha, mut hb, mut hout) = (words(&a), words(&b), vec![0u64; n.div_ceil(8)]);
                let hp = |v: &mut Vec<u64>| v.as_mut_ptr() as *mut u8;
                let host = [hp(&mut ha), hp(&mut hb), hp(&mut hout)];
                // SAFETY: three host buffers of at least n bytes, 8-byte aligned.
                unsafe { combine(&mut HostDevice, dtype, op, host, n) };
                let bufs: Vec<DeviceBuffer> = (0..3).map(|_| gpu.alloc(n).unwrap()).collect();
                let mut got = vec![0u8; n];
                // SAFETY: device buffers of n bytes each.
                unsafe {
                    gpu.upload(bufs[0].ptr(), &a).unwrap();
                    gpu.upload(bufs[1].ptr(), &b).unwrap();
                    let p = [bufs[0].ptr(), bufs[1].ptr(), bufs[2].ptr()];
                    combine(&mut gpu, dtype, op, p, n);
                    gpu.download(&mut got, bufs[2].ptr()).unwrap();
                }
                // SAFETY: hout holds at least n bytes.
                let want = unsafe { std::slice::from_raw_parts(hout.as_ptr() as *const u8, n) };
                assert_same(&format!("{op} ({elems} elements)"), dtype, want, &got);
            }
            checked += 1;
        }
    }
    eprintln!("{checked} type x op pairs match the host on {}", gpu.name());
    assert_eq!(checked, 6 * 9 + 4 * 6);
}

#[test]
fn device_copies_crc32c_and_pointer_kinds() {
    let Some(mut gpu) = gpu() else { return };
    let n = 10 << 20;
    let data: Vec<u8> = (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let buf = gpu.alloc(n + 4096).unwrap();
    let mut back = vec![0u8; n];
    // SAFETY: `buf` holds n + 4096 bytes.
    unsafe {
        gpu.upload(buf.ptr(), &data).unwrap();
        for len in [0usize, 1, 4095, 4096, 4097, n] {
            assert_eq!(
                gpu.crc32c(buf.ptr(), len).unwrap(),
                crc32c::crc32c(&data[..len]),
                "CRC32C of {len} bytes"
            );
        }
        // An overlapping copy forward by 4096 bytes.
        gpu.copy(buf.ptr().add(4096), buf.ptr(), n).unwrap();
        gpu.download(&mut back, buf.ptr().add(4096)).unwrap();
    }
    assert!(back == data, "the overlapping device copy changed the data");
    assert_eq!(memory_kind(buf.ptr()), MemKind::Cuda { device: 0 });
    assert_eq!(memory_kind(data.as_ptr()), MemKind::Host);
}

#[test]
fn the_callers_stream_waits_for_the_collective_on_the_real_driver() {
    // Opening the device makes its context current on this thread.
    let Some(_gpu) = gpu() else { return };
    let make = || {
        let s = result::stream::create(result::stream::StreamKind::NonBlocking).unwrap();
        // SAFETY: a stream just created in the current context, alive for the whole test.
        unsafe { StreamHandle::from_raw(s) }
    };
    let (caller, own) = (make(), make());
    let mut order = StreamOrder::new(CudaStreams, own).unwrap();
    let mut t = order.submit(caller).unwrap();
    // The caller's later work: an event recorded after the submit.
    let later = order.ops().create_event().unwrap();
    order.ops().record(&later, caller).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !order.poll_start(&mut t).unwrap() {
        assert!(Instant::now() < deadline, "the start event never completed");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !order.ops().query(&later).unwrap(),
        "the caller's later work ran before the collective finished"
    );
    let done = order.finish(t).unwrap();
    // SAFETY: a live stream of this test.
    unsafe { result::stream::synchronize(caller.as_raw()) }.unwrap();
    assert!(order.ops().query(&done).unwrap());
    assert!(order.ops().query(&later).unwrap());
}

#[test]
fn device_reduction_figures() {
    // Figures for the closing note, printed, never asserted: each call includes its
    // launch and the stream synchronization the Device trait's synchronous methods do.
    let Some(mut gpu) = gpu() else { return };
    for mib in [64usize, 256] {
        let n = mib << 20;
        let bufs: Vec<DeviceBuffer> = (0..3).map(|_| gpu.alloc(n).unwrap()).collect();
        let (a, b, c) = (bufs[0].ptr(), bufs[1].ptr(), bufs[2].ptr());
        let iters = 10;
        let per_call = |gpu: &mut CudaDevice, f: &mut dyn FnMut(&mut CudaDevice)| {
            f(gpu);
            let t = Instant::now();
            for _ in 0..iters {
                f(gpu);
            }
            t.elapsed().as_secs_f64() / iters as f64
        };
        let sum = per_call(&mut gpu, &mut |g| {
            // SAFETY: three device buffers of n bytes (their contents do not matter here).
            unsafe { g.reduce_into(DataType::Float32, ReduceOp::Sum, c, a, b, n) }.unwrap()
        });
        let half = per_call(&mut gpu, &mut |g| {
            // SAFETY: as above.
            unsafe { g.reduce_into(DataType::Bfloat16, ReduceOp::Sum, c, a, b, n) }.unwrap()
        });
        let crc = per_call(&mut gpu, &mut |g| {
            // SAFETY: as above.
            unsafe { g.crc32c(a, n) }.map(drop).unwrap()
        });
        let gbs = |bytes: usize, s: f64| bytes as f64 / s / 1e9;
        println!(
            "FIGURE {mib} MiB: float sum {:.0} GB/s, bfloat16 sum {:.0} GB/s (3 x size moved), \
             CRC32C {:.1} GB/s",
            gbs(3 * n, sum),
            gbs(3 * n, half),
            gbs(n, crc)
        );
    }
}

/// `len` bytes of pinned host memory (`cuMemHostAlloc`), freed when dropped.
struct Pinned(*mut u8, usize);

impl Pinned {
    fn new(len: usize) -> Pinned {
        // SAFETY: an allocation in the current context; the bytes are written before read.
        let p = unsafe { result::malloc_host(len, 0) }.expect("cuMemHostAlloc");
        Pinned(p as *mut u8, len)
    }
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes of pinned memory owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.0, self.1) }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: from cuMemHostAlloc, freed once.
        let _ = unsafe { result::free_host(self.0 as *mut std::ffi::c_void) };
    }
}

#[test]
fn staging_throughput_against_a_plain_copy() {
    // Figures, never asserted: device-to-host through 4 pinned slots of 4 MiB, the copy of
    // one chunk overlapping the host's use of the previous one (here a memcpy into the final
    // buffer, standing in for the socket's copy), against one plain cuMemcpyDtoH of the
    // whole buffer into pinned and into pageable memory.
    use dmsc_transports::cuda::staging::{Staging, Step};
    let Some(mut gpu) = gpu() else { return };
    let n = 256 << 20;
    let (chunk, slots) = (4 << 20, 4);
    let src = gpu.alloc(n).unwrap();
    let pattern: Vec<u8> = (0..n as u32).map(|i| (i >> 7) as u8).collect();
    // SAFETY: `src` holds n bytes.
    unsafe { gpu.upload(src.ptr(), &pattern) }.unwrap();
    let mut pinned_all = Pinned::new(n);
    let mut pageable = vec![0u8; n];
    let time = |f: &mut dyn FnMut()| {
        f();
        let t = Instant::now();
        for _ in 0..3 {
            f();
        }
        t.elapsed().as_secs_f64() / 3.0
    };
    let plain_pinned = time(&mut || {
        // SAFETY: n bytes each side.
        unsafe { result::memcpy_dtoh_sync(pinned_all.bytes(), src.ptr() as u64) }.unwrap()
    });
    let plain_pageable = time(&mut || {
        // SAFETY: as above.
        unsafe { result::memcpy_dtoh_sync(&mut pageable, src.ptr() as u64) }.unwrap()
    });
    let s = result::stream::create(result::stream::StreamKind::NonBlocking).unwrap();
    // SAFETY: a live stream of this context, for the whole test.
    let stream = unsafe { StreamHandle::from_raw(s) };
    let mut ops = CudaStreams;
    let mut bufs: Vec<Pinned> = (0..slots).map(|_| Pinned::new(chunk)).collect();
    let events: Vec<_> = (0..slots).map(|_| ops.create_event().unwrap()).collect();
    let mut dst = vec![0u8; n];
    let staged = time(&mut || {
        let mut st = Staging::new(n, chunk, slots).unwrap();
        let mut copying: Vec<usize> = Vec::new();
        while !st.is_done() {
            while let Some(step) = st.poll() {
                match step {
                    Step::A { range, slot } => {
                        let len = range.len();
                        let from = src.ptr() as u64 + range.start as u64;
                        // SAFETY: the slot holds `chunk` >= len bytes; the source range is
                        // inside `src`.
                        unsafe {
                            result::memcpy_dtoh_async(
                                &mut bufs[slot].bytes()[..len],
                                from,
                                stream.as_raw(),
                            )
                        }
                        .unwrap();
                        ops.record(&events[slot], stream).unwrap();
                        copying.push(slot);
                    }
                    Step::B { range, slot } => {
                        let len = range.len();
                        dst[range].copy_from_slice(&bufs[slot].bytes()[..len]);
                        st.b_done(slot).unwrap();
                    }
                }
            }
            let mut i = 0;
            while i < copying.len() {
                if ops.query(&events[copying[i]]).unwrap() {
                    st.a_done(copying.remove(i)).unwrap();
                } else {
                    i += 1;
                }
            }
        }
    });
    assert!(dst == pattern, "the staged copy changed the data");
    let gbs = |s: f64| n as f64 / s / 1e9;
    println!(
        "FIGURE staging 256 MiB device-to-host: staged {:.1} GB/s ({slots} x {} MiB pinned \
         slots), plain cuMemcpyDtoH {:.1} GB/s into pinned, {:.1} GB/s into pageable; \
         staged/plain pinned = {:.0}%",
        gbs(staged),
        chunk >> 20,
        gbs(plain_pinned),
        gbs(plain_pageable),
        100.0 * plain_pinned / staged
    );
}

#[test]
fn an_ipc_export_names_the_allocation_and_the_offset() {
    use dmsc_transports::cuda::ipc_handle::{export, IpcExport};
    let Some(mut gpu) = gpu() else { return };
    let buf = gpu.alloc(1 << 20).unwrap();
    let dev = result::device::get(0).unwrap();
    let e = export(buf.ptr() as u64 + 4096, 1000, dev).unwrap();
    assert_eq!((e.offset, e.len), (4096, 1000));
    assert_eq!(IpcExport::from_bytes(&e.to_bytes()).unwrap(), e);
    assert_ne!(e.handle, [0u8; 64]);
}
