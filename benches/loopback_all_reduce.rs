//! Criterion: all-reduce between 2 ranks living in one process (threads), over loopback TCP.
//! Rank 0 is timed; rank 1 runs the same number of iterations in lock step.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dmsc::{Communicator, Config, InitOptions, ReduceOp};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn comms(n: usize) -> Vec<Communicator> {
    let addr = format!("127.0.0.1:{}", free_port());
    let handles: Vec<_> = (0..n)
        .map(|rank| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                Communicator::init(InitOptions {
                    rank,
                    nranks: n,
                    store_addr: addr,
                    serve_store: true,
                    config: Config::default(),
                })
                .expect("init")
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("rank thread"))
        .collect()
}

fn loopback(c: &mut Criterion) {
    let mut cs = comms(2);
    let peer = cs.pop().expect("rank 1");
    let me = cs.pop().expect("rank 0");
    let (tx, rx) = mpsc::channel::<(usize, u64)>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        while let Ok((count, iters)) = rx.recv() {
            let mut buf = vec![1f32; count];
            for _ in 0..iters {
                peer.all_reduce_in_place(&mut buf, ReduceOp::Sum)
                    .expect("rank 1 all_reduce");
            }
            let _ = done_tx.send(());
        }
    });
    let mut g = c.benchmark_group("loopback_all_reduce_2_ranks");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    for bytes in [8usize, 64 << 10, 4 << 20] {
        let count = bytes / 4;
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_with_input(BenchmarkId::from_parameter(bytes), &count, |b, &count| {
            let mut buf = vec![1f32; count];
            b.iter_custom(|iters| {
                tx.send((count, iters)).expect("rank 1 alive");
                let t = Instant::now();
                for _ in 0..iters {
                    me.all_reduce_in_place(&mut buf, ReduceOp::Sum)
                        .expect("rank 0 all_reduce");
                }
                let el = t.elapsed();
                done_rx.recv().expect("rank 1 done");
                el
            })
        });
    }
    g.finish();
    drop(tx);
    let _ = worker.join();
}

criterion_group!(benches, loopback);
criterion_main!(benches);
