"""The scaling cube: every metric of every sweep cell in one xarray Dataset, built by :func:`collect`.

Dimensions are (noise, mag, model, n_train, seed); a cell that the sweep excluded, or never ran
for that model (ViT only at the large sizes, the oracle at one nominal size), is NaN. Beside the
metrics sit the references (``specscale.sweep.cube_references``): the Fisher ceiling and the
Bayes reference per (noise, mag) (``ceiling_*``, ``bayes_*``), each window's own references
(``window_*``) and, on their own dims (curve_noise, curve_mag), the ceiling curves (``curve_*``);
and the hypotheses' verdicts (``hyp_*``, ``specscale.sweep.hypotheses``). Attributes carry
provenance: the sweep config (JSON), code version, dataset ids.

Collecting is built for thousands of cells: metrics.json files are read with ``json`` into
preallocated numpy arrays (``specscale.sweep.cube_records``) and the Dataset is built once; only
the few reference files are netCDF. The report's queries of a cube are ``specscale.report.queries``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from specscale.core.files import write_netcdf
from specscale.core.provenance import code_version
from specscale.core.vocab import Cell, snr_bin_coords
from specscale.sweep.cube_records import DIMS, CellTable, CubeError, axes_of, load_netcdf, read_cells
from specscale.sweep.cube_references import WindowReferences, fold_bayes, fold_ceilings, fold_curves, fold_windows
from specscale.sweep.hypotheses import Hypothesis, fold_hypotheses

CUBE_SCHEMA = "specscale.cube/1"
# what a learned model is compared with but is not itself a contender for "best model"
DEFAULT_REFERENCES = ("oracle",)
# units of the cube's variables (those present)
UNITS = {
    "noise": "noise_level (x pipeline sigma)",
    "mag": "HSC-i AB mag",
    "mae": "dex",
    "rmse": "dex",
    "bias": "dex (predicted - true)",
    "bias_cond": "dex (RMS over Teff x [M/H] bins of the mean residual)",
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
    """Build the cube from (cell, metrics.json path) pairs.

    ``axes`` fixes the coordinate values and their order (mag as labels; default: those of the
    cells, sorted, models in order of appearance); ``ceilings`` maps (noise, mag label) to a
    ``specscale fisher`` netCDF file, ``bayes`` to a ``specscale bayes`` file; ``curves`` is a
    ``specscale fisher-curves`` file; ``windows`` (:class:`WindowReferences`) the window
    variants' own references; ``attrs`` are extra global attributes (dicts/lists are
    JSON-encoded); ``hypotheses`` (``specscale.sweep.hypotheses``) are evaluated from the cells'
    predictions.h5 into hyp_*(hypothesis, noise, mag, n_train)."""
    cells = [(c, Path(p)) for c, p in cells]
    axes = {k: list(v) for k, v in (axes or axes_of([c for c, _ in cells])).items()}
    table = read_cells(cells, axes)
    ds = metrics_dataset(table, axes)
    dataset_ids = set(table.dataset_ids)
    global_attrs = {
        "schema": CUBE_SCHEMA,
        "code_version": code_version(),
        "dataset_ids": sorted(dataset_ids),
        "n_cells": int(len(cells)),
        "reference_models": list(DEFAULT_REFERENCES),
        **(attrs or {}),
    }
    if ceilings:
        ds, global_attrs["ceiling_provenance"] = fold_ceilings(ds, ceilings, dataset_ids)
    if bayes:
        ds, global_attrs["bayes_provenance"] = fold_bayes(ds, bayes, dataset_ids)
    if windows is not None:
        ds, global_attrs["window_provenance"] = fold_windows(ds, windows, dataset_ids)
    if curves:
        ds, global_attrs["curves_provenance"] = fold_curves(ds, curves, dataset_ids)
    if hypotheses:
        ds, global_attrs["hypotheses"] = fold_hypotheses(ds, cells, hypotheses)
    ds.attrs = {
        k: v if isinstance(v, (str, int, float)) else json.dumps(v, sort_keys=True, default=str)
        for k, v in global_attrs.items()
    }
    return ds


def metrics_dataset(table: CellTable, axes: Mapping[str, list]) -> xr.Dataset:
    """The cells' numbers as a Dataset on DIMS (scalars; per S/N bin as snr_<name>; ``done``; the
    JSON ``cell_record``), with the axes and S/N-bin coordinates and the variables' units."""
    coords = {
        "noise": ("noise", np.asarray(axes["noise"], dtype=np.float64)),
        "mag": ("mag", np.asarray(axes["mag"], dtype=object)),
        "model": ("model", np.asarray(axes["model"], dtype=object)),
        "n_train": ("n_train", np.asarray(axes["n_train"], dtype=np.int64)),
        "seed": ("seed", np.asarray(axes["seed"], dtype=np.int64)),
        **snr_bin_coords(),
    }
    data = {name: (DIMS, arr) for name, arr in table.scalars.items()}
    data.update({f"snr_{name}": (DIMS + ("snr_bin",), arr) for name, arr in table.bins.items()})
    data["done"] = (DIMS, table.records != "")
    data["cell_record"] = (DIMS, table.records)
    ds = xr.Dataset(data, coords=coords)
    for name, unit in UNITS.items():
        if name in ds.variables:
            ds[name].attrs["units"] = unit
    ds["r2"].attrs["long_name"] = "R^2 of log g on the test stars"
    ds["snr_bin"].attrs["long_name"] = "per-spectrum S/N bin [snr_bin_lo, snr_bin_hi)"
    ds["cell_record"].attrs["long_name"] = "JSON: provenance, model_info, params, data of the cell"
    return ds


def write_cube(ds: xr.Dataset, path: str | Path) -> Path:
    """Write the cube as netCDF (h5netcdf engine), atomically: a killed writer leaves no cube
    (``specscale.core.files.write_netcdf``; the path must end in .nc)."""
    return write_netcdf(ds, path)


def open_cube(path: str | Path) -> xr.Dataset:
    """Read a cube written by :func:`write_cube` (loaded into memory, file closed)."""
    ds = load_netcdf(Path(path), "cube")
    if ds.attrs.get("schema") != CUBE_SCHEMA:
        raise CubeError(f"{path}: not a specscale cube (schema {ds.attrs.get('schema')!r})")
    return ds
