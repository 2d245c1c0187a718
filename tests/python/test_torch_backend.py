"""The "dmsc" torch.distributed backend (python/dmsc/torch_backend.py): every collective on 2
and 3 ranks, new_group/split_group, batch_isend_irecv, error cases, DDP and FSDP2 against
gloo, a 2-D DeviceMesh on 4 ranks (see torch_worker.py), and torchrun-launched jobs (DDP
against gloo on 2 and 3 ranks).

Skipped when torch is not importable -- unless DMSC_TORCH=1 (tests/python/run.sh sets it when
it installs torch), where a missing torch fails instead."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_ranks

HERE = Path(__file__).resolve().parent
WORKER = HERE / "torch_worker.py"
REQUIRED = os.environ.get("DMSC_TORCH") == "1"
HAVE_TORCH = importlib.util.find_spec("torch") is not None

if not HAVE_TORCH and REQUIRED:
    raise RuntimeError("DMSC_TORCH=1 but torch is not importable: the torch backend tests must run")
pytestmark = pytest.mark.skipif(
    not HAVE_TORCH,
    reason="torch is not installed: the torch.distributed backend is not tested "
    "(DMSC_TORCH=1 tests/python/run.sh installs torch and runs them)",
)


def run_torch(n: int, *cases: str, timeout: float = 240) -> str:
    """torch_worker.py CASES on n ranks under ``python -m dmsc.run`` (the launcher leaves
    MASTER_PORT free for torch's store)."""
    p = run_ranks(n, [WORKER, *cases], timeout=timeout)
    out = p.stdout + p.stderr
    for case in cases:
        for r in range(n):
            assert f"[{r}] OK {case}" in out, f"rank {r} did not finish {case}\n{out[-20000:]}"
    return out


@pytest.mark.parametrize("n", [2, 3])
def test_collectives_groups_p2p_errors(n):
    out = run_torch(n, "collectives", "new_group", "p2p", "extra_ops", "errors")
    assert "torch collective checks" in out and "p2p checks" in out


@pytest.mark.parametrize("n", [2, 3])
def test_ddp_and_fsdp_match_gloo(n):
    out = run_torch(n, "ddp", "fsdp", timeout=300)
    assert "ddp checks" in out and "fsdp checks" in out


def test_device_mesh_2d():
    out = run_torch(4, "mesh", timeout=300)
    assert "mesh checks" in out


def test_import_dmsc_does_not_import_torch():
    code = "import sys, dmsc; assert 'torch' not in sys.modules, 'import dmsc imported torch'; print('ok')"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr


def test_entry_point_registers_without_import():
    """torch finds "dmsc" through the torch.distributed.backends entry point (torch >= 2.15
    loads them when a backend name is unknown): no import dmsc.torch in the script."""
    import torch.distributed as dist

    if not hasattr(dist.Backend, "_ensure_backend_registered"):
        pytest.skip("this torch does not load torch.distributed.backends entry points")
    code = (
        "import torch.distributed as dist, datetime\n"
        "dist.init_process_group('dmsc', store=dist.HashStore(), rank=0, world_size=1)\n"
        "import torch; t = torch.ones(3); dist.all_reduce(t)\n"
        "assert dist.get_backend() == 'dmsc' and torch.equal(t, torch.ones(3))\n"
        "print('ok')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "ok" in p.stdout, p.stdout + p.stderr


@pytest.mark.parametrize("n", [2, 3])
def test_torchrun_ddp_matches_gloo(n):
    """The training script as a torch user runs it: ``torchrun --standalone --nproc-per-node N
    torch_worker.py ddp`` (init_process_group("dmsc") from torchrun's variables, DDP with no
    hook), weights equal to gloo's within 1e-6 relative on every rank."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("no torchrun next to this interpreter")
    p = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", str(n), str(WORKER), "ddp"],
        capture_output=True, text=True, timeout=300,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-20000:]
    assert out.count("OK ddp") == n and "ddp checks" in out, out[-20000:]


def test_torchrun_launch(tmp_path):
    """``torchrun --nproc-per-node 2 script.py`` with init_process_group("dmsc")."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("no torchrun next to this interpreter")
    script = tmp_path / "train.py"
    script.write_text(
        "import torch, torch.distributed as dist\n"
        "import dmsc.torch\n"
        "dist.init_process_group('dmsc')\n"
        "r, n = dist.get_rank(), dist.get_world_size()\n"
        "t = torch.full((4,), float(r + 1)); dist.all_reduce(t)\n"
        "assert torch.equal(t, torch.full((4,), float(n * (n + 1) // 2))), t\n"
        "print(f'TORCHRUN-OK {r} of {n}', flush=True)\n"
        "dist.destroy_process_group()\n"
    )
    p = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", str(script)],
        capture_output=True, text=True, timeout=180,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "TORCHRUN-OK 0 of 2" in p.stdout and "TORCHRUN-OK 1 of 2" in p.stdout, p.stdout + p.stderr


def test_the_backend_registers_for_cuda_and_a_cuda_call_without_a_gpu_fails_clearly():
    """"dmsc" serves CPU and CUDA tensors; where torch sees no GPU a CUDA tensor cannot be
    made, and where it sees one without dmsc's CUDA device (no driver for dmsc) the call says
    why. A host tensor and a CUDA tensor in one call are refused naming both devices."""
    code = r"""
import os, torch, torch.distributed as dist
import dmsc.torch
caps = dist.Backend.backend_capability["dmsc"]
assert "cpu" in caps and "cuda" in caps, caps
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PORT"])
dist.init_process_group("dmsc", rank=0, world_size=1)
t = torch.ones(4)
dist.all_reduce(t)
assert t.tolist() == [1.0] * 4
if torch.cuda.is_available():
    g = torch.ones(4, device="cuda")
    try:
        dist.all_reduce(g)
        torch.cuda.synchronize()
        assert g.tolist() == [1.0] * 4
        print("cuda all_reduce ran")
    except Exception as e:  # no dmsc CUDA device: the error must say why
        assert "CUDA" in str(e), e
        print("cuda all_reduce refused:", e)
    from dmsc.torch_backend import _check_device
    try:
        _check_device("all_reduce", [t, g])
        raise SystemExit("mixing cpu and cuda tensors was accepted")
    except dmsc.InvalidArgument as e:
        assert "cpu" in str(e) and "cuda" in str(e), e
else:
    print("no GPU for torch: CUDA tensors cannot be made here")
dist.destroy_process_group()
print("ok")
"""
    env = dict(os.environ, PORT=str(__import__("conftest").free_port()))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0 and "ok" in p.stdout, p.stdout + p.stderr
