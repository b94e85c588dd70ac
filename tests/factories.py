"""Factories the tests (and benchmarks/bench_workflow.py) share: a fabricated, schema-true sweep
(metrics.json cells, ceiling and curve files), the reader of an offline W&B run, and the
environment for Snakemake/submitit jobs on the local SLURM cluster."""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

from specscale.core.vocab import N_SNR_BINS, Cell, snr_bin_coords
from specscale.models.metrics import evaluate
from specscale.models.vit.params import ViTParams

REPO = Path(__file__).resolve().parents[1]
# the local test cluster (.ci/slurm-up.sh)
PARTITION = "debug"
ACCOUNT = "default"


# ---------------------------------------------------------------- a ViT small enough to train in a test
SMALL_VIT = {
    "width": 32,
    "depth": 1,
    "heads": 2,
    "mlp": 64,
    "batch": 64,
    "max_epochs": 1,
    "patience": 0,
    "workers": 0,
    "lr": 2e-3,
    "log_every": 1,
    "eval_batch": 64,
}


def small_vit(**overrides) -> ViTParams:
    """A one-block ViT of width 32 (seconds per epoch of a few hundred spectra on one CPU thread);
    ``overrides`` are ViTParams fields."""
    return ViTParams(**{**SMALL_VIT, **overrides})


# ---------------------------------------------------------------- a fabricated sweep
# a small synthetic sweep: R^2 grows with n_train towards a per-model plateau, drops with noise
PLATEAU = {"ridge": 0.55, "lightgbm": 0.62, "vit-tiny": 0.7, "oracle": 0.8}


def fake_r2(cell: Cell) -> float:
    """The R^2 the fabricated predictions of ``cell`` aim at."""
    plateau = PLATEAU.get(cell.model, 0.5)  # a variant of the default config: a plateau of its own
    return plateau / cell.noise**0.3 * (1 - 0.5 * (1000 / cell.n_train) ** 0.5) - 0.01 * cell.seed


def metrics_record(cell: Cell, n_test: int = 400) -> dict:
    """A metrics.json record as ``specscale train`` writes it, from real ``evaluate`` numbers."""
    rng = np.random.default_rng([cell.n_train, cell.seed, int(cell.noise * 100), len(cell.model)])
    y = rng.uniform(1, 5, n_test)
    snr = rng.uniform(2, 30, n_test)
    r2 = min(max(fake_r2(cell), 0.05), 0.97)
    pred = y + rng.normal(0, np.sqrt((1 - r2) * y.var()), n_test)
    return {
        "schema": "specscale.metrics/1",
        "cell": cell.info(),
        "metrics": evaluate(y, pred, snr),
        "timing": {"train_s": 0.01 * cell.n_train**0.5, "predict_s": 0.1, "peak_mem_mb": 300.0},
        "model_info": {"alpha": 10.0},
        "params": {"alphas": [1, 10, 100]},
        "provenance": {
            "code_version": "test",
            "config_hash": "abc",
            "dataset_id": "d1",
            "seed": cell.seed,
            "device": "cpu",
        },
        "data": {"path": "data.h5", "dataset_id": "d1", "n_val": 100, "n_test": n_test},
    }


def write_cell(root: Path, cell: Cell, record: dict | None = None) -> Path:
    """Write the metrics.json of ``cell`` under ``root`` in the workflow's layout; returns its path."""
    path = (
        root
        / f"noise{cell.noise:g}"
        / f"mag{cell.mag.label()}"
        / cell.model
        / f"n{cell.n_train}"
        / f"s{cell.seed}"
        / "metrics.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record or metrics_record(cell)))
    return path


def shared_test_stars(noise: float, mag: str, n_test: int = 400) -> dict[str, np.ndarray]:
    """The test stars of a (noise, mag) cell, the same for every model, size and seed: rows, true
    log g (dex), per-spectrum S/N and a shared noise draw z (what the test noise does to every model)."""
    rng = np.random.default_rng([int(noise * 100), sum(map(ord, mag)), n_test])
    return {
        "rows": np.arange(n_test, dtype=np.int64),
        "logg_true": rng.uniform(1, 5, n_test),
        "snr": rng.uniform(2, 30, n_test),
        "z": rng.normal(size=n_test),
    }


def write_paired_cell(root: Path, cell: Cell, r2: float | None = None, n_test: int = 400) -> Path:
    """A cell with predictions.h5 next to metrics.json, both from the same predictions of the shared
    :func:`shared_test_stars`: errors = sigma (0.8 z_shared + 0.6 z_cell), sigma set by the target ``r2``
    (default :func:`fake_r2`), so cells of one (noise, mag) are paired star by star. Returns the
    metrics.json path (as :func:`write_cell`)."""
    from specscale.sweep.cell import write_predictions

    stars = shared_test_stars(cell.noise, cell.mag.label(), n_test)
    y = stars["logg_true"]
    target = min(max(fake_r2(cell) if r2 is None else r2, 0.05), 0.97)
    rng = np.random.default_rng([cell.n_train, cell.seed, int(cell.noise * 100), sum(map(ord, cell.model))])
    pred = y + np.sqrt((1 - target) * y.var()) * (0.8 * stars["z"] + 0.6 * rng.normal(size=n_test))
    record = metrics_record(cell, n_test)
    record["metrics"] = evaluate(y, pred, stars["snr"])
    path = write_cell(root, cell, record)
    labels = np.zeros((n_test, 4))
    labels[:, 1] = y
    write_predictions(
        path.with_name("predictions.h5"),
        stars["rows"],
        labels,
        pred,
        stars["snr"],
        np.full(n_test, cell.mag.lo),
        {"schema": "specscale.predictions/1", "cell": record["cell"], "dataset_id": "d1"},
    )
    return path


def write_ceiling(path: Path, noise: float, mag: str, window: str | None = None, loss: float = 0.0) -> Path:
    """A ``specscale fisher`` file: scalar ceilings plus one per S/N bin; ``window`` (its
    ``window`` attribute as ``specscale fisher --window`` writes it) with ``loss`` less R^2."""
    pop = 0.9 - 0.1 * noise - loss
    ds = xr.Dataset(
        {
            "ceiling_pop": pop,
            "ceiling_median": min(pop + 0.1, 0.99),
            "ceiling_pop_top20": min(pop + 0.1, 0.99),
            "ceiling_median_top20": min(pop + 0.12, 0.99),
            "ceiling_pop_snr_bin": ("snr_bin", np.linspace(0.2, 0.95, N_SNR_BINS)),
            "var_prior": 4 / 3,
            "r2_max": ("star", np.linspace(0.3, 0.99, 50)),  # per-star: stays in the file
        },
        coords=snr_bin_coords(),
        attrs={"dataset_id": "d1", "noise": noise, "mag": mag, **({"window": window} if window else {})},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def write_bayes(path: Path, noise: float, mag: str, r2: float, window: str = "full", n_stars: int = 300) -> Path:
    """A ``specscale bayes`` file: the reference's R^2 ``r2``, its errors and per-bin values."""
    n_bins = N_SNR_BINS
    ds = xr.Dataset(
        {
            "r2_reference": r2,
            "r2_bayes_err": 0.01,
            "r2_bayes_mc_se": 0.004,
            "r2_bayes_sampling_se": 0.009,
            "r2_bayes": r2 - 0.002,
            "rmse_bayes": float(np.sqrt((1 - r2) * 4 / 3)),
            "r2_bayes_snr_bin": ("snr_bin", np.linspace(0.3, 0.98, n_bins)),
            "ess_median": 400.0,
            "logg_mean": ("star", np.zeros(n_stars)),  # per-star: stays in the file
        },
        attrs={"dataset_id": "d1", "noise": noise, "mag": mag, "window": window, "n_stars": n_stars},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def write_curves(path: Path, noises, mags) -> Path:
    """A ``specscale fisher-curves`` file: ceilings on (noise, mag)."""
    noise = np.asarray(noises, float)[:, None]
    mag = np.asarray(mags, float)[None, :]
    pop = np.clip(0.95 - 0.08 * np.exp(mag - 21) * noise, 0, 1)
    ds = xr.Dataset(
        {"ceiling_pop": (("noise", "mag"), pop), "ceiling_median": (("noise", "mag"), np.clip(pop + 0.08, 0, 1))},
        coords={"noise": np.asarray(noises, float), "mag": np.asarray(mags, float)},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def sweep_cells(noises=(0.5, 1.0), mags=("21.5", "20.5-22.5"), sizes=(1000, 2000, 4000), seeds=(0, 1)) -> list[Cell]:
    """ridge and lightgbm at every size, vit-tiny at the largest two, the oracle once at the largest."""
    cells = []
    for noise in noises:
        for mag in mags:
            for n in sizes:
                for seed in seeds:
                    cells += [Cell(noise, mag, "ridge", n, seed), Cell(noise, mag, "lightgbm", n, seed)]
                    if n in sizes[-2:]:
                        cells.append(Cell(noise, mag, "vit-tiny", n, seed))
            cells.append(Cell(noise, mag, "oracle", sizes[-1], seeds[0]))
    return cells


def fake_sweep(root: Path, predictions: bool = False, **kwargs) -> dict:
    """Write a whole fabricated sweep (cells, ceilings, curves); returns collect()'s arguments.
    ``predictions``: cells with predictions.h5 on shared test stars (:func:`write_paired_cell`)."""
    cells = sweep_cells(**kwargs)
    write = write_paired_cell if predictions else write_cell
    pairs = [(c, write(root / "cells", c)) for c in cells]
    ceilings = {
        (c.noise, c.mag.label()): write_ceiling(
            root / "ceiling" / f"noise{c.noise:g}_mag{c.mag.label()}.nc", c.noise, c.mag.label()
        )
        for c in cells
    }
    noises = sorted({c.noise for c in cells})
    curves = write_curves(root / "ceiling" / "curves.nc", noises, np.arange(19.0, 23.01, 0.5))
    return {"cells": pairs, "ceilings": ceilings, "curves": curves}


# ---------------------------------------------------------------- W&B offline runs
def read_offline_run(run_dir, wait_s: float = 30.0) -> dict:
    """Config, history rows and summary of a finished offline run directory (``.../offline-run-*``),
    read from its ``run-*.wandb`` record log (LevelDB-style log of protobuf records): what a sync
    would upload. Returns {"id", "group", "name", "project", "config", "history", "summary"}.

    W&B's service process may still be flushing the log when ``run.finish()`` has returned, so this
    re-reads for up to ``wait_s`` seconds until the run's final (exit) record is there."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    deadline = time.monotonic() + wait_s
    while True:
        records = []
        try:
            for rec in _records(files[0].read_bytes()):
                r = pb.Record()
                r.ParseFromString(rec)
                records.append(r)
        except Exception:
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{files[0]}: run log has no exit record after {wait_s:g} s (run not finished?)")
        time.sleep(0.2)
    out = {"config": {}, "history": [], "summary": {}}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(id=r.run.run_id, group=r.run.run_group, name=r.run.display_name, project=r.run.project)
            out["config"].update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            for u in r.summary.update:
                key = u.key or "/".join(u.nested_key)
                out["summary"][key] = json.loads(u.value_json)
    out["config"].pop("_wandb", None)
    return out


def _records(buf: bytes, block: int = 32768, header: int = 7):
    """Payloads of a W&B/LevelDB log: a 7-byte file header, then 32 KiB blocks of records
    (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)."""
    if buf[:4] != b":W&B":
        raise ValueError("not a W&B run log")
    i, data = header, b""
    while i + header <= len(buf):
        if block - i % block < header:  # block trailer padding
            i += block - i % block
            continue
        _, n, kind = struct.unpack("<IHB", buf[i : i + header])
        i += header
        data += buf[i : i + n]
        i += n
        if kind in (1, 4):
            yield data
            data = b""
        elif kind == 0 and n == 0:  # zero padding at the end of a block
            continue


# ---------------------------------------------------------------- SLURM jobs
def job_env() -> dict[str, str]:
    """Environment for Snakemake/submitit: SLURM jobs inherit it (sbatch --export=ALL),
    and each job re-runs Snakemake/Python, so the interpreter's bin/ must be on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    # a stray SLURM_JOB_ID (tests run inside a SLURM job) confuses the plugin
    for key in [k for k in env if k.startswith("SLURM_") and k != "SLURM_CONF"]:
        del env[key]
    return env


def snakemake_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "snakemake"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]


def local_cluster_args(slurm_logs: Path, mem_mb: int = 1000, runtime: int = 10, first_check_s: int = 3) -> list[str]:
    """Snakemake options for a SLURM profile on the local test cluster (.ci/slurm-up.sh): its
    partition and account (a CLI --default-resources replaces the profile's whole list, so mem_mb
    and runtime are repeated), fast polling (``first_check_s`` after a submission), no retries,
    and every job's SLURM log kept under ``slurm_logs``."""
    return [
        "--default-resources",
        f"slurm_partition={PARTITION}",
        f"slurm_account={ACCOUNT}",
        f"mem_mb={mem_mb}",
        f"runtime={runtime}",
        "--slurm-init-seconds-before-status-checks",
        str(first_check_s),
        "--seconds-between-status-checks",
        "1",
        "--latency-wait",
        "5",
        "--retries",
        "0",
        "--slurm-logdir",
        str(slurm_logs),
        "--slurm-keep-successful-logs",
    ]
