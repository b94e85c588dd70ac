"""Metrics of a log g estimate on the test stars: one function used by every model (and by the
ceiling for its S/N bins), so numbers in the cube are comparable.

R^2 = 1 - SSE/SST over the test stars (SST about the test stars' own mean log g). MAE, RMSE and
bias (mean of predicted - true) are in dex. "top20" is the 20% of test stars with the highest
per-spectrum S/N (the study's low-noise regime). S/N bins use the fixed edges ``SNR_EDGES`` so
cells can be compared bin by bin.
"""

from __future__ import annotations

import numpy as np

SNR_EDGES = (0.0, 3.0, 5.0, 8.0, 12.0, 20.0, 40.0, np.inf)
TOP_FRACTION = 0.2


def r2_score(y_true, y_pred) -> float:
    """1 - SSE/SST; NaN for fewer than 2 stars or constant truth."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if y_true.size < 2:
        return float("nan")
    sst = np.sum((y_true - y_true.mean()) ** 2)
    return float(1.0 - np.sum((y_pred - y_true) ** 2) / sst) if sst > 0 else float("nan")


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


def evaluate(y_true, y_pred, snr) -> dict:
    """All accuracy metrics of one cell: overall, top-20% S/N, and per S/N bin."""
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
    return out
