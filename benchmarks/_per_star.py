"""The one-star-at-a-time importance sampler, the baseline bench_bayes.py measures the batched
sampler (specscale.ceiling.sampler) against; built from the same numerics
(specscale.ceiling.importance).

Per star, from the oracle's multi-start fit: n_samples draws, half from prior_fraction *
Uniform(box) + (1 - prior_fraction) * the Laplace t mixture of the modes, half from that plus a
t moment-matched to the first half's weighted draws; every draw weighted against the average of
the two stage densities (multiple importance sampling, balance heuristic)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from specscale.ceiling.importance import (
    TMixture,
    inside_box,
    laplace_covariance,
    laplace_mixture,
    moment_matched,
    weighted_stats,
)
from specscale.core.vocab import LOGG
from specscale.data.streams import seed_key


@dataclass(frozen=True)
class PerStarConfig:
    n_samples: int = 1024  # importance draws per star
    df: float = 4.0  # Student-t degrees of freedom of the proposal components
    inflate: float = 1.5  # proposal scale / Laplace scale
    prior_fraction: float = 0.1  # weight of the uniform-prior component (defensive mixture)
    chi2_window: float = 25.0  # local maxima within this chi^2 of the best become components
    seed: int = 0
    chunk: int = 512  # simulations per forward call


class DefensiveMixture:
    """q(z) = prior_fraction * Uniform[0, 1]^P + (1 - prior_fraction) * a t mixture."""

    def __init__(self, tmix: TMixture, prior_fraction: float):
        self.tmix, self.prior_fraction = tmix, prior_fraction

    def sample(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """m draws: a fixed uniform share, then the t components by a multinomial."""
        t, p = self.tmix, self.tmix.mu.shape[1]
        n_uni = int(round(self.prior_fraction * m))
        pi = np.exp(t.logpi)
        counts = rng.multinomial(m - n_uni, pi / pi.sum())
        zs = [rng.random((n_uni, p))]
        for k, n in enumerate(counts):
            g = rng.standard_normal((n, p)) @ t.chol[k].T
            zs.append(t.mu[k] + g / np.sqrt(rng.chisquare(t.df, (n, 1)) / t.df))
        return np.concatenate(zs)

    def logpdf(self, z: np.ndarray) -> np.ndarray:
        log_uni = np.where(inside_box(z), 0.0, -np.inf)
        f = self.prior_fraction
        return np.logaddexp(math.log(f) + log_uni, math.log(1 - f) + self.tmix.logpdf(z))

    def adapted(self, z: np.ndarray, logw: np.ndarray, inflate: float) -> DefensiveMixture:
        """This mixture with half its t weight on a t moment-matched to the weighted draws."""
        return DefensiveMixture(self.tmix.with_component(*moment_matched(z, logw, inflate)), self.prior_fraction)


def posterior_moments(model, obs, sigma, box, modes_z, modes_chi2, rows, config: PerStarConfig, index: int = LOGG):
    """Posterior mean, sd, MC standard error and ESS of parameter ``index`` (physical units) per
    spectrum. ``model`` has ``flux`` and ``jacobian``; obs, sigma (n, n_pix); box (P, 2); modes_z
    (n, S, P) local maxima in box coordinates with chi^2 modes_chi2 (n, S); ``rows`` seed each
    star's own random stream."""
    n, s, p = modes_z.shape
    box_t = torch.as_tensor(box, dtype=torch.float64)
    lo, width = box[:, 0], box[:, 1] - box[:, 0]
    obs_t, sig_t = (torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64) for a in (obs, sigma))
    z_t = torch.as_tensor(modes_z.reshape(n * s, p), dtype=torch.float64)
    with torch.no_grad():
        cov = laplace_covariance(model, z_t, sig_t.repeat_interleave(s, 0), box_t, 128).numpy().reshape(n, s, p, p)

    def chi2_of(i, z):
        out = np.full(len(z), np.inf)
        idx = np.flatnonzero(inside_box(z))  # zero prior density outside the box
        theta = torch.as_tensor(lo + z[idx] * width, dtype=torch.float32)
        with torch.no_grad():
            for a in range(0, len(idx), config.chunk):
                f = model.flux(theta[a : a + config.chunk]).double()
                out[idx[a : a + config.chunk]] = (((obs_t[i] - f) / sig_t[i]) ** 2).sum(-1).numpy()
        return out

    half = config.n_samples // 2
    out = {k: np.empty(n) for k in ("mean", "sd", "mc_se", "ess", "n_components")}
    for i in range(n):
        rng = np.random.Generator(np.random.Philox(key=seed_key("bayes", config.seed, int(rows[i]))))
        laplace = laplace_mixture(modes_z[i], modes_chi2[i], cov[i], config.chi2_window, config.inflate, config.df)
        first = DefensiveMixture(laplace, config.prior_fraction)
        z1 = first.sample(rng, half)
        chi1 = chi2_of(i, z1)
        second = first.adapted(z1, -0.5 * chi1 - first.logpdf(z1), config.inflate)
        z2 = second.sample(rng, config.n_samples - half)
        z = np.concatenate([z1, z2])
        chi2 = np.concatenate([chi1, chi2_of(i, z2)])
        frac = half / len(z)
        logq = np.logaddexp(first.logpdf(z) + math.log(frac), second.logpdf(z) + math.log(1 - frac))
        x = lo[index] + z[:, index] * width[index]
        out["mean"][i], out["sd"][i], out["mc_se"][i], out["ess"][i] = weighted_stats(
            x, -0.5 * chi2 - logq, np.arange(len(z))
        )
        out["n_components"][i] = len(laplace.mu)
    return out
