"""Shared fixtures: small simulated datasets made once per test session."""

from __future__ import annotations

import pytest

TINY = {"n_train": 300, "n_val": 100, "n_test": 100, "seed": 7, "device": "cpu"}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Path of a small simulated dataset (300 train / 100 val / 100 test stars, 4096 pixels, seed
    7, stored magnitudes HSC-i 20.5-22.5), written once per session with specscale.store.simulate.
    Treat it as read-only."""
    from specscale.store import SimulationConfig, simulate

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
