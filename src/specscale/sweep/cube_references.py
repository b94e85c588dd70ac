"""The references a model is measured against, folded into the cube beside the cells' metrics:
the Fisher ceilings (``specscale fisher``: ceiling_*(noise, mag[, snr_bin])), the Bayes reference
(``specscale bayes``: bayes_*), each window variant's own references (window_ceiling_*,
window_bayes_* on a ``window`` dim) and the ceiling curves (``specscale fisher-curves``:
curve_*(curve_noise, curve_mag)).

Each file is checked before it is folded: computed on the cells' dataset, for the (noise, mag)
cell it is folded into and with the window it is filed under; per-star arrays stay in the files."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from specscale.core.vocab import N_SNR_BINS, MagRange
from specscale.sweep.cube_records import CubeError, load_netcdf

# dims a reference variable may have to be folded into the cube; per-star arrays stay in their files
REFERENCE_DIMS = {"snr_bin"}

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


def _axis_index(ds: xr.Dataset) -> tuple[dict, dict]:
    """(noise value -> index, mag label -> index) of the cube's axes."""
    return (
        {v: i for i, v in enumerate(ds.noise.values.tolist())},
        {v: i for i, v in enumerate(ds.mag.values.tolist())},
    )


def _load_reference(
    path: Path, what: str, cell: tuple[float, str], axes: tuple[dict, dict], dataset_ids: set[str], window: str
):
    """A reference file (ceiling, Bayes) of the (noise, mag) ``cell``, checked: the cell is on the
    cube's ``axes``, the file was computed on the cells' dataset, for this very cell and with this
    ``window`` (its ``window`` attribute; "full", also when absent: every pixel)."""
    noise, mag = cell
    if noise not in axes[0] or mag not in axes[1]:
        raise CubeError(f"{path}: {what} cell (noise {noise}, mag {mag}) is off the cube's axes")
    ref = load_netcdf(path, what)
    if dataset_ids and "dataset_id" in ref.attrs and str(ref.attrs["dataset_id"]) not in dataset_ids:
        raise CubeError(f"{path}: {what} of dataset {ref.attrs['dataset_id']}, the cells' is {sorted(dataset_ids)}")
    _check_reference_cell(ref.attrs, path, noise, mag)
    label = ref.attrs.get("window", "full")
    if label != window:
        raise CubeError(f"{path}: {what} of window {label}, folded as window {window} (stale file?)")
    return ref


def _check_reference_cell(attrs: Mapping, path: Path, noise: float, mag: str) -> None:
    """The (noise, mag) cell a reference file says it is (attributes noise, mag, as ``specscale
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


def _ceiling_name(name: str) -> str:
    return name if name.startswith("ceiling") else f"ceiling_{name}"


def fold_ceilings(
    ds: xr.Dataset, ceilings: Mapping[tuple[float, str], str | Path], dataset_ids: set[str], window: str = "full"
):
    """Add the numeric summary variables (scalars, per S/N bin) of the per-cell ceiling files as
    ceiling_*(noise, mag[, snr_bin]); per-star arrays stay in the files. A ceiling computed on
    another dataset than the cells', or for another (noise, mag) cell than the one it is folded
    into (its attributes noise and mag), is an error. Returns (ds, the files' attributes per cell)."""
    noise_at, mag_at = _axis_index(ds)
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
            if not np.issubdtype(var.dtype, np.number) or not set(var.dims) <= REFERENCE_DIMS:
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


def fold_bayes(
    ds: xr.Dataset, files: Mapping[tuple[float, str], str | Path], dataset_ids: set[str], window: str = "full"
):
    """Add the Bayes reference of each (noise, mag) cell (``specscale bayes`` files) as
    bayes_*(noise, mag[, snr_bin]) (BAYES_VARIABLES) and bayes_n_stars; the same dataset-id and cell
    checks as :func:`fold_ceilings`. Returns the dataset and the files' attributes per cell."""
    noise_at, mag_at = _axis_index(ds)
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


def fold_windows(ds: xr.Dataset, refs: WindowReferences, dataset_ids: set[str]):
    """Add each window's own references, folded per window like the full-spectrum ones
    (:func:`fold_ceilings`, :func:`fold_bayes`, the same checks) and stacked on a ``window`` dim:
    window_ceiling_*(window, noise, mag[, snr_bin]), window_bayes_*; NaN where a window has no
    reference. A file computed with another window than its id's is an error (stale file). Adds
    the coordinate model_window(model) and window_label(window). Returns (ds, attrs per file)."""
    ids = list(refs.labels)
    base = xr.Dataset(coords={k: ds.coords[k] for k in ("noise", "mag", "snr_bin", "snr_bin_lo", "snr_bin_hi")})
    folded, attrs = [], {}
    for wid in ids:
        part = base.copy()
        for kind, files, fold in (
            ("ceiling", refs.ceilings, fold_ceilings),
            ("Bayes reference", refs.bayes, fold_bayes),
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


def fold_curves(ds: xr.Dataset, path: str | Path, dataset_ids: set[str] = frozenset()):
    """Add the fisher-curves variables as curve_*(curve_noise, curve_mag, ...). Curves computed on
    another dataset than the cells' are an error. Returns (ds, the file's attributes)."""
    path = Path(path)
    c = load_netcdf(path, "ceiling curves")
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
    c = c.drop_vars([name for name, coord in c.coords.items() if set(coord.dims) & REFERENCE_DIMS])
    for name, var in c.data_vars.items():
        if np.issubdtype(var.dtype, np.number) and set(var.dims) <= REFERENCE_DIMS | {"curve_noise", "curve_mag"}:
            if "snr_bin" in var.dims and var.sizes["snr_bin"] != N_SNR_BINS:
                raise CubeError(f"{path}: {name} has {var.sizes['snr_bin']} S/N bins, the cube {N_SNR_BINS}")
            ds[f"curve_{name}"] = var
    ds.coords["curve_mag"].attrs["units"] = "HSC-i AB mag"
    return ds, dict(c.attrs)
