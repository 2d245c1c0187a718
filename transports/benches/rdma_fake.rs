//! Criterion: the RDMA transport's own cost per frame, over FAKE verbs.
//!
//! Two transports (ranks 0 and 1) connected through [`FakeFabric`] are driven from one
//! thread: post a receive on rank 1 and a send on rank 0, then poll both until the frame is
//! received and its send completed. No NIC is involved, so the time is what dmsc adds on
//! top of one: the clear-to-send, matching, work requests, completion handling and credit
//! bookkeeping, plus the fake's `memcpy` standing in for the DMA. The per-message overhead
//! is the time of the smallest frames; the per-byte cost is the slope between the large
//! ones, which is the fake's copy (a real NIC moves those bytes without the CPU).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dmsc_core::engine::{Completion, MemKind, Transport};
use dmsc_core::types::{CollDesc, CollKind, DataType, ReduceOp};
use dmsc_core::wire::{FrameHeader, FrameKind};
use dmsc_transports::rdma::fake::FakeFabric;
use dmsc_transports::rdma::{connect, RdmaOptions, RdmaTransport};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

fn pair(max: usize) -> (RdmaTransport, RdmaTransport) {
    let fabric = FakeFabric::new(2);
    let board = Arc::new((Mutex::new(vec![Vec::new(); 2]), Barrier::new(2)));
    let hs: Vec<_> = (0..2)
        .map(|rank| {
            let (f, b) = (fabric.clone(), board.clone());
            std::thread::spawn(move || {
                let o = RdmaOptions {
                    staging_slot: max,
                    ..RdmaOptions::default()
                };
                let mut ex = |mine: &[u8]| {
                    b.0.lock().unwrap()[rank] = mine.to_vec();
                    b.1.wait();
                    Ok(b.0.lock().unwrap().clone())
                };
                connect(&f.provider(&[rank]), &o, rank, 2, &mut ex).expect("connect")
            })
        })
        .collect();
    let mut v: Vec<RdmaTransport> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let b = v.pop().unwrap();
    (v.pop().unwrap(), b)
}

fn header(len: u32) -> FrameHeader {
    FrameHeader {
        kind: FrameKind::Data,
        seq: 1,
        desc: CollDesc {
            kind: CollKind::AllReduce,
            count: len as usize,
            dtype: DataType::Uint8,
            op: ReduceOp::Sum,
            root: 0,
        },
        msg: 0,
        chunk: 0,
        offset: 0,
        len,
        aux: 0,
        crc: None,
    }
}

fn frames(c: &mut Criterion) {
    let sizes = [8usize, 4096, 64 << 10, 1 << 20];
    let max = *sizes.last().unwrap();
    let (mut a, mut b) = pair(max);
    let src = vec![1u8; max];
    let mut dst = vec![0u8; max];
    let ra = a
        .register(src.as_ptr() as *mut u8, max, MemKind::Host)
        .unwrap();
    let rb = b.register(dst.as_mut_ptr(), max, MemKind::Host).unwrap();
    let mut g = c.benchmark_group("rdma_fake_frame");
    let mut out = Vec::new();
    for &n in &sizes {
        let h = header(n as u32);
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| {
                // SAFETY: `src` and `dst` outlive every frame, and each frame completes on
                // both sides before the next is posted.
                unsafe {
                    b.post_recv_registered(0, &h, dst.as_mut_ptr(), rb, 2)
                        .unwrap();
                    a.post_send_registered(1, &h, src.as_ptr(), ra, 1).unwrap();
                }
                let (mut sent, mut received) = (false, false);
                while !(sent && received) {
                    out.clear();
                    a.poll(&mut out, Duration::ZERO).unwrap();
                    b.poll(&mut out, Duration::ZERO).unwrap();
                    for c in &out {
                        match c {
                            Completion::Sent { .. } => sent = true,
                            Completion::Received { .. } => received = true,
                            Completion::Control { .. } => {}
                            other => panic!("{other:?}"),
                        }
                    }
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = frames
}
criterion_main!(benches);
