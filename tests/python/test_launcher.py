"""``python -m dmsc.run``: dmscrun's launcher through the native module."""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import ROOT, run_ranks


def launcher(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "dmsc.run", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_usage_errors_and_help():
    for args, want in (
        ((), "missing -n N"),
        (("x.py",), "missing -n N"),
        (("-n", "0", "x.py"), "at least 1"),
        (("-n", "two", "x.py"), "invalid value 'two' for -n"),
        (("-n", "2"), "missing the script"),
        (("-q", "x.py"), "unknown option '-q'"),
        (("--np",), "--np needs a number of ranks"),
    ):
        p = launcher(*args)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert want in p.stderr, (args, p.stderr)
    p = launcher("--help")
    assert p.returncode == 0 and "usage: python -m dmsc.run" in p.stdout
    p = launcher("-V")
    assert p.returncode == 0 and p.stdout.startswith("dmsc.run ")


def test_environment_prefixes_and_module_mode(tmp_path):
    script = tmp_path / "env.py"
    script.write_text(
        "import os, sys\n"
        "print('env', os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['LOCAL_RANK'],"
        " os.environ['MASTER_ADDR'], os.environ['DMSC_LAUNCHER'], sys.argv[1:])\n"
    )
    p = run_ranks(3, [script, "a", "--b"])
    for r in range(3):
        assert f"[{r}] env {r} 3 {r} 127.0.0.1 dmscrun ['a', '--b']" in p.stdout, p.stdout
    p = run_ranks(2, ["-m", "platform"])
    assert "[0] " in p.stdout and "[1] " in p.stdout
    p = run_ranks(2, ["--no-python", "sh", "-c", "echo sh-$RANK"])
    assert "[1] sh-1" in p.stdout


def test_failing_rank_stops_the_others_and_sets_the_exit_code(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(
        "import os, sys, time\n"
        "if os.environ['RANK'] == '1':\n"
        "    sys.exit(3)\n"
        "time.sleep(60)\n"
    )
    t = time.monotonic()
    p = run_ranks(3, [script], timeout=40, check=False)
    assert p.returncode == 3, (p.returncode, p.stderr)
    assert "rank 1 exited with code 3; terminating the other ranks" in p.stderr
    assert time.monotonic() - t < 30


def test_missing_program():
    p = launcher("-n", "2", "--no-python", "dmsc-no-such-program-xyz")
    assert p.returncode == 127 and "command not found" in p.stderr, (p.returncode, p.stderr)
    p = launcher("-n", "1", "no-such-script-xyz.py")
    assert p.returncode == 2  # python's own exit code for a missing script
