"""Type stubs of dmsc's native module (``dmsc._dmsc``); use it through ``dmsc``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Optional, Protocol, TypedDict, Union, final, overload

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing_extensions import Buffer

__version__: str
__all__ = [
    "Communicator", "Work", "ReduceOp", "DmscError", "InvalidArgument", "InvalidUsage", "Timeout",
    "Mismatch", "PeerLost", "RemoteError", "Aborted", "SystemCallError", "ProtocolError",
    "InternalError", "init", "new_unique_id", "launch", "__version__",
]

class _DLPackTensor(Protocol):
    """Anything with ``__dlpack__`` (torch CPU and CUDA tensors, numpy arrays, JAX arrays, ...)."""

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any: ...

class _CudaArray(Protocol):
    """Anything with ``__cuda_array_interface__`` (version 3: CuPy, Numba, torch CUDA tensors)."""

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]: ...

#: What dmsc moves: a C-contiguous buffer-protocol object (numpy array, bytearray,
#: memoryview, array.array), a DLPack tensor on the CPU or a CUDA device, or an object with
#: ``__cuda_array_interface__``. All buffers of one call are host memory, or all CUDA memory
#: (ordered on the tensors' current stream; needs a CUDA driver and GPU). Element types: int8,
#: uint8, int32, uint32, int64, uint64, float16, bfloat16 (DLPack only), float32, float64.
_Tensor = Union[Buffer, _DLPackTensor, _CudaArray]

#: An ``op=`` argument: a ReduceOp, its name as a string (any case; ``"prod"`` too), or an
#: object with such a ``name`` (``torch.distributed.ReduceOp.SUM``).
_OpLike = Union["ReduceOp", str, Any]

class _PathMetrics(TypedDict):
    """One network path to one peer, as :meth:`Communicator.path_metrics` reports it."""

    peer: int
    """Rank of the peer."""
    path: int
    """Index of the path to that peer, from 0."""
    state: Literal["up", "down"]
    """``"up"`` (carrying data) or ``"down"`` (failed or suspected; connected again after a
    backoff)."""
    epoch: int
    """How many times the path was connected, from 1."""
    rate_bytes_per_s: float
    """Smoothed delivery rate in bytes per second (0 before the first measurement)."""
    srtt_s: float
    """Smoothed round-trip time in seconds (0 before the first measurement)."""
    inflight: int
    """Payload bytes sent and not yet acknowledged."""
    bytes_sent: int
    """Payload bytes handed to the path."""
    bytes_acked: int
    """Payload bytes the peer reported having taken off the path."""
    bytes_requeued: int
    """Payload bytes moved from this path to others when it failed."""
    bytes_duplicated: int
    """Payload bytes carried as duplicates of slow tail chunks."""
    failures: int
    """Failures so far."""
    last_failure: str
    """Why the path last failed (empty if never)."""
    changes: list[tuple[float, Literal["up", "down"]]]
    """State changes, oldest first (at most the last 32): seconds since the paths were set
    up, and the new state."""

@final
class ReduceOp:
    """Reduction operator, named as in ``torch.distributed.ReduceOp``.

    AVG divides the sum by the number of ranks (integer division for integer types). BAND,
    BOR and BXOR apply to integer types only. PREMUL_SUM sums every rank's tensor multiplied
    by that rank's own ``factor=`` (a whole number for integer types), as torch's
    ``_make_nccl_premul_sum``; the tensor itself is not written before the result lands.
    Members compare equal to themselves and to their integer codes (SUM=0 ... AVG=4,
    BAND=5, BOR=6, BXOR=7, PREMUL_SUM=8).
    """

    SUM: ClassVar[ReduceOp]
    PRODUCT: ClassVar[ReduceOp]
    MIN: ClassVar[ReduceOp]
    MAX: ClassVar[ReduceOp]
    AVG: ClassVar[ReduceOp]
    BAND: ClassVar[ReduceOp]
    BOR: ClassVar[ReduceOp]
    BXOR: ClassVar[ReduceOp]
    PREMUL_SUM: ClassVar[ReduceOp]

    @property
    def name(self) -> str:
        """``"SUM"``, ``"PRODUCT"``, ``"MIN"``, ``"MAX"``, ``"AVG"``, ``"BAND"``, ``"BOR"``,
        ``"BXOR"`` or ``"PREMUL_SUM"``."""

    def __int__(self) -> int: ...

@final
class Work:
    """An operation started with ``async_op=True`` (like ``torch.distributed.Work``).

    It keeps the operation's buffers alive until the operation completes; do not touch them
    before ``wait()`` returns or ``is_completed()`` is True. Operations run in the order they
    were issued. Dropping an unfinished Work waits for it.
    """

    def wait(self, timeout: Optional[float] = None) -> Literal[True]:
        """Block (GIL released) until the operation completes; return True or raise its error.

        With ``timeout`` (seconds), raise :class:`Timeout` if it is still running by then; it
        stays in progress and may be waited on again.
        """

    def is_completed(self) -> bool:
        """True once the operation has finished, successfully or not. Never blocks."""

@final
class Communicator:
    """A group of ranks that run collectives together.

    Every rank must call the same collectives in the same order. Calls work in place on their
    first argument unless ``out=`` is given, and block (with the GIL released) unless
    ``async_op=True``, which returns a :class:`Work`. Errors raise :class:`DmscError`
    subclasses; argument errors raise :class:`InvalidArgument` naming the argument.
    """

    def __new__(
        cls,
        rank: int,
        size: int,
        store_addr: Optional[str] = None,
        unique_id: Optional[bytes] = None,
        *,
        timeout: Optional[float] = None,
        serve_store: bool = True,
    ) -> Communicator:
        """Join as ``rank`` of ``size``, blocking until every rank has joined.

        Give exactly one of ``store_addr`` ("host:port" of the rendezvous store; rank 0 serves
        it unless ``serve_store=False``) and ``unique_id`` (bytes from :func:`new_unique_id`).
        ``timeout`` (seconds) overrides ``DMSC_TIMEOUT``; other settings come from ``DMSC_*``.
        """

    @property
    def rank(self) -> int:
        """This process's rank, ``0 <= rank < size``."""

    @property
    def size(self) -> int:
        """Number of ranks."""

    @property
    def transport(self) -> str:
        """Transport in use: ``"shm"`` (shared memory), ``"tcp-uring"`` or ``"tcp-socket"``,
        with ``"+cma"`` when large chunks pass by cross-memory attach."""

    @property
    def peer_transports(self) -> list[str]:
        """The transport serving each rank, indexed by rank (``"self"`` for this one)."""

    def topology(self) -> dict[str, Any]:
        """The topology: ``{"hosts": [{"name": str, "ranks": [int]}], "host_of": [int],
        "links": [[None | {"latency_us": float, "gbps": float}]]}``; ``links[a][b]`` is the
        link from host ``a`` to host ``b`` (``a == b``: within host ``a``) as measured at
        init when the ranks span hosts, ``None`` where not measured (one host,
        ``DMSC_TOPO_PROBE=0``, a host of one rank, or a pair outside the probe's sample)."""

    def path_metrics(self) -> list[_PathMetrics]:
        """Metrics of the network paths of packet spraying (``DMSC_PATHS`` > 1): one dict per
        peer and path, ordered by peer, then path; ``[]`` with one path per peer (the
        default). A snapshot the progress thread refreshes every few milliseconds (and within
        50 ms of joining); never waits for an operation."""

    @overload
    def all_reduce(
        self, tensor: _Tensor, op: _OpLike = ReduceOp.SUM, *, out: Optional[_Tensor] = None, async_op: Literal[False] = False, factor: Optional[float] = None
    ) -> None:
        """Reduce ``tensor`` across ranks with ``op``; the result replaces ``tensor`` or goes to
        ``out`` (same type and length). ``factor`` is this rank's multiplier for
        ``ReduceOp.PREMUL_SUM`` (required with it, refused with any other op)."""
    @overload
    def all_reduce(
        self, tensor: _Tensor, op: _OpLike = ReduceOp.SUM, *, out: Optional[_Tensor] = None, async_op: Literal[True], factor: Optional[float] = None
    ) -> Work: ...
    @overload
    def all_reduce(
        self, tensor: _Tensor, op: _OpLike = ReduceOp.SUM, *, out: Optional[_Tensor] = None, async_op: bool = False, factor: Optional[float] = None
    ) -> Optional[Work]: ...

    @overload
    def reduce_scatter(
        self, tensor: _Tensor, op: _OpLike = ReduceOp.SUM, *, out: Optional[_Tensor] = None, async_op: Literal[False] = False, factor: Optional[float] = None
    ) -> None:
        """Reduce ``tensor`` (``size`` equal blocks) with ``op`` and keep block ``rank``.

        In place the result lands in block ``rank`` of ``tensor``; with ``out`` (one block
        long) it goes there (like ``reduce_scatter_tensor(out, tensor)``).
        """
    @overload
    def reduce_scatter(
        self, tensor: _Tensor, op: _OpLike = ReduceOp.SUM, *, out: Optional[_Tensor] = None, async_op: Literal[True], factor: Optional[float] = None
    ) -> Work: ...
    @overload
    def reduce_scatter(
        self, tensor: _Tensor, op: _OpLike = ReduceOp.SUM, *, out: Optional[_Tensor] = None, async_op: bool = False, factor: Optional[float] = None
    ) -> Optional[Work]: ...

    @overload
    def all_gather(self, tensor: _Tensor, *, out: Optional[_Tensor] = None, async_op: Literal[False] = False) -> None:
        """Gather every rank's block.

        With ``out`` (``size`` times as long as ``tensor``), block ``r`` of ``out`` receives
        rank ``r``'s ``tensor`` (like ``all_gather_into_tensor(out, tensor)``). In place,
        ``tensor`` holds ``size`` blocks and this rank's contribution sits at block ``rank``.
        """
    @overload
    def all_gather(self, tensor: _Tensor, *, out: Optional[_Tensor] = None, async_op: Literal[True]) -> Work: ...
    @overload
    def all_gather(self, tensor: _Tensor, *, out: Optional[_Tensor] = None, async_op: bool = False) -> Optional[Work]: ...

    @overload
    def broadcast(
        self, tensor: _Tensor, root: int = 0, *, out: Optional[_Tensor] = None, async_op: Literal[False] = False
    ) -> None:
        """Broadcast ``root``'s ``tensor`` to every rank (in place; read-only on the root).

        With ``out``, root's ``tensor`` lands in every rank's ``out``, the root's included.
        """
    @overload
    def broadcast(
        self, tensor: _Tensor, root: int = 0, *, out: Optional[_Tensor] = None, async_op: Literal[True]
    ) -> Work: ...
    @overload
    def broadcast(
        self, tensor: _Tensor, root: int = 0, *, out: Optional[_Tensor] = None, async_op: bool = False
    ) -> Optional[Work]: ...

    @overload
    def reduce(
        self,
        tensor: _Tensor,
        root: int = 0,
        op: _OpLike = ReduceOp.SUM,
        *,
        out: Optional[_Tensor] = None,
        async_op: Literal[False] = False, factor: Optional[float] = None,
    ) -> None:
        """Reduce every rank's ``tensor`` with ``op`` onto ``root``.

        In place the result replaces root's ``tensor`` (other ranks' tensors may serve as
        scratch space). With ``out`` it goes to root's ``out``; tensors stay unchanged and
        ``out`` is not written on other ranks.
        """
    @overload
    def reduce(
        self,
        tensor: _Tensor,
        root: int = 0,
        op: _OpLike = ReduceOp.SUM,
        *,
        out: Optional[_Tensor] = None,
        async_op: Literal[True], factor: Optional[float] = None,
    ) -> Work: ...
    @overload
    def reduce(
        self,
        tensor: _Tensor,
        root: int = 0,
        op: _OpLike = ReduceOp.SUM,
        *,
        out: Optional[_Tensor] = None,
        async_op: bool = False, factor: Optional[float] = None,
    ) -> Optional[Work]: ...

    @overload
    def all_to_all(self, tensor: _Tensor, *, out: Optional[_Tensor] = None, async_op: Literal[False] = False) -> None:
        """Block ``j`` of ``tensor`` goes to rank ``j``; block ``i`` of the result (``tensor``
        in place, or ``out``) comes from rank ``i``."""
    @overload
    def all_to_all(self, tensor: _Tensor, *, out: Optional[_Tensor] = None, async_op: Literal[True]) -> Work: ...
    @overload
    def all_to_all(self, tensor: _Tensor, *, out: Optional[_Tensor] = None, async_op: bool = False) -> Optional[Work]: ...

    @overload
    def all_to_all_v(
        self,
        output: _Tensor,
        input: _Tensor,
        output_split_sizes: Optional[Sequence[int]] = None,
        input_split_sizes: Optional[Sequence[int]] = None,
        *,
        async_op: Literal[False] = False,
    ) -> None:
        """All-to-all with per-rank sizes, like torch's ``all_to_all_single``.

        Sizes count rows of the first dimension (elements for 1-D buffers):
        ``input_split_sizes[j]`` rows go to rank ``j``, ``output_split_sizes[i]`` rows come
        from rank ``i``, packed in rank order; a missing list splits evenly. ``output`` may be
        ``input`` itself (in place).
        """
    @overload
    def all_to_all_v(
        self,
        output: _Tensor,
        input: _Tensor,
        output_split_sizes: Optional[Sequence[int]] = None,
        input_split_sizes: Optional[Sequence[int]] = None,
        *,
        async_op: Literal[True],
    ) -> Work: ...
    @overload
    def all_to_all_v(
        self,
        output: _Tensor,
        input: _Tensor,
        output_split_sizes: Optional[Sequence[int]] = None,
        input_split_sizes: Optional[Sequence[int]] = None,
        *,
        async_op: bool = False,
    ) -> Optional[Work]: ...

    @overload
    def barrier(self, *, async_op: Literal[False] = False) -> None:
        """Block until every rank has entered the barrier."""
    @overload
    def barrier(self, *, async_op: Literal[True]) -> Work: ...
    @overload
    def barrier(self, *, async_op: bool = False) -> Optional[Work]: ...

    @overload
    def send(self, tensor: _Tensor, dst: int, tag: int = 0, *, async_op: Literal[False] = False) -> None:
        """Send ``tensor`` to rank ``dst``; matched in order with its ``recv`` (same tag, type
        and length)."""
    @overload
    def send(self, tensor: _Tensor, dst: int, tag: int = 0, *, async_op: Literal[True]) -> Work: ...
    @overload
    def send(self, tensor: _Tensor, dst: int, tag: int = 0, *, async_op: bool = False) -> Optional[Work]: ...

    @overload
    def recv(self, tensor: _Tensor, src: int, tag: int = 0, *, async_op: Literal[False] = False) -> None:
        """Receive into ``tensor`` from rank ``src``."""
    @overload
    def recv(self, tensor: _Tensor, src: int, tag: int = 0, *, async_op: Literal[True]) -> Work: ...
    @overload
    def recv(self, tensor: _Tensor, src: int, tag: int = 0, *, async_op: bool = False) -> Optional[Work]: ...

    @overload
    def send_recv(
        self, tensor: _Tensor, dst: int, out: _Tensor, src: int, tag: int = 0, *, async_op: Literal[False] = False
    ) -> None:
        """Send ``tensor`` to ``dst`` and receive ``out`` from ``src`` as one group: the
        deadlock-free neighbour exchange (separate calls run one after the other, in issue
        order)."""
    @overload
    def send_recv(
        self, tensor: _Tensor, dst: int, out: _Tensor, src: int, tag: int = 0, *, async_op: Literal[True]
    ) -> Work: ...
    @overload
    def send_recv(
        self, tensor: _Tensor, dst: int, out: _Tensor, src: int, tag: int = 0, *, async_op: bool = False
    ) -> Optional[Work]: ...

    def split(self, color: Optional[int], key: int = 0) -> Optional[Communicator]:
        """Split like ``MPI_Comm_split``: ranks with the same ``color`` form a new
        communicator, ordered by ``key`` then rank. ``color=None`` (or negative) joins none
        and returns None. Every rank must call it."""

    def shrink(self, exclude: Sequence[int]) -> Communicator:
        """Build a communicator of this one's ranks minus ``exclude`` (like
        ``ncclCommShrink``), typically after :class:`PeerLost` named a lost rank. Every
        surviving rank calls it with the same list; the excluded ranks do not. New ranks follow
        the survivors' order here. This communicator may be failed; it is left as it is."""

    def abort(self) -> None:
        """Make every operation in flight fail promptly with :class:`Aborted`, and later ones
        at once. Safe from any thread, any number of times."""

    def destroy(self) -> None:
        """Release the communicator after the operations already started; later calls raise
        :class:`InvalidUsage`. Idempotent. Also done by ``with`` on exit."""

    def __enter__(self) -> Communicator: ...
    def __exit__(self, *args: object) -> Literal[False]: ...

def init(*, timeout: Optional[float] = None) -> Communicator:
    """Join the job described by the environment (``python -m dmsc.run``, dmscrun, torchrun,
    mpirun with DMSC_STORE_ADDR or MASTER_ADDR/MASTER_PORT, srun). Settings come from the
    ``DMSC_*`` variables; ``timeout`` (seconds) overrides ``DMSC_TIMEOUT``."""

def new_unique_id() -> bytes:
    """Make a 128-byte unique id naming a rendezvous store served by this process; pass it to
    every rank's ``Communicator(rank, size, unique_id=...)``."""

def launch(n: int, program: str, args: Sequence[str], env: Optional[Sequence[tuple[str, str]]] = None) -> int:
    """Run ``n`` local ranks of ``program args...`` as dmscrun does; return the job's exit
    code. Used by ``python -m dmsc.run``."""

class DmscError(Exception):
    """Base class of every dmsc error; ``kind`` names the core error variant."""

    kind: str

class InvalidArgument(DmscError):
    """A bad argument; the message names it."""

class InvalidUsage(DmscError):
    """The call is not valid in the communicator's state (e.g. after ``destroy()``)."""

class Timeout(DmscError):
    """A deadline passed."""

    waited_s: float
    missing: list[int]

class Mismatch(DmscError):
    """Ranks called different collectives (or with different arguments)."""

    seq: int
    ranks: list[int]

class PeerLost(DmscError):
    """A peer went away."""

    peer: int

class RemoteError(DmscError):
    """Another rank reported an error."""

    rank: int

class Aborted(DmscError):
    """The communicator was aborted."""

class SystemCallError(DmscError):
    """A system call failed."""

    errno: Optional[int]

class ProtocolError(DmscError):
    """Malformed bytes on the wire or in the store protocol."""

class InternalError(DmscError):
    """A bug in dmsc: an invariant did not hold."""
