"""Shared helpers of the Python test suite (run by tests/python/run.sh)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORKER = HERE / "worker.py"


def run_ranks(n: int, args, timeout: float = 120, env=None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m dmsc.run -n N ARGS...``; fail the test if it exceeds ``timeout``
    seconds (the launcher is killed and its ranks die with it) or, with ``check``, if it
    exits non-zero."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "dmsc.run", "-n", str(n), *[str(a) for a in args]]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"{' '.join(cmd)} did not finish within {timeout} s\n--- stdout\n{out}\n--- stderr\n{err}")
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}")
    return p


def run_worker(n: int, *cases: str, timeout: float = 120, env=None) -> str:
    """Run worker.py CASES on n ranks and check that every rank finished every case."""
    p = run_ranks(n, [WORKER, *cases], timeout=timeout, env=env)
    for case in cases:
        for r in range(n):
            assert f"[{r}] OK {case}" in p.stdout, f"rank {r} did not finish {case}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def comm1():
    """A 1-rank communicator in the test process, for argument checks."""
    import dmsc

    c = dmsc.Communicator(0, 1, store_addr=f"127.0.0.1:{free_port()}", timeout=30)
    yield c
    c.destroy()
