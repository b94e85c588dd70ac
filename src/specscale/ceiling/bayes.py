"""The Bayes reference: the minimum-mean-squared-error log g, i.e. the posterior mean under the
dataset's uniform prior, for a subset of test stars.

No estimator has a lower expected squared error over stars drawn from the prior, so the R^2 of
the posterior mean is the shrinkage-aware ceiling (the CRLB only bounds unbiased estimators; a
trained regressor shrinks towards the prior mean and can beat it at low S/N).

Posterior p(theta | x) ~ exp(-chi^2(theta) / 2) on the prior box: Gaussian pixel noise with the
star's TRUE per-pixel sigma (``Observed.sigma``, taken as known: its weak dependence on theta
through the object's shot noise is ignored, as in the Fisher ceiling and the oracle) and the
dataset's own simulator. What the reference is, per source (``BayesConfig.method``, METHODS):

- synthetic datasets (the simulator is in the file): ``batched`` (default), exact up to its
  reported Monte-Carlo error; ``per_star`` is the previous implementation of the same estimator.
- files without a simulator (the study's PFS files): ``bank``, the noiseless training spectra as
  prior draws weighted by the likelihood (:mod:`specscale.ceiling.bank`; approximate where the
  posterior is narrower than the bank's spacing, measured there).

``batched`` (:func:`posterior_batched`), per star: a bank of ``bank_size`` scrambled-Sobol prior
draws is simulated once for all stars and scored against every spectrum by two matrix products;
its best members start Levenberg-Marquardt fits (one, plus one per further bank member that is
>= ``start_separation`` away and within ``start_window`` in chi^2: a second mode), whose Laplace
covariances C_k = (J^T W J + 12 I)^-1 (box units; the 12 I is the precision of the uniform prior:
no component is wider than the prior) give the round-1 proposal sum_k pi_k t_df(mu_k, inflate^2
C_k), pi_k ~ exp(-chi2_k / 2) sqrt(det C_k) (the Laplace evidence). Round r >= 2 draws twice as
many from half that mixture plus half a t moment-matched to the weighted draws so far (for
banana-shaped or truncated posteriors the Laplace misses). Every draw AND every bank member is
weighted against the deterministic mixture M u(z) + sum_r n_r q_r(z) (multiple importance
sampling, balance heuristic; u the uniform prior of the bank): the bank is the defensive
component that keeps the weights bounded where the t components miss posterior mass, at no
simulation cost. Draws come in antithetic pairs mu +- d (the pair cancels the linear part of the
integrand); a star stops when its MC standard error is <= ``mc_target`` x its posterior sd or
after ``n_samples`` draws. Stars are batched through the simulator (``sim_batch`` spectra per call,
where its per-spectrum cost is lowest) and each star has its own random stream (rows seed it), so
results do not depend on batching or on the other stars.

``per_star`` (:func:`posterior_moments`): the oracle's multi-start fit gives the modes;
n_samples per star, half from prior_fraction * Uniform(box) + (1 - prior_fraction) * the Laplace t
mixture, half from that plus a moment-matched t; all weighted against the average of the two
stage densities.

Monte-Carlo error: per star, the delta-method standard error of the self-normalised estimate,
mc_se = sqrt(sum_g (sum_{i in g} wbar_i (logg_i - mean))^2) over independent units g (single
draws, antithetic pairs, bank members; wbar: normalised weights), and the effective sample size
ESS = 1 / sum wbar_i^2. For the R^2 over the stars (:func:`r2_mc_error`): MC noise adds sum
mc_se^2 to the expected SSE (the raw R^2 is biased low by sum mc_se^2 / SST; ``r2_debiased`` adds
it back, the headline), its MC standard error is 2 sqrt(sum (mean_i - logg_i)^2 mc_se_i^2) / SST,
and the sampling error of an R^2 over N stars (delta method for SSE/SST) completes the total
``r2_err``. Both are checked against long runs in benchmarks/RESULTS-ceiling.md.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from specscale.ceiling.bank import bank_posterior
from specscale.ceiling.fisher import FisherConfig, cell_ceiling, window_pixels
from specscale.core.config import ConfigError, to_jsonable
from specscale.core.hardware import resolve_device
from specscale.core.provenance import provenance
from specscale.core.vocab import LOGG, SNR_BIN_LABELS, SNR_EDGES, Cell, MagRange
from specscale.data.simulator import prior_box, simulator_of
from specscale.data.sources import Source
from specscale.data.streams import seed_key
from specscale.models.metrics import evaluate
from specscale.models.oracle import OracleModel, OracleParams, levenberg_marquardt
from specscale.sim.windows import window_label

# how the posterior mean is computed (``BayesConfig.method``)
METHODS = {
    "batched": "adaptive multiple importance sampling, stars batched through the simulator, prior bank as the "
    "defensive component (posterior_batched)",
    "per_star": "importance sampling one star at a time, n_samples draws per star (posterior_moments; the previous "
    "implementation)",
    "bank": "noiseless training spectra (prior draws) weighted by the likelihood (specscale.ceiling.bank)",
    "auto": "batched where the source has a simulator, else bank",
}


@dataclass(frozen=True)
class BayesConfig:
    """Importance-sampling settings (command-line options of ``specscale bayes``)."""

    method: str = "auto"  # batched | per_star (the previous implementation) | bank | auto (see METHODS)
    n_samples: int = 1024  # importance samples per star (batched: at most this many; adaptive)
    df: float = 4.0  # Student-t degrees of freedom of the proposal components
    inflate: float = 1.5  # proposal scale / Laplace scale
    prior_fraction: float = 0.1  # per_star: weight of the uniform-prior component (defensive mixture)
    chi2_window: float = 25.0  # local maxima within this chi^2 of the best become components
    seed: int = 0
    chunk: int = 512  # per_star: simulations per forward call
    # batched
    sim_batch: int = 128  # simulations per forward call (the simulator's per-spectrum cost is lowest at ~32-128)
    jac_batch: int = 64  # Jacobians per call
    bank_size: int = 4096  # prior draws simulated once per call: mode starts and defensive component
    round_samples: int = 16  # draws of the first round (each further round doubles)
    mc_target: float = 0.1  # stop a star when its MC standard error <= this x its posterior sd
    min_rounds: int = 2  # ... and at least this many rounds ran (round 2 adapts to the draws of round 1)
    min_ess: float = 50.0  # ... and its ESS (bank members and draws) is at least this
    n_starts: int = 1  # at most this many LM fits per star (bank members >= start_separation apart)
    start_window: float = 50.0  # a further start only if its bank chi^2 is within this of the best
    start_separation: float = 0.2  # prior-box units (max norm)
    iterations: int = 10  # LM iterations per start (the draws correct an inexact mode)
    lm_tol: float = 0.5  # LM stops when an accepted step lowers chi^2 by less than this
    batch: int = 128  # stars per batch
    # bank (specscale.ceiling.bank)
    bank_sigma: str = "sigma"  # weights from the true sigma ("sigma", the exact likelihood) or the pipeline error
    bank_groups: int = 16  # jackknife groups of the bank (MC standard error)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"bayes method must be one of {sorted(METHODS)}, got {self.method!r}")
        if not isinstance(self.n_samples, int) or self.n_samples < 16:
            raise ValueError(f"bayes n_samples must be an integer >= 16, got {self.n_samples!r}")
        if not self.df > 0 or not self.inflate > 0 or not 0 < self.prior_fraction < 1 or not self.chi2_window >= 0:
            raise ValueError("bayes: need df > 0, inflate > 0, 0 < prior_fraction < 1, chi2_window >= 0")
        for name in (
            "bank_size",
            "round_samples",
            "n_starts",
            "iterations",
            "batch",
            "chunk",
            "sim_batch",
            "jac_batch",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"bayes {name} must be a positive integer, got {v!r}")
        if self.round_samples < 2 or not self.mc_target > 0 or not self.lm_tol > 0 or not self.start_window >= 0:
            raise ValueError("bayes: need round_samples >= 2, mc_target > 0, lm_tol > 0, start_window >= 0")
        if self.bank_sigma not in ("error", "sigma"):
            raise ValueError(f"bayes bank_sigma must be 'error' or 'sigma', got {self.bank_sigma!r}")
        if not isinstance(self.bank_groups, int) or self.bank_groups < 2:
            raise ValueError(f"bayes bank_groups must be an integer >= 2, got {self.bank_groups!r}")


def _t_logpdf(z: torch.Tensor, mu: torch.Tensor, chol: torch.Tensor, df: float) -> torch.Tensor:
    """log density of multivariate Student-t components: z (N, P), mu (K, P), chol (K, P, P)
    lower Cholesky factors of the scale matrices -> (N, K)."""
    p = z.shape[-1]
    d = (z[:, None, :] - mu[None]).transpose(0, 1)[..., None]  # (K, N, P, 1)
    sol = torch.linalg.solve_triangular(chol[:, None], d, upper=False)[..., 0]  # (K, N, P)
    maha = (sol**2).sum(-1).T  # (N, K)
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    const = math.lgamma((df + p) / 2) - math.lgamma(df / 2) - p / 2 * math.log(df * math.pi)
    return const - 0.5 * logdet[None] - (df + p) / 2 * torch.log1p(maha / df)


def proposal_components(
    model,
    obs: torch.Tensor,
    sigma: torch.Tensor,
    box: torch.Tensor,
    modes_z: np.ndarray,
    modes_chi2: np.ndarray,
    config: BayesConfig,
):
    """Per star: a list of (mu (K, P), chol (K, P, P), log pi (K,)) t components from its local
    likelihood maxima ``modes_z`` (n, S, P) in box coordinates with chi^2 ``modes_chi2`` (n, S)."""
    width = box[:, 1] - box[:, 0]
    n, s, p = modes_z.shape
    mz = torch.as_tensor(modes_z.reshape(n * s, p), dtype=torch.float64, device=obs.device)
    sig = sigma.repeat_interleave(s, 0)
    prec = []
    for a in range(0, n * s, 128):  # Jacobians in cache-sized batches
        _, jac = model.jacobian(box[:, 0] + mz[a : a + 128] * width)
        jw = jac * width / sig[a : a + 128, :, None]
        prec.append(jw.transpose(1, 2) @ jw)
    prec = torch.cat(prec) + 12.0 * torch.eye(p, dtype=torch.float64, device=obs.device)
    cov = torch.linalg.inv(prec).reshape(n, s, p, p)
    comps = []
    for i in range(n):
        best = modes_chi2[i].min()
        keep: list[int] = []
        for j in np.argsort(modes_chi2[i]):
            if modes_chi2[i, j] > best + config.chi2_window:
                break
            if all(np.abs(modes_z[i, j] - modes_z[i, k]).max() > 0.02 for k in keep):
                keep.append(int(j))
        c = cov[i, keep] * config.inflate**2
        chol = torch.linalg.cholesky(0.5 * (c + c.transpose(1, 2)))
        logdet = torch.logdet(cov[i, keep])
        chi2 = torch.as_tensor(modes_chi2[i, keep], dtype=torch.float64, device=obs.device)
        logpi = -0.5 * (chi2 - chi2.min()) + 0.5 * logdet
        comps.append(
            (
                torch.as_tensor(modes_z[i, keep], dtype=torch.float64, device=obs.device),
                chol,
                logpi - torch.logsumexp(logpi, 0),
            )
        )
    return comps


class Mixture:
    """q(z) = prior_fraction * Uniform[0, 1]^P + (1 - prior_fraction) * sum_k pi_k t_df(mu_k, chol_k chol_k^T)."""

    def __init__(self, mu: torch.Tensor, chol: torch.Tensor, logpi: torch.Tensor, config: BayesConfig):
        self.mu, self.chol, self.logpi, self.config = mu, chol, logpi - torch.logsumexp(logpi, 0), config

    def sample(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """m draws (a fixed uniform share, then the t components by a multinomial: a stratified
        draw from the same mixture)."""
        c, p = self.config, self.mu.shape[1]
        n_uni = int(round(c.prior_fraction * m))
        pi = self.logpi.exp().cpu().numpy()
        counts = rng.multinomial(m - n_uni, pi / pi.sum())
        zs = [rng.random((n_uni, p))]
        for k, n in enumerate(counts):
            g = rng.standard_normal((n, p)) @ self.chol[k].cpu().numpy().T
            zs.append(self.mu[k].cpu().numpy() + g / np.sqrt(rng.chisquare(c.df, (n, 1)) / c.df))
        return np.concatenate(zs)

    def logpdf(self, z: torch.Tensor) -> torch.Tensor:
        c = self.config
        logq_t = torch.logsumexp(_t_logpdf(z, self.mu, self.chol, c.df) + self.logpi[None], 1)
        inside = ((z >= 0) & (z <= 1)).all(1)
        log_uni = torch.where(inside, 0.0, -math.inf).to(z.dtype)
        return torch.logaddexp(math.log(c.prior_fraction) + log_uni, math.log(1 - c.prior_fraction) + logq_t)

    def adapted(self, z: torch.Tensor, wbar: torch.Tensor) -> Mixture:
        """This mixture plus a t component moment-matched to the weighted samples (half the
        t weight): it follows a banana-shaped or bound-truncated posterior the Laplace misses."""
        mean = (wbar[:, None] * z).sum(0)
        d = z - mean
        cov = (wbar[:, None, None] * d[:, :, None] * d[:, None, :]).sum(0)
        cov = 0.5 * (cov + cov.T) + 1e-8 * torch.eye(len(mean), dtype=z.dtype, device=z.device)
        chol = torch.linalg.cholesky(cov * self.config.inflate**2)
        logpi = torch.cat([self.logpi + math.log(0.5), torch.tensor([math.log(0.5)], dtype=z.dtype, device=z.device)])
        return Mixture(torch.cat([self.mu, mean[None]]), torch.cat([self.chol, chol[None]]), logpi, self.config)


def posterior_moments(
    model,
    obs: np.ndarray,
    sigma: np.ndarray,
    box: np.ndarray,
    modes_z: np.ndarray,
    modes_chi2: np.ndarray,
    rows: np.ndarray,
    config: BayesConfig | None = None,
    index: int = LOGG,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """Importance-sampled posterior mean and sd of parameter ``index`` (physical units), their MC
    standard error and the ESS, per spectrum. ``model`` has ``flux`` and ``jacobian``; obs, sigma
    (n, n_pix); box (P, 2); ``rows`` (n,) star ids that seed each star's own random stream.

    Two stages of n_samples/2: the Laplace mixture, then the same plus a component moment-matched
    to the first stage's weighted samples. All samples are weighted against the average of the
    two stage densities (multiple importance sampling, balance heuristic), so both stages count."""
    config = config or BayesConfig()
    dev = torch.device(device)
    box_t = torch.as_tensor(box, dtype=torch.float64, device=dev)
    lo, width = box_t[:, 0], box_t[:, 1] - box_t[:, 0]
    obs_t = torch.as_tensor(np.ascontiguousarray(obs), dtype=torch.float64, device=dev)
    sig_t = torch.as_tensor(np.ascontiguousarray(sigma), dtype=torch.float64, device=dev)
    with torch.no_grad():
        comps = proposal_components(model, obs_t, sig_t, box_t, modes_z, modes_chi2, config)

    def chi2_of(i, z):
        out = torch.full((len(z),), math.inf, dtype=torch.float64, device=dev)
        idx = ((z >= 0) & (z <= 1)).all(1).nonzero()[:, 0]  # zero prior density outside the box
        with torch.no_grad():
            for s in range(0, len(idx), config.chunk):
                j = idx[s : s + config.chunk]
                f = model.flux((lo + z[j] * width).float()).double()
                out[j] = (((obs_t[i] - f) / sig_t[i]) ** 2).sum(-1)
        return out

    half = config.n_samples // 2
    out = {k: np.empty(len(obs)) for k in ("mean", "sd", "mc_se", "ess", "n_components")}
    for i, (mu, chol, logpi) in enumerate(comps):
        # each star its own stream: results do not depend on batching or on the other stars
        rng = np.random.Generator(np.random.Philox(key=seed_key("bayes", config.seed, int(rows[i]))))
        first = Mixture(mu, chol, logpi, config)
        z1 = torch.as_tensor(first.sample(rng, half), dtype=torch.float64, device=dev)
        chi1 = chi2_of(i, z1)
        w1 = torch.softmax(-0.5 * chi1 - first.logpdf(z1), 0)
        second = first.adapted(z1, w1)
        z2 = torch.as_tensor(second.sample(rng, config.n_samples - half), dtype=torch.float64, device=dev)
        z = torch.cat([z1, z2])
        chi2 = torch.cat([chi1, chi2_of(i, z2)])
        logq = torch.logaddexp(
            first.logpdf(z) + math.log(half / len(z)), second.logpdf(z) + math.log(1 - half / len(z))
        )
        wbar = torch.softmax(-0.5 * chi2 - logq, 0)
        x = lo[index] + z[:, index] * width[index]
        mean = (wbar * x).sum()
        out["mean"][i] = float(mean)
        out["sd"][i] = float(torch.sqrt((wbar * (x - mean) ** 2).sum()))
        out["mc_se"][i] = float(torch.sqrt((wbar**2 * (x - mean) ** 2).sum()))
        out["ess"][i] = float(1.0 / (wbar**2).sum())
        out["n_components"][i] = len(mu)
    return out


# ---- the batched estimator (default for sources with a simulator) ------------------------------
class PixelSubset:
    """A forward model seen through a pixel mask (a window): ``flux`` and ``jacobian`` of the
    masked pixels only, so every likelihood, Fisher matrix and bank built on it uses those pixels."""

    def __init__(self, model, mask: np.ndarray):
        self.model, self.mask = model, np.asarray(mask, dtype=bool)
        self._idx: dict = {}

    def _index(self, device) -> torch.Tensor:
        if device not in self._idx:
            self._idx[device] = torch.as_tensor(np.flatnonzero(self.mask), device=device)
        return self._idx[device]

    def flux(self, theta: torch.Tensor) -> torch.Tensor:
        f = self.model.flux(theta)
        return f.index_select(-1, self._index(f.device))

    def jacobian(self, theta: torch.Tensor):
        f, jac = self.model.jacobian(theta)
        idx = self._index(f.device)
        return f.index_select(-1, idx), jac.index_select(1, idx)


@dataclass
class PriorBank:
    """Noiseless spectra of prior draws: ``z`` (M, P) in box coordinates, ``flux`` (M, n_pix)
    float32 and its mean spectrum ``centre`` (chi^2 against the bank is computed on centred flux,
    which keeps float32 matrix products accurate to ~0.01 in chi^2 at S/N 70 per pixel)."""

    z: np.ndarray
    flux: torch.Tensor
    centre: torch.Tensor

    @classmethod
    def simulate(cls, model, box: np.ndarray, size: int, seed: int, device="cpu", chunk: int = 512) -> PriorBank:
        """``size`` scrambled-Sobol draws from the uniform prior on ``box``, simulated in float32."""
        sobol = torch.quasirandom.SobolEngine(box.shape[0], scramble=True, seed=seed)
        z = sobol.draw(size, dtype=torch.float64).numpy()
        lo, width = box[:, 0], box[:, 1] - box[:, 0]
        theta = torch.as_tensor(lo + z * width, dtype=torch.float32, device=device)
        with torch.no_grad():
            flux = torch.cat([model.flux(theta[i : i + chunk]) for i in range(0, size, chunk)])
        return cls(z, flux, flux.mean(0))

    def chi2(self, obs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Approximate chi^2 (n, M) of spectra ``obs`` with inverse variances ``w`` (n, n_pix)
        against every bank spectrum: two float32 matrix products on flux centred on the bank mean."""
        o = (obs - self.centre.to(obs.dtype)).float()
        wf = w.float()
        f = self.flux - self.centre
        return (wf * o * o).sum(1, keepdim=True) - 2 * (wf * o) @ f.T + wf @ (f * f).T


def _t_logpdf_np(z: np.ndarray, mu: np.ndarray, cinv: np.ndarray, logdet: np.ndarray, df: float) -> np.ndarray:
    """log density (N, K) of Student-t components with centres mu (K, P), inverse Cholesky
    factors cinv (K, P, P) and log det of the scale matrices (K,), at z (N, P)."""
    p = z.shape[1]
    sol = np.einsum("kij,nkj->nki", cinv, z[:, None, :] - mu[None])
    maha = (sol**2).sum(-1)
    const = math.lgamma((df + p) / 2) - math.lgamma(df / 2) - p / 2 * math.log(df * math.pi)
    return const - 0.5 * logdet[None] - (df + p) / 2 * np.log1p(maha / df)


class _TMix:
    """sum_k pi_k t_df(mu_k, L_k L_k^T) in box coordinates (numpy; a proposal of one round)."""

    def __init__(self, mu: np.ndarray, chol: np.ndarray, logpi: np.ndarray, df: float):
        self.mu, self.chol, self.df = mu, chol, df
        self.logpi = logpi - np.logaddexp.reduce(logpi)
        self.cinv = np.linalg.inv(chol)
        self.logdet = 2 * np.log(np.abs(np.einsum("kii->ki", chol))).sum(1)

    def logpdf(self, z: np.ndarray) -> np.ndarray:
        return np.logaddexp.reduce(_t_logpdf_np(z, self.mu, self.cinv, self.logdet, self.df) + self.logpi, axis=1)

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
        inside = lambda z: ((z >= 0) & (z <= 1)).all(1)
        tried, accepted = 2 * aux, int(inside(self._pairs(rng, aux)).sum())
        rate = max(accepted, 1) / tried
        z = self._pairs(rng, max(1, math.ceil(m / (2 * rate))))
        ok = inside(z)
        self.log_z = math.log(max(accepted + int(ok.sum()), 1) / (tried + len(z)))
        return z[ok], (np.arange(len(z)) // 2)[ok]

    def logpdf_inside(self, z: np.ndarray) -> np.ndarray:
        """log density of the truncated mixture (after :meth:`sample_inside`), -inf outside the box."""
        inside = ((z >= 0) & (z <= 1)).all(1)
        return np.where(inside, self.logpdf(z) - self.log_z, -np.inf)


def _weighted_stats(x: np.ndarray, logw: np.ndarray, groups: np.ndarray) -> tuple[float, float, float, float]:
    """Self-normalised mean, sd, delta-method standard error (groups of correlated draws, e.g.
    antithetic pairs, as the independent units) and ESS of values x with log weights logw."""
    wbar = np.exp(logw - np.logaddexp.reduce(logw))
    mean = float(wbar @ x)
    d = x - mean
    sd = math.sqrt(max(float(wbar @ d**2), 0.0))
    se = math.sqrt(float((np.bincount(groups, weights=wbar * d) ** 2).sum()))
    return mean, sd, se, float(1.0 / (wbar**2).sum())


def _moment_matched(z: np.ndarray, logw: np.ndarray, inflate: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre and Cholesky factor (inflated) of the weighted samples' mean and covariance."""
    wbar = np.exp(logw - np.logaddexp.reduce(logw))
    mean = wbar @ z
    d = z - mean
    cov = (wbar[:, None] * d).T @ d
    cov = 0.5 * (cov + cov.T) + 1e-10 * np.eye(z.shape[1])
    return mean, np.linalg.cholesky(cov * inflate**2)


def find_modes(
    model, obs: torch.Tensor, sigma: torch.Tensor, box: torch.Tensor, bank: PriorBank, config
) -> tuple[list, torch.Tensor]:
    """Local likelihood maxima of each spectrum, in box coordinates: LM fits
    (:func:`specscale.models.oracle.levenberg_marquardt`) started from the best bank member and
    from up to ``n_starts - 1`` further members at least ``start_separation`` from the chosen ones
    whose bank chi^2 is within ``start_window`` of the best (another mode). Returns per spectrum
    (z (S, P), chi2 (S,), cov (S, P, P)): the converged starts and their Laplace covariances
    (J^T W J in box units + 12 I)^-1. Also returns the bank chi^2 (n, M) (approximate)."""
    n, p = obs.shape[0], box.shape[0]
    w = sigma.pow(-2)
    chi2_bank = bank.chi2(obs, w)
    k = min(32, chi2_bank.shape[1])
    best_chi2, cand = torch.topk(chi2_bank, k, dim=1, largest=False)
    cand = cand.cpu().numpy()
    best_chi2 = best_chi2.double().cpu().numpy()
    star, z0 = [], []
    for i in range(n):
        chosen = [cand[i, 0]]
        for j in range(1, k):
            if len(chosen) >= config.n_starts or best_chi2[i, j] > best_chi2[i, 0] + config.start_window:
                break
            dist = np.abs(bank.z[cand[i, j]] - bank.z[chosen]).max(1).min()
            if dist > config.start_separation:
                chosen.append(cand[i, j])
        star += [i] * len(chosen)
        z0.append(bank.z[chosen])
    star = np.asarray(star)
    st = torch.as_tensor(star, device=obs.device)
    z0 = torch.as_tensor(np.concatenate(z0), dtype=torch.float64, device=obs.device)
    b = config.jac_batch
    fits = [
        levenberg_marquardt(
            model, obs[st[a : a + b]], sigma[st[a : a + b]], z0[a : a + b], box, config.iterations, 1e-3, config.lm_tol
        )
        for a in range(0, len(z0), b)
    ]
    z, chi2 = torch.cat([f[0] for f in fits]), torch.cat([f[1] for f in fits])
    width = box[:, 1] - box[:, 0]
    prec = []
    for a in range(0, len(z), b):
        _, jac = model.jacobian(box[:, 0] + z[a : a + b] * width)
        jw = jac * width / sigma[st[a : a + b], :, None]
        prec.append(jw.transpose(1, 2) @ jw)
    prec = torch.cat(prec) + 12.0 * torch.eye(p, dtype=torch.float64, device=obs.device)
    cov = torch.linalg.inv(prec).cpu().numpy()
    z, chi2 = z.cpu().numpy(), chi2.cpu().numpy()
    modes = [(z[star == i], chi2[star == i], cov[star == i]) for i in range(n)]
    return modes, chi2_bank


def _laplace_mixture(z: np.ndarray, chi2: np.ndarray, cov: np.ndarray, config) -> _TMix:
    """The round-1 proposal: one t per distinct local maximum within ``chi2_window`` of the best,
    weighted by its Laplace evidence exp(-chi2/2) sqrt(det C)."""
    keep: list[int] = []
    for j in np.argsort(chi2):
        if chi2[j] > chi2.min() + config.chi2_window:
            break
        if all(np.abs(z[j] - z[k]).max() > 0.02 for k in keep):
            keep.append(int(j))
    c = cov[keep]
    chol = np.linalg.cholesky(0.5 * (c + c.transpose(0, 2, 1)) * config.inflate**2)
    logpi = -0.5 * (chi2[keep] - chi2[keep].min()) + 0.5 * np.linalg.slogdet(c)[1]
    return _TMix(z[keep], chol, logpi, config.df)


def posterior_batched(
    model,
    obs: np.ndarray,
    sigma: np.ndarray,
    box: np.ndarray,
    rows: np.ndarray,
    config: BayesConfig | None = None,
    index: int = LOGG,
    device: str = "cpu",
    bank: PriorBank | None = None,
) -> dict[str, np.ndarray]:
    """Posterior mean and sd of parameter ``index`` (physical units), MC standard error, ESS and
    simulations used, per spectrum, by adaptive multiple importance sampling, stars batched
    through the simulator. ``model`` has ``flux`` and ``jacobian``; obs, sigma (n, n_pix); box
    (P, 2); ``rows`` (n,) star ids seeding each star's own random stream; ``bank`` the prior bank
    (default: ``config.bank_size`` Sobol draws simulated here).

    Per star: (1) the bank (prior draws, simulated once for all stars) is scored by two matrix
    products; its best members start LM fits (:func:`find_modes`); (2) round 1 draws
    ``round_samples`` from the Laplace t mixture of the modes; round r >= 2 draws twice as many
    as round r-1 from half the Laplace mixture plus half a t moment-matched to the weighted
    samples so far; rounds stop when mc_se <= ``mc_target`` x posterior sd or ``n_samples``
    draws are spent. Every draw and every bank member is weighted against the deterministic
    mixture M u(z) + sum_r n_r q_r(z) (multiple importance sampling, balance heuristic; u the
    uniform prior the bank was drawn from): the bank is the defensive component, at no
    simulation cost. Draws come in antithetic pairs; the delta-method standard error takes the
    pairs (and the single bank members) as its independent units."""
    config = config or BayesConfig()
    dev = torch.device(device)
    box_t = torch.as_tensor(box, dtype=torch.float64, device=dev)
    lo, width = box[:, 0], box[:, 1] - box[:, 0]
    clock0 = time.process_time()
    if bank is None:
        bank = PriorBank.simulate(model, box, config.bank_size, config.seed, dev, config.sim_batch)
    m_bank = len(bank.z)
    n = len(obs)
    clock = {"bank": time.process_time() - clock0, "modes": 0.0, "proposals": 0.0, "simulate": 0.0, "weights": 0.0}
    out = {k: np.empty(n) for k in ("mean", "sd", "mc_se", "ess", "n_components", "n_sims", "mle", "chi2_min")}
    for a in range(0, n, config.batch):
        sl = slice(a, min(n, a + config.batch))
        obs_t = torch.as_tensor(np.ascontiguousarray(obs[sl]), dtype=torch.float64, device=dev)
        sig_t = torch.as_tensor(np.ascontiguousarray(sigma[sl]), dtype=torch.float64, device=dev)
        w_t = sig_t.pow(-2)
        with torch.no_grad():
            t0 = time.process_time()
            modes, chi2_bank = find_modes(model, obs_t, sig_t, box_t, bank, config)
            clock["modes"] += time.process_time() - t0
            # bank members that can carry weight (chi^2 within 80 of the best mode's: lighter ones
            # weigh < e^-40 of it); the 256 lowest recomputed exactly in float64 (the centred float32
            # products are good to ~1e-6 of chi^2, i.e. ~0.01 at S/N 70 per pixel)
            best = torch.as_tensor(np.array([c.min() for _, c, _ in modes]), device=dev)
            chi2_bank = chi2_bank.double()
            near = chi2_bank <= (best + 80.0 + 2e-6 * chi2_bank.min(1).values)[:, None]
        stars = []
        for i in range(obs_t.shape[0]):
            z_m, c_m, cov_m = modes[i]
            idx = near[i].nonzero()[:, 0]
            with torch.no_grad():
                chi_b = chi2_bank[i, idx]
                top = torch.topk(chi_b, min(256, len(idx)), largest=False).indices
                chi_b[top] = ((obs_t[i] - bank.flux[idx[top]].double()) ** 2 * w_t[i]).sum(-1)
                chi_b = chi_b.cpu().numpy()
            st = {
                "rng": np.random.Generator(np.random.Philox(key=seed_key("bayes", config.seed, int(rows[a + i])))),
                "laplace": _laplace_mixture(z_m, c_m, cov_m, config),
                "z": bank.z[idx.cpu().numpy()],
                "chi2": chi_b,
                "groups": np.arange(len(idx)),  # independent units of the MC error (a bank member, a pair)
                "rounds": [],  # (mixture, draws)
                "drawn": 0,
            }
            stars.append(st)
            j = int(np.argmin(c_m))
            out["mle"][a + i] = lo[index] + z_m[j, index] * width[index]
            out["chi2_min"][a + i] = c_m[j]
        active = list(range(len(stars)))
        size = config.round_samples
        while active:
            t0 = time.process_time()
            draws = []
            for i in active:
                st = stars[i]
                if not st["rounds"]:
                    q = st["laplace"]
                else:
                    mu, chol = _moment_matched(st["z"], st["logw"], config.inflate)
                    lap = st["laplace"]
                    q = _TMix(
                        np.concatenate([lap.mu, mu[None]]),
                        np.concatenate([lap.chol, chol[None]]),
                        np.concatenate([lap.logpi + math.log(0.5), [math.log(0.5)]]),
                        config.df,
                    )
                z, pair = q.sample_inside(st["rng"], max(2, min(size, config.n_samples - st["drawn"])))
                st["rounds"].append((q, len(z)))
                st["drawn"] += len(z)
                top = int(st["groups"].max()) + 1 if len(st["groups"]) else 0
                st["groups"] = np.concatenate([st["groups"], top + pair])
                draws.append((i, z))
            clock["proposals"] += time.process_time() - t0
            t0 = time.process_time()
            # simulate every star's draws inside the box in float32 batches
            theta = np.concatenate([lo + z * width for _, z in draws])
            owner = [np.full(len(z), i) for i, z in draws]
            own = torch.as_tensor(np.concatenate(owner), device=dev)
            chi = np.empty(len(theta))
            with torch.no_grad():
                th = torch.as_tensor(theta, dtype=torch.float32, device=dev)
                for s in range(0, len(theta), config.sim_batch):
                    f = model.flux(th[s : s + config.sim_batch]).double()
                    o = own[s : s + config.sim_batch]
                    chi[s : s + config.sim_batch] = (((obs_t[o] - f) ** 2) * w_t[o]).sum(-1).cpu().numpy()
            clock["simulate"] += time.process_time() - t0
            t0 = time.process_time()
            pos = 0
            for i, z in draws:
                st = stars[i]
                st["n_sims"] = st.get("n_sims", 0) + len(z)
                st["z"] = np.concatenate([st["z"], z])
                st["chi2"] = np.concatenate([st["chi2"], chi[pos : pos + len(z)]])
                pos += len(z)
                # log of M u(z) + sum_r n_r q_r(z) / Z_r at every sample (all inside the box, u = 1)
                zz = st["z"]
                log_mix = np.full(len(zz), math.log(m_bank))
                for q, cnt in st["rounds"]:
                    log_mix = np.logaddexp(log_mix, math.log(cnt) + q.logpdf_inside(zz))
                st["logw"] = -0.5 * (st["chi2"] - st["chi2"].min()) - log_mix
                x = lo[index] + zz[:, index] * width[index]
                st["stats"] = _weighted_stats(x, st["logw"], st["groups"])
            clock["weights"] += time.process_time() - t0
            active = [
                i
                for i in active
                if (
                    stars[i]["stats"][2] > config.mc_target * stars[i]["stats"][1]
                    or stars[i]["stats"][3] < config.min_ess
                    or len(stars[i]["rounds"]) < config.min_rounds
                )
                and stars[i]["drawn"] < config.n_samples
            ]
            size *= 2
        for i, st in enumerate(stars):
            mean, sd, se, ess = st["stats"]
            out["mean"][a + i], out["sd"][a + i], out["mc_se"][a + i], out["ess"][a + i] = mean, sd, se, ess
            out["n_components"][a + i] = len(st["laplace"].mu)
            out["n_sims"][a + i] = st["n_sims"]
    out["cpu_seconds"] = clock
    return out


def r2_mc_error(y_true: np.ndarray, y_mean: np.ndarray, mc_se: np.ndarray) -> dict[str, float]:
    """R^2 of posterior means with its errors and the MC-debiased value.

    - r2: 1 - SSE/SST of the estimated posterior means (biased low by the MC noise);
    - r2_debiased: r2 + sum(mc_se^2)/SST (the MC noise's expected share of the SSE added back): an
      estimate of the R^2 of the exact posterior means on these stars;
    - r2_mc_se: its MC standard error 2 sqrt(sum(resid^2 mc_se^2))/SST (delta method);
    - r2_sampling_se: the standard error of an R^2 over these N stars as an estimate of the
      population's (stars drawn from the prior), delta method for the ratio SSE/SST:
      sqrt(sum((e_i - rho d_i)^2)) / sum(d_i), e_i = resid_i^2, d_i = (y_i - mean y)^2, rho = SSE/SST;
    - r2_err: the total sqrt(r2_mc_se^2 + r2_sampling_se^2).
    """
    y_true, y_mean, mc_se = (np.asarray(a, np.float64) for a in (y_true, y_mean, mc_se))
    d = (y_true - y_true.mean()) ** 2 if y_true.size else y_true
    sst = float(np.sum(d))
    keys = ("r2", "r2_mc_se", "r2_debiased", "r2_sampling_se", "r2_err")
    if y_true.size < 2 or sst <= 0:
        return dict.fromkeys(keys, float("nan"))
    resid = y_mean - y_true
    e = resid**2
    r2 = 1.0 - float(np.sum(e)) / sst
    mc = 2.0 * float(np.sqrt(np.sum(e * mc_se**2))) / sst
    sampling = float(np.sqrt(np.sum((e - (1.0 - r2) * d) ** 2))) / sst
    return {
        "r2": r2,
        "r2_mc_se": mc,
        "r2_debiased": r2 + float(np.sum(mc_se**2)) / sst,
        "r2_sampling_se": sampling,
        "r2_err": math.hypot(mc, sampling),
    }


def resolve_method(method: str, source: Source) -> str:
    """``auto`` -> batched where the source has its simulator (synthetic datasets), else bank."""
    if method != "auto":
        return method
    cfg = getattr(source, "config", None)
    return "batched" if isinstance(cfg, dict) and "atmosphere" in cfg else "bank"


def _per_star(source, obs, flux, sigma, mask, noise, mag, config, oracle, device):
    """The previous implementation: the oracle's multi-start fit, then posterior_moments."""
    ora = OracleModel(oracle or OracleParams(), seed=config.seed, device=device)
    info = ora.fit(source, Cell(noise, mag, "oracle", 1, config.seed), None)
    if mask is not None:  # the window's pixels only, for the starts, the fits and the samples
        ora.model = PixelSubset(ora.model, mask)
        ora.bank_flux = ora.bank_flux[:, torch.as_tensor(np.flatnonzero(mask), device=ora.bank_flux.device)]
    fit = ora.fit_spectra(flux, sigma)
    box = prior_box(source)
    modes_z = (fit.theta_starts - box[:, 0]) / (box[:, 1] - box[:, 0])
    post = posterior_moments(
        ora.model,
        flux,
        sigma,
        box,
        np.clip(modes_z, 0, 1),
        fit.chi2_starts,
        obs.rows,
        config,
        device=str(ora.torch_device),
    )
    post["mle"] = fit.theta[:, LOGG]
    post["n_sims"] = np.full(len(flux), float(config.n_samples))
    return post, {"oracle": to_jsonable(ora.params), "oracle_fit": info}, str(ora.torch_device)


def bayes_reference(
    source: Source,
    noise: float,
    mag,
    n_stars: int = 200,
    config: BayesConfig | None = None,
    oracle: OracleParams | None = None,
    fisher: FisherConfig | None = None,
    device: str = "cpu",
    window=None,
) -> xr.Dataset:
    """Posterior-mean log g of the first ``n_stars`` test stars of a cell (noise level, magnitude
    cell), with the maximum-likelihood estimate (where the method fits one) and the Fisher ceiling
    of the same stars. ``config.method`` (METHODS): batched (default for synthetic datasets),
    per_star (the previous implementation; ``oracle`` sets its multi-start fit), bank (default for
    files without a simulator; :mod:`specscale.ceiling.bank`). ``window``: a window spec
    (:mod:`specscale.models.features`): the likelihood (and the Fisher ceiling beside it) uses
    those pixels only, so a window model has its own reference on the same stars.

    Scalars: r2_reference (the headline: r2_bayes_debiased, MC noise added back; bank: raw),
    r2_bayes (raw), r2_bayes_debiased,
    r2_bayes_mc_se, r2_bayes_sampling_se, r2_bayes_err (total; :func:`r2_mc_error`), rmse_bayes
    (dex), r2_bayes_snr_bin (r2_reference per S/N bin), ESS and MC summaries, the ceilings."""
    config = config or BayesConfig()
    if not (np.isfinite(noise) and noise > 0):
        raise ConfigError(f"noise level must be a positive number, got {noise}")
    source.check_cell(mag)
    if not isinstance(n_stars, int) or not 1 <= n_stars <= source.n("test"):
        raise ConfigError(
            f"--stars must be between 1 and the {source.n('test')} test stars of {source.path}, got {n_stars}"
        )
    method = resolve_method(config.method, source)
    mask = window_pixels(source, window)
    if method != "bank":
        simulator_of(source)  # fails before any work where there is none
    # the ceiling first: for a synthetic dataset it checks the simulator against the stored flux
    ceil = cell_ceiling(source, noise, mag, n_stars, fisher, window=window)
    obs = source.observed("test", np.arange(n_stars), mag, noise)
    keep = slice(None) if mask is None else mask
    flux, sigma = obs.flux[:, keep], obs.sigma[:, keep]
    box = prior_box(source)
    extra: dict = {}
    t0 = time.perf_counter()
    if method == "per_star":
        post, extra, dev = _per_star(source, obs, flux, sigma, mask, noise, mag, config, oracle, device)
    elif method == "batched":
        dev = resolve_device(device)
        model = simulator_of(source)
        model = model if mask is None else PixelSubset(model, mask)
        post = posterior_batched(model, flux, sigma, box, obs.rows, config, device=dev)
        extra = {"cpu_seconds": post.pop("cpu_seconds")}
    else:
        dev = resolve_device(device)
        weights = obs.error if config.bank_sigma == "error" else obs.sigma
        post = bank_posterior(source, obs.flux, weights, mag, groups=config.bank_groups, mask=mask, device=dev)
        post["n_sims"] = np.zeros(n_stars)
    seconds = time.perf_counter() - t0
    y = obs.labels[:, LOGG].astype(np.float64)
    ev_b = evaluate(y, post["mean"], obs.snr)
    mc = r2_mc_error(y, post["mean"], post["mc_se"])
    bins = np.digitize(obs.snr, SNR_EDGES[1:-1])
    # the headline: MC-debiased for the sampling methods; raw for the bank, whose error is no zero-mean noise
    headline = "r2" if method == "bank" else "r2_debiased"
    r2_bins = np.array(
        [
            r2_mc_error(y[bins == i], post["mean"][bins == i], post["mc_se"][bins == i])[headline]
            for i in range(len(SNR_BIN_LABELS))
        ]
    )
    data = {
        "logg": ("star", y),
        "snr": ("star", obs.snr.astype(np.float64)),
        "posterior_mean": ("star", post["mean"]),
        "posterior_sd": ("star", post["sd"]),
        "mc_se": ("star", post["mc_se"]),
        "ess": ("star", post["ess"]),
        "n_sims": ("star", post["n_sims"].astype(np.float64)),
        "crlb_marginal": ("star", ceil["crlb_marginal"].values),
        "r2_bayes_snr_bin": ("snr_bin", r2_bins),
        "n_snr_bin": ("snr_bin", np.array([int((bins == i).sum()) for i in range(len(SNR_BIN_LABELS))])),
    }
    if "n_components" in post:
        data["n_components"] = ("star", post["n_components"].astype(np.int64))
    scalars = {
        "r2_bayes": ev_b["r2"],
        "r2_reference": mc[headline],
        "r2_bayes_debiased": mc["r2_debiased"],
        "r2_bayes_mc_se": mc["r2_mc_se"],
        "r2_bayes_sampling_se": mc["r2_sampling_se"],
        "r2_bayes_err": mc["r2_err"],
        "rmse_bayes": ev_b["rmse"],
        "r2_bayes_top20": ev_b["r2_top20"],
        "ess_min": float(post["ess"].min()),
        "ess_median": float(np.median(post["ess"])),
        "mc_se_median": float(np.median(post["mc_se"])),
        "n_sims_mean": float(np.mean(post["n_sims"])),
        "seconds": seconds,
        "snr_median": float(np.median(obs.snr)),
        **{k: float(ceil[k]) for k in ("ceiling_pop", "ceiling_median", "ceiling_pop_3d", "ceiling_median_3d")},
    }
    if "mean_half" in post:  # bank: half the bank, a convergence check (its R^2 rises with the bank)
        data["posterior_mean_half_bank"] = ("star", post["mean_half"])
        scalars["r2_bank_half"] = r2_mc_error(y, post["mean_half"], post["mc_se"])["r2"]
    if "mle" in post:
        ev_m = evaluate(y, post["mle"], obs.snr)
        data["mle"] = ("star", post["mle"])
        scalars.update(r2_mle=ev_m["r2"], rmse_mle=ev_m["rmse"], r2_mle_top20=ev_m["r2_top20"])
    data.update({k: ((), v) for k, v in scalars.items()})
    prov = provenance(
        config={"bayes": to_jsonable(config), **({"oracle": extra["oracle"]} if "oracle" in extra else {})},
        dataset_id=source.dataset_id,
        seed=config.seed,
        device=str(dev),
    )
    prov.update({"source": source.describe(), **{k: v for k, v in extra.items() if k != "oracle"}})
    attrs = {
        "provenance": json.dumps(prov, sort_keys=True, default=str),
        "noise": float(noise),
        "mag": MagRange.parse(mag).label(),
        "n_stars": n_stars,
        "dataset_id": source.dataset_id,
        "method": method,
        "method_description": METHODS[method],
        "window": window_label(window),
        "n_pixels": int(flux.shape[1]),
        "definitions": json.dumps(DEFINITIONS),
    }
    coords = {
        "star": obs.rows,
        "snr_bin": list(SNR_BIN_LABELS),
        "snr_bin_lo": ("snr_bin", np.array(SNR_EDGES[:-1])),
        "snr_bin_hi": ("snr_bin", np.array(SNR_EDGES[1:])),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


DEFINITIONS = {
    "posterior_mean": "posterior mean of log g (dex) under the uniform prior of the dataset, the true simulator and "
    "the true per-pixel sigma (method bank: the bank's weights, see specscale.ceiling.bank)",
    "posterior_sd": "posterior standard deviation of log g (dex)",
    "mc_se": "Monte-Carlo standard error of posterior_mean (dex): delta method over independent draws (antithetic "
    "pairs) for batched/per_star, delete-a-group jackknife over the bank for bank",
    "ess": "effective sample size (sum w)^2 / sum w^2 of the normalised weights",
    "n_sims": "simulator evaluations spent on the star (bank and mode fits not counted)",
    "r2_bayes": "R^2 of posterior_mean over these stars (specscale.models.metrics)",
    "r2_bayes_debiased": "r2_bayes + sum(mc_se^2) / SST: the R^2 of the exact posterior means (MC noise added back)",
    "r2_bayes_mc_se": "MC standard error of the R^2: 2 sqrt(sum(resid^2 mc_se^2)) / SST",
    "r2_bayes_sampling_se": "standard error of an R^2 over these stars as the population's: delta method for SSE/SST",
    "r2_bayes_err": "total error sqrt(r2_bayes_mc_se^2 + r2_bayes_sampling_se^2)",
    "r2_reference": "the reference's R^2, the headline: r2_bayes_debiased (batched, per_star), r2_bayes (bank: its "
    "error is resolution, not zero-mean MC noise)",
    "r2_bayes_snr_bin": "r2_reference of the stars in each S/N bin (NaN for fewer than 2)",
    "rmse_bayes": "RMSE of posterior_mean (dex)",
    "mle": "the maximum-likelihood log g (dex) of the mode fits; r2_mle its R^2 on the same stars",
    "r2_bank_half": "bank method: the R^2 from half the bank (every other jackknife group); the bank estimate is "
    "biased low where the posterior is narrower than the bank's spacing, so r2_bayes - r2_bank_half > 0 says the "
    "bank has not converged (RESULTS-ceiling.md: bank vs exact)",
    "ceiling_*": "the Fisher ceilings of the same stars and pixels (specscale.ceiling.fisher)",
}
