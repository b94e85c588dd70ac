"""Run one sweep cell: train MODEL on the first N training stars at (noise, magnitude range, seed),
select on validation only, predict the test split, and write

    OUT/predictions.h5   true and predicted log g, all true labels, per-star S/N and magnitude
    OUT/metrics.json     schema "specscale.metrics/1" (docs/metrics.md), written LAST

both atomically (tmp file + os.replace): a metrics.json means the cell finished. The steps:
plan the cell (:func:`plan_cell`: everything that can be checked is checked before training:
model, hyper-parameters, data file, N, magnitude range, ceiling file, W&B settings, with a
message naming the problem), fit and predict, score, write. Checkpoints and logs go to OUT/work;
a rerun of an unfinished cell resumes from there (ViT), a rerun of a finished cell with the same
configuration does nothing.
"""

from __future__ import annotations

import logging
import math
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from specscale.core.config import ConfigError, config_hash, from_dict, load_config, section
from specscale.core.files import remove_stale_temps, write_json, writer_lock
from specscale.core.hardware import cpu_count, resolve_device
from specscale.core.provenance import provenance
from specscale.core.vocab import LOGG, Cell
from specscale.data.sources import Source, open_source
from specscale.models.base import Model
from specscale.models.metrics import evaluate
from specscale.models.registry import ModelSpec, resolve_model
from specscale.sweep.cell_files import finished_metrics, read_ceiling, write_predictions
from specscale.sweep.sections import WORKFLOW_SECTIONS
from specscale.sweep.tracking import Tracker, WandbConfig, run_group, run_name

log = logging.getLogger(__name__)

SCHEMA = "specscale.metrics/1"
FINAL_METRICS = ("r2", "mae", "rmse", "bias", "r2_top20", "mae_top20")  # logged to W&B at the end


@dataclass(frozen=True)
class CellRequest:
    """What ``specscale train`` was asked to do: the cell, its data and output paths, options."""

    cell: Cell
    data: str
    out: str
    config: str | None = None
    ceiling: str | None = None
    device: str = "auto"
    threads: int | None = None
    force: bool = False
    overrides: dict | None = None  # hyper-parameter values that replace the config file's


@dataclass(frozen=True)
class CellPlan:
    """A checked cell, ready to run: the request, its model spec, the open data source, the
    ceiling values (None without --ceiling), the device and threads, the W&B settings, and the
    effective configuration with its hash (a finished cell is recognised by it)."""

    req: CellRequest
    spec: ModelSpec
    source: Source
    ceiling: dict | None
    device: str
    n_threads: int
    wandb: WandbConfig
    effective: dict
    chash: str

    @property
    def cell(self) -> Cell:
        return self.req.cell

    @property
    def out(self) -> Path:
        return Path(self.req.out)


@dataclass(frozen=True)
class CellRun:
    """What fitting and predicting a cell gave: the model's info and the test split's rows, true
    labels (n, 4), predicted log g and 1-sigma (dex; sigma None unless the model predicts one),
    per-star S/N and magnitude (AB), and the timing."""

    info: dict
    rows: np.ndarray
    labels: np.ndarray
    pred: np.ndarray
    sigma: np.ndarray | None
    snr: np.ndarray
    mag: np.ndarray
    timing: dict


def cell_device(name: str, spec: ModelSpec) -> str:
    """The torch device a model runs on ("cpu" for the CPU-only models, without importing torch)."""
    if spec.cpu_only:
        if name not in ("auto", "cpu"):
            raise ValueError(f"--device {name}: model {spec.name!r} runs on the CPU only")
        return "cpu"
    return resolve_device(name, "--device")


def peak_memory_mb() -> dict:
    """Peak resident memory of this process and of its finished children (loader workers), MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"peak_mem_mb": own, "peak_mem_children_mb": children}


def check_data(source, n_train: int) -> None:
    """The finiteness scan of everything the cell reads (train[:n_train], val, test), before any
    model is fitted; DataError naming file, split, array and row."""
    t0 = time.perf_counter()
    for split, n in (("train", n_train), ("val", None), ("test", None)):
        source.check_finite(split, n)
    log.info("%s: train[:%d], val and test are finite (scan %.2f s)", source.path, n_train, time.perf_counter() - t0)


def run_cell(req: CellRequest) -> dict:
    """Plan and check the cell, then (unless it already finished with this configuration) fit
    and predict, score and write. Returns the metrics.json content."""
    plan = plan_cell(req)
    model = plan.spec.build(seed=plan.cell.seed, device=plan.device, n_threads=plan.n_threads)
    model.check(plan.source, plan.cell)
    # one writer per --out: a second `specscale train` of the same cell fails here naming the first
    with writer_lock(plan.out, "--out"):
        done = prepare_out(plan)
        if done is not None:
            log.info("%s: cell already finished with this configuration; nothing to do", plan.out / "metrics.json")
            return done
        run = fit_and_predict(plan, model)
        result = score(plan, run)
        write_cell(plan, run, result, model.tracker)
        return result


def plan_cell(req: CellRequest) -> CellPlan:
    """Check everything the cell needs before any expensive work; errors name the option or the
    config key at fault."""
    cell = req.cell
    config = load_config(req.config, also=WORKFLOW_SECTIONS)
    spec = resolve_model(cell.model, config, req.overrides)  # unknown model / key / value: ConfigError
    wandb_cfg = from_dict(WandbConfig, section(config, "wandb"), "wandb")
    if spec.tracked:
        wandb_cfg.effective_mode()
    if not (math.isfinite(cell.noise) and cell.noise >= 0):
        raise ValueError(f"--noise must be a finite number >= 0, got {cell.noise}")
    if cell.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {cell.seed}")
    if req.threads is not None and req.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {req.threads} (leave it out for all CPUs of the job)")
    out = Path(req.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    source = open_source(req.data)
    n_avail = source.n("train")
    if not 1 <= cell.n_train <= n_avail:
        raise ValueError(
            f"--n-train {cell.n_train} is not in 1..{n_avail}: the train split of {req.data} has {n_avail} stars"
        )
    source.check_cell(cell.mag)
    ceiling = read_ceiling(req.ceiling, cell.noise, cell.mag, source.dataset_id) if req.ceiling else None
    effective = spec.effective(cell, source.dataset_id)
    return CellPlan(
        req=req,
        spec=spec,
        source=source,
        ceiling=ceiling,
        device=cell_device(req.device, spec),
        n_threads=req.threads if req.threads is not None else cpu_count(),
        wandb=wandb_cfg,
        effective=effective,
        chash=config_hash(effective),
    )


def prepare_out(plan: CellPlan) -> dict | None:
    """The finished cell's metrics.json when it finished with this configuration (and no --force);
    else scan the data, clear what --force drops, and create the output folder: None."""
    out, metrics_path = plan.out, plan.out / "metrics.json"
    remove_stale_temps(out, recursive=True)  # NAME.tmp-PID of writers killed before renaming
    if not plan.req.force:
        done = finished_metrics(metrics_path, plan.chash)
        if done is not None:
            return done
    check_data(plan.source, plan.cell.n_train)
    if plan.req.force:
        metrics_path.unlink(missing_ok=True)
        shutil.rmtree(out / "work", ignore_errors=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create the directory ({exc.strerror or exc})") from exc
    return None


def start_tracker(plan: CellPlan) -> Tracker | None:
    """The W&B run of a tracked model's cell (None for the other models)."""
    if not plan.spec.tracked:
        return None
    cell = plan.cell
    return Tracker(
        plan.wandb,
        config={**plan.effective, "data": str(plan.req.data), "device": plan.device, "n_threads": plan.n_threads},
        group=run_group(cell.noise, cell.mag.label()),
        name=run_name(cell.model, cell.n_train, cell.seed),
        out_dir=plan.out,
        workdir=plan.out / "work",
    )


def fit_and_predict(plan: CellPlan, model: Model) -> CellRun:
    """Fit ``model`` on the cell (its W&B run open for a tracked model) and predict the test
    split in batches, on the job's threads; the W&B run is closed as failed on any error."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")  # imported by the torch-based models only
    if torch is not None:
        torch.set_num_threads(plan.n_threads)
    if plan.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    model.tracker = start_tracker(plan)
    source, cell = plan.source, plan.cell
    try:
        with threadpool_limits(plan.n_threads):
            t0 = time.perf_counter()
            info = model.fit(source, cell, plan.out / "work")
            train_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            parts = [_predict_batch(model, obs) for obs in source.iter_observed("test", cell.mag, cell.noise, None)]
            predict_s = time.perf_counter() - t0
    except BaseException:
        if model.tracker is not None:
            model.tracker.finish(exit_code=1)
        raise
    rows, labels, pred, snr, mags, sigma = (np.concatenate(col) for col in zip(*parts))
    timing = {"train_s": train_s, "predict_s": predict_s, **peak_memory_mb()}
    if plan.device.startswith("cuda"):
        timing["gpu_peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return CellRun(info, rows, labels, pred, sigma if model.predicts_sigma else None, snr, mags, timing)


def _predict_batch(model: Model, obs) -> tuple[np.ndarray, ...]:
    """(rows, labels, log g, S/N, magnitude, 1-sigma) of one observed test batch; the 1-sigma is
    empty for a model that predicts none."""
    if model.predicts_sigma:
        mean, sd = model.predict_with_sigma(obs)
    else:
        mean, sd = model.predict(obs), np.empty(0)
    return obs.rows, obs.labels, np.asarray(mean, np.float64), obs.snr, obs.mag, np.asarray(sd, np.float64)


def score(plan: CellPlan, run: CellRun) -> dict:
    """The metrics.json content of a fitted cell: its metrics (with calibration when the model
    predicts a sigma), timing, model info, params, provenance, data and ceiling gap."""
    source, spec = plan.source, plan.spec
    metrics = evaluate(run.labels[:, LOGG], run.pred, run.snr, sigma_pred=run.sigma, labels=run.labels)
    prov = provenance(config=plan.effective, dataset_id=source.dataset_id, seed=plan.cell.seed, device=plan.device)
    prov["n_threads"] = plan.n_threads
    result = {
        "schema": SCHEMA,
        "cell": plan.cell.info(),
        "metrics": metrics,
        "timing": run.timing,
        "model_info": run.info,
        "params": asdict(spec.params),
        **({"variant": variant_record(spec)} if spec.is_variant else {}),
        "provenance": prov,
        "data": {
            "path": str(plan.req.data),
            "dataset_id": source.dataset_id,
            "n_val": source.n("val"),
            "n_test": source.n("test"),
            "n_train_available": source.n("train"),
        },
    }
    if plan.ceiling is not None:
        result["ceiling"] = {
            **plan.ceiling,
            "path": str(plan.req.ceiling),
            "gap_pop": plan.ceiling["ceiling_pop"] - metrics["r2"],
            "gap_median": plan.ceiling["ceiling_median"] - metrics["r2"],
        }
    return result


def variant_record(spec: ModelSpec) -> dict:
    """The ``variant`` block of a variant's metrics.json: name, base, definition, features."""
    info = spec.variant_info()
    return {"name": spec.name, "base": info["base"], "definition": spec.definition, "features": info["features"]}


def write_cell(plan: CellPlan, run: CellRun, result: dict, tracker: Tracker | None) -> None:
    """predictions.h5, the tracked model's final W&B values, then metrics.json (last: its
    presence means the cell finished)."""
    attrs = {
        "schema": "specscale.predictions/1",
        "cell": plan.cell.info(),
        "config_hash": plan.chash,
        "dataset_id": plan.source.dataset_id,
        "r2": result["metrics"]["r2"],
    }
    write_predictions(
        plan.out / "predictions.h5", run.rows, run.labels, run.pred, run.snr, run.mag, attrs, sigma=run.sigma
    )
    if tracker is not None:
        metrics, ceiling = result["metrics"], result.get("ceiling") or {}
        final = {f"test/{k}": metrics[k] for k in FINAL_METRICS}
        final.update({"test/train_s": run.timing["train_s"], "test/predict_s": run.timing["predict_s"]})
        final.update(
            {
                f"test/{k}": ceiling[k]
                for k in ("ceiling_pop", "ceiling_median", "gap_pop", "gap_median")
                if k in ceiling
            }
        )
        tracker.log(final, step=run.info.get("steps"))
        tracker.summary(final)
        tracker.finish()
    write_json(result, plan.out / "metrics.json")
