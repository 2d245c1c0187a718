"""dmsc's log lines in Python: routed to ``logging`` (loggers ``dmsc.<SUBSYSTEM>``) when the
application configured it, to standard error as for C programs when not, and filtered by
DMSC_DEBUG and DMSC_DEBUG_SUBSYS first (see python/src/log_bridge.rs)."""

import json

from conftest import HERE, run_ranks

LOG_WORKER = HERE / "log_worker.py"


def records_of(stdout: str, n: int) -> list:
    """Every rank's records, from the ``[r] RECORDS <json>`` lines."""
    per_rank = {}
    for line in stdout.splitlines():
        head, sep, rest = line.partition("] RECORDS ")
        if sep:
            per_rank[head.lstrip("[")] = json.loads(rest)
    assert sorted(per_rank) == [str(r) for r in range(n)], stdout
    return [per_rank[str(r)] for r in range(n)]


def test_info_reaches_logging_with_the_banner():
    p = run_ranks(2, [LOG_WORKER, "capture"], env={"DMSC_DEBUG": "INFO"})
    for r, recs in enumerate(records_of(p.stdout, 2)):
        banner = [x for x in recs if x["name"] == "dmsc.INIT" and "dmsc version" in x["msg"]]
        assert banner, f"rank {r}: no banner among {recs}"
        assert banner[0]["level"] == 20 and f"rank {r} of 2" in banner[0]["msg"], banner
        # NCCL's shape: host:pid:tid [rank] DMSC INFO INIT: ...
        assert f"[{r}] DMSC INFO INIT: " in banner[0]["msg"], banner
        assert all(x["name"].startswith("dmsc") for x in recs), recs
    assert "DMSC INFO" not in p.stderr, "lines that went to logging were also written to stderr"


def test_info_without_logging_configured_goes_to_stderr():
    p = run_ranks(2, [LOG_WORKER, "plain"], env={"DMSC_DEBUG": "INFO"})
    assert p.stderr.count("DMSC INFO INIT: dmsc version") >= 2, p.stderr


def test_warn_prints_nothing_on_a_healthy_run():
    p = run_ranks(2, [LOG_WORKER, "capture"], env={"DMSC_DEBUG": "WARN"})
    assert records_of(p.stdout, 2) == [[], []]
    assert "DMSC" not in p.stderr, p.stderr


def test_trace_with_subsys_net_gives_only_network_lines():
    # Over TCP (DMSC_SHM=0), so that there are connections to trace.
    env = {"DMSC_DEBUG": "TRACE", "DMSC_DEBUG_SUBSYS": "NET", "DMSC_SHM": "0"}
    p = run_ranks(2, [LOG_WORKER, "capture"], env=env)
    for r, recs in enumerate(records_of(p.stdout, 2)):
        assert recs, f"rank {r}: no NET line at TRACE"
        assert {x["name"] for x in recs} == {"dmsc.NET"}, recs
        assert any(x["level"] == 10 for x in recs), f"rank {r}: no TRACE (DEBUG) record: {recs}"


FORK_SCRIPT = r"""
import logging, os, socket, sys
logging.basicConfig(level=logging.INFO)
import dmsc
pid = os.fork()
if pid == 0:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    c = dmsc.Communicator(0, 1, store_addr=f"127.0.0.1:{port}", timeout=30)
    c.destroy()
    sys.exit(0)  # runs the exit hooks, dmsc's included
_, status = os.waitpid(pid, 0)
assert status == 0, status
print("FORK-OK", flush=True)
"""


def test_a_forked_child_logs_to_stderr():
    """A forked child has no delivering thread: its lines go straight to standard error
    (not lost in a queue nobody reads), and its exit does not wait for that thread."""
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("DMSC_")}
    env["DMSC_DEBUG"] = "INFO"
    p = subprocess.run([sys.executable, "-W", "ignore", "-c", FORK_SCRIPT], capture_output=True,
                       text=True, timeout=60, env=env)
    assert p.returncode == 0 and "FORK-OK" in p.stdout, p.stdout + p.stderr
    raw = [line for line in p.stderr.splitlines() if " DMSC INFO INIT: dmsc version" in line]
    assert raw and all(not line.startswith("INFO:dmsc") for line in raw), p.stderr
