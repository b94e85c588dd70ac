"""What the report asks of a scaling cube (``specscale.sweep.cube``): the reference models, each
model's numbers at its largest training size (:func:`endpoints`), the headline numbers per
(noise, mag) cell (:func:`headline`) and what each window carries (:func:`window_rows`)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import xarray as xr

from specscale.sweep.cube import DEFAULT_REFERENCES
from specscale.sweep.cube_records import DIMS

# the per-(noise, mag) references a headline row carries as they are in the cube
CELL_REFERENCES = ("ceiling_pop", "ceiling_median", "bayes_r2", "bayes_r2_err", "bayes_rmse")


def json_attr(ds: xr.Dataset, name: str, default=None):
    """A JSON-encoded global attribute of the cube, decoded."""
    value = ds.attrs.get(name)
    return default if value is None else json.loads(value) if isinstance(value, str) else value


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
    rows = []
    for noise in ds.noise.values.tolist():
        for mag in ds.mag.values.tolist():
            at = dict(noise=noise, mag=mag)
            row = {"noise": noise, "mag": mag}
            row.update(_best_model(ends.sel(**at), refs, baseline, None if n_test is None else n_test.sel(**at)))
            row.update({name: value_at(ds, name, **at) for name in CELL_REFERENCES})
            row.update(_gaps(row, bayes="bayes_r2" in ds))
            best = row["best_model"]
            row["best_rmse"] = float(rmse.sel(model=best, **at)) if best and rmse is not None else math.nan
            row.update(_error_against_sigma(row, value_at(ds, "ceiling_var_prior", **at)))
            rows.append(row)
    return rows


def _best_model(ends: xr.Dataset, refs: list[str], baseline: str, n_test: xr.DataArray | None) -> dict:
    """The best learned model of one (noise, mag) cell from its ``ends`` (:func:`endpoints`), its
    R^2 error (over seeds, else from ``n_test``, the test stars per model), the baseline and the
    reference models' R^2 (the fields of :func:`headline`)."""
    nan = math.nan
    r2 = {m: float(ends["mean"].sel(model=m)) for m in ends.model.values.tolist()}
    size = {m: ends["n_train"].sel(model=m).item() for m in r2}
    learned = {m: v for m, v in r2.items() if m not in refs and np.isfinite(v)}
    best = max(learned, key=learned.get) if learned else None
    row = {
        "best_model": best,
        "best_r2": learned.get(best, nan),
        "best_n_train": size.get(best),
        "best_std": float(ends["std"].sel(model=best)) if best else nan,
        "best_r2_err": nan,
        "best_err_kind": None,
        "baseline_model": baseline,
        "baseline_r2": r2.get(baseline, nan),
    }
    seeds = int(ends["n_seeds"].sel(model=best)) if best else 0
    if seeds >= 2:
        row["best_r2_err"], row["best_err_kind"] = row["best_std"] / math.sqrt(seeds - 1), "seeds"
    elif seeds == 1 and n_test is not None:
        stars = float(n_test.sel(model=best))
        row["best_r2_err"] = math.sqrt(2.0 / stars) * (1.0 - row["best_r2"]) if stars > 0 else nan
        row["best_err_kind"] = "test sampling"
    row["difference"] = row["best_r2"] - row["baseline_r2"]
    for ref in refs:
        row[f"{ref}_r2"] = r2[ref]
    return row


def _gaps(row: dict, bayes: bool) -> dict:
    """The gaps of a headline row: to the unbiased bounds, and ``gap`` to the Bayes reference
    (``bayes``: the cube has one) or else to the population bound."""
    gaps = {"gap_pop": row["ceiling_pop"] - row["best_r2"], "gap_median": row["ceiling_median"] - row["best_r2"]}
    if bayes:
        gaps["gap"] = row["bayes_r2"] - row["best_r2"]
        gaps["gap_err"] = math.hypot(row["bayes_r2_err"], row["best_r2_err"])
        gaps["gap_reference"] = "bayes"
    else:
        gaps["gap"], gaps["gap_err"], gaps["gap_reference"] = gaps["gap_pop"], row["best_r2_err"], "ceiling_pop"
    return gaps


def _error_against_sigma(row: dict, var_prior: float) -> dict:
    """The best model's RMSE against the theoretical sigma: ``crlb_rmse`` (dex), the root of the
    mean capped CRLB, which the population bound gives back as (1 - ceiling_pop) Var_prior
    (``specscale.models.metrics.population_r2``), and the ratios to it and to the Bayes RMSE."""
    crlb_rmse = math.sqrt(max(1.0 - row["ceiling_pop"], 0.0) * var_prior)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "crlb_rmse": crlb_rmse,
            "rmse_over_crlb": float(np.float64(row["best_rmse"]) / crlb_rmse),
            "rmse_over_bayes": float(np.float64(row["best_rmse"]) / row["bayes_rmse"]),
        }


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
                    row[f"window_{name}"] = value_at(ds, f"window_{name}", window=w, **at)
                    row[name] = value_at(ds, name, **at)
                if all(math.isnan(row[f"window_{n}"]) for n in ("ceiling_pop", "bayes_r2")):
                    continue
                for key, group in (("window_best", models), ("full_best", full)):
                    r2 = {m: float(ends.sel(model=m, **at)) for m in group}
                    r2 = {m: v for m, v in r2.items() if not math.isnan(v)}
                    best = max(r2, key=r2.get) if r2 else None
                    row[f"{key}_model"], row[f"{key}_r2"] = best, (r2[best] if best else math.nan)
                rows.append(row)
    return rows


def value_at(ds: xr.Dataset, name: str, **at) -> float:
    """A scalar of the cube at ``at`` (NaN when the variable is absent)."""
    return float(ds[name].sel(**at)) if name in ds else math.nan
