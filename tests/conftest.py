"""Shared fixtures: small simulated datasets made once per test session, W&B kept offline, and
the local SLURM cluster (CI starts it with .ci/slurm-up.sh) for the tests marked ``slurm``."""

from __future__ import annotations

import functools
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

TINY = {"n_train": 300, "n_val": 100, "n_test": 100, "seed": 7, "device": "cpu"}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Path of a small simulated dataset (300 train / 100 val / 100 test stars, 4096 pixels, seed
    7, stored magnitudes HSC-i 20.5-22.5), written once per session with specscale.data.simulate.simulate.
    Treat it as read-only."""
    from specscale.data.simulate import SimulationConfig, simulate

    path = tmp_path_factory.mktemp("tiny") / "tiny.h5"
    simulate(path, SimulationConfig(**TINY), progress=False)
    return path


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch, tmp_path):
    """No test ever talks to W&B servers: offline unless a test says otherwise, files in tmp."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / ".wandb-cache"))


@pytest.fixture(scope="module")
def one_thread():
    """Pin torch to one thread for a test module (the ceiling tests time-share 2 cores)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@functools.cache
def _why_no_cluster() -> str | None:
    if shutil.which("sbatch") is None:
        return "no SLURM: `sbatch` is not on PATH (CI starts a cluster with .ci/slurm-up.sh)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no SLURM cluster: `sinfo` failed ({exc}); start one with .ci/slurm-up.sh"
    if proc.returncode != 0:
        why = proc.stderr.strip() or proc.returncode
        return f"no SLURM cluster: `sinfo` failed ({why}); start one with .ci/slurm-up.sh"
    return None


@pytest.fixture
def slurm_cluster() -> None:
    """Skips only when there is no cluster to talk to (no `sbatch`, or `sinfo` fails)."""
    reason = _why_no_cluster()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _early_runs(request, tmp_path_factory):
    """The runs of the selected tests marked ``started_early(run=f, lane=None)``, started when the
    session starts, beside the rest of the suite. The SLURM sweeps spend most of their minutes
    waiting on the scheduler (the plugin's polling, a Snakemake start in every job), not on the
    CPU, so each gets a thread of its own; the local sweeps are CPU-bound, so those of one named
    ``lane`` run one after the other, in test order (the suite's own tests use about one of two
    cores; the lane's runs nice their Snakemake, so they fill the other without slowing them). A
    SLURM test's run starts only when there is a cluster (else the test skips); the test reads its
    run with ``early_run``."""
    items = [item for item in request.session.items if item.get_closest_marker("started_early")]
    items = [item for item in items if not (item.get_closest_marker("slurm") and _why_no_cluster())]
    pools, runs = {}, {}
    for item in items:
        marker = item.get_closest_marker("started_early")
        lane = marker.kwargs.get("lane") or item.nodeid
        if lane not in pools:
            pools[lane] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"early-{lane}")
        runs[item.nodeid] = pools[lane].submit(marker.kwargs["run"], tmp_path_factory.mktemp(item.name))
    yield runs
    for pool in pools.values():
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def early_run(request, _early_runs):
    """What this test's ``started_early`` run returned (waits for the run to end; its errors raise here)."""
    future = _early_runs.get(request.node.nodeid)
    if future is None:
        pytest.fail(f"{request.node.nodeid}: no early run; mark the test @pytest.mark.started_early(run=...)")
    return future.result()


@pytest.fixture
def fast(tmp_path):
    """A config file that makes LightGBM fast (7 leaves, 20 trees) and keeps W&B off."""
    from bad_input import write_fast_config

    return write_fast_config(tmp_path)
