//! The cases of the device-buffer tests (tests/device_calls.rs on a FAKE device,
//! tests/cuda_calls_gpu.rs on a GPU): each collective kind's call on one rank, its inputs'
//! bytes and the output bytes expected, over buffers of the test's kind. Outputs start as
//! 0xEE bytes (the buffer maker's duty), so bytes a call must leave alone are checked too.

use dmsc::call::{Call, CollArgs, Names, P2pCall, Span};
use dmsc::{bf16, f16, CollKind, Communicator, DataType, ReduceOp};

/// Elements per rank block: odd, so blocks and chunks do not line up.
pub const C: usize = 37;

/// A device buffer of a test: its span, and its length.
pub trait CaseBuf {
    /// The buffer as a span of device memory.
    fn span(&self) -> Span;
    /// Bytes.
    fn len(&self) -> usize {
        self.span().len
    }
}

/// The types and operators every test runs, exact in each type for up to 4 ranks.
pub fn types_and_ops() -> Vec<(DataType, Vec<ReduceOp>)> {
    use DataType::*;
    use ReduceOp::*;
    [Float32, Int32, Float64, Float16, Bfloat16]
        .into_iter()
        .map(|dt| {
            let ops = match dt {
                Float16 | Bfloat16 => vec![Sum, Max],
                _ => vec![Sum, Prod, Max, Min],
            };
            (dt, ops)
        })
        .collect()
}

/// Element `i` of rank `r`'s data: small integers, exact in every type and operator here.
pub fn val(r: usize, i: usize) -> f64 {
    ((r + 1) * (i % 7 + 1)) as f64
}

pub fn enc(dt: DataType, xs: &[f64]) -> Vec<u8> {
    let mut b = Vec::new();
    for &x in xs {
        match dt {
            DataType::Float32 => b.extend((x as f32).to_le_bytes()),
            DataType::Float64 => b.extend(x.to_le_bytes()),
            DataType::Int32 => b.extend((x as i32).to_le_bytes()),
            DataType::Int64 => b.extend((x as i64).to_le_bytes()),
            DataType::Float16 => b.extend(f16::from_f64(x).to_le_bytes()),
            DataType::Bfloat16 => b.extend(bf16::from_f64(x).to_le_bytes()),
            other => panic!("no encoding for {other:?} in this test"),
        }
    }
    b
}

pub fn reduce(op: ReduceOp, xs: impl Iterator<Item = f64>) -> f64 {
    xs.reduce(|a, b| match op {
        ReduceOp::Sum => a + b,
        ReduceOp::Prod => a * b,
        ReduceOp::Max => a.max(b),
        ReduceOp::Min => a.min(b),
        other => panic!("{other:?} not in this test"),
    })
    .unwrap()
}

/// One rank's view of a case: the call, its input and output buffers with the input's
/// data, and the output expected.
pub struct Case<B> {
    pub call: Call,
    pub inputs: Vec<(B, Vec<u8>)>,
    pub outputs: Vec<(B, Vec<u8>)>,
}

pub fn collective<B: CaseBuf>(
    c: &Communicator,
    kind: CollKind,
    dt: DataType,
    op: ReduceOp,
    mk: &mut impl FnMut(usize) -> B,
) -> Case<B> {
    let (r, n) = (c.rank(), c.size());
    let root = 1 % n;
    let mine: Vec<f64> = (0..C).map(|i| val(r, i)).collect();
    let (inp, expect): (Vec<f64>, Vec<f64>) = match kind {
        CollKind::AllReduce => (
            mine,
            (0..C)
                .map(|i| reduce(op, (0..n).map(|q| val(q, i))))
                .collect(),
        ),
        CollKind::ReduceScatter => (
            (0..n * C).map(|i| val(r, i)).collect(),
            (0..C)
                .map(|i| reduce(op, (0..n).map(|q| val(q, r * C + i))))
                .collect(),
        ),
        CollKind::AllGather => (mine, (0..n * C).map(|j| val(j / C, j % C)).collect()),
        CollKind::Broadcast => (mine, (0..C).map(|i| val(root, i)).collect()),
        CollKind::Reduce => (
            mine,
            if r == root {
                (0..C)
                    .map(|i| reduce(op, (0..n).map(|q| val(q, i))))
                    .collect()
            } else {
                vec![]
            },
        ),
        other => panic!("{other:?} has its own case"),
    };
    let out_elems = match kind {
        CollKind::AllGather => n * C,
        _ => C,
    };
    let input = mk(inp.len() * dt.size());
    let output = mk(out_elems * dt.size());
    let args = CollArgs {
        kind,
        dtype: dt,
        op,
        root,
        input: Some(input.span()),
        output: output.span(),
        count: None,
        factor: None,
    };
    let call = Call::collective(c.shape(), args, &Names::RUST).expect("a valid call");
    // Off the root a reduction leaves its output alone: the sentinel bytes stay.
    let expect = if expect.is_empty() {
        vec![0xEE; output.len()]
    } else {
        enc(dt, &expect)
    };
    Case {
        call,
        inputs: vec![(input, enc(dt, &inp))],
        outputs: vec![(output, expect)],
    }
}

/// All-to-all-v: rank r sends q+1 elements to rank q, packed; receives r+1 from each.
pub fn all_to_all_v<B: CaseBuf>(
    c: &Communicator,
    dt: DataType,
    mk: &mut impl FnMut(usize) -> B,
) -> Case<B> {
    let (r, n) = (c.rank(), c.size());
    let sc: Vec<usize> = (0..n).map(|q| q + 1).collect();
    let sd: Vec<usize> = (0..n).map(|q| (0..q).map(|p| p + 1).sum()).collect();
    let rc = vec![r + 1; n];
    // A gap of one element between blocks: those bytes must come back unchanged.
    let rd: Vec<usize> = (0..n).map(|q| q * (r + 2)).collect();
    let send: Vec<f64> = (0..n)
        .flat_map(|q| (0..=q).map(move |i| (100 * r + 10 * q + i) as f64))
        .collect();
    let out_elems = n * (r + 2);
    let input = mk(send.len() * dt.size());
    let output = mk(out_elems * dt.size());
    let mut expect = vec![0xEE; output.len()];
    for (q, d) in rd.iter().enumerate() {
        let block: Vec<f64> = (0..=r).map(|i| (100 * q + 10 * r + i) as f64).collect();
        let b = enc(dt, &block);
        let at = d * dt.size();
        expect[at..at + b.len()].copy_from_slice(&b);
    }
    let call = Call::all_to_all_v(
        c.shape(),
        dt,
        Some(input.span()),
        output.span(),
        [sc, sd, rc, rd],
        &Names::RUST,
    )
    .expect("a valid all_to_all_v");
    Case {
        call,
        inputs: vec![(input, enc(dt, &send))],
        outputs: vec![(output, expect)],
    }
}

/// A group: a ring (send to the next rank, receive from the previous) and a send to this
/// rank itself.
pub fn send_recv<B: CaseBuf>(
    c: &Communicator,
    dt: DataType,
    mk: &mut impl FnMut(usize) -> B,
) -> Case<B> {
    let (r, n) = (c.rank(), c.size());
    let data = |from: usize, tag: usize| -> Vec<f64> {
        (0..C)
            .map(|i| (1000 * tag + 10 * from + i) as f64)
            .collect()
    };
    let (s_next, r_prev) = (mk(C * dt.size()), mk(C * dt.size()));
    let (s_me, r_me) = (mk(C * dt.size()), mk(C * dt.size()));
    let op = |send, peer, buf: &B| P2pCall {
        send,
        peer,
        tag: 0,
        buf: buf.span(),
        dtype: dt,
    };
    let ops = vec![
        op(true, (r + 1) % n, &s_next),
        op(false, (r + n - 1) % n, &r_prev),
        op(true, r, &s_me),
        op(false, r, &r_me),
    ];
    let call = Call::p2p(c.shape(), ops).expect("a valid group");
    Case {
        call,
        inputs: vec![(s_next, enc(dt, &data(r, 1))), (s_me, enc(dt, &data(r, 2)))],
        outputs: vec![
            (r_prev, enc(dt, &data((r + n - 1) % n, 1))),
            (r_me, enc(dt, &data(r, 2))),
        ],
    }
}

/// Every case, named: each collective kind for each type (and operator where it reduces),
/// all-to-all-v and a send/receive group for each type, with buffers made by `mk`.
pub fn every_case<B: CaseBuf>(
    c: &Communicator,
    mk: &mut impl FnMut(usize) -> B,
) -> Vec<(String, Case<B>)> {
    let mut v = Vec::new();
    for (dt, ops) in types_and_ops() {
        for kind in [
            CollKind::AllReduce,
            CollKind::ReduceScatter,
            CollKind::Reduce,
        ] {
            for &op in &ops {
                v.push((
                    format!("{kind} {dt:?} {op:?}"),
                    collective(c, kind, dt, op, mk),
                ));
            }
        }
        for kind in [CollKind::AllGather, CollKind::Broadcast] {
            v.push((
                format!("{kind} {dt:?}"),
                collective(c, kind, dt, ReduceOp::Sum, mk),
            ));
        }
        v.push((format!("all_to_all_v {dt:?}"), all_to_all_v(c, dt, mk)));
        v.push((format!("send/recv group {dt:?}"), send_recv(c, dt, mk)));
    }
    v
}
