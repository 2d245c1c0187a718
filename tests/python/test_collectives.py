"""Every collective x dtype x op on 1-5 ranks, async_op, send/recv, split and the explicit
init paths, against numpy references (see worker.py); torch tensors when torch is
importable."""

import importlib.util

import pytest

from conftest import run_worker


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_numpy_collectives_async_p2p_split(n):
    out = run_worker(n, "collectives", "operators", "async_p2p_split", "init_paths", timeout=150)
    assert "collective checks" in out and "operator checks passed" in out


def test_failures_timeout_abort_mismatch_peer_lost():
    run_worker(2, "failures", timeout=90, env={"DMSC_TIMEOUT": "1"})


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="torch is not installed: torch CPU tensors and bfloat16 through torch are not tested "
    "(the DLPack path is still tested with numpy and with a hand-made bfloat16 capsule)",
)
@pytest.mark.parametrize("n", [2, 3])
def test_torch_tensors(n):
    out = run_worker(n, "torch", timeout=150)
    assert "torch checks" in out
