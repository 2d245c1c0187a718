#!/usr/bin/env python3
"""dmsc in the peers' benchmark loop (benches/peers/harness/peers/run_all.sh, DMSC_BENCH=...).

Accepts the peers' flags (-w --sizes --ops --budget --timeout --json --out-of-place ...), runs
`dmscrun -n W target/release/examples/peer_method` (same method as common.py: per iteration
barrier; t0; op; t1, max across ranks, median over iterations) and writes the peers' JSON.

  DMSC_BENCH="/opt/peers-venv/bin/python $PWD/benches/peers/dmsc_allreduce.py" \
      bash benches/peers/harness/peers/run_all.sh
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.environ.get("PEERS_DIR", os.path.join(ROOT, "benches", "peers", "harness", "peers"))
sys.path.insert(0, PEERS)
import common  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-w", "--world", type=int, default=2)
    p.add_argument("--sizes", default=common.DEFAULT_SIZES)
    p.add_argument("--ops", default="allreduce")
    p.add_argument("--all-ops", action="store_true")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--min-iters", type=int, default=5)
    p.add_argument("--budget", type=float, default=6.0)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--json", default=None)
    p.add_argument("--label", default="dmsc")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out-of-place", action="store_true",
                   help="allreduce with separate input and output (default: in place, as the peers)")
    a = p.parse_args()
    ops = "allreduce,allgather,broadcast" if a.all_ops else a.ops
    sizes = ",".join(str(s) for s in common.parse_sizes(a.sizes))
    subprocess.run(["cargo", "build", "--release", "-q", "--example", "peer_method", "--bin", "dmscrun"],
                   cwd=ROOT, check=True)
    exe = os.path.join(ROOT, "target", "release", "examples", "peer_method")
    run = os.path.join(ROOT, "target", "release", "dmscrun")
    c2c_before = common.c2c_ns() if hasattr(common, "c2c_ns") else None
    cmd = [run, "-n", str(a.world), exe, ops, sizes, str(a.budget), str(a.min_iters), str(a.iters)]
    if a.out_of_place:
        cmd.append("out-of-place")
    out = subprocess.run(cmd,
                         capture_output=True, text=True, timeout=a.timeout)
    if out.returncode != 0:
        sys.stderr.write(out.stdout + out.stderr)
        return out.returncode
    c2c_after = common.c2c_ns() if hasattr(common, "c2c_ns") else None
    results = []
    for line in out.stdout.splitlines():
        line = line.split("] ", 1)[-1]
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        results.append(common.summarize(d["op"], d["bytes"], a.world, d["max"], d["rank0"], d["warmup"], d["correct"],
                                        inplace=(d["op"] == "allreduce" and not a.out_of_place)))
    title = f"dmsc  world={a.world}  c2c_ns={c2c_before}->{c2c_after}"
    if not a.quiet:
        print(common.table(results, title))
    common.write_json(a.json, dict(library="dmsc", label=a.label, world_size=a.world, results=results,
                                   c2c_ns=[c2c_before, c2c_after]))
    return 0 if all(r["correct"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
