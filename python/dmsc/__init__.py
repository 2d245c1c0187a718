"""dmsc: collective communication for distributed AI training and inference.

Join a job with :func:`init` (under ``python -m dmsc.run``, torchrun, mpirun or srun) or
with :class:`Communicator` directly, then call collectives on numpy arrays, bytearrays,
memoryviews or DLPack tensors (torch CPU tensors)::

    import numpy as np, dmsc
    comm = dmsc.init()
    grad = np.full(1024, comm.rank, dtype=np.float32)
    comm.all_reduce(grad, op=dmsc.ReduceOp.AVG)      # in place
    out = np.empty(1024 * comm.size, dtype=np.float32)
    comm.all_gather(grad, out=out)                   # out of place
    work = comm.broadcast(grad, root=0, async_op=True)
    work.wait()

Every call is in place on its first argument unless ``out=`` is given, and blocking unless
``async_op=True`` (then it returns a :class:`Work`). Errors are :class:`DmscError`
subclasses. The GIL is released while data moves.
"""

from ._dmsc import (
    Aborted,
    Communicator,
    DmscError,
    InternalError,
    InvalidArgument,
    InvalidUsage,
    Mismatch,
    PeerLost,
    ProtocolError,
    ReduceOp,
    RemoteError,
    SystemCallError,
    Timeout,
    Work,
    __version__,
    init,
    new_unique_id,
)

__all__ = [
    "Aborted",
    "Communicator",
    "DmscError",
    "InternalError",
    "InvalidArgument",
    "InvalidUsage",
    "Mismatch",
    "PeerLost",
    "ProtocolError",
    "ReduceOp",
    "RemoteError",
    "SystemCallError",
    "Timeout",
    "Work",
    "__version__",
    "init",
    "new_unique_id",
]
