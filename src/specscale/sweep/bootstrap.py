"""The paired bootstrap of a hypothesis: two models' predictions of the same test stars under the
same noise, resampled together over stars (and seeds), give the difference of a metric and its
confidence interval. Replicates run in blocks, so memory stays bounded in the number of draws."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHANGES = ("absolute", "relative")  # a difference: variant - base, or (variant - base) / |base|
BLOCK = 250  # bootstrap replicates per block: bounds the (block, stars) weight matrix


@dataclass(frozen=True)
class PairedDifference:
    """Result of :func:`paired_bootstrap`: the metrics of both models (seed means), their
    difference and its confidence interval (difference units), and what they were computed on."""

    base: float
    variant: float
    diff: float
    ci_lo: float
    ci_hi: float
    n_stars: int
    n_seeds_base: int
    n_seeds_variant: int


def _metric_rows(weights: np.ndarray, y: np.ndarray, q: dict[str, np.ndarray], metric: str) -> np.ndarray:
    """``metric`` of every column of the errors for every row of star weights (counts of a
    resample, summing to the number of stars): (replicates, stars) -> (replicates, columns)."""
    n = weights.sum(axis=1, keepdims=True)
    if metric == "bias_cond":
        from specscale.models.metrics import conditional_bias_rows  # here: it imports scipy

        return conditional_bias_rows(weights, q["err"], q["groups"])
    if metric == "mae":
        return weights @ q["abs"] / n
    if metric == "bias":
        return weights @ q["err"] / n
    sse = weights @ q["sq"]
    if metric == "rmse":
        return np.sqrt(sse / n)
    sy, syy = weights @ y, weights @ (y * y)
    sst = (syy - sy * sy / n[:, 0])[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 0, 1.0 - sse / sst, np.nan)


def _change(variant: np.ndarray, base: np.ndarray, change: str) -> np.ndarray:
    if change == "absolute":
        return variant - base
    with np.errstate(divide="ignore", invalid="ignore"):
        return (variant - base) / np.abs(base)


def paired_bootstrap(
    y_true,
    pred_base,
    pred_variant,
    *,
    metric: str = "mae",
    change: str = "absolute",
    confidence: float = 0.95,
    n_boot: int = 1000,
    seed=0,
    paired_seeds: bool | None = None,
    groups=None,
) -> PairedDifference:
    """Difference of ``metric`` (variant - base, or relative to |base|) with a percentile
    confidence interval from a paired two-stage bootstrap.

    ``y_true`` (n,) true log g (dex); ``pred_base`` (n,) or (n, S_b) and ``pred_variant`` (n,) or
    (n, S_v) predicted log g (dex) of the same n test stars, one column per seed. Each replicate
    draws n stars with replacement (the same stars for every column: paired) and, per model, its
    seeds with replacement; the model's metric is the mean over its drawn seeds. ``paired_seeds``
    (default: S_b == S_v > 1) draws the same seed indices for both models (columns j are the same
    seed). ``metric`` is one of r2, mae, rmse, bias (restrict the arrays to the top-20% S/N stars
    for the _top20 metrics), or bias_cond with ``groups`` (n,), the stars' Teff x [M/H] bins
    (``specscale.models.metrics.label_bins``); ``seed`` seeds numpy's generator (an int or a
    sequence of ints).
    Vectorised: (block, n) weight matrices times the (n, S_b + S_v) error columns."""
    y = np.asarray(y_true, np.float64)
    pb, pv = (np.asarray(p, np.float64).reshape(len(y), -1) for p in (pred_base, pred_variant))
    if metric not in ("r2", "mae", "rmse", "bias", "bias_cond"):
        raise ValueError(
            f"metric {metric!r}: one of r2, mae, rmse, bias, bias_cond (top-20% metrics: restrict the stars)"
        )
    if metric == "bias_cond" and groups is None:
        raise ValueError("metric 'bias_cond' needs the stars' Teff x [M/H] bins (groups)")
    if change not in CHANGES:
        raise ValueError(f"change {change!r}: one of {CHANGES}")
    if y.ndim != 1 or y.size < 2:
        raise ValueError(f"y_true must be one value per star (at least 2), got shape {y.shape}")
    if not (np.isfinite(y).all() and np.isfinite(pb).all() and np.isfinite(pv).all()):
        raise ValueError("non-finite true or predicted log g")
    n, sb, sv = y.size, pb.shape[1], pv.shape[1]
    if paired_seeds is None:
        paired_seeds = sb == sv > 1
    if paired_seeds and sb != sv:
        raise ValueError(f"paired seeds need as many base as variant seeds, got {sb} and {sv}")
    err = np.hstack([pb, pv]) - y[:, None]
    q = {"err": err, "abs": np.abs(err), "sq": err * err, "groups": groups}

    point = _metric_rows(np.ones((1, n)), y, q, metric)[0]
    base, variant = float(point[:sb].mean()), float(point[sb:].mean())
    diff = float(_change(np.asarray(variant), np.asarray(base), change))

    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for start in range(0, n_boot, BLOCK):
        b = min(BLOCK, n_boot - start)
        draw = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
        weights = np.bincount(draw.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        stats = _metric_rows(weights, y, q, metric)
        rb = rng.integers(0, sb, size=(b, sb))
        rv = rb if paired_seeds else rng.integers(0, sv, size=(b, sv))
        mb = np.take_along_axis(stats[:, :sb], rb, axis=1).mean(axis=1)
        mv = np.take_along_axis(stats[:, sb:], rv, axis=1).mean(axis=1)
        diffs[start : start + b] = _change(mv, mb, change)
    alpha = 1.0 - confidence
    finite = diffs[np.isfinite(diffs)]
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2]) if finite.size else (np.nan, np.nan)
    return PairedDifference(base, variant, diff, float(lo), float(hi), n, sb, sv)
