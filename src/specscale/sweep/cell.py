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

import numpy as np

from specscale.core.config import ConfigError, config_hash, from_dict, load_config, not_finite, section, to_jsonable
from specscale.core.files import atomic_hdf5, remove_stale_temps, write_json, writer_lock
from specscale.core.hardware import cpu_count, resolve_device
from specscale.core.provenance import provenance
from specscale.core.vocab import LOGG, MagRange
from specscale.data.sources import open_source
from specscale.models.base import TrainCell
from specscale.models.metrics import evaluate
from specscale.models.registry import build_model, resolve_model, variant_definition
from specscale.sweep.tracking import Tracker, WandbConfig, run_group, run_name

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
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if not_finite(parsed):  # JSON's NaN / Infinity
            raise ValueError(f"{a}: hyper-parameters must be finite numbers (NaN and infinity are not allowed)")
        out[name.replace("-", "_")] = parsed
    return out


def sweep_out_dir(out: str) -> str:
    """``--out`` with '{run_id}' replaced by the W&B sweep agent's $WANDB_RUN_ID."""
    if "{run_id}" not in out:
        return out
    run_id = os.environ.get("WANDB_RUN_ID")
    if not run_id:
        raise ValueError(
            f"--out {out} contains {{run_id}} but WANDB_RUN_ID is not set (only a W&B sweep agent sets it)"
        )
    return out.replace("{run_id}", run_id)


def read_ceiling(path, noise: float, mag: MagRange, dataset_id: str | None = None) -> dict:
    """``ceiling_pop`` and ``ceiling_median`` (R^2 ceilings of the cell) from an xarray file, as
    attributes or scalar variables. Attributes ``dataset_id``/``noise``/``mag`` if present (``specscale
    fisher`` writes all three) must match the cell's dataset and cell; a mismatch names both."""
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ceiling file not found: {path}")
    try:
        ds = xr.open_dataset(path)
    except Exception as exc:
        why = str(exc).splitlines()[0].split(". ")[0]  # xarray's first sentence, without its advice
        raise ValueError(f"ceiling file {path} is not a readable netCDF/xarray file ({why})") from exc
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
        theirs = ds.attrs.get("dataset_id")
        if dataset_id is not None and theirs is not None and str(theirs) != str(dataset_id):
            raise ValueError(
                f"ceiling file {path} was computed on dataset {theirs}, this cell trains on dataset {dataset_id}"
            )
        if "noise" in ds.attrs:
            try:
                theirs = float(ds.attrs["noise"])
            except (TypeError, ValueError):
                raise ValueError(
                    f"ceiling file {path}: attribute noise={ds.attrs['noise']!r} is not a number"
                ) from None
            if not math.isclose(theirs, noise, rel_tol=1e-9):
                raise ValueError(f"ceiling file {path} is for noise {ds.attrs['noise']}, this cell has noise {noise:g}")
        if "mag" in ds.attrs and MagRange.parse(str(ds.attrs["mag"])) != mag:
            raise ValueError(f"ceiling file {path} is for magnitude cell {ds.attrs['mag']}, this cell is {mag.label()}")
    return out


def cell_device(name: str, model: str) -> str:
    """The torch device a model runs on ("cpu" for the CPU-only models, without importing torch)."""
    if model in CPU_ONLY:
        if name not in ("auto", "cpu"):
            raise ValueError(f"--device {name}: model {model!r} runs on the CPU only")
        return "cpu"
    return resolve_device(name, "--device")


def write_predictions(path: Path, rows, labels, pred, snr, mag, attrs: dict, sigma=None) -> None:
    """predictions.h5: rows, logg_true, logg_pred (dex), labels (n, 4: teff K, logg, mh, am dex),
    snr (per-spectrum S/N), mag (HSC-i AB), and logg_sigma (predicted 1-sigma, dex) for a model
    that predicts one; attrs describe the cell. Atomic."""
    with atomic_hdf5(path) as f:
        f["rows"] = np.asarray(rows, np.int64)
        f["logg_true"] = np.asarray(labels[:, LOGG], np.float64)
        f["logg_pred"] = np.asarray(pred, np.float64)
        if sigma is not None:
            f["logg_sigma"] = np.asarray(sigma, np.float64)
        f["labels"] = np.asarray(labels, np.float32)
        f["snr"] = np.asarray(snr, np.float64)
        f["mag"] = np.asarray(mag, np.float64)
        for k, v in attrs.items():
            f.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(to_jsonable(v))


def peak_memory_mb() -> dict:
    """Peak resident memory of this process and of its finished children (loader workers), MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"peak_mem_mb": own, "peak_mem_children_mb": children}


def finished_metrics(metrics_path: Path, chash: str) -> dict | None:
    """The metrics.json of a cell that already finished with config hash ``chash``, else None when
    there is none; a metrics.json of another configuration, or one that cannot be read, is an
    error naming the file."""
    if not metrics_path.exists():
        return None
    try:
        done = json.loads(metrics_path.read_text())
        prev = done.get("provenance", {}).get("config_hash")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"{metrics_path} exists but is not a readable metrics file ({exc}); remove it or pass --force"
        ) from None
    if prev == chash:
        return done
    raise ConfigError(
        f"{metrics_path} exists from a different configuration (config hash {prev} != {chash}); "
        "remove the directory or pass --force"
    )


def check_data(source, n_train: int) -> None:
    """The finiteness scan of everything the cell reads (train[:n_train], val, test), before any
    model is fitted; DataError naming file, split, array and row."""
    t0 = time.perf_counter()
    for split, n in (("train", n_train), ("val", None), ("test", None)):
        source.check_finite(split, n)
    log.info("%s: train[:%d], val and test are finite (scan %.2f s)", source.path, n_train, time.perf_counter() - t0)


def run_cell(req: CellRequest) -> dict:
    """Validate, train, predict, write. Returns the metrics.json content."""
    # ---- validate everything before any expensive work
    config = load_config(req.config)
    if req.overrides and req.model in section(config, "variants"):  # a variant: its params take them
        variants = dict(config["variants"])
        spec = dict(variant_definition(req.model, config))
        spec["params"] = {**(spec.get("params") or {}), **req.overrides}
        config = {**config, "variants": {**variants, req.model: spec}}
    elif req.overrides:
        models = dict(config.get("models") or {})
        models[req.model] = {**(models.get(req.model) or {}), **req.overrides}
        config = {**config, "models": models}
    # a model or a variant (its base, params, features); unknown model / key / value -> ConfigError naming it
    base, params, features = resolve_model(req.model, config)
    variant = None
    if base != req.model:
        variant = {
            "name": req.model,
            "base": base,
            "definition": to_jsonable(variant_definition(req.model, config)),
            "features": None if features is None else features.to_dict(),
        }
    wandb_cfg = from_dict(WandbConfig, section(config, "wandb"), "wandb")
    if base in TRACKED:
        wandb_cfg.effective_mode()
    mag = MagRange.parse(req.mag)
    if not (math.isfinite(req.noise) and req.noise >= 0):
        raise ValueError(f"--noise must be a finite number >= 0, got {req.noise}")
    if req.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {req.seed}")
    if req.threads is not None and req.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {req.threads} (leave it out for all CPUs of the job)")
    out = Path(req.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    source = open_source(req.data)
    n_avail = source.n("train")
    if not 1 <= req.n_train <= n_avail:
        raise ValueError(
            f"--n-train {req.n_train} is not in 1..{n_avail}: the train split of {req.data} has {n_avail} stars"
        )
    source.check_cell(mag)
    ceiling = read_ceiling(req.ceiling, req.noise, mag, source.dataset_id) if req.ceiling else None
    device = cell_device(req.device, base)
    n_threads = req.threads if req.threads is not None else cpu_count()
    cell = TrainCell(noise=float(req.noise), mag=mag, n_train=int(req.n_train), seed=int(req.seed))
    cell_info = {
        "model": req.model,
        "noise": float(req.noise),
        "mag": mag.label(),
        "n_train": cell.n_train,
        "seed": cell.seed,
    }
    effective = {"cell": cell_info, "params": asdict(params), "dataset_id": source.dataset_id}
    if variant is not None:  # only then: the hash of a registered model's cell stays what it was
        effective["variant"] = {"base": base, "features": variant["features"]}
    chash = config_hash(effective)

    model = build_model(req.model, config, seed=cell.seed, device=device, n_threads=n_threads)
    if hasattr(model, "check"):
        model.check(source, cell)

    # one writer per --out: a second `specscale train` of the same cell fails here naming the first
    with writer_lock(out, "--out"):
        remove_stale_temps(out, recursive=True)  # NAME.tmp-PID of writers killed before renaming
        metrics_path = out / "metrics.json"
        if not req.force:
            done = finished_metrics(metrics_path, chash)
            if done is not None:
                log.info("%s: cell already finished with this configuration; nothing to do", metrics_path)
                return done
        check_data(source, cell.n_train)
        if req.force:
            metrics_path.unlink(missing_ok=True)
            shutil.rmtree(out / "work", ignore_errors=True)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--out {out}: cannot create the directory ({exc.strerror or exc})") from exc
        workdir = out / "work"

        # ---- train
        from threadpoolctl import threadpool_limits

        torch = sys.modules.get("torch")  # imported by the torch-based models only
        if torch is not None:
            torch.set_num_threads(n_threads)
        tracker = None
        if base in TRACKED:
            tracker = Tracker(
                wandb_cfg,
                config={**effective, "data": str(req.data), "device": device, "n_threads": n_threads},
                group=run_group(cell.noise, mag.label()),
                name=run_name(req.model, cell.n_train, cell.seed),
                out_dir=out,
                workdir=workdir,
            )
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
                rows, labels, pred, snr, mags, sigma = [], [], [], [], [], []
                with_sigma = bool(getattr(model, "predicts_sigma", False))  # e.g. the ViT with gaussian_nll
                for obs in source.iter_observed("test", mag, cell.noise, None):
                    rows.append(obs.rows), labels.append(obs.labels), snr.append(obs.snr), mags.append(obs.mag)
                    if with_sigma:
                        mean, sd = model.predict_with_sigma(obs)
                        pred.append(np.asarray(mean, np.float64)), sigma.append(np.asarray(sd, np.float64))
                    else:
                        pred.append(np.asarray(model.predict(obs), np.float64))
                predict_s = time.perf_counter() - t0
        except BaseException:
            if tracker is not None:
                tracker.finish(exit_code=1)
            raise
        rows, labels, pred, snr, mags = map(np.concatenate, (rows, labels, pred, snr, mags))
        sigma = np.concatenate(sigma) if with_sigma else None
        metrics = evaluate(labels[:, LOGG], pred, snr, sigma_pred=sigma)  # + calibration with sigma

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
            **({} if variant is None else {"variant": variant}),
            "provenance": prov,
            "data": {
                "path": str(req.data),
                "dataset_id": source.dataset_id,
                "n_val": source.n("val"),
                "n_test": source.n("test"),
                "n_train_available": n_avail,
            },
        }
        if ceiling is not None:
            result["ceiling"] = {
                **ceiling,
                "path": str(req.ceiling),
                "gap_pop": ceiling["ceiling_pop"] - metrics["r2"],
                "gap_median": ceiling["ceiling_median"] - metrics["r2"],
            }

        write_predictions(
            out / "predictions.h5",
            rows,
            labels,
            pred,
            snr,
            mags,
            {
                "schema": "specscale.predictions/1",
                "cell": cell_info,
                "config_hash": chash,
                "dataset_id": source.dataset_id,
                "r2": metrics["r2"],
            },
            sigma=sigma,
        )
        if tracker is not None:
            final = {f"test/{k}": metrics[k] for k in ("r2", "mae", "rmse", "bias", "r2_top20", "mae_top20")}
            final.update({"test/train_s": train_s, "test/predict_s": predict_s})
            if ceiling is not None:
                final.update(
                    {
                        "test/ceiling_pop": ceiling["ceiling_pop"],
                        "test/ceiling_median": ceiling["ceiling_median"],
                        "test/gap_pop": result["ceiling"]["gap_pop"],
                        "test/gap_median": result["ceiling"]["gap_median"],
                    }
                )
            tracker.log(final, step=info.get("steps"))
            tracker.summary(final)
            tracker.finish()
        write_json(result, metrics_path)  # last: its presence means the cell finished
        return result
