"""Communicator.path_metrics(): the network paths of packet spraying (DMSC_PATHS > 1), and
none with one path per peer (see worker.py)."""

from conftest import run_worker


def test_path_metrics_with_two_paths_per_peer():
    # DMSC_CMA=0: every byte goes over the paths, none by cross-memory attach.
    run_worker(2, "path_metrics", timeout=90, env={"DMSC_PATHS": "2", "DMSC_CMA": "0", "DMSC_SHM": "0"})


def test_path_metrics_empty_by_default(comm1):
    assert comm1.path_metrics() == []
    run_worker(2, "path_metrics_default", timeout=90, env={"DMSC_PATHS": ""})
