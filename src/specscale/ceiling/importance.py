"""Importance-sampling numerics of the Bayes reference, in box coordinates z in [0, 1]^P (the
dataset's uniform prior box mapped to the unit cube): the multivariate Student-t density, the
t-mixture proposal with antithetic draws truncated to the box, the Laplace approximation of the
local likelihood maxima, moment matching and the self-normalised weighted statistics."""

from __future__ import annotations

import math

import numpy as np
import torch


def t_logpdf(z: np.ndarray, mu: np.ndarray, cinv: np.ndarray, logdet: np.ndarray, df: float) -> np.ndarray:
    """log density (N, K) of Student-t components with centres mu (K, P), inverse Cholesky
    factors cinv (K, P, P) and log det of the scale matrices (K,), at z (N, P)."""
    p = z.shape[1]
    sol = np.einsum("kij,nkj->nki", cinv, z[:, None, :] - mu[None])
    maha = (sol**2).sum(-1)
    const = math.lgamma((df + p) / 2) - math.lgamma(df / 2) - p / 2 * math.log(df * math.pi)
    return const - 0.5 * logdet[None] - (df + p) / 2 * np.log1p(maha / df)


def inside_box(z: np.ndarray) -> np.ndarray:
    """(N,) bool: which points z (N, P) lie in the unit box (the prior's support)."""
    return ((z >= 0) & (z <= 1)).all(1)


class TMixture:
    """sum_k pi_k t_df(mu_k, L_k L_k^T) in box coordinates: the proposal of one sampling round."""

    def __init__(self, mu: np.ndarray, chol: np.ndarray, logpi: np.ndarray, df: float):
        self.mu, self.chol, self.df = mu, chol, df
        self.logpi = logpi - np.logaddexp.reduce(logpi)
        self.cinv = np.linalg.inv(chol)
        self.logdet = 2 * np.log(np.abs(np.einsum("kii->ki", chol))).sum(1)

    def logpdf(self, z: np.ndarray) -> np.ndarray:
        return np.logaddexp.reduce(t_logpdf(z, self.mu, self.cinv, self.logdet, self.df) + self.logpi, axis=1)

    def with_component(self, mu: np.ndarray, chol: np.ndarray) -> TMixture:
        """Half this mixture plus half one t component (mu (P,), chol (P, P))."""
        return TMixture(
            np.concatenate([self.mu, mu[None]]),
            np.concatenate([self.chol, chol[None]]),
            np.concatenate([self.logpi + math.log(0.5), [math.log(0.5)]]),
            self.df,
        )

    def _pairs(self, rng: np.random.Generator, pairs: int) -> np.ndarray:
        """2 * ``pairs`` draws as antithetic pairs mu_k +- d (d a t-distributed offset of component k,
        drawn with probability pi_k), pair members adjacent: each draw is marginally from the mixture
        (the t is symmetric), and a pair cancels the linear part of the integrand."""
        p = self.mu.shape[1]
        k = rng.choice(len(self.mu), size=pairs, p=np.exp(self.logpi - np.logaddexp.reduce(self.logpi)))
        g = rng.standard_normal((pairs, p))
        d = np.einsum("nij,nj->ni", self.chol[k], g) / np.sqrt(rng.chisquare(self.df, (pairs, 1)) / self.df)
        return np.stack([self.mu[k] + d, self.mu[k] - d], 1).reshape(2 * pairs, p)

    def sample_inside(self, rng: np.random.Generator, m: int, aux: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """About ``m`` draws from the mixture truncated to the unit box (the prior is zero outside it,
        so no simulation is spent there) and their pair ids. Candidates are antithetic pairs; each is
        kept iff it lies inside the box (its own location only, so every kept draw is marginally from
        q(z) / Z). Sets ``log_z``, the log of the mass inside the box, from the acceptance rate of
        ``aux`` pairs drawn first (never simulated) and of the candidates."""
        tried, accepted = 2 * aux, int(inside_box(self._pairs(rng, aux)).sum())
        rate = max(accepted, 1) / tried
        z = self._pairs(rng, max(1, math.ceil(m / (2 * rate))))
        ok = inside_box(z)
        self.log_z = math.log(max(accepted + int(ok.sum()), 1) / (tried + len(z)))
        return z[ok], (np.arange(len(z)) // 2)[ok]

    def logpdf_inside(self, z: np.ndarray) -> np.ndarray:
        """log density of the truncated mixture (after :meth:`sample_inside`), -inf outside the box."""
        return np.where(inside_box(z), self.logpdf(z) - self.log_z, -np.inf)


def laplace_covariance(model, z: torch.Tensor, sigma: torch.Tensor, box: torch.Tensor, batch: int) -> torch.Tensor:
    """Laplace covariances (J^T W J + 12 I)^-1 (m, P, P) in box units at points z (m, P) of spectra
    with 1-sigma ``sigma`` (m, n_pix); J from ``model.jacobian`` in batches of ``batch``. The 12 I is
    the precision of the uniform prior on the unit box: no component is wider than the prior."""
    width = box[:, 1] - box[:, 0]
    prec = []
    for a in range(0, len(z), batch):
        _, jac = model.jacobian(box[:, 0] + z[a : a + batch] * width)
        jw = jac * width / sigma[a : a + batch, :, None]
        prec.append(jw.transpose(1, 2) @ jw)
    prec = torch.cat(prec) + 12.0 * torch.eye(box.shape[0], dtype=torch.float64, device=z.device)
    return torch.linalg.inv(prec)


def laplace_mixture(z: np.ndarray, chi2: np.ndarray, cov: np.ndarray, chi2_window: float, inflate: float, df: float):
    """The first round's proposal: one t per distinct local maximum (z (S, P), chi2 (S,), Laplace
    covariance cov (S, P, P)) within ``chi2_window`` of the best, scale ``inflate`` x the Laplace
    scale, weighted by its Laplace evidence exp(-chi2/2) sqrt(det C)."""
    keep: list[int] = []
    for j in np.argsort(chi2):
        if chi2[j] > chi2.min() + chi2_window:
            break
        if all(np.abs(z[j] - z[k]).max() > 0.02 for k in keep):
            keep.append(int(j))
    c = cov[keep]
    chol = np.linalg.cholesky(0.5 * (c + c.transpose(0, 2, 1)) * inflate**2)
    logpi = -0.5 * (chi2[keep] - chi2[keep].min()) + 0.5 * np.linalg.slogdet(c)[1]
    return TMixture(z[keep], chol, logpi, df)


def moment_matched(z: np.ndarray, logw: np.ndarray, inflate: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre and Cholesky factor (inflated) of the weighted samples' mean and covariance: a
    component that follows a banana-shaped or bound-truncated posterior the Laplace misses."""
    wbar = np.exp(logw - np.logaddexp.reduce(logw))
    mean = wbar @ z
    d = z - mean
    cov = (wbar[:, None] * d).T @ d
    cov = 0.5 * (cov + cov.T) + 1e-10 * np.eye(z.shape[1])
    return mean, np.linalg.cholesky(cov * inflate**2)


def weighted_stats(x: np.ndarray, logw: np.ndarray, groups: np.ndarray) -> tuple[float, float, float, float]:
    """Self-normalised mean, sd, delta-method standard error (groups of correlated draws, e.g.
    antithetic pairs, as the independent units) and ESS of values x with log weights logw."""
    wbar = np.exp(logw - np.logaddexp.reduce(logw))
    mean = float(wbar @ x)
    d = x - mean
    sd = math.sqrt(max(float(wbar @ d**2), 0.0))
    se = math.sqrt(float((np.bincount(groups, weights=wbar * d) ** 2).sum()))
    return mean, sd, se, float(1.0 / (wbar**2).sum())
