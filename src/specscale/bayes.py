"""The Bayes reference: the minimum-mean-squared-error log g, i.e. the posterior mean under the
dataset's uniform prior, for a subset of test stars.

No estimator has a lower expected squared error over stars drawn from the prior, so the R^2 of
the posterior mean is the shrinkage-aware ceiling (the CRLB only bounds unbiased estimators; a
trained regressor shrinks towards the prior mean and can beat it at low S/N).

Posterior p(theta | x) ~ exp(-chi^2(theta) / 2) on the prior box (Gaussian pixel noise with the
TRUE sigma, the dataset's own simulator). Self-normalised importance sampling with a defensive
mixture proposal (in box coordinates z in [0, 1]^4):
    q = prior_fraction * Uniform(box) + (1 - prior_fraction) * sum_k pi_k t_df(mu_k, inflate^2 C_k)
with one Student-t per distinct local likelihood maximum mu_k found by the oracle's multi-start fit
(within ``chi2_window`` of the best), C_k the Laplace covariance (J^T W J + 12 I)^-1 (the 12 I is
the precision of the uniform prior in box units: no component is wider than the prior) and
pi_k ~ exp(-chi2_k / 2) sqrt(det C_k) (the Laplace evidence). The uniform part keeps the weights
bounded wherever the t components miss posterior mass. Half the samples come from q, half from q
plus a t moment-matched to the first half's weighted samples (for banana-shaped or truncated
posteriors the Laplace misses); every sample is weighted against the average of the two densities
(multiple importance sampling, balance heuristic).

Monte-Carlo error: per star, the delta-method standard error of the self-normalised estimate,
mc_se = sqrt(sum_i wbar_i^2 (logg_i - mean)^2) (wbar: normalised weights), and the effective sample
size ESS = 1 / sum wbar_i^2. For the R^2 over the stars: MC noise adds sum mc_se^2 to the
expected SSE (reported R^2 is biased low by sum mc_se^2 / SST; ``r2_debiased`` adds it back) and
its standard error is 2 sqrt(sum (mean_i - logg_i)^2 mc_se_i^2) / SST.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from .cells import MagCell, seed_key
from .config import ConfigError, to_jsonable
from .fisher import LOGG, FisherConfig, cell_ceiling, prior_box
from .metrics import evaluate
from .models.base import TrainCell
from .models.oracle import OracleModel, OracleParams
from .provenance import provenance
from .sources import Source


@dataclass(frozen=True)
class BayesConfig:
    """Importance-sampling settings (command-line options of ``specscale bayes``)."""

    n_samples: int = 1024  # importance samples per star
    df: float = 4.0  # Student-t degrees of freedom of the proposal components
    inflate: float = 1.5  # proposal scale / Laplace scale
    prior_fraction: float = 0.1  # weight of the uniform-prior component (defensive mixture)
    chi2_window: float = 25.0  # local maxima within this chi^2 of the best become components
    seed: int = 0
    chunk: int = 512  # simulations per forward call

    def __post_init__(self):
        if not isinstance(self.n_samples, int) or self.n_samples < 16:
            raise ValueError(f"bayes n_samples must be an integer >= 16, got {self.n_samples!r}")
        if not self.df > 0 or not self.inflate > 0 or not 0 < self.prior_fraction < 1 or not self.chi2_window >= 0:
            raise ValueError("bayes: need df > 0, inflate > 0, 0 < prior_fraction < 1, chi2_window >= 0")


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


def proposal_components(model, obs: torch.Tensor, sigma: torch.Tensor, box: torch.Tensor,
                        modes_z: np.ndarray, modes_chi2: np.ndarray, config: BayesConfig):
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
        comps.append((torch.as_tensor(modes_z[i, keep], dtype=torch.float64, device=obs.device), chol,
                      logpi - torch.logsumexp(logpi, 0)))
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

    def adapted(self, z: torch.Tensor, wbar: torch.Tensor) -> "Mixture":
        """This mixture plus a t component moment-matched to the weighted samples (half the
        t weight): it follows a banana-shaped or bound-truncated posterior the Laplace misses."""
        mean = (wbar[:, None] * z).sum(0)
        d = z - mean
        cov = (wbar[:, None, None] * d[:, :, None] * d[:, None, :]).sum(0)
        cov = 0.5 * (cov + cov.T) + 1e-8 * torch.eye(len(mean), dtype=z.dtype, device=z.device)
        chol = torch.linalg.cholesky(cov * self.config.inflate**2)
        logpi = torch.cat([self.logpi + math.log(0.5), torch.tensor([math.log(0.5)], dtype=z.dtype, device=z.device)])
        return Mixture(torch.cat([self.mu, mean[None]]), torch.cat([self.chol, chol[None]]), logpi, self.config)


def posterior_moments(model, obs: np.ndarray, sigma: np.ndarray, box: np.ndarray, modes_z: np.ndarray,
                      modes_chi2: np.ndarray, rows: np.ndarray, config: BayesConfig | None = None,
                      index: int = LOGG, device: str = "cpu") -> dict[str, np.ndarray]:
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
        logq = torch.logaddexp(first.logpdf(z) + math.log(half / len(z)), second.logpdf(z) + math.log(1 - half / len(z)))
        wbar = torch.softmax(-0.5 * chi2 - logq, 0)
        x = lo[index] + z[:, index] * width[index]
        mean = (wbar * x).sum()
        out["mean"][i] = float(mean)
        out["sd"][i] = float(torch.sqrt((wbar * (x - mean) ** 2).sum()))
        out["mc_se"][i] = float(torch.sqrt((wbar**2 * (x - mean) ** 2).sum()))
        out["ess"][i] = float(1.0 / (wbar**2).sum())
        out["n_components"][i] = len(mu)
    return out


def r2_mc_error(y_true: np.ndarray, y_mean: np.ndarray, mc_se: np.ndarray) -> dict[str, float]:
    """R^2 of posterior means with its Monte-Carlo standard error and the MC-debiased value."""
    sst = float(np.sum((y_true - y_true.mean()) ** 2))
    if y_true.size < 2 or sst <= 0:
        return {"r2": float("nan"), "r2_mc_se": float("nan"), "r2_debiased": float("nan")}
    resid = y_mean - y_true
    r2 = 1.0 - float(np.sum(resid**2)) / sst
    return {"r2": r2, "r2_mc_se": 2.0 * float(np.sqrt(np.sum(resid**2 * mc_se**2))) / sst,
            "r2_debiased": r2 + float(np.sum(mc_se**2)) / sst}


def bayes_reference(source: Source, noise: float, mag, n_stars: int = 200, config: BayesConfig | None = None,
                    oracle: OracleParams | None = None, fisher: FisherConfig | None = None,
                    device: str = "cpu") -> xr.Dataset:
    """Posterior-mean log g of the first ``n_stars`` test stars of a cell (noise level, magnitude
    cell), with the oracle's maximum-likelihood estimate and the Fisher ceiling of the same stars."""
    config = config or BayesConfig()
    if not (np.isfinite(noise) and noise > 0):
        raise ConfigError(f"noise level must be a positive number, got {noise}")
    source.check_cell(mag)
    if not isinstance(n_stars, int) or not 1 <= n_stars <= source.n("test"):
        raise ConfigError(f"--stars must be between 1 and the {source.n('test')} test stars of {source.path}, got {n_stars}")
    ora = OracleModel(oracle or OracleParams(), seed=config.seed, device=device)
    info = ora.fit(source, TrainCell(float(noise), MagCell.parse(mag), 1, config.seed), None)
    obs = source.observed("test", np.arange(n_stars), mag, noise)
    fit = ora.fit_spectra(obs.flux, obs.sigma)
    box = prior_box(source)
    modes_z = (fit.theta_starts - box[:, 0]) / (box[:, 1] - box[:, 0])
    post = posterior_moments(ora.model, obs.flux, obs.sigma, box, np.clip(modes_z, 0, 1), fit.chi2_starts,
                             obs.rows, config, device=str(ora.torch_device))
    y = obs.labels[:, LOGG].astype(np.float64)
    ev_b, ev_m = evaluate(y, post["mean"], obs.snr), evaluate(y, fit.theta[:, LOGG], obs.snr)
    ceil = cell_ceiling(source, noise, mag, n_stars, fisher)
    data = {
        "logg": ("star", y), "snr": ("star", obs.snr.astype(np.float64)),
        "posterior_mean": ("star", post["mean"]), "posterior_sd": ("star", post["sd"]),
        "mc_se": ("star", post["mc_se"]), "ess": ("star", post["ess"]),
        "n_components": ("star", post["n_components"].astype(np.int64)),
        "mle": ("star", fit.theta[:, LOGG]), "crlb_marginal": ("star", ceil["crlb_marginal"].values),
    }
    mc = r2_mc_error(y, post["mean"], post["mc_se"])
    scalars = {
        "r2_bayes": ev_b["r2"], "r2_bayes_mc_se": mc["r2_mc_se"], "r2_bayes_debiased": mc["r2_debiased"],
        "rmse_bayes": ev_b["rmse"], "r2_bayes_top20": ev_b["r2_top20"],
        "r2_mle": ev_m["r2"], "rmse_mle": ev_m["rmse"], "r2_mle_top20": ev_m["r2_top20"],
        "ess_min": float(post["ess"].min()), "ess_median": float(np.median(post["ess"])),
        "mc_se_median": float(np.median(post["mc_se"])), "snr_median": float(np.median(obs.snr)),
        **{k: float(ceil[k]) for k in ("ceiling_pop", "ceiling_median", "ceiling_pop_3d", "ceiling_median_3d")},
    }
    data.update({k: ((), v) for k, v in scalars.items()})
    prov = provenance(config={"bayes": to_jsonable(config), "oracle": to_jsonable(ora.params)},
                      dataset_id=source.dataset_id, seed=config.seed, device=str(ora.torch_device))
    prov.update({"source": source.describe(), "oracle_fit": info})
    attrs = {"provenance": json.dumps(prov, sort_keys=True, default=str), "noise": float(noise),
             "mag": str(mag), "n_stars": n_stars, "dataset_id": source.dataset_id,
             "definitions": json.dumps({
                 "posterior_mean": "importance-sampled posterior mean of log g (dex) under the uniform prior",
                 "mc_se": "Monte-Carlo standard error of posterior_mean (dex), from the normalised weights",
                 "ess": "effective sample size 1 / sum(wbar^2)",
                 "r2_bayes": "R^2 of posterior_mean over these stars (specscale.metrics); r2_bayes_mc_se its MC "
                 "standard error; r2_bayes_debiased adds back the MC noise sum(mc_se^2)/SST",
                 "mle": "the oracle's maximum-likelihood log g", "r2_mle": "its R^2 on the same stars",
                 "ceiling_*": "the Fisher ceilings of the same stars (specscale.fisher)",
             })}
    return xr.Dataset(data, coords={"star": obs.rows}, attrs=attrs)
