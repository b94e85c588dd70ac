"""Metrics of a log g estimate on the test stars: one function used by every model (and by the
ceiling for its S/N bins), so numbers in the cube are comparable.

R^2 = 1 - SSE/SST over the test stars (SST about the test stars' own mean log g). MAE, RMSE and
bias (mean of predicted - true) are in dex. "top20" is the 20% of test stars with the highest
per-spectrum S/N (the study's low-noise regime). S/N bins use the fixed edges ``SNR_EDGES`` so
cells can be compared bin by bin.

A model that predicts its own uncertainty (a 1-sigma ``sigma_pred`` per star, dex: the ViT with a
Gaussian NLL loss) is also scored for calibration: ``cover68`` / ``cover95`` are the fractions of
test stars whose true log g lies inside the central 68% / 95% Gaussian interval
y_pred +- z sigma_pred (z = 0.994 / 1.960), ``z2_mean`` is the mean of z^2 = ((y_pred - y_true) /
sigma_pred)^2 (1 when the sigmas are right, > 1 over-confident, < 1 under-confident), and
``sigma_median`` the median predicted sigma (dex); the same per S/N bin.

``bias_cond`` (dex), the conditional bias: the test stars are binned by their true Teff and [M/H]
(4 x 4 fixed bins over the lowT prior, :data:`COND_TEFF_EDGES`, :data:`COND_MH_EDGES`; stars
outside fall in the edge bins), the mean log g residual is taken per bin with at least
:data:`COND_MIN_STARS` stars, and ``bias_cond`` is the star-weighted RMS of those means,
sqrt(sum_b n_b mean_b^2 / sum_b n_b): how much of the error is a systematic shift that depends on
the other labels (confusion of log g with Teff and [M/H]), the study's DG5 criterion.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

from specscale.core.vocab import LABELS, PRIORS, SNR_EDGES

TOP_FRACTION = 0.2
COVERAGE_LEVELS = {"cover68": 0.68, "cover95": 0.95}  # key -> central probability of the interval
CALIBRATION_KEYS = (*COVERAGE_LEVELS, "z2_mean", "sigma_median")
COND_TEFF_EDGES = np.linspace(*PRIORS["lowT"]["teff"], 5)  # K
COND_MH_EDGES = np.linspace(*PRIORS["lowT"]["mh"], 5)  # dex
COND_MIN_STARS = 5  # a bin's mean residual counts from this many stars on


def r2_score(y_true, y_pred) -> float:
    """1 - SSE/SST; NaN for fewer than 2 stars or constant truth."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if y_true.size < 2:
        return float("nan")
    sst = np.sum((y_true - y_true.mean()) ** 2)
    return float(1.0 - np.sum((y_pred - y_true) ** 2) / sst) if sst > 0 else float("nan")


def population_r2(crlb, var_prior: float, axis=None):
    """The R^2 bound of a population from per-star bounds on log g (dex^2): 1 - mean(min(CRLB,
    Var_prior)) / Var_prior over ``axis``, each bound capped at the prior variance (an estimator
    never needs to do worse than the prior mean)."""
    return 1.0 - np.mean(np.minimum(crlb, var_prior), axis=axis) / var_prior


def point_metrics(y_true, y_pred) -> dict[str, float]:
    """R^2, MAE, RMSE (dex), bias (dex, predicted - true), n."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    d = y_pred - y_true
    return {
        "r2": r2_score(y_true, y_pred),
        "mae": float(np.mean(np.abs(d))) if d.size else float("nan"),
        "rmse": float(np.sqrt(np.mean(d**2))) if d.size else float("nan"),
        "bias": float(np.mean(d)) if d.size else float("nan"),
        "n": int(d.size),
    }


def top_snr_mask(snr, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Boolean mask of the ``fraction`` of stars with the highest S/N (ties broken by order)."""
    snr = np.asarray(snr)
    k = max(1, int(round(fraction * snr.size)))
    mask = np.zeros(snr.size, bool)
    mask[np.argsort(-snr, kind="stable")[:k]] = True
    return mask


def label_bins(labels) -> np.ndarray:
    """The Teff x [M/H] bin (0 .. 15) of each star from its (n, 4) labels (teff K, logg, mh, am dex)."""
    labels = np.asarray(labels, np.float64)
    t = np.clip(np.digitize(labels[:, LABELS.index("teff")], COND_TEFF_EDGES[1:-1]), 0, 3)
    m = np.clip(np.digitize(labels[:, LABELS.index("mh")], COND_MH_EDGES[1:-1]), 0, 3)
    return t * 4 + m


def conditional_bias_rows(weights, err, groups) -> np.ndarray:
    """The conditional bias (module docstring) of every column of ``err`` (n, c) residuals (dex)
    for every row of star ``weights`` (r, n) (ones, or a bootstrap's counts), stars binned by
    ``groups`` (n,) (:func:`label_bins`): (r, c); NaN where no bin has enough stars."""
    weights, err = np.asarray(weights, np.float64), np.asarray(err, np.float64).reshape(len(groups), -1)
    onehot = np.zeros((len(groups), 16))
    onehot[np.arange(len(groups)), groups] = 1.0
    counts = weights @ onehot  # (r, 16)
    use = counts >= COND_MIN_STARS
    out = np.empty((weights.shape[0], err.shape[1]))
    for c in range(err.shape[1]):
        sums = weights @ (onehot * err[:, c : c + 1])  # (r, 16)
        with np.errstate(divide="ignore", invalid="ignore"):
            ms = np.where(use, sums * sums / np.where(use, counts, 1.0), 0.0).sum(axis=1)
            out[:, c] = np.sqrt(ms / np.where(use, counts, 0.0).sum(axis=1))
    return out


def conditional_bias(y_true, y_pred, labels) -> float:
    """``bias_cond`` (dex) of one set of stars with their (n, 4) true ``labels``."""
    err = np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)
    return float(conditional_bias_rows(np.ones((1, err.size)), err[:, None], label_bins(labels))[0, 0])


def evaluate(y_true, y_pred, snr, sigma_pred=None, labels=None) -> dict:
    """All accuracy metrics of one cell: overall, top-20% S/N, and per S/N bin; with
    ``sigma_pred`` (predicted 1-sigma, dex) also the calibration metrics (:func:`calibration`),
    overall and as extra lists in ``snr_bins``; with the stars' (n, 4) true ``labels`` also the
    conditional bias ``bias_cond`` (dex)."""
    y_true, y_pred, snr = (np.asarray(a, np.float64) for a in (y_true, y_pred, snr))
    if not (y_true.shape == y_pred.shape == snr.shape):
        raise ValueError("y_true, y_pred and snr must have the same shape")
    if not np.isfinite(y_pred).all():
        raise ValueError(f"{int((~np.isfinite(y_pred)).sum())} non-finite predictions")
    out = point_metrics(y_true, y_pred)
    top = top_snr_mask(snr)
    out.update({f"{k}_top20": v for k, v in point_metrics(y_true[top], y_pred[top]).items()})
    out["snr_top20_min"] = float(snr[top].min())
    bins = np.digitize(snr, SNR_EDGES[1:-1])
    out["snr_bins"] = {
        "edges": [float(e) for e in SNR_EDGES],
        "r2": [r2_score(y_true[bins == i], y_pred[bins == i]) for i in range(len(SNR_EDGES) - 1)],
        "rmse": [point_metrics(y_true[bins == i], y_pred[bins == i])["rmse"] for i in range(len(SNR_EDGES) - 1)],
        "n": [int((bins == i).sum()) for i in range(len(SNR_EDGES) - 1)],
    }
    out["snr_median"] = float(np.median(snr))
    if labels is not None:
        out["bias_cond"] = conditional_bias(y_true, y_pred, labels)
    if sigma_pred is not None:
        cal = calibration(y_true, y_pred, sigma_pred, snr)
        out["snr_bins"].update(cal.pop("snr_bins"))
        out.update(cal)
    return out


def calibration_point(y_true, y_pred, sigma_pred) -> dict[str, float]:
    """Coverage of the central 68% and 95% intervals, mean z^2 and median sigma (dex) of one set
    of stars; NaN for none."""
    y_true, y_pred, sigma = (np.asarray(a, np.float64) for a in (y_true, y_pred, sigma_pred))
    if y_true.size == 0:
        return {k: float("nan") for k in CALIBRATION_KEYS}
    z = (y_pred - y_true) / sigma
    out = {k: float(np.mean(np.abs(z) <= ndtri(0.5 + p / 2))) for k, p in COVERAGE_LEVELS.items()}
    out["z2_mean"] = float(np.mean(z**2))
    out["sigma_median"] = float(np.median(sigma))
    return out


def calibration(y_true, y_pred, sigma_pred, snr) -> dict:
    """Calibration of predicted uncertainties (module docstring): ``cover68``, ``cover95``,
    ``z2_mean``, ``sigma_median`` (dex) over the stars, and ``snr_bins`` with one list per key
    over the fixed S/N bins (NaN where a bin is empty). ``sigma_pred`` is a 1-sigma in the units
    of log g (dex), finite and > 0."""
    y_true, y_pred, sigma, snr = (np.asarray(a, np.float64) for a in (y_true, y_pred, sigma_pred, snr))
    if not (y_true.shape == y_pred.shape == sigma.shape == snr.shape):
        raise ValueError("y_true, y_pred, sigma_pred and snr must have the same shape")
    if not (np.isfinite(sigma).all() and (sigma > 0).all()):
        raise ValueError(f"{int((~(np.isfinite(sigma) & (sigma > 0))).sum())} predicted sigmas are not finite and > 0")
    out = calibration_point(y_true, y_pred, sigma)
    bins = np.digitize(snr, SNR_EDGES[1:-1])
    per_bin = [
        calibration_point(y_true[bins == i], y_pred[bins == i], sigma[bins == i]) for i in range(len(SNR_EDGES) - 1)
    ]
    out["snr_bins"] = {k: [b[k] for b in per_bin] for k in CALIBRATION_KEYS}
    return out
