"""The cells' metrics.json files, read into the cube's arrays: each record schema-checked,
checked against the sweep cell it is filed under, its scalars, per-S/N-bin lists, timing and
provenance placed at the cell's index (``specscale.sweep.cube.collect`` builds the Dataset).

Built for thousands of cells: the files are read with ``json`` into preallocated numpy arrays."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from specscale.core.vocab import N_SNR_BINS, SNR_EDGES, Cell, MagRange

METRICS_SCHEMA = "specscale.metrics/1"
DIMS = ("noise", "mag", "model", "n_train", "seed")
# scalars of metrics.json "metrics" (R^2, dex, counts, S/N) and "timing" (s, MB)
SCALAR_METRICS = (
    "r2",
    "mae",
    "rmse",
    "bias",
    "bias_cond",
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
# the parts of a record the cube keeps per cell, as JSON (cube variable cell_record)
RECORD_KEYS = ("provenance", "model_info", "params", "data")


class CubeError(ValueError):
    """A metrics/ceiling file is missing, malformed or does not match its sweep cell; the message
    names the file."""


def load_netcdf(path: Path, what: str) -> xr.Dataset:
    """A netCDF file (a reference file or the cube), loaded into memory and closed; ``what`` names
    it in the error."""
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()
    except FileNotFoundError:
        raise CubeError(f"{path}: {what} file not found") from None
    except (OSError, ValueError) as exc:
        raise CubeError(f"{path}: not a readable {what} netCDF file ({exc})") from exc


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
            and MagRange.parse(got["mag"]).label() == cell.mag.label()
            and int(got["n_train"]) == cell.n_train
            and int(got["seed"]) == cell.seed
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CubeError(f"{path}: malformed 'cell' {got!r} ({exc})") from exc
    if not same:
        raise CubeError(f"{path}: metrics are for cell {got}, but the sweep expects {cell.info()}")


def axes_of(cells: Sequence[Cell]) -> dict[str, list]:
    """The cube's coordinates from its cells: values sorted (mag by (lo, hi), as labels), models
    in order of appearance."""
    return {
        "noise": sorted({c.noise for c in cells}),
        "mag": [m.label() for m in sorted({c.mag for c in cells})],
        "model": list(dict.fromkeys(c.model for c in cells)),
        "n_train": sorted({c.n_train for c in cells}),
        "seed": sorted({c.seed for c in cells}),
    }


@dataclass
class CellTable:
    """Every cell's numbers on the cube's grid (DIMS), NaN where no cell: ``scalars`` (SCALAR_METRICS
    and TIMING), ``bins`` (per S/N bin, last axis), ``records`` (JSON of RECORD_KEYS, "" where no
    cell) and ``dataset_ids`` (dataset id -> the first metrics file that names it)."""

    scalars: dict[str, np.ndarray]
    bins: dict[str, np.ndarray]
    records: np.ndarray
    dataset_ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> CellTable:
        return cls(
            scalars={name: np.full(shape, np.nan) for name in SCALAR_METRICS + TIMING},
            bins={name: np.full(shape + (N_SNR_BINS,), np.nan) for name in BIN_METRICS + CALIBRATION_BIN_METRICS},
            records=np.full(shape, "", dtype=object),
        )


def read_cells(cells: Sequence[tuple[Cell, Path]], axes: Mapping[str, list]) -> CellTable:
    """Read every (cell, metrics.json) pair into a :class:`CellTable` on ``axes``. A cell off the
    axes, a file of another cell, a malformed file or cells of different datasets is a CubeError."""
    index = {dim: {v: i for i, v in enumerate(axes[dim])} for dim in DIMS}
    table = CellTable.empty(tuple(len(axes[d]) for d in DIMS))
    for cell, path in cells:
        coords = cell.info()
        try:
            at = tuple(index[d][coords[d]] for d in DIMS)
        except KeyError as exc:
            raise CubeError(f"{path}: cell {coords} is off the cube's axes ({exc} not in {dict(axes)})") from None
        record = read_metrics(path)
        check_record_matches(record, cell, path)
        _place_record(table, at, record, path)
    if len(table.dataset_ids) > 1:
        raise CubeError(
            "cells were computed on different datasets (stale cells?): "
            + "; ".join(f"{i} e.g. {p}" for i, p in table.dataset_ids.items())
        )
    return table


def _place_record(table: CellTable, at: tuple[int, ...], record: dict, path: Path) -> None:
    """Put one record's numbers, dataset id and kept parts at index ``at`` of ``table``."""
    metrics, timing = record["metrics"], record.get("timing") or {}
    try:
        for name in SCALAR_METRICS:
            table.scalars[name][at] = _number(metrics.get(name))
        for name in TIMING:
            table.scalars[name][at] = _number(timing.get(name))
        _place_snr_bins(table, at, metrics.get("snr_bins") or {}, path)
    except CubeError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise CubeError(f"{path}: malformed metrics ({exc})") from exc
    provenance = record.get("provenance") or {}
    data_id = provenance.get("dataset_id") or (record.get("data") or {}).get("dataset_id")
    if data_id is not None:
        table.dataset_ids.setdefault(str(data_id), str(path))
    table.records[at] = json.dumps({k: record.get(k) for k in RECORD_KEYS}, sort_keys=True)


def _place_snr_bins(table: CellTable, at: tuple[int, ...], snr_bins: dict, path: Path) -> None:
    """The per-S/N-bin lists of one record (none: the cell stays NaN); its bin edges must be SNR_EDGES."""
    if not snr_bins:
        return
    # strict JSON writes the last edge (inf) as null
    edges = [np.inf if e is None else float(e) for e in snr_bins.get("edges", ())]
    if len(edges) != len(SNR_EDGES) or not np.allclose(edges, SNR_EDGES):
        raise CubeError(f"{path}: S/N bin edges {snr_bins.get('edges')} differ from {list(SNR_EDGES)}")
    for name in BIN_METRICS:
        table.bins[name][at] = [_number(v) for v in snr_bins[name]]
    for name in CALIBRATION_BIN_METRICS:
        if name in snr_bins:
            table.bins[name][at] = [_number(v) for v in snr_bins[name]]


def _number(value) -> float:
    return float("nan") if value is None else float(value)
