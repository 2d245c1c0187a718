//! dmsc measured with the method of `benches/peers/harness/peers` (common.py), so its figures sit in the
//! same tables as Gloo's and Open MPI's: per size, one correctness check on patterned data,
//! warmup, then timed iterations of `barrier; t0; op; t1`; the time of an iteration is the
//! max across ranks. Rank 0 prints one JSON object per (op, size) with the per-iteration
//! times; `dmsc_allreduce.py` turns them into the peers' JSON schema.
//!
//! The buffers follow the peers' scripts too: all-reduce works in place (`MPI_IN_PLACE`, as
//! `torch.distributed.all_reduce` and Gloo do) unless `out-of-place` is given; after the
//! check, the timed calls run on zeros (the peers zero `buf`, or the all-gather's and the
//! out-of-place all-reduce's input).
//!
//! Run under dmscrun: `dmscrun -n 2 target/release/examples/peer_method allreduce 8,1M 4 5 200`
//! (ops, sizes in bytes, budget seconds, min iters, max iters, then optionally
//! `out-of-place`).

use dmsc::{Communicator, ReduceOp};
use std::time::Instant;

fn parse_size(s: &str) -> usize {
    dmsc::size::parse_size(s).unwrap_or_else(|| panic!("bad size {s}"))
}

fn main() -> dmsc::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let ops: Vec<&str> = a[1].split(',').collect();
    let sizes: Vec<usize> = a[2].split(',').map(parse_size).collect();
    let budget: f64 = a[3].parse().expect("budget");
    let min_iters: usize = a[4].parse().expect("min iters");
    let max_iters: usize = a[5].parse().expect("max iters");
    let out_of_place = match a.get(6).map(String::as_str) {
        None => false,
        Some("out-of-place") => true,
        Some(other) => panic!("unknown option {other}: only out-of-place"),
    };
    let c = Communicator::from_env()?;
    let (r, w) = (c.rank(), c.size());
    for op in &ops {
        for &nbytes in &sizes {
            let mut n = (nbytes / 4).max(1);
            if *op == "allgather" {
                n = (n / w).max(1);
            }
            let out_len = if *op == "allgather" { n * w } else { n };
            // Huge pages from 4 MiB, as numpy (and so mpi4py in the peers' runs) gets them.
            let mut input = vec![0f32; n];
            dmsc::perf::huge::advise(bytes_of(&mut input));
            for (i, x) in input.iter_mut().enumerate() {
                *x = (r + 1) as f32 + (i % 13) as f32;
            }
            let mut out = vec![0f32; out_len];
            dmsc::perf::huge::advise(bytes_of(&mut out));
            // Broadcast works in place, as the peers' `Bcast(buf)` does: the root's buffer
            // holds the data, the others' are zero; nothing is copied inside the timed call.
            // So does the all-reduce unless out of place.
            let in_place = *op == "allreduce" && !out_of_place;
            if (*op == "broadcast" && r == 0) || in_place {
                out.copy_from_slice(&input);
            }
            let run = |c: &Communicator, input: &[f32], out: &mut [f32]| -> dmsc::Result<()> {
                match *op {
                    "allreduce" if in_place => c.all_reduce_in_place(out, ReduceOp::Sum),
                    "allreduce" => c.all_reduce(input, out, ReduceOp::Sum),
                    "allgather" => c.all_gather(input, out),
                    "broadcast" => c.broadcast(out, 0),
                    other => panic!("unknown op {other}"),
                }
            };
            run(&c, &input, &mut out)?;
            let correct = match *op {
                "allreduce" => out
                    .iter()
                    .enumerate()
                    .all(|(i, &v)| v == (1..=w).map(|k| k as f32 + (i % 13) as f32).sum::<f32>()),
                "allgather" => out
                    .iter()
                    .enumerate()
                    .all(|(i, &v)| v == ((i / n) + 1) as f32 + ((i % n) % 13) as f32),
                _ => out
                    .iter()
                    .enumerate()
                    .all(|(i, &v)| v == 1.0 + (i % 13) as f32),
            };
            // As the peers: the timed calls move zeros.
            match *op {
                "allreduce" if in_place => out.fill(0.0),
                "allreduce" | "allgather" => input.fill(0.0),
                _ => {}
            }
            let warmup = if nbytes <= 64 << 10 {
                20
            } else if nbytes <= 16 << 20 {
                5
            } else {
                2
            };
            let mut est = f64::MAX;
            for _ in 0..warmup {
                c.barrier()?;
                let t = Instant::now();
                run(&c, &input, &mut out)?;
                est = est.min(t.elapsed().as_secs_f64());
            }
            // Same iteration count on every rank: the max of the estimates.
            let mut e = [est];
            c.all_reduce_in_place(&mut e, ReduceOp::Max)?;
            let iters = ((budget / e[0]) as usize).clamp(min_iters, max_iters);
            let mut times = vec![0f64; iters];
            for t in times.iter_mut() {
                c.barrier()?;
                let t0 = Instant::now();
                run(&c, &input, &mut out)?;
                *t = t0.elapsed().as_secs_f64();
            }
            let mine = times.clone();
            c.all_reduce_in_place(&mut times, ReduceOp::Max)?;
            if r == 0 {
                let f = |v: &[f64]| {
                    v.iter()
                        .map(|x| format!("{x:.9}"))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                println!(
                    "{{\"op\":\"{op}\",\"bytes\":{nbytes},\"warmup\":{warmup},\"correct\":{correct},\"max\":[{}],\"rank0\":[{}]}}",
                    f(&times),
                    f(&mine)
                );
            }
        }
    }
    Ok(())
}

/// The bytes of an `f32` slice (for huge-page advice).
fn bytes_of(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: any f32 memory is valid as bytes; the length is the slice's size in bytes.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}
