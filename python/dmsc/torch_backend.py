"""dmsc as a ``torch.distributed`` backend for CPU and CUDA tensors: ``init_process_group("dmsc")``.

Importing this module (or :mod:`dmsc.torch`) registers the backend; torch also finds it by
itself through the ``torch.distributed.backends`` entry point of the dmsc package (torch
>= 2.15 loads such entry points in ``Backend._ensure_backend_registered``)::

    import torch.distributed as dist
    import dmsc.torch  # optional with torch >= 2.15

    dist.init_process_group("dmsc")  # under torchrun, python -m dmsc.run, ...

How it fits in torch (torch 2.15, the version tested): :func:`register` calls
``torch.distributed.Backend.register_backend("dmsc", creator, devices=["cpu", "cuda"])``. For each
group (``init_process_group``, every ``new_group``, every ``DeviceMesh`` dimension) torch
calls the creator with the group's ``PrefixStore``, rank, size and timeout; the creator makes
a :class:`DmscBackend`, a subclass of c10d's ``Backend`` (``torch._C._distributed_c10d
.Backend``, whose Python trampoline is ``torch/csrc/distributed/c10d/PyBackend.hpp``: it
calls the Python methods named below). Its rank 0 makes a :func:`dmsc.new_unique_id` and
publishes it in that store under ``dmsc_unique_id``; the others read it; every rank then joins
a :class:`dmsc.Communicator` with it. ``torch.distributed.split_group`` reaches
:meth:`DmscBackend.split` (``supports_splitting``), which joins the members of the new group
the same way over the store torch gives it.

Backend methods (torch's Python API in brackets): ``allreduce`` (all_reduce),
``allreduce_coalesced``, ``allgather`` (all_gather, also uneven sizes), ``all_gather_single``
(all_gather_into_tensor; ``_allgather_base``), ``all_gather_single_coalesced``,
``allgather_coalesced``, ``reduce_scatter`` (reduce_scatter, list input),
``reduce_scatter_single`` (reduce_scatter_tensor; ``_reduce_scatter_base``),
``reduce_scatter_single_coalesced``, ``all_to_all_single`` (all_to_all_single, with and
without split sizes; ``alltoall_base``), ``alltoall`` (all_to_all, lists), ``broadcast``,
``reduce``, ``gather``, ``scatter`` (both through dmsc's all-to-all-v, where only the root's
blocks are non-empty), ``barrier``, ``send``, ``recv`` (with tags) and
``start_coalescing``/``end_coalescing`` (batch_isend_irecv, see :meth:`DmscBackend.end_coalescing`).
Anything else (``recv_anysource``, ``allreduce_sparse``, ``monitored_barrier``, ...) raises
``RuntimeError("dmsc backend does not support <name>")``.

Tensors: CPU or CUDA (all of one call on one device), any layout (non-contiguous tensors
travel through contiguous copies that are copied back on completion). CUDA tensors need dmsc's
CUDA device (a driver and a GPU; a call fails with an error that says why otherwise); their
calls are ordered on the current stream of their device, and staged through pinned host
memory over TCP. Reductions take the element types dmsc reduces (int8,
uint8, int32, uint32, int64, uint64, float16, bfloat16, float32, float64), bool as uint8 (SUM
and MAX are a logical or, PRODUCT and MIN a logical and, as NCCL does) and complex tensors as
pairs of reals for SUM, AVG and PREMUL_SUM. Operations that only move data (broadcast,
all-gather, all-to-all, gather, scatter, send/recv) move bytes, so every dtype works.
ReduceOp: SUM, PRODUCT, MIN, MAX, AVG, BAND, BOR, BXOR (integers) and PREMUL_SUM (from
``torch.distributed._make_nccl_premul_sum(factor)``, with a Python number as factor) map to
the :class:`dmsc.ReduceOp` of the same name.

Every call returns a :class:`dmsc._torch_work.DmscTorchWork` whose future completes even
when nobody waits (see that module, also for a torch limitation on ``is_completed``).
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Optional

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import Backend as _C10dBackend

from . import Communicator, InvalidArgument, ReduceOp, new_unique_id
from ._dmsc import Work as _DmscWork
from ._torch_work import Completer, DmscTorchWork

__all__ = ["BACKEND_NAME", "DmscBackend", "create_backend", "register"]

#: The name given to ``init_process_group`` (``"dmsc"``; ``"cpu:dmsc"`` works too).
BACKEND_NAME = "dmsc"
#: The store key under which rank 0 of each group publishes its unique id.
UNIQUE_ID_KEY = "dmsc_unique_id"

_REDUCE_NAMES = {
    "SUM": "SUM",
    "PRODUCT": "PRODUCT",
    "MIN": "MIN",
    "MAX": "MAX",
    "AVG": "AVG",
    "BAND": "BAND",
    "BOR": "BOR",
    "BXOR": "BXOR",
    "PREMUL_SUM": "PREMUL_SUM",
}
_BOOL_OPS = {"SUM": "MAX", "MAX": "MAX", "BOR": "MAX", "PRODUCT": "MIN", "MIN": "MIN", "BAND": "MIN"}
_INTEGER_ONLY = {"BAND", "BOR", "BXOR"}
_LINEAR = {"SUM", "AVG", "PREMUL_SUM"}


def _unsupported(name: str, why: str = "") -> NoReturn:
    raise RuntimeError(f"dmsc backend does not support {name}" + (f": {why}" if why else ""))


def _check_device(name: str, tensors: Sequence[torch.Tensor]) -> None:
    """CPU or CUDA tensors, all of one kind: a call on CUDA tensors is ordered on the current
    stream of their device (dmsc exports them with ``__dlpack__(stream=...)`` for it), as
    ProcessGroupNCCL orders its work; mixing host and device tensors is an error naming both."""
    first: torch.Tensor | None = None
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"dmsc backend {name}: expected tensors, got {type(t).__name__}")
        if t.device.type not in ("cpu", "cuda"):
            _unsupported(f"{name} on {t.device} tensors", "only CPU and CUDA tensors are supported")
        if t.is_sparse:
            _unsupported(f"{name} on sparse tensors")
        if first is None:
            first = t
        elif t.device != first.device:
            raise InvalidArgument(
                f"dmsc backend {name}: tensors on {first.device} and on {t.device} in one call; "
                "a call's tensors are all on one device"
            )


class _Call:
    """The buffers of one backend call: contiguous stand-ins and their copy-backs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.works: list[_DmscWork] = []
        self.finish: list[Callable[[], object]] = []
        self.keep: list[object] = []

    def contig(self, t: torch.Tensor, output: bool) -> torch.Tensor:
        """``t`` itself when contiguous, else a contiguous copy (copied back if ``output``)."""
        if t.is_contiguous():
            return t
        c = t.contiguous()
        self.keep.append(c)
        if output:
            self.finish.append(lambda: t.copy_(c))
        return c

    def add(self, w: Optional[_DmscWork]) -> None:
        if w is not None:
            self.works.append(w)


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's storage as a 1-D uint8 tensor (same memory)."""
    flat = t.reshape(-1)
    if flat.dtype == torch.uint8:
        return flat
    if flat.dtype.is_complex:
        flat = torch.view_as_real(flat).reshape(-1)
    if flat.numel() == 0:
        return torch.empty(0, dtype=torch.uint8)
    return flat.view(torch.uint8)


def _rows_as_bytes(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor as 2-D uint8 (first dimension kept): all-to-all-v splits count rows."""
    rows = t.shape[0] if t.dim() > 0 else 1
    b = _as_bytes(t)
    return b.reshape(rows, -1) if rows > 0 else b.reshape(0, max(1, t[0:0].element_size()))


class DmscBackend(_C10dBackend):  # type: ignore[misc]  # torch's Backend binding is untyped
    """A c10d Backend running every collective of one torch group on one dmsc Communicator.

    Made by :func:`create_backend` (torch calls it); ``comm`` is the communicator."""

    def __init__(self, store: dist.Store, rank: int, size: int, timeout: datetime.timedelta) -> None:
        super().__init__(rank, size)
        self._timeout = timeout
        seconds = timeout.total_seconds() if timeout is not None else None
        if rank == 0:
            uid = new_unique_id()
            store.set(UNIQUE_ID_KEY, uid.hex())
        else:
            uid = bytes.fromhex(store.get(UNIQUE_ID_KEY).decode())
        self.comm: Communicator = Communicator(rank, size, unique_id=uid, timeout=seconds)
        self._rank = rank
        self._size = size
        self._completer = Completer(f"{rank}of{size}")
        self._coalescing: Optional[list[tuple[str, torch.Tensor, int, int, DmscTorchWork]]] = None
        self._lock = threading.Lock()
        self._closed = False

    # ----- identity -------------------------------------------------------------------
    def getBackendName(self) -> str:
        return BACKEND_NAME

    @property
    def supports_splitting(self) -> bool:
        return True

    @property
    def options(self) -> Any:
        """c10d Backend.Options (torch's ``split_group`` clones them for the new group)."""
        return _C10dBackend.Options(BACKEND_NAME, self._timeout)

    @property
    def supports_coalescing(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"DmscBackend(rank={self._rank}, size={self._size}, transport={self.comm.transport!r})"

    # ----- helpers ---------------------------------------------------------------------
    def _submit(self, call: _Call, result: Any) -> DmscTorchWork:
        work = DmscTorchWork(call.name, call.works, result, call.finish, call.keep)
        return self._completer.submit(work)

    def _op(self, name: str, torch_op: Any, dtype: torch.dtype) -> tuple[ReduceOp, Optional[float], bool]:
        """(dmsc op, PREMUL_SUM factor, reduce as pairs of reals) for ``torch_op`` on ``dtype``."""
        red = getattr(torch_op, "op", torch_op)  # a ReduceOp or its RedOpType
        op_name = getattr(red, "name", str(red)).split(".")[-1].upper()
        if op_name not in _REDUCE_NAMES:
            _unsupported(f"{name} with op {op_name}")
        factor: Optional[float] = None
        if op_name == "PREMUL_SUM":
            raw = torch_op.factor
            if isinstance(raw, torch.Tensor):
                if raw.numel() != 1:
                    _unsupported(f"{name} with a PREMUL_SUM factor tensor of {raw.numel()} elements")
                raw = raw.item()
            factor = float(raw)
        complex_pairs = False
        if dtype == torch.bool:
            if op_name not in _BOOL_OPS:
                raise InvalidArgument(f"dmsc backend {name}: op {op_name} is not defined on bool tensors")
            op_name = _BOOL_OPS[op_name]
        elif dtype.is_complex:
            if op_name not in _LINEAR:
                raise InvalidArgument(
                    f"dmsc backend {name}: op {op_name} is not defined on complex tensors (SUM, AVG and PREMUL_SUM are)"
                )
            complex_pairs = True
        elif op_name in _INTEGER_ONLY and dtype.is_floating_point:
            raise InvalidArgument(f"dmsc backend {name}: op {op_name} needs an integer tensor, got {dtype}")
        op = getattr(ReduceOp, op_name, None)
        if op is None:
            _unsupported(f"{name} with op {op_name}", "this dmsc build has no such ReduceOp")
        return op, factor, complex_pairs

    @staticmethod
    def _reducible(t: torch.Tensor, complex_pairs: bool) -> torch.Tensor:
        """The view dmsc reduces: bool as uint8, complex as pairs of reals (same memory)."""
        if t.dtype == torch.bool:
            return t.view(torch.uint8)
        if complex_pairs:
            return torch.view_as_real(t)
        return t

    @staticmethod
    def _reduce_kwargs(factor: Optional[float]) -> dict[str, Any]:
        return {} if factor is None else {"factor": factor}

    # ----- all-reduce --------------------------------------------------------------------
    def allreduce(self, tensors: list[torch.Tensor], opts: Any) -> DmscTorchWork:
        return self._allreduce("allreduce", tensors, opts.reduceOp)

    def allreduce_coalesced(self, tensors: list[torch.Tensor], opts: Any) -> DmscTorchWork:
        return self._allreduce("allreduce_coalesced", tensors, opts.reduceOp)

    def _allreduce(self, name: str, tensors: list[torch.Tensor], torch_op: Any) -> DmscTorchWork:
        _check_device(name, tensors)
        call = _Call(name)
        for t in tensors:
            op, factor, pairs = self._op(name, torch_op, t.dtype)
            c = call.contig(t, output=True)
            if c.numel():
                call.add(
                    self.comm.all_reduce(self._reducible(c, pairs), op, async_op=True, **self._reduce_kwargs(factor))
                )
        return self._submit(call, tensors)

    # ----- broadcast, reduce ---------------------------------------------------------------
    def broadcast(self, tensors: list[torch.Tensor], opts: Any) -> DmscTorchWork:
        _check_device("broadcast", tensors)
        call = _Call("broadcast")
        for t in tensors:
            c = call.contig(t, output=self._rank != opts.rootRank)
            if c.numel():
                call.add(self.comm.broadcast(_as_bytes(c), root=opts.rootRank, async_op=True))
        return self._submit(call, tensors)

    def reduce(self, tensors: list[torch.Tensor], opts: Any) -> DmscTorchWork:
        _check_device("reduce", tensors)
        call = _Call("reduce")
        root = opts.rootRank
        for t in tensors:
            op, factor, pairs = self._op("reduce", opts.reduceOp, t.dtype)
            c = call.contig(t, output=False)
            if not c.numel():
                continue
            # Out of place, so that non-root tensors stay as they are (as NCCL and gloo).
            out = torch.empty_like(c)
            call.keep.append(out)
            call.add(
                self.comm.reduce(
                    self._reducible(c, pairs),
                    root,
                    op,
                    out=self._reducible(out, pairs),
                    async_op=True,
                    **self._reduce_kwargs(factor),
                )
            )
            if self._rank == root:
                call.finish.append(_copier(t, out))
        return self._submit(call, tensors)

    # ----- all-gather ---------------------------------------------------------------------
    def allgather(self, output_tensors: list[list[torch.Tensor]], input_tensors: list[torch.Tensor], opts: Any) -> DmscTorchWork:
        return self._allgather("allgather", output_tensors, input_tensors)

    def allgather_coalesced(
        self, output_lists: list[list[torch.Tensor]], input_tensors: list[torch.Tensor], opts: Any
    ) -> DmscTorchWork:
        return self._allgather("allgather_coalesced", output_lists, input_tensors)

    def _allgather(self, name: str, output_lists: list[list[torch.Tensor]], inputs: list[torch.Tensor]) -> DmscTorchWork:
        if len(output_lists) != len(inputs):
            raise ValueError(f"dmsc backend {name}: {len(output_lists)} output lists for {len(inputs)} inputs")
        call = _Call(name)
        for outs, inp in zip(output_lists, inputs):
            _check_device(name, [inp, *outs])
            if len(outs) != self._size:
                raise ValueError(f"dmsc backend {name}: {len(outs)} output tensors for a group of {self._size}")
            src = _as_bytes(call.contig(inp, output=False))
            nbytes = [o.numel() * o.element_size() for o in outs]
            for o in outs:
                if o.dtype != inp.dtype:
                    raise InvalidArgument(f"dmsc backend {name}: output dtype {o.dtype} != input dtype {inp.dtype}")
            if nbytes[self._rank] != src.numel():
                raise InvalidArgument(
                    f"dmsc backend {name}: output {self._rank} has {outs[self._rank].numel()} elements, "
                    f"the input {inp.numel()}"
                )
            buf = torch.empty(sum(nbytes), dtype=torch.uint8, device=inp.device)
            call.keep.append(buf)
            if all(n == nbytes[0] for n in nbytes):
                if buf.numel():
                    call.add(self.comm.all_gather(src, out=buf, async_op=True))
            else:  # uneven sizes: every rank sends its block to every rank
                send = src.repeat(self._size)
                call.keep.append(send)
                call.add(self.comm.all_to_all_v(buf, send, nbytes, [src.numel()] * self._size, async_op=True))
            call.finish.append(_unpacker(buf, outs, nbytes))
        return self._submit(call, output_lists)

    def all_gather_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any) -> DmscTorchWork:
        return self._all_gather_single("all_gather_single", [output], [input])

    _allgather_base = all_gather_single

    def all_gather_single_coalesced(
        self, outputs: list[torch.Tensor], inputs: list[torch.Tensor], opts: Any
    ) -> DmscTorchWork:
        return self._all_gather_single("all_gather_single_coalesced", outputs, inputs)

    allgather_into_tensor_coalesced = all_gather_single_coalesced

    def _all_gather_single(self, name: str, outputs: list[torch.Tensor], inputs: list[torch.Tensor]) -> DmscTorchWork:
        _check_device(name, [*outputs, *inputs])
        call = _Call(name)
        for out, inp in zip(outputs, inputs):
            if out.dtype != inp.dtype:
                raise InvalidArgument(f"dmsc backend {name}: output dtype {out.dtype} != input dtype {inp.dtype}")
            if out.numel() != inp.numel() * self._size:
                raise InvalidArgument(
                    f"dmsc backend {name}: output has {out.numel()} elements, expected {self._size} x {inp.numel()}"
                )
            o = call.contig(out, output=True)
            i = call.contig(inp, output=False)
            if i.numel():
                call.add(self.comm.all_gather(_as_bytes(i), out=_as_bytes(o), async_op=True))
        return self._submit(call, outputs if len(outputs) != 1 else outputs[0])

    # ----- reduce-scatter -----------------------------------------------------------------
    def reduce_scatter(
        self, output_tensors: list[torch.Tensor], input_lists: list[list[torch.Tensor]], opts: Any
    ) -> DmscTorchWork:
        name = "reduce_scatter"
        call = _Call(name)
        for out, ins in zip(output_tensors, input_lists):
            _check_device(name, [out, *ins])
            if len(ins) != self._size:
                raise ValueError(f"dmsc backend {name}: {len(ins)} input tensors for a group of {self._size}")
            if any(i.numel() != out.numel() or i.dtype != out.dtype for i in ins):
                _unsupported(f"{name} with inputs of other sizes or dtypes than the output")
            op, factor, pairs = self._op(name, opts.reduceOp, out.dtype)
            packed = torch.cat([i.reshape(-1) for i in ins]) if out.numel() else out.reshape(-1)
            call.keep.append(packed)
            o = call.contig(out, output=True)
            if o.numel():
                call.add(
                    self.comm.reduce_scatter(
                        self._reducible(packed, pairs),
                        op,
                        out=self._reducible(o.reshape(-1), pairs),
                        async_op=True,
                        **self._reduce_kwargs(factor),
                    )
                )
        return self._submit(call, output_tensors)

    def reduce_scatter_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any) -> DmscTorchWork:
        return self._reduce_scatter_single("reduce_scatter_single", [output], [input], opts.reduceOp)

    _reduce_scatter_base = reduce_scatter_single

    def reduce_scatter_single_coalesced(
        self, outputs: list[torch.Tensor], inputs: list[torch.Tensor], opts: Any
    ) -> DmscTorchWork:
        return self._reduce_scatter_single("reduce_scatter_single_coalesced", outputs, inputs, opts.reduceOp)

    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced

    def _reduce_scatter_single(
        self, name: str, outputs: list[torch.Tensor], inputs: list[torch.Tensor], torch_op: Any
    ) -> DmscTorchWork:
        _check_device(name, [*outputs, *inputs])
        call = _Call(name)
        for out, inp in zip(outputs, inputs):
            if out.dtype != inp.dtype:
                raise InvalidArgument(f"dmsc backend {name}: output dtype {out.dtype} != input dtype {inp.dtype}")
            if inp.numel() != out.numel() * self._size:
                raise InvalidArgument(
                    f"dmsc backend {name}: input has {inp.numel()} elements, expected {self._size} x {out.numel()}"
                )
            op, factor, pairs = self._op(name, torch_op, out.dtype)
            o = call.contig(out, output=True)
            i = call.contig(inp, output=False)
            if o.numel():
                call.add(
                    self.comm.reduce_scatter(
                        self._reducible(i.reshape(-1), pairs),
                        op,
                        out=self._reducible(o.reshape(-1), pairs),
                        async_op=True,
                        **self._reduce_kwargs(factor),
                    )
                )
        return self._submit(call, outputs if len(outputs) != 1 else outputs[0])

    # ----- all-to-all -------------------------------------------------------------------
    def all_to_all_single(
        self,
        output: torch.Tensor,
        input: torch.Tensor,
        output_split_sizes: list[int],
        input_split_sizes: list[int],
        opts: Any,
    ) -> DmscTorchWork:
        name = "all_to_all_single"
        _check_device(name, [output, input])
        if output.dtype != input.dtype:
            raise InvalidArgument(f"dmsc backend {name}: output dtype {output.dtype} != input dtype {input.dtype}")
        call = _Call(name)
        o = call.contig(output, output=True)
        i = call.contig(input, output=False)
        if o.data_ptr() == i.data_ptr() and o.numel():
            i = i.clone()  # torch allows the same tensor as input and output
            call.keep.append(i)
        call.add(
            self.comm.all_to_all_v(
                _rows_as_bytes(o),
                _rows_as_bytes(i),
                list(output_split_sizes) or None,
                list(input_split_sizes) or None,
                async_op=True,
            )
        )
        return self._submit(call, output)

    alltoall_base = all_to_all_single

    def alltoall(self, output_tensors: list[torch.Tensor], input_tensors: list[torch.Tensor], opts: Any) -> DmscTorchWork:
        name = "alltoall"
        _check_device(name, [*output_tensors, *input_tensors])
        if len(output_tensors) != self._size or len(input_tensors) != self._size:
            raise ValueError(f"dmsc backend {name}: needs {self._size} input and output tensors")
        call = _Call(name)
        send = torch.cat([_as_bytes(call.contig(t, output=False)) for t in input_tensors])
        out_bytes = [t.numel() * t.element_size() for t in output_tensors]
        recv = torch.empty(sum(out_bytes), dtype=torch.uint8, device=send.device)
        call.keep += [send, recv]
        in_bytes = [t.numel() * t.element_size() for t in input_tensors]
        call.add(self.comm.all_to_all_v(recv, send, out_bytes, in_bytes, async_op=True))
        call.finish.append(_unpacker(recv, output_tensors, out_bytes))
        return self._submit(call, output_tensors)

    # ----- gather, scatter (all-to-all-v with the root's blocks only) -----------------
    def gather(self, output_lists: list[list[torch.Tensor]], input_tensors: list[torch.Tensor], opts: Any) -> DmscTorchWork:
        name = "gather"
        root = opts.rootRank
        if len(input_tensors) != 1:
            _unsupported(f"{name} of {len(input_tensors)} tensors per rank")
        inp = input_tensors[0]
        outs = output_lists[0] if self._rank == root else []
        _check_device(name, [inp, *outs])
        if self._rank == root and len(outs) != self._size:
            raise ValueError(f"dmsc backend {name}: {len(outs)} output tensors on the root for a group of {self._size}")
        call = _Call(name)
        src = _as_bytes(call.contig(inp, output=False))
        sends = [src.numel() if j == root else 0 for j in range(self._size)]
        recv_bytes = [o.numel() * o.element_size() for o in outs] if self._rank == root else [0] * self._size
        recv = torch.empty(sum(recv_bytes), dtype=torch.uint8, device=inp.device)
        call.keep.append(recv)
        call.add(self.comm.all_to_all_v(recv, src, recv_bytes, sends, async_op=True))
        if self._rank == root:
            call.finish.append(_unpacker(recv, outs, recv_bytes))
        return self._submit(call, output_lists)

    def scatter(self, output_tensors: list[torch.Tensor], input_lists: list[list[torch.Tensor]], opts: Any) -> DmscTorchWork:
        name = "scatter"
        root = opts.rootRank
        if len(output_tensors) != 1:
            _unsupported(f"{name} of {len(output_tensors)} tensors per rank")
        out = output_tensors[0]
        ins = input_lists[0] if self._rank == root else []
        _check_device(name, [out, *ins])
        if self._rank == root and len(ins) != self._size:
            raise ValueError(f"dmsc backend {name}: {len(ins)} input tensors on the root for a group of {self._size}")
        call = _Call(name)
        if self._rank == root:
            send = torch.cat([_as_bytes(call.contig(t, output=False)) for t in ins])
            send_bytes = [t.numel() * t.element_size() for t in ins]
        else:
            send = torch.empty(0, dtype=torch.uint8)
            send_bytes = [0] * self._size
        o = _as_bytes(call.contig(out, output=True))
        call.keep.append(send)
        recv_bytes = [o.numel() if j == root else 0 for j in range(self._size)]
        call.add(self.comm.all_to_all_v(o, send, recv_bytes, send_bytes, async_op=True))
        return self._submit(call, output_tensors)

    # ----- barrier ----------------------------------------------------------------------
    def barrier(self, opts: Any = None) -> DmscTorchWork:
        call = _Call("barrier")
        call.add(self.comm.barrier(async_op=True))
        return self._submit(call, [])

    # ----- point to point -------------------------------------------------------------
    def send(self, tensors: list[torch.Tensor], dst: int, tag: int) -> DmscTorchWork:
        return self._p2p("send", tensors, dst, tag)

    def recv(self, tensors: list[torch.Tensor], src: int, tag: int) -> DmscTorchWork:
        return self._p2p("recv", tensors, src, tag)

    def _p2p(self, kind: str, tensors: list[torch.Tensor], peer: int, tag: int) -> DmscTorchWork:
        _check_device(kind, tensors)
        if len(tensors) != 1:
            _unsupported(f"{kind} of {len(tensors)} tensors at once")
        if tag < 0:
            raise InvalidArgument(f"dmsc backend {kind}: tag must be >= 0, got {tag}")
        t = tensors[0]
        if self._coalescing is not None:
            placeholder = DmscTorchWork(kind, [], tensors)
            self._coalescing.append((kind, t, peer, tag, placeholder))
            return placeholder
        call = _Call(kind)
        c = call.contig(t, output=kind == "recv")
        if kind == "send":
            call.add(self.comm.send(_as_bytes(c), peer, tag, async_op=True))
        else:
            call.add(self.comm.recv(_as_bytes(c), peer, tag, async_op=True))
        return self._submit(call, tensors)

    def recv_anysource(self, tensors: list[torch.Tensor], tag: int) -> NoReturn:
        _unsupported("recv_anysource", "give recv a source rank")

    def start_coalescing(self, *args: Any) -> None:
        if self._coalescing is not None:
            raise RuntimeError("dmsc backend start_coalescing: already coalescing")
        self._coalescing = []

    def end_coalescing(self, *args: Any) -> DmscTorchWork:
        """Run the sends and receives posted since ``start_coalescing`` as one batch.

        dmsc runs a communicator's operations one after another, so the batch is ordered so
        that it cannot deadlock whatever the order of the calls: this rank meets its peers
        in one order that every rank agrees on (by the pair (lower rank, higher rank)), and
        the smallest unfinished meeting always has both sides at it. Within a meeting the
        k-th send to the peer and the k-th receive from it go as one ``send_recv`` (full
        duplex, like the peer's own k-th pair); leftovers, or all of the meeting when tags
        differ, go sends first on the lower rank and receives first on the higher one.
        Collectives issued while coalescing run at once, in program order."""
        ops = self._coalescing
        self._coalescing = None
        if ops is None:
            raise RuntimeError("dmsc backend end_coalescing: start_coalescing was not called")
        call = _Call("batch_isend_irecv")
        me = self._rank
        peers = sorted({peer for _, _, peer, _, _ in ops}, key=lambda p: (min(me, p), max(me, p)))
        for peer in peers:
            sends = [(t, tag) for kind, t, p, tag, _ in ops if p == peer and kind == "send"]
            recvs = [(t, tag) for kind, t, p, tag, _ in ops if p == peer and kind == "recv"]
            paired = min(len(sends), len(recvs))
            if any(sends[k][1] != recvs[k][1] for k in range(paired)):
                paired = 0
            for k in range(paired):
                s = _as_bytes(call.contig(sends[k][0], output=False))
                r = _as_bytes(call.contig(recvs[k][0], output=True))
                call.add(self.comm.send_recv(s, peer, r, peer, sends[k][1], async_op=True))
            def issue_send(t: torch.Tensor, tag: int, peer: int = peer) -> None:
                call.add(self.comm.send(_as_bytes(call.contig(t, output=False)), peer, tag, async_op=True))

            def issue_recv(t: torch.Tensor, tag: int, peer: int = peer) -> None:
                call.add(self.comm.recv(_as_bytes(call.contig(t, output=True)), peer, tag, async_op=True))

            rest_s = [(issue_send, t, tag) for t, tag in sends[paired:]]
            rest_r = [(issue_recv, t, tag) for t, tag in recvs[paired:]]
            for issue, t, tag in (rest_s + rest_r) if me < peer else (rest_r + rest_s):
                issue(t, tag)
        children = [w for *_, w in ops]
        work = DmscTorchWork(call.name, call.works, [t for _, t, _, _, _ in ops], call.finish, call.keep, children)
        return self._completer.submit(work)

    # ----- groups -----------------------------------------------------------------------
    def split(self, store: dist.Store, ranks: list[int], opts: Any = None) -> Optional[DmscBackend]:
        """The backend of ``torch.distributed.split_group``: this rank's new group (its
        members' ranks in this group, in order), joined over ``store``; None when this rank
        is not in ``ranks``."""
        if self._rank not in ranks:
            return None
        timeout = getattr(opts, "_timeout", None) or self._timeout
        return DmscBackend(store, list(ranks).index(self._rank), len(ranks), timeout)

    def shutdown(self) -> None:
        """Complete the queued operations, then release the communicator (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._completer.close()
        self.comm.destroy()

    def abort(self) -> None:
        """Make the operations in flight fail with :class:`dmsc.Aborted`."""
        self.comm.abort()
        self.shutdown()

    # ----- what dmsc does not do -------------------------------------------------------
    def allreduce_sparse(self, tensors: list[torch.Tensor], opts: Any) -> NoReturn:
        _unsupported("allreduce_sparse")

    def monitored_barrier(self, opts: Any, wait_all_ranks: bool = False) -> NoReturn:
        _unsupported("monitored_barrier", "use barrier")


def _unpack(buf: torch.Tensor, outs: Sequence[torch.Tensor], nbytes: Sequence[int]) -> None:
    """Copy consecutive byte blocks of ``buf`` into the tensors ``outs``."""
    off = 0
    for o, n in zip(outs, nbytes):
        block = buf[off : off + n]
        off += n
        if o.is_contiguous():
            _as_bytes(o).copy_(block)
        else:
            o.copy_(_from_bytes(block, o))


def _unpacker(buf: torch.Tensor, outs: Sequence[torch.Tensor], nbytes: Sequence[int]) -> Callable[[], None]:
    return lambda: _unpack(buf, outs, nbytes)


def _copier(dst: torch.Tensor, src: torch.Tensor) -> Callable[[], object]:
    return lambda: dst.copy_(src)


def _from_bytes(block: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bytes as a contiguous tensor of ``like``'s dtype and shape."""
    c = torch.empty(like.shape, dtype=like.dtype, device=like.device)
    _as_bytes(c).copy_(block)
    return c


def create_backend(store: dist.Store, rank: int, size: int, timeout: datetime.timedelta) -> DmscBackend:
    """The creator torch calls for each group: (PrefixStore, rank, size, timeout)."""
    return DmscBackend(store, rank, size, timeout)


def register() -> None:
    """Register ``"dmsc"`` with ``torch.distributed`` for CPU and CUDA tensors (idempotent).

    Also the ``torch.distributed.backends`` entry point's registrar."""
    if BACKEND_NAME.upper() in getattr(dist.Backend, "_plugins", {}):
        return
    dist.Backend.register_backend(BACKEND_NAME, create_backend, devices=["cpu", "cuda"])


register()
