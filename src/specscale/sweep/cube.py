"""The scaling cube: every metric of every sweep cell in one xarray Dataset.

Dimensions are (noise, mag, model, n_train, seed); a cell that the sweep excluded, or never ran
for that model (ViT only at the large sizes, the oracle at one nominal size), is NaN. Beside the
metrics sit the Fisher ceiling per (noise, mag) (``ceiling_*``, from ``specscale fisher``) and,
on their own dims (curve_noise, curve_mag), the ceiling curves (``curve_*``, from
``specscale fisher-curves``). Attributes carry provenance: the sweep config (JSON), code version,
dataset ids.

Collecting is built for thousands of cells: metrics.json files are read with ``json`` into
preallocated numpy arrays and the Dataset is built once; only the few ceiling files are netCDF.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from specscale.core.files import write_netcdf
from specscale.core.provenance import code_version
from specscale.core.vocab import SNR_BIN_LABELS, SNR_EDGES, MagRange
from specscale.sweep.hypotheses import Hypothesis, fold_hypotheses

CUBE_SCHEMA = "specscale.cube/1"
METRICS_SCHEMA = "specscale.metrics/1"
DIMS = ("noise", "mag", "model", "n_train", "seed")
# scalars of metrics.json "metrics" (R^2, dex, counts, S/N) and "timing" (s, MB)
SCALAR_METRICS = (
    "r2",
    "mae",
    "rmse",
    "bias",
    "n",
    "r2_top20",
    "mae_top20",
    "rmse_top20",
    "bias_top20",
    "n_top20",
    "snr_top20_min",
    "snr_median",
    # calibration of a predicted uncertainty (models.metrics.calibration; NaN for models without one)
    "cover68",
    "cover95",
    "z2_mean",
    "sigma_median",
)
TIMING = ("train_s", "predict_s", "peak_mem_mb")
# per S/N bin lists of metrics.json "metrics.snr_bins" -> cube variables snr_<name>(..., snr_bin)
BIN_METRICS = ("r2", "rmse", "n")
# the same for the calibration lists, present only for models that predict an uncertainty (else NaN)
CALIBRATION_BIN_METRICS = ("cover68", "cover95", "z2_mean", "sigma_median")
N_SNR_BINS = len(SNR_EDGES) - 1
# dims a ceiling variable may have to be folded into the cube; per-star arrays stay in their files
CEILING_DIMS = {"snr_bin"}
# what a learned model is compared with but is not itself a contender for "best model"
DEFAULT_REFERENCES = ("oracle",)


class CubeError(ValueError):
    """A metrics/ceiling file is missing, malformed or does not match its sweep cell; the message
    names the file."""


@dataclass(frozen=True)
class Cell:
    """Coordinates of one sweep cell: noise level, magnitude cell label (HSC-i AB, canonical
    ``MagRange.label()``), model name, training-set size, seed."""

    noise: float
    mag: str
    model: str
    n_train: int
    seed: int


def mag_order(label: str) -> tuple[float, float]:
    """Sort key of a magnitude cell label: fixed magnitudes and ranges by (lo, hi) in AB mag."""
    cell = MagRange.parse(label)
    return (cell.lo, cell.hi)


# ---------------------------------------------------------------------------------------- reading
def read_metrics(path: str | Path) -> dict:
    """One metrics.json (written by ``specscale train``), schema-checked."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise CubeError(f"{path}: metrics file not found") from None
    except (OSError, ValueError) as exc:
        raise CubeError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(record, dict) or record.get("schema") != METRICS_SCHEMA:
        got = record.get("schema") if isinstance(record, dict) else type(record).__name__
        raise CubeError(f"{path}: schema is {got!r}, expected {METRICS_SCHEMA!r}")
    for key in ("cell", "metrics"):
        if not isinstance(record.get(key), dict):
            raise CubeError(f"{path}: no '{key}' mapping")
    return record


def check_record_matches(record: dict, cell: Cell, path) -> None:
    """The cell a metrics file says it is must be the cell the sweep put it at."""
    got = record["cell"]
    try:
        same = (
            str(got["model"]) == cell.model
            and math.isclose(float(got["noise"]), cell.noise, rel_tol=1e-9)
            and MagRange.parse(got["mag"]).label() == cell.mag
            and int(got["n_train"]) == cell.n_train
            and int(got["seed"]) == cell.seed
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CubeError(f"{path}: malformed 'cell' {got!r} ({exc})") from exc
    if not same:
        raise CubeError(f"{path}: metrics are for cell {got}, but the sweep expects {cell}")


def _axes_from(cells: Iterable[Cell]) -> dict[str, list]:
    cells = list(cells)
    models = list(dict.fromkeys(c.model for c in cells))
    return {
        "noise": sorted({c.noise for c in cells}),
        "mag": sorted({c.mag for c in cells}, key=mag_order),
        "model": models,
        "n_train": sorted({c.n_train for c in cells}),
        "seed": sorted({c.seed for c in cells}),
    }


def _number(value) -> float:
    return float("nan") if value is None else float(value)


# ---------------------------------------------------------------------------------------- building
def collect(
    cells: Iterable[tuple[Cell, str | Path]],
    *,
    axes: Mapping[str, list] | None = None,
    ceilings: Mapping[tuple[float, str], str | Path] | None = None,
    curves: str | Path | None = None,
    attrs: Mapping | None = None,
    hypotheses: Sequence[Hypothesis] = (),
    bayes: Mapping[tuple[float, str], str | Path] | None = None,
    windows: WindowReferences | None = None,
) -> xr.Dataset:
    """Build the cube from (cell, metrics.json path) pairs (``bayes``: (noise, mag label) to a
    ``specscale bayes`` file, folded as bayes_*(noise, mag[, snr_bin]) by :func:`_fold_bayes`).

    ``axes`` fixes the coordinate values and their order (default: those of the cells, sorted;
    models in order of appearance); ``ceilings`` maps (noise, mag label) to a ``specscale fisher``
    netCDF file; ``curves`` is a ``specscale fisher-curves`` file; ``attrs`` are extra global
    attributes (dicts/lists are JSON-encoded); ``hypotheses`` (``specscale.sweep.hypotheses``) are
    evaluated from the cells' predictions.h5 into hyp_*(hypothesis, noise, mag, n_train);
    ``windows`` (:class:`WindowReferences`) adds the window variants' own references as
    window_ceiling_*(window, noise, mag[, snr_bin]) and window_bayes_* and the coordinate
    model_window(model) (:func:`_fold_windows`)."""
    cells = [(c, Path(p)) for c, p in cells]
    axes = {k: list(v) for k, v in (axes or _axes_from(c for c, _ in cells)).items()}
    index = {dim: {v: i for i, v in enumerate(axes[dim])} for dim in DIMS}
    shape = tuple(len(axes[d]) for d in DIMS)

    scalars = {name: np.full(shape, np.nan) for name in SCALAR_METRICS + TIMING}
    bins = {name: np.full(shape + (N_SNR_BINS,), np.nan) for name in BIN_METRICS + CALIBRATION_BIN_METRICS}
    records = np.full(shape, "", dtype=object)
    dataset_ids: dict[str, str] = {}
    for cell, path in cells:
        try:
            at = tuple(index[d][getattr(cell, d)] for d in DIMS)
        except KeyError as exc:
            raise CubeError(f"{path}: cell {cell} is off the cube's axes ({exc} not in {axes})") from None
        record = read_metrics(path)
        check_record_matches(record, cell, path)
        metrics, timing = record["metrics"], record.get("timing") or {}
        try:
            for name in SCALAR_METRICS:
                scalars[name][at] = _number(metrics.get(name))
            for name in TIMING:
                scalars[name][at] = _number(timing.get(name))
            snr_bins = metrics.get("snr_bins") or {}
            if snr_bins:
                # strict JSON writes the last edge (inf) as null
                edges = [np.inf if e is None else float(e) for e in snr_bins.get("edges", ())]
                if len(edges) != len(SNR_EDGES) or not np.allclose(edges, SNR_EDGES):
                    raise CubeError(f"{path}: S/N bin edges {snr_bins.get('edges')} differ from {list(SNR_EDGES)}")
                for name in BIN_METRICS:
                    bins[name][at] = [_number(v) for v in snr_bins[name]]
                for name in CALIBRATION_BIN_METRICS:
                    if name in snr_bins:
                        bins[name][at] = [_number(v) for v in snr_bins[name]]
        except CubeError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise CubeError(f"{path}: malformed metrics ({exc})") from exc
        provenance = record.get("provenance") or {}
        data_id = provenance.get("dataset_id") or (record.get("data") or {}).get("dataset_id")
        if data_id is not None:
            dataset_ids.setdefault(str(data_id), str(path))
        records[at] = json.dumps(
            {k: record.get(k) for k in ("provenance", "model_info", "params", "data")}, sort_keys=True
        )
    if len(dataset_ids) > 1:
        raise CubeError(
            "cells were computed on different datasets (stale cells?): "
            + "; ".join(f"{i} e.g. {p}" for i, p in dataset_ids.items())
        )

    coords = {
        "noise": ("noise", np.asarray(axes["noise"], dtype=np.float64)),
        "mag": ("mag", np.asarray(axes["mag"], dtype=object)),
        "model": ("model", np.asarray(axes["model"], dtype=object)),
        "n_train": ("n_train", np.asarray(axes["n_train"], dtype=np.int64)),
        "seed": ("seed", np.asarray(axes["seed"], dtype=np.int64)),
        "snr_bin": ("snr_bin", np.asarray(SNR_BIN_LABELS, dtype=object)),
        "snr_bin_lo": ("snr_bin", np.asarray(SNR_EDGES[:-1], dtype=np.float64)),
        "snr_bin_hi": ("snr_bin", np.asarray(SNR_EDGES[1:], dtype=np.float64)),
    }
    data = {name: (DIMS, arr) for name, arr in scalars.items()}
    data.update({f"snr_{name}": (DIMS + ("snr_bin",), arr) for name, arr in bins.items()})
    data["done"] = (DIMS, records != "")
    data["cell_record"] = (DIMS, records)
    ds = xr.Dataset(data, coords=coords)
    _describe(ds)

    global_attrs = {
        "schema": CUBE_SCHEMA,
        "code_version": code_version(),
        "dataset_ids": sorted(dataset_ids),
        "n_cells": int(len(cells)),
        "reference_models": list(DEFAULT_REFERENCES),
    }
    global_attrs.update(attrs or {})
    if ceilings:
        ds, global_attrs["ceiling_provenance"] = _fold_ceilings(ds, ceilings, set(dataset_ids))
    if bayes:
        ds, global_attrs["bayes_provenance"] = _fold_bayes(ds, bayes, set(dataset_ids))
    if windows is not None:
        ds, global_attrs["window_provenance"] = _fold_windows(ds, windows, set(dataset_ids))
    if curves:
        ds, global_attrs["curves_provenance"] = _fold_curves(ds, curves, set(dataset_ids))
    if hypotheses:
        ds, global_attrs["hypotheses"] = fold_hypotheses(ds, cells, hypotheses)
    ds.attrs = {
        k: v if isinstance(v, (str, int, float)) else json.dumps(v, sort_keys=True, default=str)
        for k, v in global_attrs.items()
    }
    return ds


def _describe(ds: xr.Dataset) -> None:
    units = {
        "noise": "noise_level (x pipeline sigma)",
        "mag": "HSC-i AB mag",
        "mae": "dex",
        "rmse": "dex",
        "bias": "dex (predicted - true)",
        "mae_top20": "dex",
        "rmse_top20": "dex",
        "bias_top20": "dex",
        "train_s": "s",
        "predict_s": "s",
        "peak_mem_mb": "MB",
        "snr_rmse": "dex",
        "sigma_median": "dex (predicted 1-sigma of log g)",
        "snr_sigma_median": "dex (predicted 1-sigma of log g)",
    }
    for name, unit in units.items():
        if name in ds.variables:
            ds[name].attrs["units"] = unit
    ds["r2"].attrs["long_name"] = "R^2 of log g on the test stars"
    ds["snr_bin"].attrs["long_name"] = "per-spectrum S/N bin [snr_bin_lo, snr_bin_hi)"
    ds["cell_record"].attrs["long_name"] = "JSON: provenance, model_info, params, data of the cell"


def _ceiling_name(name: str) -> str:
    return name if name.startswith("ceiling") else f"ceiling_{name}"


def _load_netcdf(path: Path, what: str) -> xr.Dataset:
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()
    except FileNotFoundError:
        raise CubeError(f"{path}: {what} file not found") from None
    except (OSError, ValueError) as exc:
        raise CubeError(f"{path}: not a readable {what} netCDF file ({exc})") from exc


def _load_reference(
    path: Path, what: str, cell: tuple[float, str], axes: tuple[dict, dict], dataset_ids: set[str], window: str
):
    """A reference file (ceiling, Bayes) of the (noise, mag) ``cell``, checked: the cell is on the
    cube's ``axes``, the file was computed on the cells' dataset, for this very cell and with this
    ``window`` (its ``window`` attribute; "full", also when absent: every pixel)."""
    noise, mag = cell
    if noise not in axes[0] or mag not in axes[1]:
        raise CubeError(f"{path}: {what} cell (noise {noise}, mag {mag}) is off the cube's axes")
    ref = _load_netcdf(path, what)
    if dataset_ids and "dataset_id" in ref.attrs and str(ref.attrs["dataset_id"]) not in dataset_ids:
        raise CubeError(f"{path}: {what} of dataset {ref.attrs['dataset_id']}, the cells' is {sorted(dataset_ids)}")
    _check_ceiling_cell(ref.attrs, path, noise, mag)
    label = ref.attrs.get("window", "full")
    if label != window:
        raise CubeError(f"{path}: {what} of window {label}, folded as window {window} (stale file?)")
    return ref


def _fold_ceilings(
    ds: xr.Dataset, ceilings: Mapping[tuple[float, str], str | Path], dataset_ids: set[str], window: str = "full"
):
    """Add the numeric summary variables (scalars, per S/N bin) of the per-cell ceiling files as
    ceiling_*(noise, mag[, snr_bin]); per-star arrays stay in the files. A ceiling computed on
    another dataset than the cells', or for another (noise, mag) cell than the one it is folded
    into (its attributes noise and mag), is an error."""
    noise_at = {v: i for i, v in enumerate(ds.noise.values.tolist())}
    mag_at = {v: i for i, v in enumerate(ds.mag.values.tolist())}
    arrays: dict[str, np.ndarray] = {}
    extra_dims: dict[str, tuple] = {}
    attrs: dict[str, dict] = {}
    for (noise, mag), path in ceilings.items():
        path = Path(path)
        c = _load_reference(path, "ceiling", (noise, mag), (noise_at, mag_at), dataset_ids, window)
        meta = dict(c.attrs)
        if "definitions" in meta:  # the same for every cell: kept once
            attrs["definitions"] = meta.pop("definitions")
        attrs[f"noise{noise:g}_mag{mag}"] = meta
        for name, var in c.data_vars.items():
            if not np.issubdtype(var.dtype, np.number) or not set(var.dims) <= CEILING_DIMS:
                continue
            out = _ceiling_name(name)
            if out not in arrays:
                extra_dims[out] = var.dims
                arrays[out] = np.full((len(noise_at), len(mag_at)) + var.shape, np.nan)
            if var.dims != extra_dims[out] or var.shape != arrays[out].shape[2:]:
                raise CubeError(
                    f"{path}: variable {name} has dims {dict(var.sizes)}, other ceiling files "
                    f"{extra_dims[out]} {arrays[out].shape[2:]}"
                )
            arrays[out][noise_at[noise], mag_at[mag]] = var.values
    for name, arr in arrays.items():
        dims = extra_dims[name]
        for dim, size in zip(dims, arr.shape[2:]):
            if dim in ds.sizes and ds.sizes[dim] != size:
                raise CubeError(f"ceiling variable {name}: dim {dim} has {size} entries, the cube {ds.sizes[dim]}")
        ds[name] = (("noise", "mag") + dims, arr)
    return ds, attrs


# cube variable <- variable of a ``specscale bayes`` file, with its units and meaning
BAYES_VARIABLES = {
    "bayes_r2": (
        "r2_reference",
        "1",
        "R^2 of the posterior-mean log g (sampling methods: MC noise added back; bank method: as estimated)",
    ),
    "bayes_r2_err": (
        "r2_bayes_err",
        "1",
        "total error of bayes_r2: hypot(MC standard error, sampling error over the reference's stars)",
    ),
    "bayes_r2_mc_se": ("r2_bayes_mc_se", "1", "Monte-Carlo standard error of bayes_r2"),
    "bayes_r2_sampling_se": ("r2_bayes_sampling_se", "1", "sampling error of an R^2 over the reference's stars"),
    "bayes_r2_raw": ("r2_bayes", "1", "R^2 of the estimated posterior means (biased low by the MC noise)"),
    "bayes_rmse": ("rmse_bayes", "dex", "RMSE of the posterior-mean log g"),
    "bayes_r2_snr_bin": ("r2_bayes_snr_bin", "1", "bayes_r2 per S/N bin"),
    "bayes_ess_median": ("ess_median", "1", "median effective sample size per star"),
}


def _fold_bayes(
    ds: xr.Dataset, files: Mapping[tuple[float, str], str | Path], dataset_ids: set[str], window: str = "full"
):
    """Add the Bayes reference of each (noise, mag) cell (``specscale bayes`` files) as
    bayes_*(noise, mag[, snr_bin]) (BAYES_VARIABLES) and bayes_n_stars; the same dataset-id and cell
    checks as :func:`_fold_ceilings`. Returns the dataset and the files' attributes per cell."""
    noise_at = {v: i for i, v in enumerate(ds.noise.values.tolist())}
    mag_at = {v: i for i, v in enumerate(ds.mag.values.tolist())}
    shape = (len(noise_at), len(mag_at))
    arrays = {
        name: np.full(shape + ((N_SNR_BINS,) if name.endswith("snr_bin") else ()), np.nan) for name in BAYES_VARIABLES
    }
    n_stars = np.zeros(shape, dtype=np.int64)
    attrs: dict[str, dict] = {}
    for (noise, mag), path in files.items():
        path = Path(path)
        b = _load_reference(path, "Bayes reference", (noise, mag), (noise_at, mag_at), dataset_ids, window)
        at = (noise_at[noise], mag_at[mag])
        for name, (source, _, _) in BAYES_VARIABLES.items():
            if source not in b:
                raise CubeError(f"{path}: no variable {source} (not a specscale bayes file?)")
            value = b[source].values
            if np.shape(value) != arrays[name].shape[2:]:
                raise CubeError(f"{path}: {source} has shape {np.shape(value)}, the cube {arrays[name].shape[2:]}")
            arrays[name][at] = value
        n_stars[at] = int(b.attrs.get("n_stars", b.sizes.get("star", 0)))
        meta = dict(b.attrs)
        meta.pop("definitions", None)
        attrs[f"noise{noise:g}_mag{mag}"] = meta
    for name, (_, unit, meaning) in BAYES_VARIABLES.items():
        ds[name] = (("noise", "mag", "snr_bin") if name.endswith("snr_bin") else ("noise", "mag"), arrays[name])
        ds[name].attrs.update(units=unit, long_name=meaning)
    ds["bayes_n_stars"] = (("noise", "mag"), n_stars)
    ds["bayes_n_stars"].attrs["long_name"] = "test stars of the Bayes reference (the first K the models are scored on)"
    return ds, attrs


def _fold_windows(ds: xr.Dataset, refs: WindowReferences, dataset_ids: set[str]):
    """Add each window's own references, folded per window like the full-spectrum ones
    (:func:`_fold_ceilings`, :func:`_fold_bayes`, the same checks) and stacked on a ``window`` dim:
    window_ceiling_*(window, noise, mag[, snr_bin]), window_bayes_*; NaN where a window has no
    reference. A file computed with another window than its id's is an error (stale file). Adds
    the coordinate model_window(model) and window_label(window). Returns (ds, attrs per file)."""
    ids = list(refs.labels)
    base = xr.Dataset(coords={k: ds.coords[k] for k in ("noise", "mag", "snr_bin", "snr_bin_lo", "snr_bin_hi")})
    folded, attrs = [], {}
    for wid in ids:
        part = base.copy()
        for kind, files, fold in (
            ("ceiling", refs.ceilings, _fold_ceilings),
            ("Bayes reference", refs.bayes, _fold_bayes),
        ):
            mine = {(n, m): Path(p) for (w, n, m), p in files.items() if w == wid}
            if mine:
                part, meta = fold(part, mine, dataset_ids, refs.labels[wid])
                attrs[f"{wid}/{kind}"] = meta
        folded.append(part)
    names = sorted({name for part in folded for name in part.data_vars if name != "bayes_n_stars"})
    for name in names:
        template = next(part[name] for part in folded if name in part)
        stack = np.stack([part[name].values if name in part else np.full(template.shape, np.nan) for part in folded])
        ds[f"window_{name}"] = (("window",) + template.dims, stack)
        ds[f"window_{name}"].attrs.update(template.attrs)
    if names:
        ds = ds.assign_coords(window=("window", np.asarray(ids, dtype=object)))
        ds = ds.assign_coords(window_label=("window", np.asarray([refs.labels[w] for w in ids], dtype=object)))
    models = [str(m) for m in ds.model.values]
    windows = np.asarray([refs.models.get(m, "full") for m in models], dtype=object)
    ds = ds.assign_coords(model_window=("model", windows))
    ds["model_window"].attrs["long_name"] = "the window of the model's inputs (full: every pixel)"
    return ds, attrs


def window_rows(ds: xr.Dataset) -> list[dict]:
    """What each window carries, per (window, noise, mag) cell with a window reference: the
    window's population ceiling and Bayes reference beside the full spectrum's (same stars), and
    the best model on the window and on the full spectrum (seed-mean R^2 at their largest size)."""
    if "window" not in ds.dims:
        return []
    ends = endpoints(ds, "r2")["mean"]
    refs = set(reference_models(ds))
    rows = []
    for w in ds.window.values:
        models = [m for m, mw in zip(ds.model.values, ds.model_window.values) if mw == w and m not in refs]
        full = [m for m, mw in zip(ds.model.values, ds.model_window.values) if mw == "full" and m not in refs]
        for noise in ds.noise.values:
            for mag in ds.mag.values:
                at = dict(noise=noise, mag=mag)
                row = {"window": str(w), "noise": float(noise), "mag": str(mag)}
                for name in ("ceiling_pop", "bayes_r2", "bayes_r2_err"):
                    row[f"window_{name}"] = _value(ds, f"window_{name}", window=w, **at)
                    row[name] = _value(ds, name, **at)
                if all(math.isnan(row[f"window_{n}"]) for n in ("ceiling_pop", "bayes_r2")):
                    continue
                for key, group in (("window_best", models), ("full_best", full)):
                    r2 = {m: float(ends.sel(model=m, **at)) for m in group}
                    r2 = {m: v for m, v in r2.items() if not math.isnan(v)}
                    best = max(r2, key=r2.get) if r2 else None
                    row[f"{key}_model"], row[f"{key}_r2"] = best, (r2[best] if best else math.nan)
                rows.append(row)
    return rows


def _value(ds: xr.Dataset, name: str, **at) -> float:
    """A scalar of the cube at ``at`` (NaN when the variable is absent)."""
    return float(ds[name].sel(**at)) if name in ds else math.nan


def _check_ceiling_cell(attrs: Mapping, path: Path, noise: float, mag: str) -> None:
    """The (noise, mag) cell a ceiling file says it is (attributes noise, mag, as ``specscale
    fisher`` writes them) must be the cell it is folded into."""
    if "noise" in attrs:
        try:
            theirs = float(attrs["noise"])
        except (TypeError, ValueError):
            raise CubeError(f"{path}: ceiling attribute noise={attrs['noise']!r} is not a number") from None
        if not math.isclose(theirs, noise, rel_tol=1e-9):
            raise CubeError(
                f"{path}: ceiling of noise {theirs:g}, folded into the cell of noise {noise:g} (stale file?)"
            )
    if "mag" in attrs:
        try:
            theirs = MagRange.parse(attrs["mag"]).label()
        except ValueError as exc:
            raise CubeError(f"{path}: ceiling attribute mag: {exc}") from None
        if theirs != MagRange.parse(mag).label():
            raise CubeError(
                f"{path}: ceiling of magnitude cell {theirs}, folded into the cell of mag {mag} (stale file?)"
            )


def _fold_curves(ds: xr.Dataset, path: str | Path, dataset_ids: set[str] = frozenset()):
    """Add the fisher-curves variables as curve_*(curve_noise, curve_mag, ...). Curves computed on
    another dataset than the cells' are an error."""
    path = Path(path)
    c = _load_netcdf(path, "ceiling curves")
    if dataset_ids and "dataset_id" in c.attrs and str(c.attrs["dataset_id"]) not in dataset_ids:
        raise CubeError(
            f"{path}: ceiling curves of dataset {c.attrs['dataset_id']}, the cells' is {sorted(dataset_ids)}"
        )
    missing = [d for d in ("noise", "mag") if d not in c.dims]
    if missing:
        raise CubeError(f"{path}: ceiling curves lack dim(s) {missing}")
    mags = c["mag"].values if "mag" in c.coords else np.arange(c.sizes["mag"])
    mags = np.array([MagRange.parse(m).lo if isinstance(m, str) else float(m) for m in mags.tolist()])
    c = c.assign_coords(mag=mags).rename({"noise": "curve_noise", "mag": "curve_mag"})
    c = c.drop_vars([name for name, coord in c.coords.items() if set(coord.dims) & CEILING_DIMS])
    for name, var in c.data_vars.items():
        if np.issubdtype(var.dtype, np.number) and set(var.dims) <= CEILING_DIMS | {"curve_noise", "curve_mag"}:
            if "snr_bin" in var.dims and var.sizes["snr_bin"] != N_SNR_BINS:
                raise CubeError(f"{path}: {name} has {var.sizes['snr_bin']} S/N bins, the cube {N_SNR_BINS}")
            ds[f"curve_{name}"] = var
    ds.coords["curve_mag"].attrs["units"] = "HSC-i AB mag"
    return ds, dict(c.attrs)


# ---------------------------------------------------------------------------------------- files
def write_cube(ds: xr.Dataset, path: str | Path) -> Path:
    """Write the cube as netCDF (h5netcdf engine), atomically: a killed writer leaves no cube
    (``specscale.core.files.write_netcdf``; the path must end in .nc)."""
    return write_netcdf(ds, path)


def open_cube(path: str | Path) -> xr.Dataset:
    """Read a cube written by :func:`write_cube` (loaded into memory, file closed)."""
    ds = _load_netcdf(Path(path), "cube")
    if ds.attrs.get("schema") != CUBE_SCHEMA:
        raise CubeError(f"{path}: not a specscale cube (schema {ds.attrs.get('schema')!r})")
    return ds


@dataclass(frozen=True)
class WindowReferences:
    """The references of the windows the sweep's variants use: ``labels`` window id -> the window
    as the reference files' ``window`` attribute spells it (``specscale.sim.windows.window_label``),
    ``models`` model -> its window id ("full": every pixel), ``ceilings`` and ``bayes`` (window id,
    noise, mag label) -> a ``specscale fisher`` / ``specscale bayes`` file computed with that window."""

    labels: Mapping[str, str]
    models: Mapping[str, str]
    ceilings: Mapping[tuple[str, float, str], str | Path]
    bayes: Mapping[tuple[str, float, str], str | Path]


def json_attr(ds: xr.Dataset, name: str, default=None):
    """A JSON-encoded global attribute of the cube, decoded."""
    value = ds.attrs.get(name)
    return default if value is None else json.loads(value) if isinstance(value, str) else value


# ---------------------------------------------------------------------------------------- queries
def reference_models(ds: xr.Dataset) -> list[str]:
    """Models that are references (the oracle), not contenders for "best model"."""
    return [m for m in json_attr(ds, "reference_models", list(DEFAULT_REFERENCES)) if m in ds.model.values]


def endpoints(ds: xr.Dataset, metric: str = "r2") -> xr.Dataset:
    """Per (noise, mag, model): ``metric`` over seeds at the model's largest training size that
    has results there. Variables mean, std (population), min, max, n_seeds, n_train (0 and NaN
    where the model has no results in that cell). Extra dims of ``metric`` (snr_bin) are kept."""
    done = ds["done"].transpose(*DIMS).values
    has = done.any(axis=-1)  # (noise, mag, model, n_train)
    last = np.where(has.any(-1), has.shape[-1] - 1 - np.argmax(has[..., ::-1], axis=-1), -1)
    var = ds[metric].transpose(*DIMS, ...)
    extra = var.dims[len(DIMS) :]
    index = last.clip(0).reshape(last.shape + (1,) * (2 + len(extra)))
    at_last = np.take_along_axis(var.values, index, axis=3)[:, :, :, 0]  # (noise, mag, model, seed, *extra)
    at_last[last < 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells give NaN, as they should
        stats = {
            "mean": np.nanmean(at_last, 3),
            "std": np.nanstd(at_last, 3),
            "min": np.nanmin(at_last, 3),
            "max": np.nanmax(at_last, 3),
        }
    dims = DIMS[:3]
    out = xr.Dataset({k: (dims + extra, v) for k, v in stats.items()}, coords={d: ds[d].values for d in dims + extra})
    done_last = np.take_along_axis(done, last.clip(0)[..., None, None], axis=3)[:, :, :, 0]
    out["n_seeds"] = (dims, np.where(last >= 0, done_last.sum(-1), 0))
    out["n_train"] = (dims, np.where(last >= 0, ds["n_train"].values[last.clip(0)], 0))
    return out


def headline(ds: xr.Dataset, baseline: str | None = None) -> list[dict]:
    """Headline numbers per (noise, mag), rows in (noise, mag) order (R^2 dimensionless, RMSE dex).

    - ``best_model``: the best learned model (references such as the oracle are no contenders) by
      seed-mean R^2 at its largest training size: ``best_r2``, ``best_n_train``, ``best_std`` (the
      population std over its seeds) and ``best_r2_err``, the error of that mean: std/sqrt(k - 1)
      (the sample std / sqrt(k)) over k >= 2 seeds, else the test-sampling error sqrt(2/n) (1 - R^2)
      of one seed on n stars (Gaussian errors); ``best_err_kind`` says which ("seeds",
      "test sampling"). ``baseline_r2``, ``difference`` (best - baseline), ``<reference>_r2``.
    - The gap to the achievable: ``gap`` = ``bayes_r2`` - best R^2, the Bayes posterior-mean
      reference that no estimator beats on average, with ``gap_err`` = hypot(``bayes_r2_err``,
      ``best_r2_err``); ``gap_reference`` "bayes". A cube without ``bayes_r2`` falls back to the
      unbiased population bound: ``gap`` = ceiling_pop - best, ``gap_err`` = ``best_r2_err``,
      ``gap_reference`` "ceiling_pop".
    - The unbiased bounds (Fisher/CRLB; they bound unbiased estimators only, so shrinking
      regressors may beat them): ``ceiling_pop``, ``ceiling_median`` and ``gap_pop``,
      ``gap_median`` (bound - best).
    - Error against the theoretical sigma (the study's first decision question): ``best_rmse``
      (seed mean, dex), ``crlb_rmse`` = sqrt((1 - ceiling_pop) var_prior), the root of the mean over
      the test stars of the CRLB capped at the prior variance (dex), ``rmse_over_crlb``,
      ``bayes_rmse`` (dex) and ``rmse_over_bayes``.
    """
    baseline = baseline or ds.attrs.get("baseline_model") or "ridge"
    refs = reference_models(ds)
    ends = endpoints(ds)
    rmse = endpoints(ds, "rmse")["mean"] if "rmse" in ds else None
    n_test = endpoints(ds, "n")["mean"] if "n" in ds else None
    nan = float("nan")
    rows = []
    for noise in ds.noise.values.tolist():
        for mag in ds.mag.values.tolist():

            def cell(name: str) -> float:
                return float(ds[name].sel(noise=noise, mag=mag)) if name in ds else nan  # noqa: B023

            e = ends.sel(noise=noise, mag=mag)
            r2 = {m: float(e["mean"].sel(model=m)) for m in ds.model.values.tolist()}
            size = {m: e["n_train"].sel(model=m).item() for m in r2}
            learned = {m: v for m, v in r2.items() if m not in refs and np.isfinite(v)}
            best = max(learned, key=learned.get) if learned else None
            row = {
                "noise": noise,
                "mag": mag,
                "best_model": best,
                "best_r2": learned.get(best, nan),
                "best_n_train": size.get(best),
                "best_std": float(e["std"].sel(model=best)) if best else nan,
                "best_r2_err": nan,
                "best_err_kind": None,
                "baseline_model": baseline,
                "baseline_r2": r2.get(baseline, nan),
            }
            seeds = int(e["n_seeds"].sel(model=best)) if best else 0
            if seeds >= 2:
                row["best_r2_err"], row["best_err_kind"] = row["best_std"] / math.sqrt(seeds - 1), "seeds"
            elif seeds == 1 and n_test is not None:
                stars = float(n_test.sel(noise=noise, mag=mag, model=best))
                row["best_r2_err"] = math.sqrt(2.0 / stars) * (1.0 - row["best_r2"]) if stars > 0 else nan
                row["best_err_kind"] = "test sampling"
            row["difference"] = row["best_r2"] - row["baseline_r2"]
            for ref in refs:
                row[f"{ref}_r2"] = r2[ref]
            for name in ("ceiling_pop", "ceiling_median", "bayes_r2", "bayes_r2_err", "bayes_rmse"):
                row[name] = cell(name)
            row["gap_pop"] = row["ceiling_pop"] - row["best_r2"]
            row["gap_median"] = row["ceiling_median"] - row["best_r2"]
            if "bayes_r2" in ds:
                row["gap"] = row["bayes_r2"] - row["best_r2"]
                row["gap_err"] = math.hypot(row["bayes_r2_err"], row["best_r2_err"])
                row["gap_reference"] = "bayes"
            else:
                row["gap"], row["gap_err"], row["gap_reference"] = row["gap_pop"], row["best_r2_err"], "ceiling_pop"
            row["best_rmse"] = float(rmse.sel(noise=noise, mag=mag, model=best)) if best and rmse is not None else nan
            row["crlb_rmse"] = math.sqrt(max(1.0 - row["ceiling_pop"], 0.0) * cell("ceiling_var_prior"))
            with np.errstate(divide="ignore", invalid="ignore"):
                row["rmse_over_crlb"] = float(np.float64(row["best_rmse"]) / row["crlb_rmse"])
                row["rmse_over_bayes"] = float(np.float64(row["best_rmse"]) / row["bayes_rmse"])
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------- printing
def format_number(value, spec: str = ".3f", missing: str = "-") -> str:
    """``format(value, spec)``, or ``missing`` for None/NaN (an excluded or absent cell)."""
    return missing if value is None or not np.isfinite(value) else format(value, spec)


def format_table(ds: xr.Dataset, metrics: tuple[str, ...] = ("r2", "mae", "rmse", "r2_top20", "train_s")) -> str:
    """The cube as text: one block per (noise, mag) with its ceilings, one row per (model, n_train)
    that has results; metric columns are seed means (R^2 also +- the seed standard deviation)."""
    lines = [
        f"specscale cube: {int(ds['done'].sum())} cells; dims "
        + ", ".join(f"{d} {ds.sizes[d]}" for d in DIMS)
        + f"; code {ds.attrs.get('code_version', '?')}; dataset {', '.join(json_attr(ds, 'dataset_ids', []))}"
    ]
    widths = {"model": max([5] + [len(m) for m in ds.model.values.tolist()])}
    header = f"  {'model':<{widths['model']}}  {'n_train':>8}  {'seeds':>5}  " + "  ".join(
        f"{'r2 (+-sd)' if m == 'r2' else m:>{14 if m == 'r2' else 10}}" for m in metrics
    )
    mean = {m: ds[m].mean("seed", skipna=True) for m in metrics}
    std = ds["r2"].std("seed", skipna=True, ddof=0)
    seeds = ds["done"].sum("seed")
    for noise in ds.noise.values.tolist():
        for mag in ds.mag.values.tolist():
            ceil = "  ".join(
                f"{label} {format_number(float(ds[name].sel(noise=noise, mag=mag)))}"
                for name, label in (
                    ("ceiling_pop", "population"),
                    ("ceiling_median", "median"),
                    ("ceiling_pop_top20", "population top20"),
                )
                if name in ds
            )
            lines += ["", f"noise {noise:g}  mag {mag}" + (f"   R2 ceiling: {ceil}" if ceil else ""), header]
            for model in ds.model.values.tolist():
                for n in ds.n_train.values.tolist():
                    at = dict(noise=noise, mag=mag, model=model, n_train=n)
                    k = int(seeds.sel(at))
                    if k == 0:
                        continue
                    cols = []
                    for m in metrics:
                        v = float(mean[m].sel(at))
                        if m != "r2":
                            cols.append(f"{format_number(v, '.3f' if abs(v) < 100 else '.0f'):>10}")
                        elif k > 1:  # R^2 +- its spread over seeds
                            cols.append(f"{format_number(v):>7} +-{format_number(float(std.sel(at))):<5}")
                        else:
                            cols.append(f"{format_number(v):>14}")
                    lines.append(f"  {model:<{widths['model']}}  {n:>8}  {k:>5}  " + "  ".join(cols))
    return "\n".join(lines)
