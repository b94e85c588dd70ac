"""The files of one sweep cell besides its inputs: the Fisher ceiling it is compared with (read),
its predictions.h5 (written atomically) and the metrics.json of a cell that already finished."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from specscale.core.config import ConfigError, to_jsonable
from specscale.core.files import atomic_hdf5
from specscale.core.vocab import LOGG, MagRange


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
