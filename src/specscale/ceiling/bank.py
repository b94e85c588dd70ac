"""The bank reference: the posterior-mean log g from a bank of noiseless prior draws, for any source.

A dataset's noiseless training spectra with their labels are draws from its prior (synthetic
datasets: independent uniform draws on the prior box; the study's files: the BOSZ-interpolated
random parameters of the study). Self-normalised importance sampling with the prior as the
proposal then needs no simulator: for an observed spectrum x with per-pixel 1-sigma s,

    E[log g | x] ~ sum_j w_j logg_j / sum_j w_j,    w_j = exp(-chi^2_j / 2),
    chi^2_j = sum_p (x_p - f_jp)^2 / s_p^2  =  a - 2 (x / s^2) . f_j + (1 / s^2) . f_j^2

i.e. two matrix products per batch of test stars and block of bank spectra (float32 on flux centred
on the first block's mean spectrum, accumulated in float64; streamed, so a bank of any size fits in
memory). ``s`` is fixed per test star, which is what makes it two products: the true sigma
(``Observed.sigma``, ``BayesConfig.bank_sigma="sigma"``, the default: the exact references'
likelihood) or the pipeline error from the observed counts (``"error"``: what a real analysis has).
For the study's files the two are the same (their error does not depend on the noise draw); for
synthetic datasets the pipeline error is noisy at low S/N and lowers the bank's R^2 further (by
0.01 at noise 2 with 8,000 bank spectra, 0.035 with 32,000; RESULTS-ceiling.md).

What the reference is, per source:
- synthetic datasets (with their simulator): :func:`specscale.ceiling.sampler.posterior_batched` is
  the reference (exact up to its reported Monte-Carlo error); this bank estimate is available for
  comparison and converges to it as the bank grows.
- files without a simulator (the study's PFS files): this bank estimate IS the reference, with the
  training split as the bank.

Its Monte-Carlo error is a delete-a-group jackknife over ``groups`` interleaved groups of the bank
(bank index mod groups), honest even when a few bank members carry all the weight (removing that
member's group then moves the estimate a lot), where the delta-method error collapses to zero.
The estimate is biased where the posterior is narrower than the bank's spacing in label space
(ESS ~ 1: the weight sits on the few nearest bank members), towards those neighbours, so its R^2
is too LOW, and the jackknife error does not see this resolution error. Measured with the
simulator against the exact reference (benchmarks/RESULTS-ceiling.md, "Bank reference vs exact";
8,000 prior draws as the bank, the first 200 test stars of the default sweep's dataset):

    cell (median S/N)                 exact R^2   bank R^2   rms diff   median bank ESS
    noise 0.5, mag 19 (119)           0.997       0.906      0.33 dex   1.0
    noise 1, mag 20.5-22.5 (8.2)      0.842       0.793      0.26 dex   2.9
    noise 2, mag 20.5-22.5 (4.1)      0.687       0.665      0.18 dex   23

It converges slowly with the bank size in 4 dimensions (another dataset's 200 stars at noise 1,
exact R^2 0.803: bank R^2 0.62 / 0.69 / 0.74 / 0.76 / 0.78 / 0.79 with 1,000 / 2,000 / 4,000 /
8,000 / 16,000 / 32,000 spectra): use the largest training split, and read ``r2_bank_half`` (the
R^2 from half the bank) in a reference file: a gap to the full-bank R^2 says it has not converged.
"""

from __future__ import annotations

import numpy as np
import torch

from specscale.core.vocab import LOGG
from specscale.data.sources import Source


def bank_posterior(
    source: Source,
    obs: np.ndarray,
    sigma: np.ndarray,
    cell,
    index: int = LOGG,
    n_bank: int | None = None,
    groups: int = 16,
    block: int = 2048,
    batch: int = 256,
    mask: np.ndarray | None = None,
    split: str = "train",
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """Posterior mean, sd, jackknife MC standard error and ESS of parameter ``index`` (physical
    units) for spectra ``obs`` with 1-sigma ``sigma`` (n, n_pix, the full grid), weighting the first
    ``n_bank`` (default all) noiseless spectra of ``split`` (in magnitude ``cell``: the flux does not
    depend on it, the source's reader needs one) by their likelihood. ``mask`` (n_pix,) bool: only
    those pixels count (a window). Pixels with infinite sigma carry no weight."""
    n_total = source.n(split)
    n_bank = n_total if n_bank is None else int(n_bank)
    if not 1 <= n_bank <= n_total:
        raise ValueError(f"bank size must be between 1 and the {n_total} {split} stars, got {n_bank}")
    groups = max(2, min(int(groups), n_bank))
    dev = torch.device(device)
    keep = slice(None) if mask is None else np.asarray(mask, dtype=bool)
    obs = np.asarray(obs, dtype=np.float64)[:, keep]
    w_all = np.asarray(sigma, dtype=np.float64)[:, keep] ** -2.0
    labels = source.labels(split, np.arange(n_bank)).astype(np.float64)[:, index]
    n = len(obs)
    # per star and group: log sum w, and the sums of w x, w x^2 relative to it; log sum w^2
    log_s0 = np.full((n, groups), -np.inf)
    s1 = np.zeros((n, groups))
    s2 = np.zeros((n, groups))
    log_sq = np.full(n, -np.inf)
    centre = None
    for start in range(0, n_bank, block):
        rows = np.arange(start, min(n_bank, start + block))
        flux = source.noiseless(split, rows, cell, variances=False).flux.astype(np.float32)[:, keep]
        if centre is None:
            centre = flux.mean(0)
        f = torch.as_tensor(flux - centre, device=dev)
        ff = f * f
        x = labels[rows]
        g = rows % groups
        for a in range(0, n, batch):
            o = torch.as_tensor(obs[a : a + batch] - centre, dtype=torch.float32, device=dev)
            w = torch.as_tensor(w_all[a : a + batch], dtype=torch.float32, device=dev)
            with torch.no_grad():
                chi2 = (w * o * o).sum(1, keepdim=True).double() - (2 * (w * o) @ f.T - w @ ff.T).double()
            logw = (-0.5 * chi2).cpu().numpy()
            _accumulate(log_s0[a : a + batch], s1[a : a + batch], s2[a : a + batch], logw, x, g, groups)
            log_sq[a : a + batch] = np.logaddexp(log_sq[a : a + batch], np.logaddexp.reduce(2 * logw, axis=1))
    out = _jackknife(log_s0, s1, s2, log_sq)
    out["n_bank"] = np.full(n, float(n_bank))
    return out


def _accumulate(log_s0, s1, s2, logw, x, g, groups) -> None:
    """Fold one block's log weights (b, m) of values x (m,) in groups g (m,) into the per-group
    running sums (in place): log_s0 = log sum w; s1, s2 = sum w x, sum w x^2 divided by exp(log_s0)."""
    for k in range(groups):
        sel = g == k
        if not sel.any():
            continue
        lw = logw[:, sel]
        top = lw.max(1)
        e = np.exp(lw - top[:, None])
        b0 = e.sum(1)
        b1 = e @ x[sel] / b0
        b2 = e @ x[sel] ** 2 / b0
        lb = top + np.log(b0)
        new = np.logaddexp(log_s0[:, k], lb)
        old_share = np.where(np.isfinite(log_s0[:, k]), np.exp(log_s0[:, k] - new), 0.0)
        s1[:, k] = old_share * s1[:, k] + (1 - old_share) * b1
        s2[:, k] = old_share * s2[:, k] + (1 - old_share) * b2
        log_s0[:, k] = new


def _jackknife(log_s0, s1, s2, log_sq) -> dict[str, np.ndarray]:
    """Mean, sd, ESS and the delete-a-group jackknife standard error from per-group sums."""
    groups = log_s0.shape[1]
    total = np.logaddexp.reduce(log_s0, axis=1)
    share = np.exp(log_s0 - total[:, None])  # (n, G), rows sum to 1
    mean = (share * s1).sum(1)
    second = (share * s2).sum(1)
    sd = np.sqrt(np.clip(second - mean**2, 0, None))
    ess = np.exp(2 * total - log_sq)
    # leave group k out: the other groups' shares renormalised (in logs: never 0/0)
    loo = np.empty_like(s1)
    for k in range(groups):
        others = np.delete(np.arange(groups), k)
        lo = log_s0[:, others]
        top = np.max(lo, 1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.exp(lo - top)
        den = e.sum(1)
        loo[:, k] = np.where(den > 0, (e * s1[:, others]).sum(1) / np.where(den > 0, den, 1.0), mean)
    jk = loo.mean(1)
    se = np.sqrt((groups - 1) / groups * ((loo - jk[:, None]) ** 2).sum(1))
    # the estimate from every other group: half the bank, to show how far from converged it is
    half = share[:, ::2] / share[:, ::2].sum(1, keepdims=True).clip(1e-300)
    return {"mean": mean, "sd": sd, "mc_se": se, "ess": ess, "mean_half": (half * s1[:, ::2]).sum(1)}
