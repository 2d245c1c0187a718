//! Throughput of the reduction kernels (`dmsc_core::reduce`): every type × operator of
//! `reduce_in_place` on 1 MiB, and `reduce_into` for float sum. Reported in bytes/s of the
//! destination buffer.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dmsc_core::reduce::{reduce_in_place, reduce_into};
use dmsc_core::{DataType, ReduceOp};
use std::hint::black_box;
use std::time::Duration;

const BYTES: usize = 1 << 20;
const ALIGN: usize = 64;

/// A 64-byte aligned buffer of `BYTES` bytes holding `dtype` ones (so that products and
/// sums stay finite and never turn subnormal, whatever the number of iterations).
struct Buf {
    raw: Vec<u8>,
    off: usize,
}

impl Buf {
    fn ones(dtype: DataType) -> Buf {
        let mut raw = vec![0u8; BYTES + ALIGN];
        let off = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        let one: Vec<u8> = match dtype {
            DataType::Int8 | DataType::Uint8 => vec![1],
            DataType::Int32 | DataType::Uint32 => 1u32.to_ne_bytes().to_vec(),
            DataType::Int64 | DataType::Uint64 => 1u64.to_ne_bytes().to_vec(),
            DataType::Float16 => half::f16::ONE.to_ne_bytes().to_vec(),
            DataType::Bfloat16 => half::bf16::ONE.to_ne_bytes().to_vec(),
            DataType::Float32 => 1f32.to_ne_bytes().to_vec(),
            DataType::Float64 => 1f64.to_ne_bytes().to_vec(),
        };
        for el in raw[off..off + BYTES].chunks_exact_mut(one.len()) {
            el.copy_from_slice(&one);
        }
        Buf { raw, off }
    }
    fn bytes(&self) -> &[u8] {
        &self.raw[self.off..self.off + BYTES]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.off..self.off + BYTES]
    }
}

fn in_place(c: &mut Criterion) {
    let mut g = c.benchmark_group("reduce_in_place_1MiB");
    g.throughput(Throughput::Bytes(BYTES as u64));
    for dtype in DataType::ALL {
        // Bitwise operators apply to integers only; premul_sum combines as Sum.
        let ops = ReduceOp::ALL
            .into_iter()
            .filter(|o| *o != ReduceOp::PreMulSum && o.check_dtype(dtype).is_ok());
        for op in ops {
            let mut dst = Buf::ones(dtype);
            let src = Buf::ones(dtype);
            // Avg combines as Sum: re-measuring it tells nothing new, but keeps the grid whole.
            g.bench_function(BenchmarkId::new(dtype.name(), op.name()), |b| {
                b.iter(|| {
                    reduce_in_place(
                        dtype,
                        op,
                        black_box(dst.bytes_mut()),
                        black_box(src.bytes()),
                    )
                    .expect("reduce")
                })
            });
        }
    }
    g.finish();
}

fn into(c: &mut Criterion) {
    let mut g = c.benchmark_group("reduce_into_1MiB");
    g.throughput(Throughput::Bytes(BYTES as u64));
    let dtype = DataType::Float32;
    let (mut dst, a, b) = (Buf::ones(dtype), Buf::ones(dtype), Buf::ones(dtype));
    g.bench_function(BenchmarkId::new(dtype.name(), "sum"), |bench| {
        bench.iter(|| {
            reduce_into(
                dtype,
                ReduceOp::Sum,
                black_box(dst.bytes_mut()),
                black_box(a.bytes()),
                black_box(b.bytes()),
            )
            .expect("reduce")
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = in_place, into
}
criterion_main!(benches);
