"""One rank of a torch.distributed test of the "dmsc" backend:
``python -m dmsc.run -n N torch_worker.py CASE...`` (or torchrun).

It joins exactly as a torch user does -- ``import dmsc.torch`` then
``dist.init_process_group("dmsc")`` from MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE -- and makes
a gloo group over the same ranks as the reference. Every check computes the expected values
from the ranks' deterministic inputs; any failure raises, the rank exits non-zero and the
launcher stops the others. Each case ends by printing ``OK CASE``.
"""

from __future__ import annotations

import datetime
import os
import sys
from typing import Any

import torch
import torch.distributed as dist

import dmsc
import dmsc.torch  # noqa: F401  registers "dmsc"

CHECKS = 0

INT_DTYPES = [torch.int8, torch.uint8, torch.int32, torch.int64]
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
DTYPES = INT_DTYPES + FLOAT_DTYPES


def check(got: torch.Tensor, want: torch.Tensor, what: str, rtol: float = 0.0) -> None:
    """Exact unless rtol (for AVG and PREMUL_SUM, whose divisions and products round)."""
    global CHECKS
    CHECKS += 1
    assert isinstance(got, torch.Tensor), f"{what}: got {type(got)}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if rtol and (want.dtype.is_floating_point or want.dtype.is_complex):
        torch.testing.assert_close(got, want, rtol=rtol, atol=0, msg=lambda m: f"{what}: {m}")
    else:
        assert torch.equal(got, want), f"{what}: got {got.flatten()[:8]}, want {want.flatten()[:8]}"


def expect_error(fn, *words: str, exc: type = Exception) -> None:
    """``fn()`` raises ``exc`` whose message contains every word."""
    global CHECKS
    CHECKS += 1
    try:
        fn()
    except exc as e:
        msg = str(e)
        for w in words:
            assert w in msg, f"error {type(e).__name__} {msg!r} does not name {w!r}"
        return
    raise AssertionError(f"no {exc.__name__} naming {words}")


def vals(rank: int, shape, dt: torch.dtype, op: str = "SUM") -> torch.Tensor:
    """Rank ``rank``'s input: small integers, so sums and products are exact in every type."""
    n = 1
    for s in shape if isinstance(shape, tuple) else (shape,):
        n *= s
    i = torch.arange(n, dtype=torch.int64)
    v = (i + rank) % 3 + 1 if op == "PRODUCT" else (i * 7 + rank * 3) % 11 + rank
    return v.to(dt).reshape(shape)


def ref(ts: list[torch.Tensor], op: str) -> torch.Tensor:
    s = torch.stack([t.to(torch.float64) if t.dtype.is_floating_point else t.to(torch.int64) for t in ts])
    dt = ts[0].dtype
    if op == "SUM":
        r = s.sum(0)
    elif op == "PRODUCT":
        r = s.prod(0)
    elif op == "MIN":
        r = s.min(0).values
    elif op == "MAX":
        r = s.max(0).values
    elif op == "AVG":
        r = s.sum(0) / len(ts) if dt.is_floating_point else torch.div(s.sum(0), len(ts), rounding_mode="floor")
    else:
        raise ValueError(op)
    return r.to(dt)


def noncontig(t: torch.Tensor) -> torch.Tensor:
    """The same values as ``t`` (1-D), in a non-contiguous tensor (every other element)."""
    big = torch.zeros(t.numel() * 2, dtype=t.dtype)
    v = big[::2]
    v.copy_(t.reshape(-1))
    assert not v.is_contiguous()
    return v


OPS = {
    "SUM": dist.ReduceOp.SUM,
    "PRODUCT": dist.ReduceOp.PRODUCT,
    "MIN": dist.ReduceOp.MIN,
    "MAX": dist.ReduceOp.MAX,
    "AVG": dist.ReduceOp.AVG,
}


def tol(dt: torch.dtype, op: str) -> float:
    if op != "AVG" or not dt.is_floating_point:
        return 0.0
    return {torch.float16: 2e-3, torch.bfloat16: 1e-2}.get(dt, 1e-6)


def case_collectives() -> None:
    """Every collective, dtypes and ops, contiguous or not, blocking and async with futures."""
    n, r = dist.get_world_size(), dist.get_rank()
    assert dist.get_backend() == "dmsc", dist.get_backend()
    c = 13
    for dt in DTYPES:
        for name, op in OPS.items():
            t = vals(r, c, dt, name)
            want = ref([vals(k, c, dt, name) for k in range(n)], name)
            dist.all_reduce(t, op=op)
            check(t, want, f"all_reduce {dt} {name}", tol(dt, name))
            nc = noncontig(vals(r, c, dt, name))
            dist.all_reduce(nc, op=op)
            check(nc, want, f"all_reduce non-contiguous {dt} {name}", tol(dt, name))
            # reduce onto every root; non-roots keep their input
            root = (n - 1) if name == "MAX" else 0
            t = vals(r, (c,), dt, name)
            dist.reduce(t, dst=root, op=op)
            check(t, want if r == root else vals(r, c, dt, name), f"reduce {dt} {name} root {root}", tol(dt, name))
            # reduce_scatter_tensor and reduce_scatter (list)
            full = [vals(k, n * 4, dt, name) for k in range(n)]
            want_rs = ref(full, name)[r * 4 : (r + 1) * 4]
            out = torch.zeros(4, dtype=dt)
            dist.reduce_scatter_tensor(out, vals(r, n * 4, dt, name), op=op)
            check(out, want_rs, f"reduce_scatter_tensor {dt} {name}", tol(dt, name))
            out = torch.zeros(4, dtype=dt)
            dist.reduce_scatter(out, list(vals(r, n * 4, dt, name).chunk(n)), op=op)
            check(out, want_rs, f"reduce_scatter list {dt} {name}", tol(dt, name))
        # data movement: 2-D tensors
        x = vals(r, (3, 5), dt)
        outs = [torch.zeros(3, 5, dtype=dt) for _ in range(n)]
        dist.all_gather(outs, x)
        for k in range(n):
            check(outs[k], vals(k, (3, 5), dt), f"all_gather {dt} from {k}")
        big = torch.zeros(n * 3, 5, dtype=dt)
        dist.all_gather_into_tensor(big, x)
        check(big, torch.cat([vals(k, (3, 5), dt) for k in range(n)]), f"all_gather_into_tensor {dt}")
        b = vals(r, (2, 7), dt)
        dist.broadcast(b, src=n - 1)
        check(b, vals(n - 1, (2, 7), dt), f"broadcast {dt}")
        # all_to_all_single, even and with split sizes (rows)
        inp = torch.cat([torch.full((2, 3), r * 10 + j).to(dt) for j in range(n)])
        out = torch.empty_like(inp)
        dist.all_to_all_single(out, inp)
        check(out, torch.cat([torch.full((2, 3), k * 10 + r).to(dt) for k in range(n)]), f"all_to_all_single {dt}")
        in_rows = [(r + j) % 3 + 1 for j in range(n)]
        out_rows = [(k + r) % 3 + 1 for k in range(n)]
        inp = torch.cat([torch.full((in_rows[j], 2), r * 10 + j).to(dt) for j in range(n)])
        out = torch.empty(sum(out_rows), 2, dtype=dt)
        dist.all_to_all_single(out, inp, out_rows, in_rows)
        check(out, torch.cat([torch.full((out_rows[k], 2), k * 10 + r).to(dt) for k in range(n)]), f"all_to_all_single splits {dt}")
        # all_to_all (lists)
        ins = [torch.full((j + 1,), r * 10 + j).to(dt) for j in range(n)]
        outs = [torch.empty(r + 1, dtype=dt) for _ in range(n)]
        dist.all_to_all(outs, ins)
        for k in range(n):
            check(outs[k], torch.full((r + 1,), k * 10 + r).to(dt), f"all_to_all {dt} from {k}")
        # gather / scatter
        g = [torch.zeros(4, dtype=dt) for _ in range(n)] if r == 1 % n else None
        dist.gather(vals(r, 4, dt), g, dst=1 % n)
        if g is not None:
            for k in range(n):
                check(g[k], vals(k, 4, dt), f"gather {dt} from {k}")
        s_out = torch.zeros(3, dtype=dt)
        dist.scatter(s_out, [vals(j + 100, 3, dt) for j in range(n)] if r == 0 else None, src=0)
        check(s_out, vals(r + 100, 3, dt), f"scatter {dt}")

    # bool (as uint8: SUM/MAX = or, PRODUCT/MIN = and), int16 and complex through bytes
    bt = torch.tensor([r == 0, False, True, r == 1])
    dist.all_reduce(bt)
    check(bt, torch.tensor([True, False, True, n > 1]), "all_reduce bool SUM (or)")
    bt = torch.tensor([r == 0, True])
    dist.all_reduce(bt, op=dist.ReduceOp.MIN)
    check(bt, torch.tensor([n == 1, True]), "all_reduce bool MIN (and)")
    i16 = [torch.zeros(3, dtype=torch.int16) for _ in range(n)]
    dist.all_gather(i16, torch.full((3,), -300 - r, dtype=torch.int16))
    for k in range(n):
        check(i16[k], torch.full((3,), -300 - k, dtype=torch.int16), "all_gather int16")
    z = torch.tensor([1 + 2j, r * 1j], dtype=torch.complex64)
    dist.all_reduce(z)
    check(z, torch.tensor([n * (1 + 2j), (n * (n - 1) // 2) * 1j], dtype=torch.complex64), "all_reduce complex64")

    # non-contiguous outputs of data movement
    outs = [noncontig(torch.zeros(4, dtype=torch.float32)) for _ in range(n)]
    dist.all_gather(outs, noncontig(torch.full((4,), float(r))))
    for k in range(n):
        check(outs[k], torch.full((4,), float(k)), "all_gather non-contiguous")
    bc = noncontig(torch.full((5,), float(r)))
    dist.broadcast(bc, src=0)
    check(bc, torch.zeros(5), "broadcast non-contiguous")
    out2d = torch.zeros(5, n * 3).t()  # (n*3, 5), non-contiguous
    dist.all_gather_into_tensor(out2d, torch.full((3, 5), float(r)))
    check(out2d, torch.cat([torch.full((3, 5), float(k)) for k in range(n)]), "all_gather_into_tensor non-contiguous out")

    # all_gather with uneven sizes
    outs = [torch.zeros(k + 1, dtype=torch.int64) for k in range(n)]
    dist.all_gather(outs, torch.arange(r + 1) + 100 * r)
    for k in range(n):
        check(outs[k], torch.arange(k + 1) + 100 * k, "all_gather uneven")

    # all_reduce_coalesced
    a, b2 = torch.ones(3) * (r + 1), torch.arange(4, dtype=torch.int32) * (r + 1)
    with dist._coalescing_manager(async_ops=False):
        dist.all_reduce(a)
        dist.all_reduce(b2)
    check(a, torch.ones(3) * (n * (n + 1) // 2), "coalesced all_reduce float")
    check(b2, torch.arange(4, dtype=torch.int32) * (n * (n + 1) // 2), "coalesced all_reduce int")

    # async_op=True: Work.wait, futures completed without wait, callbacks
    works = []
    for k in range(6):
        t = torch.full((1000,), float(k + r))
        works.append((dist.all_reduce(t, async_op=True), t, k))
    fut = works[-1][0].get_future()
    chained = fut.then(lambda f: f.value()[0].sum().item())
    for w, t, k in works:
        assert w.wait() is True
        check(t, torch.full((1000,), float(n * k + n * (n - 1) // 2)), "async all_reduce")
    assert chained.wait() == 1000 * float(n * 5 + n * (n - 1) // 2), chained.wait()
    t = torch.full((8,), 1.0)
    f = dist.all_reduce(t, async_op=True).get_future()
    got = f.wait()  # never called Work.wait
    check(got[0], torch.full((8,), float(n)), "future value of all_reduce")
    out = torch.zeros(n * 2)
    w = dist.all_gather_into_tensor(out, torch.full((2,), float(r)), async_op=True)
    w.get_future().wait()
    check(out, torch.arange(n).repeat_interleave(2).float(), "async all_gather_into_tensor via future")
    w = dist.barrier(async_op=True)
    w.wait(timeout=datetime.timedelta(seconds=60))
    # The backend's own Work (torch's wrapper forwards wait and get_future only).
    be = dist.group.WORLD._get_backend(torch.device("cpu"))
    assert isinstance(be, dmsc.torch.DmscBackend), type(be)
    opts = dist.AllreduceOptions()
    t = torch.ones(4)
    bw = be.allreduce([t], opts)
    assert bw.wait(datetime.timedelta(seconds=60)) and bw.is_completed() and bw.is_success() and bw.exception() is None
    check(t, torch.full((4,), float(n)), "backend allreduce Work")
    print(f"{CHECKS} torch collective checks", flush=True)


def case_new_group() -> None:
    """new_group and split_group get their own communicators."""
    n, r = dist.get_world_size(), dist.get_rank()
    evens = [k for k in range(n) if k % 2 == 0]
    odds = [k for k in range(n) if k % 2 == 1]
    ge = dist.new_group(evens, backend="dmsc")
    go = dist.new_group(odds, backend="dmsc") if odds else None
    mine = ge if r % 2 == 0 else go
    group_ranks = evens if r % 2 == 0 else odds
    t = torch.full((5,), float(r))
    dist.all_reduce(t, group=mine)
    check(t, torch.full((5,), float(sum(group_ranks))), "all_reduce in new_group")
    sub = dist.split_group(split_ranks=[evens, odds] if odds else [evens])
    assert sub is not None
    assert dist.get_world_size(sub) == len(group_ranks), (dist.get_world_size(sub), group_ranks)
    t = torch.full((3,), r + 1, dtype=torch.int64)
    dist.all_reduce(t, group=sub, op=dist.ReduceOp.PRODUCT)
    prod = 1
    for k in group_ranks:
        prod *= k + 1
    check(t, torch.full((3,), prod, dtype=torch.int64), "all_reduce in split_group")
    b = torch.full((2,), r)
    dist.broadcast(b, group_src=len(group_ranks) - 1, group=sub)
    check(b, torch.full((2,), group_ranks[-1]), "broadcast in split_group")
    print(f"{CHECKS} group checks", flush=True)


def case_p2p() -> None:
    """send/recv with tags, isend/irecv, and batch_isend_irecv: a ring both ways, large
    messages and a batch in an adversarial order (receives first, several peers)."""
    n, r = dist.get_world_size(), dist.get_rank()
    right, left = (r + 1) % n, (r - 1) % n
    if r == 0:
        dist.send(torch.arange(6, dtype=torch.float64), dst=1, tag=5)
        back = torch.zeros(3, dtype=torch.int32)
        dist.recv(back, src=1, tag=9)
        check(back, torch.tensor([7, 8, 9], dtype=torch.int32), "recv tag 9")
    elif r == 1:
        got = torch.zeros(6, dtype=torch.float64)
        dist.recv(got, src=0, tag=5)
        check(got, torch.arange(6, dtype=torch.float64), "recv tag 5")
        dist.send(torch.tensor([7, 8, 9], dtype=torch.int32), dst=0, tag=9)
    # isend / irecv on a ring (small messages)
    inbox = torch.zeros(4)
    ws = [dist.isend(torch.full((4,), float(r)), dst=right), dist.irecv(inbox, src=left)]
    for w in ws:
        w.wait()
    check(inbox, torch.full((4,), float(left)), "isend/irecv ring")
    # batch_isend_irecv: a ring in both directions with 4 MiB messages, receives listed first
    big = 1 << 20
    from_left, from_right = torch.zeros(big), torch.zeros(big)
    ops = [
        dist.P2POp(dist.irecv, from_left, left),
        dist.P2POp(dist.irecv, from_right, right),
        dist.P2POp(dist.isend, torch.full((big,), float(r)), right),
        dist.P2POp(dist.isend, torch.full((big,), float(r) + 0.5), left),
    ]
    reqs = dist.batch_isend_irecv(ops)
    for w in reqs:
        w.wait()
    check(from_left, torch.full((big,), float(left)), "batch ring from the left")
    check(from_right, torch.full((big,), float(right) + 0.5), "batch ring from the right")
    # every rank sends a different-size block to every other rank, in a rank-dependent order
    peers = [p for p in range(n) if p != r]
    recv = {p: torch.zeros(p + 1 + (1 << 18), dtype=torch.int64) for p in peers}
    ops = []
    for p in (peers if r % 2 else reversed(peers)):
        ops.append(dist.P2POp(dist.isend, torch.full((r + 1 + (1 << 18),), 1000 * r + p), p))
    for p in peers:
        ops.insert(0 if r % 2 else len(ops), dist.P2POp(dist.irecv, recv[p], p))
    for w in dist.batch_isend_irecv(ops):
        w.wait()
    for p in peers:
        check(recv[p], torch.full((p + 1 + (1 << 18),), 1000 * p + r), f"batch all-pairs from {p}")
    # non-contiguous receive in a batch
    nc = noncontig(torch.zeros(5))
    for w in dist.batch_isend_irecv([dist.P2POp(dist.isend, torch.full((5,), float(r)), right), dist.P2POp(dist.irecv, nc, left)]):
        w.wait()
    check(nc, torch.full((5,), float(left)), "batch non-contiguous receive")
    print(f"{CHECKS} p2p checks", flush=True)


def case_extra_ops() -> None:
    """BAND/BOR/BXOR and PREMUL_SUM (when this dmsc has them)."""
    n, r = dist.get_world_size(), dist.get_rank()
    have = all(hasattr(dmsc.ReduceOp, a) for a in ("BAND", "BOR", "BXOR", "PREMUL_SUM"))
    if not have:
        # the mapping must then fail with a clear error
        expect_error(lambda: dist.all_reduce(torch.ones(2, dtype=torch.int32), op=dist.ReduceOp.BAND), "BAND", exc=RuntimeError)
        print("extra ops: this dmsc has no BAND/BOR/BXOR/PREMUL_SUM", flush=True)
        return
    for dt in INT_DTYPES:
        for name, fn in (("BAND", lambda a, b: a & b), ("BOR", lambda a, b: a | b), ("BXOR", lambda a, b: a ^ b)):
            xs = [((torch.arange(9, dtype=torch.int64) * 37 + k * 11) % 120).to(dt) for k in range(n)]
            want = xs[0]
            for x in xs[1:]:
                want = fn(want, x)
            t = xs[r].clone()
            dist.all_reduce(t, op=getattr(dist.ReduceOp, name))
            check(t, want, f"all_reduce {name} {dt}")
    expect_error(lambda: dist.all_reduce(torch.ones(2), op=dist.ReduceOp.BXOR), "BXOR", "integer")
    for make in (dist._make_nccl_premul_sum, dist.ReduceOp.PREMUL_SUM):
        for dt in (torch.float32, torch.float64, torch.bfloat16):
            op = make(2.5)
            t = vals(r, 6, dt)
            want = (sum(vals(k, 6, torch.float64) for k in range(n)) * 2.5).to(dt)
            dist.all_reduce(t, op=op)
            check(t, want, f"all_reduce PREMUL_SUM {dt}", 1e-2 if dt == torch.bfloat16 else 1e-6)
            t = vals(r, 6, dt)
            dist.reduce(t, dst=0, op=make(0.5))
            if r == 0:
                check(t, (sum(vals(k, 6, torch.float64) for k in range(n)) * 0.5).to(dt), f"reduce PREMUL_SUM {dt}", 1e-2 if dt == torch.bfloat16 else 1e-6)
            out = torch.zeros(2, dtype=dt)
            dist.reduce_scatter_tensor(out, vals(r, 2 * n, dt), op=make(0.25))
            full = sum(vals(k, 2 * n, torch.float64) for k in range(n)) * 0.25
            check(out, full[2 * r : 2 * r + 2].to(dt), f"reduce_scatter_tensor PREMUL_SUM {dt}", 1e-2 if dt == torch.bfloat16 else 1e-6)
    print(f"{CHECKS} extra op checks", flush=True)


def case_errors() -> None:
    """Unsupported calls name themselves; bad op/dtype combinations say what is wrong."""
    n, r = dist.get_world_size(), dist.get_rank()
    expect_error(lambda: dist.recv(torch.zeros(2)), "dmsc backend does not support recv_anysource", exc=RuntimeError)
    expect_error(lambda: dist.monitored_barrier(), "dmsc backend does not support monitored_barrier", exc=RuntimeError)
    expect_error(lambda: dist.all_reduce(torch.ones(2, dtype=torch.bool), op=dist.ReduceOp.AVG), "AVG", "bool")
    expect_error(lambda: dist.all_reduce(torch.ones(2, dtype=torch.complex64), op=dist.ReduceOp.MAX), "MAX", "complex")
    expect_error(lambda: dist.all_reduce(torch.ones(2, dtype=torch.int16)), "int16")
    expect_error(lambda: dist.all_gather_into_tensor(torch.zeros(3), torch.zeros(2)), "all_gather_single", "elements")
    expect_error(lambda: dist.send(torch.ones(2), dst=(r + 1) % n, tag=-1), "tag")
    # Still in step after the errors (none of them reached the wire).
    t = torch.ones(3)
    dist.all_reduce(t)
    check(t, torch.full((3,), float(n)), "all_reduce after errors")
    # A dmsc failure reaches wait(), exception() and the future: a receive nobody sends.
    sub = dist.new_group(list(range(n)), backend="dmsc", timeout=datetime.timedelta(seconds=2))
    if r == 0:
        w = dist.irecv(torch.zeros(2), src=1, group=sub, tag=77)
        fut = w.get_future()
        expect_error(fut.wait, "did not complete within", exc=RuntimeError)  # torch names it "Timeout: ..."
        assert fut.done()
        expect_error(w.wait, "did not complete within")
        # The backend's own Work: the dmsc error itself.
        be = sub._get_backend(torch.device("cpu"))
        bw = be.recv([torch.zeros(2)], 1, 78)
        expect_error(bw.wait, "did not complete within", exc=dmsc.Timeout)
        assert bw.is_completed() and not bw.is_success() and isinstance(bw.exception(), dmsc.Timeout)
    dist.barrier()
    print(f"{CHECKS} error checks", flush=True)


def _mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    )


def _batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(8, 12, generator=g), torch.randn(8, 3, generator=g)


def _assert_close_params(a: torch.nn.Module, b: torch.nn.Module, what: str, rtol: float) -> None:
    global CHECKS
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        CHECKS += 1
        pa, pb = pa.detach(), pb.detach()
        err = ((pa - pb).abs().max() / pb.abs().max().clamp_min(1e-12)).item()
        assert err <= rtol, f"{what}: {name} differs by {err:.3g} relative"


def case_ddp() -> None:
    """DDP with no comm hook: the same MLP trained on dmsc and on gloo ends equal."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    r = dist.get_rank()
    gloo = dist.new_group(backend="gloo")
    models = {}
    for backend, group in (("dmsc", None), ("gloo", gloo)):
        model = DDP(_mlp(0), process_group=group, bucket_cap_mb=0.001)  # several buckets
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for step in range(6):
            x, y = _batch(step, r)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        models[backend] = model.module
    _assert_close_params(models["dmsc"], models["gloo"], "DDP dmsc vs gloo", 1e-6)
    # and the ranks agree (DDP keeps replicas identical)
    flat = torch.cat([p.detach().reshape(-1) for p in models["dmsc"].parameters()])
    ref0 = flat.clone()
    dist.broadcast(ref0, src=0)
    check(flat, ref0, "DDP replicas equal across ranks")
    # the model changed from its initial weights
    assert not torch.equal(flat, torch.cat([p.detach().reshape(-1) for p in _mlp(0).parameters()]))
    print(f"{CHECKS} ddp checks", flush=True)


def _fully_shard() -> Any:
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6
        from torch.distributed._composable.fsdp import fully_shard
    return fully_shard


def case_fsdp() -> None:
    """FSDP2 fully_shard on CPU: the same training on dmsc and on gloo gives equal losses and
    weights (reduce-scatter with AVG, all-gather into tensors)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    fully_shard = _fully_shard()
    n, r = dist.get_world_size(), dist.get_rank()
    gloo = dist.new_group(backend="gloo")
    results = {}
    for backend, group in (("dmsc", dist.group.WORLD), ("gloo", gloo)):
        from torch.distributed.device_mesh import DeviceMesh

        mesh = DeviceMesh.from_group(group, "cpu")
        model = _mlp(1)
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        losses = []
        for step in range(4):
            x, y = _batch(step, r)
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        full = [p.full_tensor() if isinstance(p, DTensor) else p for p in model.parameters()]
        results[backend] = (losses, [f.detach().clone() for f in full])
    global CHECKS
    (ld, wd), (lg, wg) = results["dmsc"], results["gloo"]
    for a, b in zip(ld, lg):
        CHECKS += 1
        assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), f"FSDP losses dmsc {ld} vs gloo {lg}"
    for a, b in zip(wd, wg):
        CHECKS += 1
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert ld[-1] != ld[0], ld
    print(f"{CHECKS} fsdp checks (losses {ld})", flush=True)


def case_mesh() -> None:
    """A 2-D DeviceMesh ("cpu", (2, N/2)): collectives along each dimension, against the
    expected values and against the same on gloo."""
    from torch.distributed.device_mesh import init_device_mesh

    n, r = dist.get_world_size(), dist.get_rank()
    assert n % 2 == 0
    mesh = init_device_mesh("cpu", (2, n // 2), mesh_dim_names=("dp", "tp"))
    coords = divmod(r, n // 2)
    gloo_groups = {
        "dp": [dist.new_group([i * (n // 2) + j for i in range(2)], backend="gloo") for j in range(n // 2)],
        "tp": [dist.new_group([i * (n // 2) + j for j in range(n // 2)], backend="gloo") for i in range(2)],
    }
    for dim, name in enumerate(("dp", "tp")):
        g = mesh.get_group(name)
        assert dist.get_backend(g) == "dmsc", dist.get_backend(g)
        members = [k for k in range(n) if divmod(k, n // 2)[1 - dim] == coords[1 - dim]]
        assert dist.get_process_group_ranks(g) == members, (name, dist.get_process_group_ranks(g), members)
        gg = gloo_groups[name][coords[1 - dim]]
        t = torch.arange(6, dtype=torch.float32) + r
        tg = t.clone()
        dist.all_reduce(t, group=g)
        dist.all_reduce(tg, group=gg)
        check(t, sum(torch.arange(6, dtype=torch.float32) + k for k in members), f"mesh {name} all_reduce")
        check(t, tg, f"mesh {name} all_reduce vs gloo")
        out = torch.zeros(len(members) * 2, dtype=torch.int64)
        dist.all_gather_into_tensor(out, torch.full((2,), r), group=g)
        check(out, torch.tensor(members).repeat_interleave(2), f"mesh {name} all_gather_into_tensor")
        rs = torch.zeros(2)
        dist.reduce_scatter_tensor(rs, torch.arange(2.0 * len(members)) * (r + 1), group=g)
        i = members.index(r)
        check(rs, torch.arange(2.0 * len(members))[2 * i : 2 * i + 2] * sum(k + 1 for k in members), f"mesh {name} reduce_scatter")
        b = torch.full((3,), float(r))
        dist.broadcast(b, group=g, group_src=len(members) - 1)
        check(b, torch.full((3,), float(members[-1])), f"mesh {name} broadcast")
        a2a = torch.arange(len(members), dtype=torch.int32) + 10 * r
        out = torch.empty_like(a2a)
        dist.all_to_all_single(out, a2a, group=g)
        check(out, torch.tensor([10 * k + i for k in members], dtype=torch.int32), f"mesh {name} all_to_all_single")
    print(f"{CHECKS} mesh checks", flush=True)


CASES = {
    "collectives": case_collectives,
    "new_group": case_new_group,
    "p2p": case_p2p,
    "extra_ops": case_extra_ops,
    "errors": case_errors,
    "ddp": case_ddp,
    "fsdp": case_fsdp,
    "mesh": case_mesh,
}


def main() -> int:
    dist.init_process_group("dmsc", timeout=datetime.timedelta(seconds=120))
    assert dist.get_rank() == int(os.environ["RANK"]) and dist.get_world_size() == int(os.environ["WORLD_SIZE"])
    for case in sys.argv[1:]:
        CASES[case]()
        print(f"OK {case}", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
