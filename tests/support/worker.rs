//! The rank side of the multi-process tests (see `multiprocess.rs`).

use dmsc::{bf16, f16, Communicator, Element, Error, ReduceOp};

/// Values that stay exact in every float type for small rank counts; integers wrap as the
/// library's integer arithmetic does (a sum over 9 ranks overflows `u8`).
trait TestElem: Element + PartialEq + std::fmt::Debug {
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
}

macro_rules! test_int {
    ($($t:ty),*) => {$(
        impl TestElem for $t {
            // Two's complement wrap of a whole value, as `wrapping_add`/`wrapping_mul` give.
            fn from_f64(v: f64) -> Self { (v as i128) as $t }
            fn to_f64(self) -> f64 { self as f64 }
        }
    )*};
}
test_int!(i8, u8, i32, u32, i64, u64);

macro_rules! test_float {
    ($($t:ty),*) => {$(
        impl TestElem for $t {
            fn from_f64(v: f64) -> Self { v as $t }
            fn to_f64(self) -> f64 { self as f64 }
        }
    )*};
}
test_float!(f32, f64);
impl TestElem for f16 {
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
}
impl TestElem for bf16 {
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
}

/// Input element `i` of rank `r` for operator `op`.
fn value(op: ReduceOp, r: usize, i: usize) -> f64 {
    match op {
        ReduceOp::Prod => 1.0 + ((r + i) % 2) as f64,
        _ => ((r + 1) + (i % 7)) as f64,
    }
}

/// Rank `r`'s factor for [`ReduceOp::PreMulSum`] (whole, so integer types take it too).
fn factor(r: usize) -> f64 {
    (r + 1) as f64
}

/// The operators that apply to a type: bitwise ones to integers only.
fn ops_for(is_int: bool) -> impl Iterator<Item = ReduceOp> {
    ReduceOp::ALL
        .into_iter()
        .filter(move |o| is_int || !o.is_bitwise())
}

fn expected(op: ReduceOp, n: usize, i: usize) -> f64 {
    let vals = (0..n).map(|r| value(op, r, i));
    let ints = || (0..n).map(|r| value(op, r, i) as i64);
    match op {
        ReduceOp::Sum => vals.sum(),
        ReduceOp::PreMulSum => (0..n).map(|r| factor(r) * value(op, r, i)).sum(),
        ReduceOp::BAnd => ints().fold(-1, |a, b| a & b) as f64,
        ReduceOp::BOr => ints().fold(0, |a, b| a | b) as f64,
        ReduceOp::BXor => ints().fold(0, |a, b| a ^ b) as f64,
        ReduceOp::Avg => {
            let s: f64 = vals.sum();
            s / n as f64
        }
        ReduceOp::Prod => vals.product(),
        ReduceOp::Min => vals.fold(f64::MAX, f64::min),
        ReduceOp::Max => vals.fold(f64::MIN, f64::max),
    }
}

fn close<T: TestElem>(got: T, want: f64, is_int: bool) -> bool {
    let want_t = if is_int {
        T::from_f64(want.trunc())
    } else {
        T::from_f64(want)
    };
    if is_int {
        got == want_t
    } else {
        (got.to_f64() - want_t.to_f64()).abs() <= 1e-2 * want.abs().max(1.0)
    }
}

fn fail(msg: String) -> ! {
    eprintln!("CASE-FAIL: {msg}");
    std::process::exit(1);
}

fn check<T: TestElem>(what: &str, got: &[T], want: impl Fn(usize) -> f64, is_int: bool) {
    for (i, g) in got.iter().enumerate() {
        let w = want(i);
        if !close(*g, w, is_int) {
            fail(format!("{what}: element {i} is {g:?}, expected {w}"));
        }
    }
}

const COUNT: usize = 1001;

fn all_reduce_typed<T: TestElem>(c: &Communicator, is_int: bool, count: usize) {
    let (r, n) = (c.rank(), c.size());
    for op in ops_for(is_int) {
        let input: Vec<T> = (0..count).map(|i| T::from_f64(value(op, r, i))).collect();
        let mut out = vec![T::from_f64(0.0); count];
        match op {
            ReduceOp::PreMulSum => c.all_reduce_premul(&input, &mut out, factor(r)),
            op => c.all_reduce(&input, &mut out, op),
        }
        .unwrap_or_else(|e| fail(format!("all_reduce {op}: {e}")));
        check(
            &format!("all_reduce {op} {}", T::DTYPE),
            &out,
            |i| expected(op, n, i),
            is_int,
        );
        let mut buf = input.clone();
        match op {
            ReduceOp::PreMulSum => c.all_reduce_premul_in_place(&mut buf, factor(r)),
            op => c.all_reduce_in_place(&mut buf, op),
        }
        .unwrap_or_else(|e| fail(format!("in-place all_reduce {op}: {e}")));
        check(
            &format!("in-place all_reduce {op} {}", T::DTYPE),
            &buf,
            |i| expected(op, n, i),
            is_int,
        );
    }
}

fn case_all_reduce(c: &Communicator) {
    all_reduce_typed::<f32>(c, false, COUNT);
    all_reduce_typed::<i32>(c, true, COUNT);
    all_reduce_typed::<f16>(c, false, COUNT);
    all_reduce_typed::<bf16>(c, false, 37);
    all_reduce_typed::<u8>(c, true, 5);
    all_reduce_typed::<i8>(c, true, 2);
    all_reduce_typed::<u64>(c, true, COUNT);
    all_reduce_typed::<i64>(c, true, 1);
    all_reduce_typed::<u32>(c, true, 0);
    all_reduce_typed::<f64>(c, false, COUNT);
}

fn case_all_reduce_large(c: &Communicator) {
    all_reduce_typed::<f32>(c, false, (1 << 20) + 3);
}

fn case_reduce_scatter(c: &Communicator) {
    let (r, n) = (c.rank(), c.size());
    for op in ops_for(true) {
        let input: Vec<i64> = (0..COUNT * n).map(|i| value(op, r, i) as i64).collect();
        let mut out = vec![0i64; COUNT];
        match op {
            ReduceOp::PreMulSum => c.reduce_scatter_premul(&input, &mut out, factor(r)),
            op => c.reduce_scatter(&input, &mut out, op),
        }
        .unwrap_or_else(|e| fail(format!("reduce_scatter {op}: {e}")));
        if op == ReduceOp::PreMulSum {
            // The input was only read.
            check("premul input", &input, |i| value(op, r, i), true);
            check(
                "reduce_scatter premul",
                &out,
                |i| expected(op, n, r * COUNT + i),
                true,
            );
            continue;
        }
        check(
            "reduce_scatter",
            &out,
            |i| expected(op, n, r * COUNT + i),
            true,
        );
        let mut buf = input.clone();
        c.reduce_scatter_in_place(&mut buf, op)
            .unwrap_or_else(|e| fail(format!("reduce_scatter in place: {e}")));
        check(
            "in-place reduce_scatter",
            &buf[r * COUNT..(r + 1) * COUNT],
            |i| expected(op, n, r * COUNT + i),
            true,
        );
    }
}

fn case_all_gather(c: &Communicator) {
    let (r, n) = (c.rank(), c.size());
    let input: Vec<f32> = (0..COUNT).map(|i| (r * 10000 + i) as f32).collect();
    let mut out = vec![0f32; COUNT * n];
    c.all_gather(&input, &mut out)
        .unwrap_or_else(|e| fail(format!("all_gather: {e}")));
    check(
        "all_gather",
        &out,
        |i| ((i / COUNT) * 10000 + i % COUNT) as f64,
        true,
    );
    let mut buf = vec![0f32; COUNT * n];
    buf[r * COUNT..(r + 1) * COUNT].copy_from_slice(&input);
    c.all_gather_in_place(&mut buf)
        .unwrap_or_else(|e| fail(format!("all_gather in place: {e}")));
    check(
        "in-place all_gather",
        &buf,
        |i| ((i / COUNT) * 10000 + i % COUNT) as f64,
        true,
    );
}

fn case_broadcast(c: &Communicator) {
    let r = c.rank();
    for root in [0, 1, c.size() - 1] {
        for count in [COUNT, 3 << 18] {
            let mut buf: Vec<u32> = (0..count)
                .map(|i| if r == root { (i * 3 + root) as u32 } else { 7 })
                .collect();
            c.broadcast(&mut buf, root)
                .unwrap_or_else(|e| fail(format!("broadcast: {e}")));
            check("broadcast", &buf, |i| (i * 3 + root) as f64, true);
            let input: Vec<u32> = (0..count).map(|i| (i + 5 * root) as u32).collect();
            let mut out = vec![0u32; count];
            c.broadcast_into(&input, &mut out, root)
                .unwrap_or_else(|e| fail(format!("broadcast_into: {e}")));
            check("broadcast_into", &out, |i| (i + 5 * root) as f64, true);
        }
    }
}

fn case_reduce(c: &Communicator) {
    let (r, n) = (c.rank(), c.size());
    for root in 0..n {
        for op in ops_for(false) {
            let input: Vec<f64> = (0..COUNT).map(|i| value(op, r, i)).collect();
            let mut out = vec![-1f64; COUNT];
            match op {
                ReduceOp::PreMulSum => c.reduce_premul(&input, &mut out, factor(r), root),
                op => c.reduce(&input, &mut out, op, root),
            }
            .unwrap_or_else(|e| fail(format!("reduce {op}: {e}")));
            if r == root {
                check("reduce", &out, |i| expected(op, n, i), false);
            } else {
                check("reduce (non-root output untouched)", &out, |_| -1.0, false);
            }
            if op == ReduceOp::PreMulSum {
                check("premul input", &input, |i| value(op, r, i), false);
                continue;
            }
            let mut buf = input.clone();
            c.reduce_in_place(&mut buf, op, root)
                .unwrap_or_else(|e| fail(format!("reduce in place: {e}")));
            if r == root {
                check("in-place reduce", &buf, |i| expected(op, n, i), false);
            }
        }
    }
}

fn case_all_to_all(c: &Communicator) {
    let (r, n) = (c.rank(), c.size());
    let input: Vec<i32> = (0..COUNT * n).map(|i| (r * 1_000_000 + i) as i32).collect();
    // Block i of the output comes from rank i: its block r, element k.
    let want = |i: usize| ((i / COUNT) * 1_000_000 + r * COUNT + i % COUNT) as f64;
    let mut out = vec![0i32; COUNT * n];
    c.all_to_all(&input, &mut out)
        .unwrap_or_else(|e| fail(format!("all_to_all: {e}")));
    check("all_to_all", &out, want, true);
    let mut buf = input.clone();
    c.all_to_all_in_place(&mut buf)
        .unwrap_or_else(|e| fail(format!("all_to_all in place: {e}")));
    check("in-place all_to_all", &buf, want, true);
}

fn case_all_to_all_v(c: &Communicator) {
    let (r, n) = (c.rank(), c.size());
    // Rank s sends (s + d + 1) * 3 elements to rank d, valued s*1000 + d*100 + k.
    let cnt = |s: usize, d: usize| (s + d + 1) * 3;
    let send_counts: Vec<usize> = (0..n).map(|d| cnt(r, d)).collect();
    let send_displs: Vec<usize> = send_counts
        .iter()
        .scan(0, |a, &c| {
            let d = *a;
            *a += c + 1;
            Some(d)
        })
        .collect();
    let recv_counts: Vec<usize> = (0..n).map(|s| cnt(s, r)).collect();
    let recv_displs: Vec<usize> = recv_counts
        .iter()
        .scan(0, |a, &c| {
            let d = *a;
            *a += c;
            Some(d)
        })
        .collect();
    let mut input = vec![0u64; send_displs[n - 1] + send_counts[n - 1]];
    for d in 0..n {
        for k in 0..send_counts[d] {
            input[send_displs[d] + k] = (r * 1000 + d * 100 + k) as u64;
        }
    }
    let mut out = vec![0u64; recv_displs[n - 1] + recv_counts[n - 1]];
    c.all_to_all_v(
        &input,
        &send_counts,
        &send_displs,
        &mut out,
        &recv_counts,
        &recv_displs,
    )
    .unwrap_or_else(|e| fail(format!("all_to_all_v: {e}")));
    for s in 0..n {
        for k in 0..recv_counts[s] {
            let got = out[recv_displs[s] + k];
            let want = (s * 1000 + r * 100 + k) as u64;
            if got != want {
                fail(format!(
                    "all_to_all_v from {s} element {k}: {got} != {want}"
                ));
            }
        }
    }
}

fn case_p2p(c: &Communicator) {
    let (r, n) = (c.rank(), c.size());
    c.barrier()
        .unwrap_or_else(|e| fail(format!("barrier: {e}")));
    let (right, left) = ((r + 1) % n, (r + n - 1) % n);
    let mine: Vec<f32> = (0..COUNT).map(|i| (r * 7 + i) as f32).collect();
    let mut got = vec![0f32; COUNT];
    let mut g = c.group();
    g.send(&mine, right, 11).unwrap();
    g.recv(&mut got, left, 11).unwrap();
    g.end()
        .unwrap_or_else(|e| fail(format!("group send/recv: {e}")));
    check("ring shift", &got, |i| (left * 7 + i) as f64, false);
    // Send to self inside a group, as NCCL allows.
    let mut me = vec![0f32; COUNT];
    let mut g = c.group();
    g.send(&mine, r, 3).unwrap();
    g.recv(&mut me, r, 3).unwrap();
    g.end()
        .unwrap_or_else(|e| fail(format!("send to self: {e}")));
    check("self send", &me, |i| (r * 7 + i) as f64, false);
    // Blocking send/recv between ranks 0 and 1 with two tags in order.
    if r == 0 {
        c.send(&[1u8, 2, 3], 1, 5)
            .unwrap_or_else(|e| fail(format!("send: {e}")));
        c.send(&[9u8; 100_000], 1, 6)
            .unwrap_or_else(|e| fail(format!("send: {e}")));
    } else if r == 1 {
        let mut a = [0u8; 3];
        let mut b = vec![0u8; 100_000];
        c.recv(&mut a, 0, 5)
            .unwrap_or_else(|e| fail(format!("recv: {e}")));
        c.recv(&mut b, 0, 6)
            .unwrap_or_else(|e| fail(format!("recv: {e}")));
        if a != [1, 2, 3] || b.iter().any(|&x| x != 9) {
            fail("send/recv payload".into());
        }
    }
    for _ in 0..20 {
        c.barrier()
            .unwrap_or_else(|e| fail(format!("barrier: {e}")));
    }
}

fn case_non_blocking(c: &Communicator) {
    let n = c.size();
    let mut a: Vec<f32> = (0..COUNT)
        .map(|i| value(ReduceOp::Sum, c.rank(), i) as f32)
        .collect();
    let mut b = a.clone();
    let ra = c.immediate_all_reduce_in_place(&mut a, ReduceOp::Sum);
    let rb = c.immediate_all_reduce_in_place(&mut b, ReduceOp::Max);
    // A blocking call queues behind the two requests.
    let mut x = [c.rank() as i32];
    c.all_reduce_in_place(&mut x, ReduceOp::Sum)
        .unwrap_or_else(|e| fail(format!("blocking after async: {e}")));
    if !ra.test() || !rb.test() {
        fail("requests must be complete once a later blocking call returned".into());
    }
    ra.wait().unwrap_or_else(|e| fail(format!("wait: {e}")));
    rb.wait().unwrap_or_else(|e| fail(format!("wait: {e}")));
    check("async sum", &a, |i| expected(ReduceOp::Sum, n, i), false);
    check("async max", &b, |i| expected(ReduceOp::Max, n, i), false);
    if x[0] as usize != n * (n - 1) / 2 {
        fail(format!("blocking sum {}", x[0]));
    }
}

fn expect_err(what: &str, r: dmsc::Result<()>, must: &[&str]) -> Error {
    match r {
        Ok(()) => fail(format!("{what}: expected an error")),
        Err(e) => {
            let s = e.to_string();
            for m in must {
                if !s.contains(m) {
                    fail(format!("{what}: error {s:?} does not mention {m:?}"));
                }
            }
            println!(
                "rank {}: {what}: {s}",
                std::env::var("RANK").unwrap_or_default()
            );
            e
        }
    }
}

fn case_timeout(c: &Communicator) {
    let r = c.rank();
    let mut buf = vec![1f32; COUNT];
    c.all_reduce_in_place(&mut buf, ReduceOp::Sum)
        .unwrap_or_else(|e| fail(format!("first all_reduce: {e}")));
    if r == 2 {
        // Stay alive but never call the second collective.
        std::thread::sleep(std::time::Duration::from_secs(3));
        return;
    }
    let t = std::time::Instant::now();
    let e = expect_err(
        "timeout",
        c.all_reduce_in_place(&mut buf, ReduceOp::Sum),
        &["timeout", "2"],
    );
    match e {
        Error::Timeout { missing, .. } if missing == vec![2] => {}
        other => fail(format!(
            "timeout should name exactly rank 2 as missing: {other:?}"
        )),
    }
    if t.elapsed() > std::time::Duration::from_secs(5) {
        fail(format!("timeout took {:?}", t.elapsed()));
    }
    // The communicator is failed now: the next call fails at once with the same cause.
    expect_err("after timeout", c.barrier(), &["timeout"]);
}

fn case_mismatch(c: &Communicator, which: &str) {
    let r = c.rank();
    let odd = r == 1;
    let mut buf = vec![1f32; COUNT + 1];
    let (res, must): (dmsc::Result<()>, &[&str]) = match which {
        "mismatch_count" => {
            let n = if odd { COUNT + 1 } else { COUNT };
            (
                c.all_reduce_in_place(&mut buf[..n], ReduceOp::Sum),
                &["mismatch", "count"],
            )
        }
        "mismatch_op" => {
            let res = if odd {
                c.broadcast(&mut buf[..COUNT], 0)
            } else {
                c.all_reduce_in_place(&mut buf[..COUNT], ReduceOp::Sum)
            };
            (res, &["mismatch", "broadcast", "all_reduce"])
        }
        "mismatch_dtype" => {
            let res = if odd {
                let mut b = vec![1f64; COUNT];
                c.all_reduce_in_place(&mut b, ReduceOp::Sum)
            } else {
                c.all_reduce_in_place(&mut buf[..COUNT], ReduceOp::Sum)
            };
            (res, &["mismatch", "dtype"])
        }
        "mismatch_redop" => {
            let op = if odd { ReduceOp::Max } else { ReduceOp::Sum };
            (
                c.all_reduce_in_place(&mut buf[..COUNT], op),
                &["mismatch", "reduce op"],
            )
        }
        _ => {
            let root = if odd { 2 } else { 0 };
            (c.broadcast(&mut buf[..COUNT], root), &["mismatch", "root"])
        }
    };
    // A rank whose part of the call only sends (a broadcast root) may finish before a
    // receiver detects the mismatch; it then gets the error from its next call.
    let res = match res {
        Ok(()) => c.barrier(),
        e => e,
    };
    let e = expect_err(which, res, must);
    if !matches!(e, Error::Mismatch { .. }) {
        fail(format!("{which}: expected Error::Mismatch, got {e:?}"));
    }
}

fn case_bad_args(c: &Communicator) {
    let mut b = vec![0f32; 10];
    expect_err("root", c.broadcast(&mut b, 7), &["root 7"]);
    let mut o = vec![0f32; 3];
    expect_err(
        "lengths",
        c.all_reduce(&b, &mut o, ReduceOp::Sum),
        &["10", "3"],
    );
    expect_err(
        "gather",
        c.all_gather(&b, &mut o),
        &["output has 3 elements but all_gather needs"],
    );
    let mut g = c.group();
    if let Err(e) = g.send(&b, 9, 0) {
        println!("bad peer: {e}");
        assert!(e.to_string().contains("peer 9"));
    } else {
        fail("send to rank 9 accepted".into());
    }
    drop(g);
    // The communicator still works after rejected arguments.
    c.all_reduce_in_place(&mut b, ReduceOp::Sum)
        .unwrap_or_else(|e| fail(format!("after bad args: {e}")));
}

/// Split 5 ranks into evens and odds (keys reverse the order) and rank 2 into nothing; each
/// sub-communicator runs a collective of its own, then the parent still works.
fn case_split(c: &Communicator) {
    let (r, n) = (c.rank(), c.size());
    let color = if r == 2 { None } else { Some((r % 2) as u32) };
    let sub = c
        .split(color, -(r as i64))
        .unwrap_or_else(|e| fail(format!("split: {e}")));
    match (color, &sub) {
        (None, None) => {}
        (Some(col), Some(s)) => {
            let members: Vec<usize> = (0..n)
                .rev()
                .filter(|&p| p != 2 && p % 2 == col as usize)
                .collect();
            let want_rank = members.iter().position(|&p| p == r).unwrap();
            if s.size() != members.len() || s.rank() != want_rank {
                fail(format!(
                    "split gave rank {}/{}, expected {want_rank}/{}",
                    s.rank(),
                    s.size(),
                    members.len()
                ));
            }
            let mut b = vec![r as i64; 1001];
            s.all_reduce_in_place(&mut b, ReduceOp::Sum)
                .unwrap_or_else(|e| fail(format!("sub all_reduce: {e}")));
            let want: i64 = members.iter().map(|&p| p as i64).sum();
            if b.iter().any(|&x| x != want) {
                fail(format!("sub all_reduce gave {}, expected {want}", b[0]));
            }
        }
        _ => fail(format!(
            "split with color {color:?} returned {}",
            sub.is_some()
        )),
    }
    drop(sub);
    let mut b = vec![1u32; 7];
    c.all_reduce_in_place(&mut b, ReduceOp::Sum)
        .unwrap_or_else(|e| fail(format!("parent after split: {e}")));
    if b[0] != n as u32 {
        fail(format!("parent after split gave {}", b[0]));
    }
    if c.split(Some(u32::MAX), 0).is_ok() {
        fail("split accepted color u32::MAX".into());
    }
}

/// Every peer is served by the transport `DMSC_TEST_EXPECT_TRANSPORT` names (a prefix such
/// as `shm` or `tcp`), and this rank by `self`; the whole-communicator name agrees.
fn case_transports(c: &Communicator) {
    let want = std::env::var("DMSC_TEST_EXPECT_TRANSPORT")
        .unwrap_or_else(|_| fail("no expectation".into()));
    let got = c.peer_transports();
    if got.len() != c.size() {
        fail(format!("{} transports for {} ranks", got.len(), c.size()));
    }
    for (p, t) in got.iter().enumerate() {
        let ok = if p == c.rank() {
            *t == "self"
        } else {
            t.starts_with(want.as_str())
        };
        if !ok {
            fail(format!(
                "rank {p} is served by {t}, expected {want}: {got:?}"
            ));
        }
    }
    if !c.transport_name().starts_with(want.as_str()) {
        fail(format!(
            "transport_name {} does not start with {want}",
            c.transport_name()
        ));
    }
    case_all_reduce(c);
}

/// The reported topology matches the bed: the hosts of `hosts` (host `h` named `host-h`, as
/// the test sets it), every host of two or more ranks measured within, and the link of every
/// pair of hosts measured (the probe meets every pair up to 8 hosts), unless
/// `DMSC_TOPO_PROBE=0`, when nothing is measured.
fn check_topology(c: &Communicator, hosts: &[usize]) {
    let t = c.topology();
    let nhosts = hosts.iter().max().map_or(0, |h| h + 1);
    if t.nhosts() != nhosts || (0..c.size()).any(|r| t.host_of(r) != hosts[r]) {
        fail(format!(
            "topology {t} does not match the bed's hosts {hosts:?}"
        ));
    }
    let probed = std::env::var("DMSC_TOPO_PROBE").map_or(true, |v| v != "0");
    for a in 0..nhosts {
        if t.host_name(a) != format!("host-{a}") {
            fail(format!(
                "host {a} is named {:?}, expected host-{a}",
                t.host_name(a)
            ));
        }
        for b in 0..nhosts {
            let want = probed && (a != b || t.ranks_of(a).len() > 1);
            let got = t.link(a, b).unwrap_or_else(|e| fail(e.to_string()));
            if got.is_some() != want {
                fail(format!(
                    "link {a}-{b}: measured {got:?}, expected one: {want}; {t}"
                ));
            }
        }
    }
    println!(
        "TOPOLOGY-OK rank {} {}",
        c.rank(),
        t.to_string().replace('\n', " |")
    );
}

/// Ranks on several hosts (`DMSC_TEST_HOSTS`: the host index of each rank, e.g. `0,0,1,1`):
/// peers on this rank's host are served by shared memory, the others by TCP, and every
/// collective is exact with counts that are not powers of two.
fn case_mixed(c: &Communicator) {
    let hosts: Vec<usize> = std::env::var("DMSC_TEST_HOSTS")
        .unwrap_or_else(|_| fail("DMSC_TEST_HOSTS is not set".into()))
        .split(',')
        .map(|h| {
            h.trim()
                .parse()
                .unwrap_or_else(|_| fail(format!("bad host index {h}")))
        })
        .collect();
    if hosts.len() != c.size() {
        fail(format!(
            "{} host indices for {} ranks",
            hosts.len(),
            c.size()
        ));
    }
    let me = c.rank();
    let got = c.peer_transports();
    for (p, t) in got.iter().enumerate() {
        let want = if p == me {
            "self"
        } else if hosts[p] == hosts[me] {
            "shm"
        } else {
            "tcp"
        };
        if !t.starts_with(want) {
            fail(format!(
                "rank {p} (host {}) is served by {t}, expected {want}: {got:?}",
                hosts[p]
            ));
        }
    }
    println!("MIXED-TRANSPORTS rank {me} host {} {got:?}", hosts[me]);
    check_topology(c, &hosts);
    case_all_reduce(c);
    case_all_reduce_large(c);
    case_reduce_scatter(c);
    case_all_gather(c);
    case_broadcast(c);
    case_reduce(c);
    case_all_to_all(c);
    case_all_to_all_v(c);
    case_p2p(c);
    case_non_blocking(c);
}

/// The cluster bed (`DMSC_TEST_HOSTS` as for `mixed`): everything `mixed` checks, then a
/// 64 MiB float all-reduce checked element by element (the size at which the planner
/// chooses the hierarchical schedule on a bed of slow links; the parent test reads that
/// choice from the COLL log).
fn case_cluster(c: &Communicator) {
    case_mixed(c);
    let (r, n) = (c.rank(), c.size());
    let count = 16 << 20;
    let input: Vec<f32> = (0..count).map(|i| (r + i % 7) as f32).collect();
    let mut out = vec![0f32; count];
    c.all_reduce(&input, &mut out, ReduceOp::Sum)
        .unwrap_or_else(|e| fail(format!("all_reduce of 64 MiB: {e}")));
    let base = (n * (n - 1) / 2) as f32;
    if let Some(i) = (0..count).find(|&i| out[i] != base + (n * (i % 7)) as f32) {
        fail(format!(
            "all_reduce of 64 MiB: element {i} is {}, expected {}",
            out[i],
            base + (n * (i % 7)) as f32
        ));
    }
    println!("CLUSTER-OK rank {r}");
}

/// The rank entry point; run by the parent tests through dmscrun.
#[test]
#[ignore = "entry point of the ranks launched by the multi-process tests"]
fn entry() {
    let case = std::env::var("DMSC_TEST_CASE").expect("DMSC_TEST_CASE names the case");
    let c = Communicator::from_env().unwrap_or_else(|e| fail(format!("init: {e}")));
    match case.as_str() {
        "all_reduce" => case_all_reduce(&c),
        "all_reduce_large" => case_all_reduce_large(&c),
        "reduce_scatter" => case_reduce_scatter(&c),
        "all_gather" => case_all_gather(&c),
        "broadcast" => case_broadcast(&c),
        "reduce" => case_reduce(&c),
        "all_to_all" => case_all_to_all(&c),
        "all_to_all_v" => case_all_to_all_v(&c),
        "p2p" => case_p2p(&c),
        "non_blocking" => case_non_blocking(&c),
        "timeout" => case_timeout(&c),
        "bad_args" => case_bad_args(&c),
        "split" => case_split(&c),
        "transports" => case_transports(&c),
        "mixed" => case_mixed(&c),
        "cluster" => case_cluster(&c),
        m if m.starts_with("mismatch") => case_mismatch(&c, m),
        other => fail(format!("unknown case {other}")),
    }
    println!("CASE-OK rank {}", c.rank());
}
