"""The information ceiling of a cell: Cramer-Rao bounds on log g of its stars and the cell's ceilings
(:func:`cell_ceiling`), the same on a noise x fixed-magnitude grid (:func:`fisher_curves`) and the
magnitude that gives a target S/N (:func:`magnitude_for_snr`).

Per star (the cell's TRUE pixel errors at its noise level and magnitude): the bounds of
:mod:`specscale.ceiling.bounds` with J from :mod:`specscale.ceiling.jacobians`. "3d" means
[alpha/M] known (the study's Teff, log g, [M/H] Fisher grid), "4d" all four unknown. Per cell: the
population ceiling 1 - mean(min(CRLB, Var_prior)) / Var_prior (the headline: it is what an R^2
over the test stars can at best be for unbiased estimators) and the study's definition, the median
over stars of r2_max, beside it; both also on the top-20% S/N stars and in the S/N bins of
:mod:`specscale.models.metrics`. J does not depend on noise level or magnitude, only sigma does:
:func:`fisher_curves` computes J once per star and reuses it over a whole magnitude x noise grid.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from specscale.ceiling.bounds import (
    conditional_crlb,
    fisher_matrix,
    marginal_crlb,
    prior_variance,
    r2_max,
    scale_to_noise,
    sigma_unit,
    snr_of,
    summarise,
)
from specscale.ceiling.configs import FisherConfig
from specscale.ceiling.jacobians import jacobian_for
from specscale.core.config import ConfigError, to_jsonable
from specscale.core.hardware import resolve_device
from specscale.core.provenance import provenance
from specscale.core.vocab import ALPHA, LABELS, LOGG, MagRange, snr_bin_coords
from specscale.data.sources import DataError, Source
from specscale.sim.windows import window_label, window_mask, window_ranges

DEFINITIONS = {
    "crlb_marginal": "per-star Cramer-Rao bound on log g (dex^2), Teff, [M/H], [alpha/M] unknown "
    "(Schur complement of I)",
    "crlb_marginal_3d": "as crlb_marginal with [alpha/M] known (the study's 3-parameter Fisher grid)",
    "crlb_conditional": "per-star bound on log g (dex^2) with the other three parameters known: 1 / I_gg",
    "sigma_min": "sqrt(crlb_marginal), dex",
    "r2_max": "per star 1 - min(crlb_marginal, var_prior) / var_prior (r2_max_3d: with crlb_marginal_3d)",
    "ceiling_pop": "1 - mean(min(crlb_marginal, var_prior)) / var_prior over the stars: "
    "the population ceiling (headline)",
    "ceiling_median": "median over the stars of r2_max (the study's definition)",
    "_top20": "the same on the 20% of stars with the highest per-spectrum S/N (specscale.models.metrics.top_snr_mask)",
    "_snr_bin": "the same per S/N bin, edges specscale.models.metrics.SNR_EDGES (NaN for an empty bin)",
    "_3d": "with [alpha/M] known (as the study)",
    "sigma_min_pN": "N-th percentile of sigma_min over the stars, dex",
    "info_ratio_marginal_conditional": "median over stars of crlb_conditional / crlb_marginal: the fraction of the "
    "log g information left once the nuisance parameters are marginalised (study: ~0.69, 3D)",
    "var_prior": "variance of log g under the uniform prior, dex^2 ((hi - lo)^2 / 12)",
    "logg_var_empirical": "variance of the stars' true log g, dex^2",
    "snr": "per-spectrum S/N ||noiseless flux|| / ||sigma|| at this noise level (as Observed.snr)",
}


def check_request(source: Source, noises, n_stars, split: str) -> int:
    """The number of stars to use: ``n_stars`` (default all of ``split``), checked with the noise levels."""
    for nl in noises:
        if not (np.isfinite(nl) and nl >= 0):
            raise ConfigError(f"noise level must be a finite number >= 0, got {nl}")
    n = source.n(split)
    if n_stars is None:
        return n
    if not isinstance(n_stars, (int, np.integer)) or not 1 <= n_stars <= n:
        raise ConfigError(f"--stars must be between 1 and the {n} {split} stars of {source.path}, got {n_stars}")
    return int(n_stars)


def window_pixels(source: Source, window, where: str = "--window") -> np.ndarray | None:
    """Boolean pixel mask of a window spec (:func:`specscale.sim.windows.window_mask`) on the
    source's wavelength grid, or None for the full spectrum (None or "full")."""
    if window_ranges(window, where) is None:
        return None
    return window_mask(source.wave, window, where)


def star_bounds(
    source: Source, mags, n_stars: int, config: FisherConfig, split: str = "test", mask: np.ndarray | None = None
):
    """Per-star bounds at noise level 1 for every magnitude cell in ``mags``, J computed once per
    star: dict of (n_mag, n) arrays crlb4, crlb3, crlb_cond, snr, plus labels (n, 4) and the
    Jacobian method. A bound at noise level nl is nl^2 times these, the S/N 1/nl times. ``mask``
    (n_pix,) bool restricts I = J^T W J to those pixels (a window); the S/N stays that of the full
    spectrum (``Observed.snr``, which the S/N bins of the models' metrics use)."""
    cells = [MagRange.parse(m) for m in mags]
    for c in cells:
        source.check_cell(c)
    jac_of = jacobian_for(source, config, cells[0])
    out = {k: np.empty((len(cells), n_stars)) for k in ("crlb4", "crlb3", "crlb_cond", "snr")}
    labels = np.empty((n_stars, 4), np.float64)
    for start in range(0, n_stars, config.batch):
        rows = np.arange(start, min(n_stars, start + config.batch))
        batches = [source.noiseless(split, rows, c) for c in cells]
        jac = jac_of(split, rows, batches[0].flux)
        labels[rows] = batches[0].labels
        for m, b in enumerate(batches):
            sig = sigma_unit(b)
            info = fisher_matrix(jac, sig) if mask is None else fisher_matrix(jac[:, mask], sig[:, mask])
            out["crlb4"][m, rows] = marginal_crlb(info)
            out["crlb3"][m, rows] = marginal_crlb(info, known=(ALPHA,))
            out["crlb_cond"][m, rows] = conditional_crlb(info)
            out["snr"][m, rows] = snr_of(b.flux, sig)
    out["labels"] = labels
    out["method"] = jac_of.method
    return out


def attributes(source: Source, config: FisherConfig, method: str, **extra) -> dict:
    """A Fisher file's attributes: provenance, definitions, the Jacobian ``method`` and ``extra``."""
    obs = getattr(source, "observation", None)
    prov = provenance(
        config={"fisher": to_jsonable(config)},
        dataset_id=source.dataset_id,
        device=resolve_device(config.device, "fisher.device"),
    )
    prov.update(
        {"source": source.describe(), "observation": to_jsonable(obs) if obs is not None else None, "jacobian": method}
    )
    return {
        "provenance": json.dumps(prov, sort_keys=True, default=str),
        "definitions": json.dumps(DEFINITIONS),
        "jacobian_method": method,
        "dataset_id": source.dataset_id,
        **extra,
    }


def cell_ceiling(
    source: Source,
    noise: float,
    mag,
    n_stars: int | None = None,
    config: FisherConfig | None = None,
    split: str = "test",
    window=None,
) -> xr.Dataset:
    """The ceiling of one cell (noise level, magnitude cell) on the first ``n_stars`` stars of
    ``split`` (default all), with the same stars and observing conditions a model cell uses.
    ``window``: a window spec (:mod:`specscale.sim.windows`; None or "full": every pixel) whose
    pixels alone carry the information, so a window model has its own ceiling on the same stars."""
    config = config or FisherConfig()
    cell = MagRange.parse(mag)
    source.check_cell(cell)
    n = check_request(source, [noise], n_stars, split)
    mask = window_pixels(source, window)
    b = star_bounds(source, [cell], n, config, split, mask)
    var_prior = prior_variance(source)
    c4, c3, cc = (scale_to_noise(b[k][0], noise) for k in ("crlb4", "crlb3", "crlb_cond"))
    with np.errstate(divide="ignore"):
        snr = b["snr"][0] / noise
    logg = b["labels"][:, LOGG]
    star = {
        "crlb_marginal": c4,
        "crlb_marginal_3d": c3,
        "crlb_conditional": cc,
        "sigma_min": np.sqrt(c4),
        "r2_max": r2_max(c4, var_prior),
        "r2_max_3d": r2_max(c3, var_prior),
        "snr": snr,
        **{name: b["labels"][:, i] for i, name in enumerate(LABELS)},
    }
    data = {k: ("star", v) for k, v in star.items()}
    unit = tuple(b[k][0] for k in ("crlb4", "crlb3", "crlb_cond"))
    for k, v in summarise(c4, c3, cc, snr, var_prior, unit).items():
        data[k] = ("snr_bin", v) if np.ndim(v) else ((), v)
    data["var_prior"] = ((), var_prior)
    data["logg_var_empirical"] = ((), float(np.var(logg)))
    coords = {"star": np.arange(n), **snr_bin_coords()}
    attrs = attributes(source, config, b["method"], noise=float(noise), mag=cell.label(), n_stars=n, split=split)
    attrs.update(window=window_label(window), n_pixels=int(source.wave.size if mask is None else mask.sum()))
    return xr.Dataset(data, coords=coords, attrs=attrs)


def fisher_curves(
    source: Source,
    noises,
    mags,
    n_stars: int | None = None,
    config: FisherConfig | None = None,
    split: str = "test",
    window=None,
) -> xr.Dataset:
    """Ceilings on a grid of noise levels x FIXED magnitudes (AB), dims (noise, mag[, snr_bin]).
    J is computed once per star; only sigma changes across the grid. ``window`` as in
    :func:`cell_ceiling`."""
    config = config or FisherConfig()
    mags = [float(m) for m in mags]
    noises = [float(x) for x in noises]
    if not mags or not noises:
        raise ConfigError("fisher-curves needs at least one noise level and one magnitude")
    n = check_request(source, noises, n_stars, split)
    mask = window_pixels(source, window)
    b = star_bounds(source, mags, n, config, split, mask)
    var_prior = prior_variance(source)
    rows = {}
    for i, nl in enumerate(noises):
        for j in range(len(mags)):
            with np.errstate(divide="ignore"):
                snr = b["snr"][j] / nl
            unit = tuple(b[k][j] for k in ("crlb4", "crlb3", "crlb_cond"))
            s = summarise(*(scale_to_noise(u, nl) for u in unit), snr, var_prior, unit)
            for k, v in s.items():
                rows.setdefault(k, np.empty((len(noises), len(mags)) + np.shape(v)))[i, j] = v
    data = {k: (("noise", "mag", "snr_bin") if v.ndim == 3 else ("noise", "mag"), v) for k, v in rows.items()}
    data["var_prior"] = ((), var_prior)
    data["logg_var_empirical"] = ((), float(np.var(b["labels"][:, LOGG])))
    coords = {"noise": noises, "mag": mags, **snr_bin_coords()}
    attrs = attributes(source, config, b["method"], n_stars=n, split=split, window=window_label(window))
    return xr.Dataset(data, coords=coords, attrs=attrs)


def magnitude_for_snr(
    source: Source,
    target: float,
    noise: float = 1.0,
    n_stars: int | None = None,
    split: str = "test",
    tol: float = 1e-3,
) -> float:
    """The fixed HSC-i magnitude (AB) at which the median per-spectrum S/N of the first
    ``n_stars`` stars equals ``target`` (Brent's method on log S/N, which falls smoothly and
    monotonically with magnitude), to ``tol`` mag."""
    from scipy.optimize import brentq

    limits = getattr(source, "mag_limits", None)
    if limits is None:
        raise DataError(f"{source.path}: its magnitudes are fixed by the file; a target S/N cannot be matched")
    n = check_request(source, [noise], n_stars, split)
    if noise == 0 or not target > 0:
        raise ConfigError(
            f"matching a median S/N needs noise > 0 and a positive target (got noise {noise}, S/N {target})"
        )
    rows = np.arange(n)

    def median_snr(mag):
        b = source.noiseless(split, rows, MagRange(mag, mag))
        return float(np.median(snr_of(b.flux, sigma_unit(b)))) / noise

    lo, hi = map(float, limits)
    f_lo, f_hi = (np.log(median_snr(m) / target) for m in (lo, hi))
    if not f_hi <= 0 <= f_lo:
        raise ConfigError(f"target S/N {target} is outside what magnitudes {lo:g}-{hi:g} give ({source.path})")
    return round(float(brentq(lambda m: np.log(median_snr(m) / target), lo, hi, xtol=tol)), 4)
