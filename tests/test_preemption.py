"""Preemption as SLURM does it: SIGTERM to the whole process group (trainer and DataLoader workers
at once). The workers must outlive the signal, the trainer checkpoints at the current step and
exits 75, and a rerun of the same command finishes with the uninterrupted run's predictions. The
same holds in every phase of a run (start-up, data scan, setup, training, the last validation,
best-weights restore, test prediction, writing the outputs): exit 75, and the rerun goes on from
what was saved. bayes and fisher exit 75 too, leaving no output."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from specscale.data.loader import close_loader, train_loader
from specscale.data.sources import open_source

pytestmark = pytest.mark.slow  # ViT training runs, signals to process groups

# 30 steps per epoch, 4 epochs, 2 worker processes: a few seconds of training on a CPU
PREEMPT = {
    "models": {
        "vit-tiny": {
            "width": 16,
            "depth": 1,
            "heads": 2,
            "mlp": 32,
            "batch": 10,
            "max_epochs": 4,
            "patience": 0,
            "workers": 2,
            "prefetch": 2,
            "log_every": 7,  # windows of step losses that an interruption cuts
        }
    },
    "wandb": {"mode": "disabled"},
}
CLI = "import sys; from specscale.cli import main; sys.exit(main())"  # `specscale` with this interpreter
STOPPED = re.compile(r"interrupted: stopped (?:at|after epoch \d+ at) step (\d+)")


# `specscale` with this interpreter, after patching OWNER.NAME to SIGTERM the whole process group
# on its CALL-th call, then carry on: the signal lands exactly in that phase
HOOKED = """
import importlib, os, signal, sys
owner, name, call = sys.argv.pop(1), sys.argv.pop(1), int(sys.argv.pop(1))
module, _, cls = owner.partition(":")
target = importlib.import_module(module)
target = getattr(target, cls) if cls else target
original, calls = getattr(target, name), []
def hooked(*args, **kwargs):
    calls.append(1)
    if len(calls) == call:
        os.killpg(os.getpgrp(), signal.SIGTERM)
    return original(*args, **kwargs)
setattr(target, name, hooked)
from specscale.cli import main
sys.exit(main())
"""


def train_cmd(data: Path, out: Path, config: Path, hook: tuple[str, str, int] | None = None) -> list[str]:
    return [
        sys.executable,
        "-c",
        *([HOOKED, hook[0], hook[1], str(hook[2])] if hook else [CLI]),
        "train",
        "vit-tiny",
        "--data",
        str(data),
        "--noise",
        "1",
        "--mag",
        "20.5-22.5",
        "--n-train",
        "300",
        "--seed",
        "3",
        "--out",
        str(out),
        "--threads",
        "1",
        "--device",
        "cpu",
        "--config",
        str(config),
    ]


def run_to_end(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def group_is_gone(pgid: int, wait_s: float = 15.0) -> bool:
    """True once no process of group ``pgid`` is left (the loader's workers exited too)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def same_run(out: Path, ref: Path) -> None:
    """``out`` finished with exactly the predictions, metrics and training history of ``ref``."""
    m, r = (json.loads((d / "metrics.json").read_text()) for d in (out, ref))
    assert m["metrics"] == r["metrics"]
    assert m["cell"] == r["cell"] and m["params"] == r["params"]
    assert m["provenance"]["config_hash"] == r["provenance"]["config_hash"]
    for key in ("epochs", "steps", "best_epoch", "best_val_r2", "stopped_by"):
        assert m["model_info"][key] == r["model_info"][key], key
    drop = {"seconds"}  # wall-clock time: the only field allowed to differ
    assert [{k: v for k, v in h.items() if k not in drop} for h in m["model_info"]["history"]] == [
        {k: v for k, v in h.items() if k not in drop} for h in r["model_info"]["history"]
    ]
    with h5py.File(out / "predictions.h5") as a, h5py.File(ref / "predictions.h5") as b:
        np.testing.assert_array_equal(a["logg_pred"][:], b["logg_pred"][:])
        np.testing.assert_array_equal(a["rows"][:], b["rows"][:])


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "preempt.yaml"
    path.write_text(yaml.safe_dump(PREEMPT))
    return path


def test_loader_workers_outlive_a_stop_signal(tiny_dataset):
    """A SIGTERM that reaches a worker (a process-group signal does) does not kill it, even in its
    first moments: the epoch goes on and serves every batch the single-process loader serves."""
    src = open_source(tiny_dataset)
    ref, sref = train_loader(src, 300, "21.5", batch=64, slab=8, seed=3, workers=0)
    loader, sampler = train_loader(src, 300, "21.5", batch=64, slab=8, seed=3, workers=2, prefetch_factor=1)
    sref.set_epoch(1), sampler.set_epoch(1)
    before = set(multiprocessing.active_children())
    batches = iter(loader)
    # at once, while the workers may still be starting (before their worker_init_fn has run)
    workers = [p for p in multiprocessing.active_children() if p not in before]
    assert len(workers) == 2
    for w in workers:
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            os.kill(w.pid, sig)
    time.sleep(0.5)
    assert all(w.is_alive() for w in workers)
    got = list(batches)
    want = list(ref)
    assert len(got) == len(want) == 5
    for x, y in zip(got, want):
        assert all(torch.equal(x[k], y[k]) for k in y)
    close_loader(loader)  # ... and exit when the loader is closed
    assert not any(w.is_alive() for w in workers)


def test_sigterm_to_the_process_group_checkpoints_and_resumes_exactly(tiny_dataset, tmp_path, config):
    ref = tmp_path / "uninterrupted"
    run_to_end(train_cmd(tiny_dataset, ref, config))

    out = tmp_path / "preempted"
    cmd = train_cmd(tiny_dataset, out, config)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    pgid = os.getpgid(proc.pid)
    try:
        ckpt = out / "work" / "checkpoint.pt"
        deadline = time.monotonic() + 120
        while not ckpt.exists():  # epoch 0 is done: training (and the workers) are running
            assert proc.poll() is None, proc.communicate()[1][-4000:]
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
        time.sleep(0.2)  # into epoch 1
        os.killpg(pgid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 75, err[-4000:]
    assert "Traceback" not in err and "killed by signal" not in err, err[-4000:]
    assert group_is_gone(pgid), "DataLoader workers outlived the trainer"
    stopped = STOPPED.search(err)
    assert stopped, err[-4000:]
    ck = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert ck["step"] == int(stopped.group(1)) and 30 <= ck["step"] < 120, (ck["step"], err[-2000:])
    assert not (out / "metrics.json").exists()

    run_to_end(cmd)  # the requeued job: the same command
    m = json.loads((out / "metrics.json").read_text())
    assert m["model_info"]["resumed_from_step"] == ck["step"]
    same_run(out, ref)


VIT = "specscale.models.vit.trainer:ViTModel"
CELL = "specscale.sweep.cell"
# (phase, hooked callable, its call that signals, step the rerun resumes from: None = from scratch)
PHASES = [
    ("start-up", ("specscale.cli", "build_parser", 1), None),
    ("data scan", (CELL, "check_data", 1), None),
    ("setup before the first checkpoint", (VIT, "build", 1), None),
    ("training, mid-epoch", (VIT, "train_step", 45), 45),
    ("last epoch's validation", (VIT, "_validate", 4), 120),
    ("best-weights restore", (VIT, "_finish", 1), 120),
    ("test prediction", (VIT, "predict", 1), 120),
    ("writing predictions.h5", (CELL, "write_predictions", 1), 120),
]


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """(config, output folder) of one uninterrupted run, shared by the phase tests."""
    root = tmp_path_factory.mktemp("uninterrupted")
    config = root / "preempt.yaml"
    config.write_text(yaml.safe_dump(PREEMPT))
    run_to_end(train_cmd(tiny_dataset, root / "out", config))
    return config, root / "out"


def signalled_run(cmd: list[str]) -> tuple[int, str, int]:
    """Run ``cmd`` in its own process group (it signals that group itself); (exit code, stderr, pgid)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    pgid = os.getpgid(proc.pid)
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err, pgid


@pytest.mark.parametrize("phase, hook, resume_step", PHASES, ids=[p[0] for p in PHASES])
def test_sigterm_in_every_phase_exits_75_and_the_rerun_matches(
    tiny_dataset, tmp_path, uninterrupted, phase, hook, resume_step
):
    config, ref = uninterrupted
    out = tmp_path / "out"
    rc, err, pgid = signalled_run(train_cmd(tiny_dataset, out, config, hook))
    assert rc == 75, err[-4000:]
    assert "Traceback" not in err and "interrupted: stopped" in err, err[-4000:]
    assert group_is_gone(pgid), "DataLoader workers outlived the trainer"
    assert not (out / "metrics.json").exists()
    assert not list(out.rglob("*.tmp-*"))  # nothing half-written
    ckpt = out / "work" / "checkpoint.pt"
    if resume_step is None:  # nothing to save before the first checkpoint
        assert not ckpt.exists()
    else:
        ck = torch.load(ckpt, map_location="cpu", weights_only=True)
        assert ck["step"] == resume_step
        assert ck["done"] == (resume_step == 120)  # after training: the finished weights are saved

    run_to_end(train_cmd(tiny_dataset, out, config))  # the requeued job: the same command
    m = json.loads((out / "metrics.json").read_text())
    assert m["model_info"]["resumed_from_step"] == resume_step
    same_run(out, ref)


def ceiling_cmd(command: str, data: Path, out: Path, hook: tuple[str, str, int]) -> list[str]:
    argv = [command, "--data", str(data), "--noise", "1", "--mag", "21.5", "--stars", "10", "--out", str(out)]
    return [sys.executable, "-c", HOOKED, *map(str, hook), *argv]


@pytest.mark.parametrize(
    "command, hook",
    [
        ("fisher", ("specscale.ceiling.fisher", "cell_ceiling", 1)),
        ("fisher", ("specscale.core.files", "write_netcdf", 1)),
        ("bayes", ("specscale.ceiling.bayes", "bayes_reference", 1)),
    ],
)
def test_sigterm_in_bayes_and_fisher_exits_75_without_output(tiny_dataset, tmp_path, command, hook):
    """No checkpoint there (a cell is minutes of work): the rerun starts again, nothing is left."""
    out = tmp_path / "cell.nc"
    rc, err, _ = signalled_run(ceiling_cmd(command, tiny_dataset, out, hook))
    assert rc == 75, err[-4000:]
    assert "Traceback" not in err and f"specscale {command}: interrupted: stopped by SIGTERM" in err, err[-2000:]
    assert not list(tmp_path.iterdir())
