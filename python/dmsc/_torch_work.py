"""The ``torch.distributed`` Work of the dmsc backend (see :mod:`dmsc.torch_backend`).

A :class:`DmscTorchWork` stands for one call of the backend (an ``allreduce``, a
``send``, a coalesced batch, ...): it holds the :class:`dmsc.Work` handles that the call
started, the tensors they read and write (and any contiguous copies standing in for
non-contiguous tensors), and the steps that copy results back into the caller's tensors.

Completion is driven by one :class:`Completer` thread per backend, not by ``wait()``: the
thread waits (GIL released, no polling) on each started operation in issue order -- the order
in which dmsc runs them -- then runs the copy-backs, keeps the buffers alive until then, and
completes the Work's ``torch.futures.Future`` with the output tensors, or sets the dmsc error
on it. DDP relies on this: its reducer calls ``allreduce`` and chains
``get_future().then(...)`` without ever calling ``wait()``.

The interface is that of c10d's ``Work`` (``torch/csrc/distributed/c10d/Work.hpp``, bound
as ``torch._C._distributed_c10d.Work``): ``wait(timeout)``, ``is_completed()``,
``is_success()``, ``exception()``, ``result()`` and ``get_future()``. Tested with torch 2.15.

One torch limitation (2.15): torch wraps a Work that a Python backend returns in a C++
``PyWorkHolder`` that forwards ``wait`` and ``get_future`` only, so on the object that
``torch.distributed.all_reduce(..., async_op=True)`` returns, ``is_completed()`` stays
False; ``work.get_future().done()`` is the reliable test there. Called on the backend
directly (``group._get_backend(torch.device("cpu"))``), every method is this class's.
"""

from __future__ import annotations

import collections
import datetime
import threading
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch
import torch.distributed as dist

from . import Timeout
from ._dmsc import Work as _DmscWork

__all__ = ["Completer", "DmscTorchWork"]


class DmscTorchWork(dist._Work):  # type: ignore[misc]  # torch's Work binding is untyped
    """One backend call's handle: completed by its backend's :class:`Completer`."""

    def __init__(
        self,
        name: str,
        works: Sequence[_DmscWork],
        result: Any,
        finish: Sequence[Callable[[], object]] = (),
        keep: Sequence[object] = (),
        children: Sequence[DmscTorchWork] = (),
    ) -> None:
        super().__init__()
        self.name = name
        self._works: list[_DmscWork] = list(works)
        self._result = result
        self._finish_steps: list[Callable[[], object]] = list(finish)
        # Buffers the operations use (contiguous copies, packed inputs): alive until done.
        self._keep: list[object] = list(keep)
        self._children: list[DmscTorchWork] = list(children)
        # The public future is a continuation of a private one, so that a failure is the
        # C++ future's error (torch's Future.set_exception only marks the Python wrapper,
        # which torch's PyWorkHolder does not hand back: the error would read as a value).
        self._source: torch.futures.Future[Any] = torch.futures.Future()
        self._future: torch.futures.Future[Any] = self._source.then(_unwrap)
        self._done = threading.Event()
        self._error: Optional[BaseException] = None

    # Called by the Completer thread (or at once for calls that started nothing).
    def _complete(self) -> None:
        error: Optional[BaseException] = None
        for w in self._works:
            try:
                w.wait()
            except BaseException as e:  # noqa: BLE001 - every dmsc error, passed on
                if error is None:
                    error = e
        if error is None:
            try:
                for step in self._finish_steps:
                    step()
            except BaseException as e:  # noqa: BLE001
                error = e
        self._set_done(error)

    def _set_done(self, error: Optional[BaseException]) -> None:
        self._works = []
        self._keep = []
        self._finish_steps = []
        self._error = error
        self._done.set()
        for child in self._children:
            child._set_done(error)
        self._children = []
        self._source.set_result(self._result if error is None else _Failed(error))

    def wait(self, timeout: Union[datetime.timedelta, float, None] = None) -> bool:
        """Block until the call completed; return True or raise its error.

        ``timeout`` (a ``timedelta`` or seconds; None or 0 waits for ever, as c10d's
        ``kNoTimeout``) raises :class:`dmsc.Timeout` if the call is still running then; it
        goes on and may be waited on again."""
        seconds: Optional[float]
        if isinstance(timeout, datetime.timedelta):
            seconds = timeout.total_seconds()
        else:
            seconds = timeout
        if seconds is not None and seconds <= 0:
            seconds = None
        if not self._done.wait(seconds):
            raise Timeout(f"dmsc backend: {self.name} did not complete within {seconds} s")
        if self._error is not None:
            raise self._error
        return True

    def is_completed(self) -> bool:
        """True once the call finished, successfully or not. Never blocks."""
        return self._done.is_set()

    def is_success(self) -> bool:
        """True once the call finished without an error."""
        return self._done.is_set() and self._error is None

    def exception(self) -> Optional[BaseException]:
        """The call's error once it failed, else None."""
        return self._error

    def result(self) -> Any:
        """The output tensors (after completion)."""
        return self._result

    def get_future(self) -> torch.futures.Future[Any]:
        """A Future completed with the output tensors (or failed with the error, which
        torch reports as a RuntimeError naming the dmsc error) when the call completes,
        whether or not anyone waits."""
        return self._future

    def __repr__(self) -> str:
        state = "failed" if self._error is not None else ("done" if self._done.is_set() else "pending")
        return f"DmscTorchWork({self.name}, {state})"


class _Failed:
    """A failure travelling through the private future."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _unwrap(fut: torch.futures.Future[Any]) -> Any:
    value = fut.value()
    if isinstance(value, _Failed):
        raise value.error
    return value


class Completer:
    """One daemon thread that completes a backend's Works in issue order.

    dmsc runs a communicator's operations in the order they were issued, so waiting on them
    first in, first out never waits on a later one while an earlier one could finish. The
    thread starts with the first Work and sleeps on a condition variable when idle."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: collections.deque[Optional[DmscTorchWork]] = collections.deque()
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def submit(self, work: DmscTorchWork) -> DmscTorchWork:
        if not work._works:
            work._complete()  # nothing in flight (e.g. empty tensors): complete now
            return work
        with self._cond:
            if self._closed:
                raise RuntimeError(f"dmsc backend {self._name} was shut down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"dmsc-torch-{self._name}", daemon=True)
                self._thread.start()
            self._queue.append(work)
            self._cond.notify()
        return work

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                work = self._queue.popleft()
            if work is None:
                return
            work._complete()

    def close(self) -> None:
        """Complete what is queued, then stop the thread (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.append(None)
                self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
