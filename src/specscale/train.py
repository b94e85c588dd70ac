"""Run one sweep cell: train MODEL on the first N training stars at (noise, magnitude cell, seed),
select on validation only, predict the test split, and write

    OUT/predictions.h5   true and predicted log g, all true labels, per-star S/N and magnitude
    OUT/metrics.json     schema "specscale.metrics/1" (docs/metrics.md), written LAST

both atomically (tmp file + os.replace): a metrics.json means the cell finished. Everything that
can be checked is checked before training (model, hyper-parameters, data file, N, magnitude
cell, ceiling file, W&B settings), with a message naming the problem. Checkpoints and logs go to
OUT/work; a rerun of an unfinished cell resumes from there (ViT), a rerun of a finished cell with
the same configuration does nothing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from .cells import MagCell
from .config import ConfigError, config_hash, from_dict, load_config, section, to_jsonable
from .loader import cpu_count
from .metrics import evaluate
from .models import build_model, model_params
from .models.base import TrainCell
from .provenance import provenance
from .sources import open_source
from .tracking import Tracker, WandbConfig, run_group, run_name

log = logging.getLogger(__name__)

SCHEMA = "specscale.metrics/1"
TRACKED = ("vit", "vit-tiny")  # models whose runs go to Weights & Biases
CPU_ONLY = ("ridge", "lightgbm")


@dataclass(frozen=True)
class CellRequest:
    """What ``specscale train`` was asked to do."""

    model: str
    data: str
    noise: float
    mag: str
    n_train: int
    seed: int
    out: str
    config: str | None = None
    ceiling: str | None = None
    device: str = "auto"
    threads: int | None = None
    force: bool = False
    overrides: dict | None = None  # models.<model>.<name> values that replace the config file's


def parse_overrides(args: list[str]) -> dict:
    """``["--lr=3e-4", "--depth=6"]`` -> {"lr": 0.0003, "depth": 6}: the form a W&B sweep agent's
    ${args} takes. Values are read as JSON where they parse (numbers, true/false, lists), else kept
    as strings; anything not of the form --NAME=VALUE is an error naming it."""
    out = {}
    for a in args:
        name, eq, value = a[2:].partition("=") if a.startswith("--") else ("", "", "")
        if not eq or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"unrecognized argument {a!r}: hyper-parameter overrides take the form --NAME=VALUE")
        try:
            out[name.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[name.replace("-", "_")] = value
    return out


def sweep_out_dir(out: str) -> str:
    """``--out`` with '{run_id}' replaced by the W&B sweep agent's $WANDB_RUN_ID."""
    if "{run_id}" not in out:
        return out
    run_id = os.environ.get("WANDB_RUN_ID")
    if not run_id:
        raise ValueError(f"--out {out} contains {{run_id}} but WANDB_RUN_ID is not set (only a W&B sweep agent sets it)")
    return out.replace("{run_id}", run_id)


def read_ceiling(path, noise: float, mag: MagCell) -> dict:
    """``ceiling_pop`` and ``ceiling_median`` (R^2 ceilings of the cell) from an xarray file, as
    attributes or scalar variables. Attributes ``noise``/``mag`` if present must match the cell."""
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ceiling file not found: {path}")
    try:
        ds = xr.open_dataset(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"ceiling file {path} is not a readable netCDF/xarray file ({exc})") from exc
    with ds:
        out = {}
        for key in ("ceiling_pop", "ceiling_median"):
            if key in ds.variables:
                var = ds[key]
                if var.size != 1:
                    raise ValueError(f"ceiling file {path}: variable {key} must be a scalar, has shape {var.shape}")
                out[key] = float(var.values.reshape(-1)[0])
            elif key in ds.attrs:
                out[key] = float(ds.attrs[key])
            else:
                raise ValueError(f"ceiling file {path} has no '{key}' (attribute or scalar variable)")
        if "noise" in ds.attrs and not math.isclose(float(ds.attrs["noise"]), noise, rel_tol=1e-9):
            raise ValueError(f"ceiling file {path} is for noise {ds.attrs['noise']}, this cell has noise {noise:g}")
        if "mag" in ds.attrs and MagCell.parse(str(ds.attrs["mag"])) != mag:
            raise ValueError(f"ceiling file {path} is for magnitude cell {ds.attrs['mag']}, this cell is {mag.label()}")
    return out


def resolve_device(name: str, model: str) -> str:
    """The torch device a model runs on ("cpu" for the CPU-only models, without importing torch)."""
    if model in CPU_ONLY:
        if name not in ("auto", "cpu"):
            raise ValueError(f"--device {name}: model {model!r} runs on the CPU only")
        return "cpu"
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"--device {name!r}: expected auto, cpu or cuda[:N]")
    return name


def _strict_json(obj):
    """NaN/inf -> null (strict JSON; e.g. R^2 of an empty S/N bin)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strict_json(v) for v in obj]
    return obj


def _atomic_write_json(obj, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(_strict_json(to_jsonable(obj)), indent=2, allow_nan=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_predictions(path: Path, rows, labels, pred, snr, mag, attrs: dict) -> None:
    """predictions.h5: rows, logg_true, logg_pred (dex), labels (n, 4: teff K, logg, mh, am dex),
    snr (per-spectrum S/N), mag (HSC-i AB); attrs describe the cell. Atomic."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f["rows"] = np.asarray(rows, np.int64)
            f["logg_true"] = np.asarray(labels[:, 1], np.float64)
            f["logg_pred"] = np.asarray(pred, np.float64)
            f["labels"] = np.asarray(labels, np.float32)
            f["snr"] = np.asarray(snr, np.float64)
            f["mag"] = np.asarray(mag, np.float64)
            for k, v in attrs.items():
                f.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(to_jsonable(v))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def peak_memory_mb() -> dict:
    """Peak resident memory of this process and of its finished children (loader workers), MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"peak_mem_mb": own, "peak_mem_children_mb": children}


def run_cell(req: CellRequest) -> dict:
    """Validate, train, predict, write. Returns the metrics.json content."""
    # ---- validate everything before any expensive work
    config = load_config(req.config)
    if req.overrides:
        models = dict(config.get("models") or {})
        models[req.model] = {**(models.get(req.model) or {}), **req.overrides}
        config = {**config, "models": models}
    params = model_params(req.model, config)  # unknown model / key / value -> ConfigError naming it
    wandb_cfg = from_dict(WandbConfig, section(config, "wandb"), "wandb")
    if req.model in TRACKED:
        wandb_cfg.effective_mode()
    mag = MagCell.parse(req.mag)
    if not (math.isfinite(req.noise) and req.noise >= 0):
        raise ValueError(f"--noise must be a finite number >= 0, got {req.noise}")
    if req.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {req.seed}")
    source = open_source(req.data)
    n_avail = source.n("train")
    if not 1 <= req.n_train <= n_avail:
        raise ValueError(f"--n-train {req.n_train} is not in 1..{n_avail}: the train split of {req.data} has {n_avail} stars")
    source.check_cell(mag)
    ceiling = read_ceiling(req.ceiling, req.noise, mag) if req.ceiling else None
    device = resolve_device(req.device, req.model)
    n_threads = req.threads or cpu_count()
    if n_threads < 1:
        raise ValueError(f"--threads must be >= 1, got {n_threads}")
    cell = TrainCell(noise=float(req.noise), mag=mag, n_train=int(req.n_train), seed=int(req.seed))
    cell_info = {"model": req.model, "noise": float(req.noise), "mag": mag.label(), "n_train": cell.n_train, "seed": cell.seed}
    effective = {"cell": cell_info, "params": asdict(params), "dataset_id": source.dataset_id}
    chash = config_hash(effective)

    model = build_model(req.model, config, seed=cell.seed, device=device, n_threads=n_threads)
    if hasattr(model, "check"):
        model.check(source, cell)

    out = Path(req.out)
    metrics_path = out / "metrics.json"
    if metrics_path.exists():
        done = json.loads(metrics_path.read_text())
        if not req.force:
            if done.get("provenance", {}).get("config_hash") == chash:
                log.info("%s: cell already finished with this configuration; nothing to do", metrics_path)
                return done
            raise ConfigError(f"{metrics_path} exists from a different configuration "
                              f"(config hash {done.get('provenance', {}).get('config_hash')} != {chash}); "
                              "remove the directory or pass --force")
    if req.force:
        metrics_path.unlink(missing_ok=True)
        shutil.rmtree(out / "work", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    workdir = out / "work"

    # ---- train
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")  # imported by the torch-based models only
    if torch is not None:
        torch.set_num_threads(n_threads)
    tracker = None
    if req.model in TRACKED:
        tracker = Tracker(wandb_cfg, config={**effective, "data": str(req.data), "device": device, "n_threads": n_threads},
                          group=run_group(cell.noise, mag.label()), name=run_name(req.model, cell.n_train, cell.seed),
                          out_dir=out, workdir=workdir)
        model.tracker = tracker
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    try:
        with threadpool_limits(n_threads):
            t0 = time.perf_counter()
            info = model.fit(source, cell, workdir)
            train_s = time.perf_counter() - t0

            # ---- predict the test split in batches
            t0 = time.perf_counter()
            rows, labels, pred, snr, mags = [], [], [], [], []
            for obs in source.iter_observed("test", mag, cell.noise, None):
                rows.append(obs.rows), labels.append(obs.labels), snr.append(obs.snr), mags.append(obs.mag)
                pred.append(np.asarray(model.predict(obs), np.float64))
            predict_s = time.perf_counter() - t0
    except BaseException:
        if tracker is not None:
            tracker.finish(exit_code=1)
        raise
    rows, labels, pred, snr, mags = map(np.concatenate, (rows, labels, pred, snr, mags))
    metrics = evaluate(labels[:, 1], pred, snr)

    timing = {"train_s": train_s, "predict_s": predict_s, **peak_memory_mb()}
    if device.startswith("cuda"):
        timing["gpu_peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    prov = provenance(config=effective, dataset_id=source.dataset_id, seed=cell.seed, device=device)
    prov["n_threads"] = n_threads
    result = {
        "schema": SCHEMA,
        "cell": cell_info,
        "metrics": metrics,
        "timing": timing,
        "model_info": info,
        "params": asdict(params),
        "provenance": prov,
        "data": {"path": str(req.data), "dataset_id": source.dataset_id, "n_val": source.n("val"),
                 "n_test": source.n("test"), "n_train_available": n_avail},
    }
    if ceiling is not None:
        result["ceiling"] = {**ceiling, "path": str(req.ceiling),
                             "gap_pop": ceiling["ceiling_pop"] - metrics["r2"],
                             "gap_median": ceiling["ceiling_median"] - metrics["r2"]}

    write_predictions(out / "predictions.h5", rows, labels, pred, snr, mags,
                      {"schema": "specscale.predictions/1", "cell": cell_info, "config_hash": chash,
                       "dataset_id": source.dataset_id, "r2": metrics["r2"]})
    if tracker is not None:
        final = {f"test/{k}": metrics[k] for k in ("r2", "mae", "rmse", "bias", "r2_top20", "mae_top20")}
        final.update({"test/train_s": train_s, "test/predict_s": predict_s})
        if ceiling is not None:
            final.update({"test/ceiling_pop": ceiling["ceiling_pop"], "test/ceiling_median": ceiling["ceiling_median"],
                          "test/gap_pop": result["ceiling"]["gap_pop"], "test/gap_median": result["ceiling"]["gap_median"]})
        tracker.log(final, step=info.get("steps"))
        tracker.summary(final)
        tracker.finish()
    _atomic_write_json(result, metrics_path)  # last: its presence means the cell finished
    return result
