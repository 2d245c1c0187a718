"""Start N local ranks of a torch script with torchrun's environment (MASTER_ADDR,
MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE), the way ``torchrun
--standalone`` leaves it to the script: rank 0's ``init_process_group`` serves the TCPStore
on MASTER_PORT. (``python -m dmsc.run`` cannot host such a script: its launcher serves dmsc's
own store on MASTER_PORT.)

``python torch_launch.py N script.py ARGS...`` runs one job by hand; the tests call
:func:`launch`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(n: int, args: Sequence[str], timeout: float, env: Optional[dict] = None) -> tuple[int, str]:
    """Run ``python ARGS`` as ranks 0..n-1; return (exit code, the ranks' output with lines
    prefixed ``[rank]``). The first failing rank's code wins and the others are killed; past
    ``timeout`` seconds every rank is killed and the code is 124."""
    port = free_port()
    procs: list[subprocess.Popen] = []
    files = []
    for r in range(n):
        e = dict(os.environ)
        e.update(env or {})
        e.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            RANK=str(r),
            WORLD_SIZE=str(n),
            LOCAL_RANK=str(r),
            LOCAL_WORLD_SIZE=str(n),
            PYTHONUNBUFFERED="1",
        )
        f = tempfile.TemporaryFile(mode="w+")
        files.append(f)
        procs.append(
            subprocess.Popen(
                [sys.executable, *args], stdout=f, stderr=subprocess.STDOUT, env=e, start_new_session=True
            )
        )
    deadline = time.monotonic() + timeout
    code = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                code = failed[0] if failed else 124
                break
            time.sleep(0.05)
        else:
            code = next((p.returncode for p in procs if p.returncode != 0), 0)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for p in procs:
            p.wait()
    out = []
    for r, f in enumerate(files):
        f.seek(0)
        out += [f"[{r}] {line}" for line in f.read().splitlines()]
        f.close()
    if code == 124:
        out.append(f"torch_launch: killed after {timeout} s")
    return code, "\n".join(out)


if __name__ == "__main__":
    rc, text = launch(int(sys.argv[1]), sys.argv[2:], timeout=float(os.environ.get("TIMEOUT", "600")))
    print(text)
    sys.exit(rc)
