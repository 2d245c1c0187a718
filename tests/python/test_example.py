"""examples/python/ddp_train.py on 2 and 4 ranks: weights identical everywhere and equal to
single-process training (the script asserts both)."""

import importlib.util

import pytest

from conftest import ROOT, run_ranks

SCRIPT = ROOT / "examples" / "python" / "ddp_train.py"


@pytest.mark.parametrize("n", [2, 4])
def test_ddp_train_numpy(n):
    p = run_ranks(n, [SCRIPT], timeout=120)
    assert f"weights identical on all {n} ranks" in p.stdout, p.stdout


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed: --torch variant skipped")
def test_ddp_train_torch():
    p = run_ranks(2, [SCRIPT, "--torch"], timeout=180)
    assert "weights identical on all 2 ranks" in p.stdout, p.stdout
