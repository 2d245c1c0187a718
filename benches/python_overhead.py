#!/usr/bin/env python3
"""all_reduce through the Python package, timed the way dmsc-perf (nccl-tests) times it, to
measure what the Python layer adds.

    python benches/python_overhead.py                       # 2 ranks, 8 B .. 64 MiB
    python benches/python_overhead.py --compare             # also run dmsc-perf and diff
    python benches/python_overhead.py --np 2 -b 8 -e 64M -n 200 -w 20

Method (src/perf/run.rs): per size, float32 buffers filled once, -w warm-up calls, a barrier,
then -n calls back to back; the time is the loop's time divided by -n, the maximum over ranks.
Out of place (``all_reduce(x, out=y)``) and in place (``all_reduce(x)``) are timed separately,
then one checked call counts wrong elements (outside the timing). busbw = size / time *
2(n-1)/n. numpy's huge-page madvise for arrays from 4 MiB is kept, as dmsc-perf gives its
buffers the same advice (``--no-numpy-hugepages`` turns it off; it is worth about 20% at
64 MiB, for dmsc and MPI alike). The defaults (-f 2 -n 20 -w 5) are dmsc-perf's, so the rows line up with

    target/release/dmsc-perf --np 2 all_reduce -b 8 -e 64M

``--compare`` runs exactly that (with the same -f/-n/-w) and prints the overhead per size:
added microseconds and percent. When mpi4py and mpirun are available, the same loop also runs
with ``MPI.COMM_WORLD.Allreduce`` on numpy arrays (Open MPI over TCP on loopback, as in
../shared/peers) for comparison; ``--no-mpi`` skips it.

The Python used must have numpy and the dmsc package (``pip install ./python``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(s: str) -> int:
    s = s.strip().upper()
    unit = s[-1] if s and s[-1] in UNITS else ""
    return int(float(s[: len(s) - len(unit)]) * UNITS[unit])


def sizes(a) -> list[int]:
    out, s = [], max(a.min_bytes, 4)
    while s <= a.max_bytes:
        out.append(s - s % 4)
        s *= a.factor
    return out


# ------------------------------------------------------------------------------- workers


class DmscBackend:
    name = "dmsc (Python)"

    def __init__(self):
        import dmsc

        self.dmsc = dmsc
        self.comm = dmsc.init()
        self.rank, self.size = self.comm.rank, self.comm.size

    def oop(self, x, y):
        self.comm.all_reduce(x, out=y)

    def ip(self, x):
        self.comm.all_reduce(x)

    def barrier(self):
        self.comm.barrier()

    def max(self, v: float) -> float:
        import numpy as np

        a = np.array([v])
        self.comm.all_reduce(a, self.dmsc.ReduceOp.MAX)
        return float(a[0])


class MpiBackend:
    name = "Open MPI (mpi4py)"

    def __init__(self):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def oop(self, x, y):
        self.comm.Allreduce(x, y, op=self.MPI.SUM)

    def ip(self, x):
        self.comm.Allreduce(self.MPI.IN_PLACE, x, op=self.MPI.SUM)

    def barrier(self):
        self.comm.Barrier()

    def max(self, v: float) -> float:
        return self.comm.allreduce(v, op=self.MPI.MAX)


def set_hugepages(np, on: bool) -> None:
    """numpy asks for transparent huge pages (madvise) on large arrays; dmsc-perf's buffers do
    not get them, and at 64 MiB that alone is worth ~20% (fewer TLB misses in the copies)."""
    core = getattr(np, "_core", None) or getattr(np, "core")
    try:
        core.multiarray._set_madvise_hugepage(on)
    except AttributeError:
        pass


def worker(a) -> int:
    import numpy as np

    set_hugepages(np, a.numpy_hugepages)
    be = DmscBackend() if a.worker == "dmsc" else MpiBackend()
    n, r = be.size, be.rank
    rows = []
    for size in sizes(a):
        count = size // 4
        row: dict = {"size": size, "count": count}
        for mode in ("oop", "ip"):
            x = np.full(count, 1.0 + r, np.float32)
            y = np.zeros(count, np.float32)
            call = (lambda: be.oop(x, y)) if mode == "oop" else (lambda: be.ip(x))
            for _ in range(a.warmup):
                call()
            be.barrier()
            t0 = time.perf_counter()
            for _ in range(a.iters):
                call()
            secs = be.max((time.perf_counter() - t0) / a.iters)
            # One checked call on fresh inputs (outside the timing), like dmsc-perf -c 1.
            x[:] = 1.0 + r
            call()
            got = y if mode == "oop" else x
            wrong = int(np.count_nonzero(got != n * (n + 1) / 2))
            algbw = size / 1e9 / secs
            row[mode] = {"time_us": secs * 1e6, "algbw": algbw, "busbw": algbw * 2 * (n - 1) / n, "wrong": wrong}
        rows.append(row)
    if r == 0:
        print(json.dumps({"backend": be.name, "nranks": n, "rows": rows}), flush=True)
    return 0


# ------------------------------------------------------------------------------ launcher


def table(title: str, nranks: int, rows) -> str:
    head = (f"# {title}, {nranks} ranks, float sum\n"
            f"#{'size':>11} {'count':>12}   {'time':>8} {'algbw':>7} {'busbw':>7} {'#wrong':>6}"
            f"   {'time':>8} {'algbw':>7} {'busbw':>7} {'#wrong':>6}\n"
            f"#{'(B)':>11} {'(elements)':>12}   {'(us)':>8} {'(GB/s)':>7} {'(GB/s)':>7} {'':>6}"
            f"   {'(us)':>8} {'(GB/s)':>7} {'(GB/s)':>7} {'':>6}")
    lines = [head]
    for w in rows:
        o, i = w["oop"], w["ip"]
        lines.append(f"{w['size']:>12} {w['count']:>12}   {o['time_us']:>8.2f} {o['algbw']:>7.2f} {o['busbw']:>7.2f}"
                     f" {o['wrong']:>6}   {i['time_us']:>8.2f} {i['algbw']:>7.2f} {i['busbw']:>7.2f} {i['wrong']:>6}")
    return "\n".join(lines)


def worker_args(a, perf: bool = False) -> list[str]:
    args = ["-b", str(a.min_bytes), "-e", str(a.max_bytes), "-f", str(a.factor), "-n", str(a.iters), "-w", str(a.warmup)]
    return args if perf or a.numpy_hugepages else args + ["--no-numpy-hugepages"]


def json_line(out: str):
    for line in out.splitlines():
        line = line.split("] ", 1)[-1] if line.startswith("[") else line
        if line.startswith("{"):
            return json.loads(line)
    return None


def run(cmd, timeout) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"{cmd[0]} failed with exit code {p.returncode}")
    return p.stdout


def run_dmsc(a):
    cmd = [sys.executable, "-m", "dmsc.run", "-n", str(a.np), os.path.abspath(__file__), "--worker", "dmsc", *worker_args(a)]
    return json_line(run(cmd, a.timeout))


def run_mpi(a):
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        print("# mpi4py is not importable: the MPI comparison is skipped", flush=True)
        return None
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        print("# mpirun not found: the MPI comparison is skipped", flush=True)
        return None
    cmd = [mpirun, "--allow-run-as-root", "--oversubscribe", "-np", str(a.np), "--bind-to", "none",
           "--mca", "pml", "ob1", "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo",
           "--mca", "oob_tcp_if_include", "lo",
           sys.executable, os.path.abspath(__file__), "--worker", "mpi", *worker_args(a)]
    return json_line(run(cmd, a.timeout))


def run_perf(a):
    exe = os.path.join(ROOT, "target", "release", "dmsc-perf")
    if not os.path.exists(exe):
        print(f"# {exe} not found (cargo build --release --bin dmsc-perf): --compare skipped", flush=True)
        return None
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "perf.json")
        cmd = [exe, "--np", str(a.np), "all_reduce", *worker_args(a, perf=True), "-c", "1", "--json", path]
        print("# " + " ".join(cmd), flush=True)
        print(run(cmd, a.timeout), flush=True)
        with open(path) as f:
            doc = json.load(f)
    doc = doc[0] if isinstance(doc, list) else doc
    rows = {}
    for r in doc["rows"]:
        rows[(r["size"], r["inplace"])] = r["time_us"]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--np", type=int, default=2, help="ranks (default 2)")
    ap.add_argument("-b", "--minbytes", dest="min_bytes", type=parse_size, default=8)
    ap.add_argument("-e", "--maxbytes", dest="max_bytes", type=parse_size, default=64 << 20)
    ap.add_argument("-f", "--stepfactor", dest="factor", type=int, default=2)
    ap.add_argument("-n", "--iters", type=int, default=20)
    ap.add_argument("-w", "--warmup_iters", dest="warmup", type=int, default=5)
    ap.add_argument("--no-mpi", action="store_true", help="skip the mpi4py comparison")
    ap.add_argument("--no-numpy-hugepages", dest="numpy_hugepages", action="store_false",
                    help="turn off numpy's huge-page madvise (dmsc-perf advises huge pages too)")
    ap.add_argument("--compare", action="store_true", help="also run target/release/dmsc-perf and diff")
    ap.add_argument("--json", help="write every backend's rows here")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--worker", choices=("dmsc", "mpi"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    results = []
    d = run_dmsc(a)
    results.append(d)
    print(table(d["backend"], d["nranks"], d["rows"]), flush=True)
    if not a.no_mpi:
        m = run_mpi(a)
        if m:
            results.append(m)
            print(table(m["backend"], m["nranks"], m["rows"]), flush=True)
    if a.compare:
        perf = run_perf(a)
        if perf:
            print("# Python overhead against dmsc-perf (same sizes, iterations and warm-up)")
            print(f"#{'size':>11}   {'oop +us':>8} {'oop +%':>7}   {'ip +us':>8} {'ip +%':>7}")
            for w in d["rows"]:
                cells = []
                for mode, inplace in (("oop", 0), ("ip", 1)):
                    base = perf.get((w["size"], inplace)) or perf.get((w["size"], bool(inplace)))
                    if base is None:
                        cells.append(f"{'-':>8} {'-':>7}")
                        continue
                    added = w[mode]["time_us"] - base
                    cells.append(f"{added:>8.2f} {100 * added / base:>6.1f}%")
                print(f"{w['size']:>12}   " + "   ".join(cells))
            results.append({"backend": "dmsc-perf", "rows": [{"size": s, "inplace": i, "time_us": t}
                                                              for (s, i), t in sorted(perf.items())]})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if all(w[m]["wrong"] == 0 for w in d["rows"] for m in ("oop", "ip")) else 1


if __name__ == "__main__":
    sys.exit(main())
