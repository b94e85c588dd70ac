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
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import xarray as xr

from .cells import MagCell
from .metrics import SNR_EDGES
from .provenance import code_version

CUBE_SCHEMA = "specscale.cube/1"
METRICS_SCHEMA = "specscale.metrics/1"
DIMS = ("noise", "mag", "model", "n_train", "seed")
# scalars of metrics.json "metrics" (R^2, dex, counts, S/N) and "timing" (s, MB)
SCALAR_METRICS = (
    "r2", "mae", "rmse", "bias", "n",
    "r2_top20", "mae_top20", "rmse_top20", "bias_top20", "n_top20", "snr_top20_min", "snr_median",
)
TIMING = ("train_s", "predict_s", "peak_mem_mb")
# per S/N bin lists of metrics.json "metrics.snr_bins" -> cube variables snr_<name>(..., snr_bin)
BIN_METRICS = ("r2", "rmse", "n")
N_SNR_BINS = len(SNR_EDGES) - 1
SNR_BIN_LABELS = tuple(f"{lo:g}-{hi:g}" for lo, hi in zip(SNR_EDGES[:-1], SNR_EDGES[1:]))  # as specscale.fisher
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
    ``MagCell.label()``), model name, training-set size, seed."""

    noise: float
    mag: str
    model: str
    n_train: int
    seed: int


def mag_order(label: str) -> tuple[float, float]:
    """Sort key of a magnitude cell label: fixed magnitudes and ranges by (lo, hi) in AB mag."""
    cell = MagCell.parse(label)
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


def check_cell(record: dict, cell: Cell, path) -> None:
    """The cell a metrics file says it is must be the cell the sweep put it at."""
    got = record["cell"]
    try:
        same = (
            str(got["model"]) == cell.model
            and math.isclose(float(got["noise"]), cell.noise, rel_tol=1e-9)
            and MagCell.parse(got["mag"]).label() == cell.mag
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
) -> xr.Dataset:
    """Build the cube from (cell, metrics.json path) pairs.

    ``axes`` fixes the coordinate values and their order (default: those of the cells, sorted;
    models in order of appearance); ``ceilings`` maps (noise, mag label) to a ``specscale fisher``
    netCDF file; ``curves`` is a ``specscale fisher-curves`` file; ``attrs`` are extra global
    attributes (dicts/lists are JSON-encoded)."""
    cells = [(c, Path(p)) for c, p in cells]
    axes = {k: list(v) for k, v in (axes or _axes_from(c for c, _ in cells)).items()}
    index = {dim: {v: i for i, v in enumerate(axes[dim])} for dim in DIMS}
    shape = tuple(len(axes[d]) for d in DIMS)

    scalars = {name: np.full(shape, np.nan) for name in SCALAR_METRICS + TIMING}
    bins = {name: np.full(shape + (N_SNR_BINS,), np.nan) for name in BIN_METRICS}
    records = np.full(shape, "", dtype=object)
    dataset_ids: dict[str, str] = {}
    for cell, path in cells:
        try:
            at = tuple(index[d][getattr(cell, d)] for d in DIMS)
        except KeyError as exc:
            raise CubeError(f"{path}: cell {cell} is off the cube's axes ({exc} not in {axes})") from None
        record = read_metrics(path)
        check_cell(record, cell, path)
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
    if curves:
        ds, global_attrs["curves_provenance"] = _fold_curves(ds, curves)
    ds.attrs = {k: v if isinstance(v, (str, int, float)) else json.dumps(v, sort_keys=True, default=str)
                for k, v in global_attrs.items()}
    return ds


def _describe(ds: xr.Dataset) -> None:
    units = {"noise": "noise_level (x pipeline sigma)", "mag": "HSC-i AB mag", "mae": "dex", "rmse": "dex",
             "bias": "dex (predicted - true)", "mae_top20": "dex", "rmse_top20": "dex", "bias_top20": "dex",
             "train_s": "s", "predict_s": "s", "peak_mem_mb": "MB", "snr_rmse": "dex"}
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


def _fold_ceilings(ds: xr.Dataset, ceilings: Mapping[tuple[float, str], str | Path], dataset_ids: set[str]):
    """Add the numeric summary variables (scalars, per S/N bin) of the per-cell ceiling files as
    ceiling_*(noise, mag[, snr_bin]); per-star arrays stay in the files. A ceiling computed on
    another dataset than the cells' is an error."""
    noise_at = {v: i for i, v in enumerate(ds.noise.values.tolist())}
    mag_at = {v: i for i, v in enumerate(ds.mag.values.tolist())}
    arrays: dict[str, np.ndarray] = {}
    extra_dims: dict[str, tuple] = {}
    attrs: dict[str, dict] = {}
    for (noise, mag), path in ceilings.items():
        path = Path(path)
        if noise not in noise_at or mag not in mag_at:
            raise CubeError(f"{path}: ceiling cell (noise {noise}, mag {mag}) is off the cube's axes")
        c = _load_netcdf(path, "ceiling")
        if dataset_ids and "dataset_id" in c.attrs and str(c.attrs["dataset_id"]) not in dataset_ids:
            raise CubeError(f"{path}: ceiling of dataset {c.attrs['dataset_id']}, the cells' is {sorted(dataset_ids)}")
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
                raise CubeError(f"{path}: variable {name} has dims {dict(var.sizes)}, other ceiling files "
                                f"{extra_dims[out]} {arrays[out].shape[2:]}")
            arrays[out][noise_at[noise], mag_at[mag]] = var.values
    for name, arr in arrays.items():
        dims = extra_dims[name]
        for dim, size in zip(dims, arr.shape[2:]):
            if dim in ds.sizes and ds.sizes[dim] != size:
                raise CubeError(f"ceiling variable {name}: dim {dim} has {size} entries, the cube {ds.sizes[dim]}")
        ds[name] = (("noise", "mag") + dims, arr)
    return ds, attrs


def _fold_curves(ds: xr.Dataset, path: str | Path):
    """Add the fisher-curves variables as curve_*(curve_noise, curve_mag, ...)."""
    path = Path(path)
    c = _load_netcdf(path, "ceiling curves")
    missing = [d for d in ("noise", "mag") if d not in c.dims]
    if missing:
        raise CubeError(f"{path}: ceiling curves lack dim(s) {missing}")
    mags = c["mag"].values if "mag" in c.coords else np.arange(c.sizes["mag"])
    mags = np.array([MagCell.parse(m).lo if isinstance(m, str) else float(m) for m in mags.tolist()])
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
    """Write the cube as netCDF (h5netcdf engine), atomically: a killed writer leaves no cube."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def open_cube(path: str | Path) -> xr.Dataset:
    """Read a cube written by :func:`write_cube` (loaded into memory, file closed)."""
    ds = _load_netcdf(Path(path), "cube")
    if ds.attrs.get("schema") != CUBE_SCHEMA:
        raise CubeError(f"{path}: not a specscale cube (schema {ds.attrs.get('schema')!r})")
    return ds


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
    extra = var.dims[len(DIMS):]
    index = last.clip(0).reshape(last.shape + (1,) * (2 + len(extra)))
    at_last = np.take_along_axis(var.values, index, axis=3)[:, :, :, 0]  # (noise, mag, model, seed, *extra)
    at_last[last < 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells give NaN, as they should
        stats = {
            "mean": np.nanmean(at_last, 3), "std": np.nanstd(at_last, 3),
            "min": np.nanmin(at_last, 3), "max": np.nanmax(at_last, 3),
        }
    dims = DIMS[:3]
    out = xr.Dataset({k: (dims + extra, v) for k, v in stats.items()},
                     coords={d: ds[d].values for d in dims + extra})
    done_last = np.take_along_axis(done, last.clip(0)[..., None, None], axis=3)[:, :, :, 0]
    out["n_seeds"] = (dims, np.where(last >= 0, done_last.sum(-1), 0))
    out["n_train"] = (dims, np.where(last >= 0, ds["n_train"].values[last.clip(0)], 0))
    return out


def headline(ds: xr.Dataset, baseline: str | None = None) -> list[dict]:
    """Headline numbers per (noise, mag): best learned model (seed-mean R^2 at its largest size),
    the baseline model, their difference, the oracle (if run), the ceilings and the gap
    (population ceiling - best). Rows in (noise, mag) order."""
    baseline = baseline or ds.attrs.get("baseline_model") or "ridge"
    refs = reference_models(ds)
    ends = endpoints(ds)
    rows = []
    for noise in ds.noise.values.tolist():
        for mag in ds.mag.values.tolist():
            e = ends.sel(noise=noise, mag=mag)
            r2 = {m: float(e["mean"].sel(model=m)) for m in ds.model.values.tolist()}
            size = {m: e["n_train"].sel(model=m).item() for m in r2}
            learned = {m: v for m, v in r2.items() if m not in refs and np.isfinite(v)}
            best = max(learned, key=learned.get) if learned else None
            row = {
                "noise": noise, "mag": mag,
                "best_model": best,
                "best_r2": learned.get(best, float("nan")),
                "best_n_train": size.get(best),
                "best_std": float(e["std"].sel(model=best)) if best else float("nan"),
                "baseline_model": baseline,
                "baseline_r2": r2.get(baseline, float("nan")),
            }
            row["difference"] = row["best_r2"] - row["baseline_r2"]
            for ref in refs:
                row[f"{ref}_r2"] = r2[ref]
            for name in ("ceiling_pop", "ceiling_median"):
                row[name] = float(ds[name].sel(noise=noise, mag=mag)) if name in ds else float("nan")
            row["gap"] = row["ceiling_pop"] - row["best_r2"]
            row["gap_median"] = row["ceiling_median"] - row["best_r2"]
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
                for name, label in (("ceiling_pop", "population"), ("ceiling_median", "median"),
                                    ("ceiling_pop_top20", "population top20"))
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
