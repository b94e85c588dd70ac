"""Shared fixtures: small simulated datasets made once per test session, W&B kept offline, and
the local SLURM cluster (CI starts it with .ci/slurm-up.sh) for the tests marked ``slurm``."""

from __future__ import annotations

import functools
import shutil
import subprocess

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


@pytest.fixture
def fast(tmp_path):
    """A config file that makes LightGBM fast (7 leaves, 20 trees) and keeps W&B off."""
    from bad_input import write_fast_config

    return write_fast_config(tmp_path)
