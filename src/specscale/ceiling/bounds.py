"""Fisher matrices and Cramer-Rao bounds on log g, and the ceilings they set.

For a star with parameters theta = (Teff K, log g dex, [M/H] dex, [alpha/M] dex) observed with
independent Gaussian pixel noise of 1-sigma s_p, the Fisher information is

    I = J^T diag(1 / s^2) J,      J = d flux / d theta   (n_pix x 4, flux median-normalised).

The log g bound with the other parameters unknown is the Schur complement (marginal) entry of
I^-1: CRLB = 1 / (I_gg - I_gn I_nn^-1 I_ng); with them known it is 1 / I_gg (conditional).
Per star r2_max = 1 - min(CRLB, Var_prior) / Var_prior (the CRLB bounds UNBIASED estimators; a
regressor that shrinks to the prior mean does no worse than the prior variance, hence the cap);
over stars the population ceiling 1 - mean(min(CRLB, Var_prior)) / Var_prior
(:func:`population_ceiling`).
"""

from __future__ import annotations

import numpy as np

from specscale.core.vocab import LOGG, SNR_BIN_LABELS, snr_bin_index
from specscale.data.simulator import prior_box
from specscale.data.sources import Source
from specscale.models.metrics import top_snr_mask

PERCENTILES = (5, 25, 50, 75, 95)


def fisher_matrix(jac: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """I = J^T diag(1/sigma^2) J per star: jac (n, n_pix, P), sigma (n, n_pix) in flux units ->
    (n, P, P) in units of 1/(parameter units)^2. Pixels with infinite sigma carry no information."""
    jw = jac / np.asarray(sigma, dtype=np.float64)[..., None]
    return np.matmul(jw.transpose(0, 2, 1), jw)


def marginal_crlb(info: np.ndarray, index: int = LOGG, known: tuple[int, ...] = ()) -> np.ndarray:
    """Bound on parameter ``index`` with every parameter not in ``known`` unknown: the Schur
    complement 1 / (I_ii - I_in I_nn^+ I_ni), computed on the unit-diagonal rescaled matrix (Teff
    in K and log g in dex differ by 10^3) with a pseudo-inverse, so a nuisance parameter without
    information is simply dropped. inf where parameter ``index`` carries no information."""
    info = np.asarray(info, dtype=np.float64)
    p = info.shape[-1]
    nuis = [j for j in range(p) if j != index and j not in known]
    d = np.sqrt(np.clip(np.einsum("nii->ni", info), 0, None))
    d = np.where(d > 0, d, 1.0)
    s = info / (d[:, :, None] * d[:, None, :])
    schur = s[:, index, index].copy()
    if nuis:
        b = s[:, index, nuis]
        inv = np.linalg.pinv(s[:, nuis][:, :, nuis], rcond=1e-12, hermitian=True)
        schur -= np.einsum("ni,nij,nj->n", b, inv, b)
    with np.errstate(divide="ignore"):
        out = np.where(schur > 1e-12, 1.0 / np.maximum(schur, 1e-300), np.inf) / d[:, index] ** 2
    return out


def conditional_crlb(info: np.ndarray, index: int = LOGG) -> np.ndarray:
    """Bound on parameter ``index`` with all others known: 1 / I_ii."""
    with np.errstate(divide="ignore"):
        return 1.0 / np.asarray(info, dtype=np.float64)[:, index, index]


def r2_max(crlb: np.ndarray, var_prior: float) -> np.ndarray:
    """Per-star ceiling 1 - min(CRLB, Var_prior) / Var_prior."""
    return 1.0 - np.minimum(crlb, var_prior) / var_prior


def population_ceiling(crlb: np.ndarray, var_prior: float, axis=None):
    """The population ceiling 1 - mean(min(CRLB, Var_prior)) / Var_prior over stars (``axis``):
    what an R^2 over these stars can at best be for unbiased estimators."""
    return 1.0 - np.mean(np.minimum(crlb, var_prior), axis=axis) / var_prior


def prior_variance(source: Source, index: int = LOGG) -> float:
    """Variance of parameter ``index`` under the source's uniform prior, (hi - lo)^2 / 12."""
    box = prior_box(source)
    return float((box[index, 1] - box[index, 0]) ** 2 / 12.0)


def _median_ratio(num: np.ndarray, den: np.ndarray) -> float:
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    return float(np.median(num[ok] / den[ok])) if ok.any() else float("nan")


def summarise(crlb4, crlb3, crlb_cond, snr, var_prior: float, unit=None) -> dict[str, np.ndarray | float]:
    """The cell's scalar ceilings from per-star bounds (dex^2) and S/N (see specscale.ceiling.fisher.DEFINITIONS).
    ``unit``: the (crlb4, crlb3, crlb_cond) at noise level 1 for the noise-free information
    ratios (defaults to the given bounds)."""
    crlb4, crlb3, crlb_cond, snr = (np.asarray(a, np.float64) for a in (crlb4, crlb3, crlb_cond, snr))
    top = top_snr_mask(snr)
    bins = snr_bin_index(snr)
    n_bins = len(SNR_BIN_LABELS)

    def pop(c, m):
        return float(population_ceiling(c[m], var_prior)) if m.any() else float("nan")

    def med(c, m):
        return float(np.median(r2_max(c[m], var_prior))) if m.any() else float("nan")

    every = np.ones(snr.size, bool)
    out: dict[str, np.ndarray | float] = {}
    for suffix, c in (("", crlb4), ("_3d", crlb3)):
        out[f"ceiling_pop{suffix}"] = pop(c, every)
        out[f"ceiling_median{suffix}"] = med(c, every)
        out[f"ceiling_pop{suffix}_top20"] = pop(c, top)
        out[f"ceiling_median{suffix}_top20"] = med(c, top)
        out[f"ceiling_pop{suffix}_snr_bin"] = np.array([pop(c, bins == i) for i in range(n_bins)])
        out[f"ceiling_median{suffix}_snr_bin"] = np.array([med(c, bins == i) for i in range(n_bins)])
    sig = np.sqrt(crlb4)
    for q, v in zip(PERCENTILES, np.percentile(sig, PERCENTILES)):
        out[f"sigma_min_p{q}"] = float(v)
    u4, u3, uc = unit if unit is not None else (crlb4, crlb3, crlb_cond)
    out["info_ratio_marginal_conditional"] = _median_ratio(uc, u4)
    out["info_ratio_marginal_conditional_3d"] = _median_ratio(uc, u3)
    out["n_snr_bin"] = np.array([int((bins == i).sum()) for i in range(n_bins)])
    out["snr_median"] = float(np.median(snr))
    out["snr_top20_min"] = float(snr[top].min())
    return out


def scale_to_noise(crlb: np.ndarray, noise: float) -> np.ndarray:
    """Bounds at noise level ``noise`` from those at 1 (sigma scales with it; exact spectra: 0)."""
    return np.zeros_like(crlb) if noise == 0 else crlb * noise**2


def snr_of(flux: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Per-spectrum S/N ||flux|| / ||sigma|| (the definition of Observed.snr)."""
    return np.linalg.norm(flux.astype(np.float64), axis=1) / np.linalg.norm(sigma, axis=1)


def sigma_unit(batch) -> np.ndarray:
    """True 1-sigma per pixel at noise level 1 (float64) from a source Batch."""
    return np.sqrt(batch.var_a.astype(np.float64) * batch.flux + batch.var_b.astype(np.float64))
