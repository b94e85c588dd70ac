"""The Bayes reference: the minimum-mean-squared-error log g, i.e. the posterior mean under the
dataset's uniform prior, for a subset of test stars, written with its Monte-Carlo and sampling
errors and the Fisher ceiling of the same stars (:func:`bayes_reference`).

No estimator has a lower expected squared error over stars drawn from the prior, so the R^2 of
the posterior mean is the shrinkage-aware ceiling (the CRLB only bounds unbiased estimators; a
trained regressor shrinks towards the prior mean and can beat it at low S/N).

Posterior p(theta | x) ~ exp(-chi^2(theta) / 2) on the prior box: Gaussian pixel noise with the
star's TRUE per-pixel sigma (``Observed.sigma``, taken as known: its weak dependence on theta
through the object's shot noise is ignored, as in the Fisher ceiling and the oracle) and the
dataset's own simulator. What the reference is, per source (``BayesConfig.method``, METHODS):

- synthetic datasets (the simulator is in the file): ``batched``
  (:func:`specscale.ceiling.sampler.posterior_batched`), exact up to its reported Monte-Carlo error.
- files without a simulator (the study's PFS files): ``bank``, the noiseless training spectra as
  prior draws weighted by the likelihood (:mod:`specscale.ceiling.bank`; approximate where the
  posterior is narrower than the bank's spacing, measured there).

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

import numpy as np
import xarray as xr

from specscale.ceiling.bank import bank_posterior
from specscale.ceiling.configs import METHODS, BayesConfig, FisherConfig
from specscale.ceiling.fisher import cell_ceiling, window_pixels
from specscale.ceiling.sampler import PixelSubset, posterior_batched
from specscale.core.config import ConfigError, to_jsonable
from specscale.core.hardware import resolve_device
from specscale.core.provenance import provenance
from specscale.core.vocab import LOGG, SNR_BIN_LABELS, MagRange, snr_bin_coords, snr_bin_index
from specscale.data.simulator import prior_box, simulator_of
from specscale.data.sources import Source
from specscale.models.metrics import evaluate
from specscale.sim.windows import window_label


def bayes_reference(
    source: Source,
    noise: float,
    mag,
    n_stars: int = 200,
    config: BayesConfig | None = None,
    fisher: FisherConfig | None = None,
    device: str = "cpu",
    window=None,
) -> xr.Dataset:
    """Posterior-mean log g of the first ``n_stars`` test stars of a cell (noise level, magnitude
    cell), with the maximum-likelihood estimate (where the method fits one) and the Fisher ceiling
    of the same stars. ``config.method`` (METHODS): batched (default for synthetic datasets), bank
    (default for files without a simulator; :mod:`specscale.ceiling.bank`). ``window``: a window
    spec (:mod:`specscale.sim.windows`): the likelihood (and the Fisher ceiling beside it) uses
    those pixels only, so a window model has its own reference on the same stars.

    Scalars: r2_reference (the headline: r2_bayes_debiased, MC noise added back; bank: raw),
    r2_bayes (raw), r2_bayes_debiased, r2_bayes_mc_se, r2_bayes_sampling_se, r2_bayes_err (total;
    :func:`r2_mc_error`), rmse_bayes (dex), r2_bayes_snr_bin (r2_reference per S/N bin), ESS and MC
    summaries, the ceilings."""
    config = config or BayesConfig()
    _check_request(source, noise, mag, n_stars)
    method = method_of(config.method, source)
    mask = window_pixels(source, window)
    if method != "bank":
        simulator_of(source)  # fails before any work where there is none
    # the ceiling first: for a synthetic dataset it checks the simulator against the stored flux
    ceil = cell_ceiling(source, noise, mag, n_stars, fisher, window=window)
    obs = source.observed("test", np.arange(n_stars), mag, noise)
    t0 = time.perf_counter()
    post, extra, dev = _posterior(method, source, obs, mask, mag, config, device)
    seconds = time.perf_counter() - t0
    data = _variables(obs, post, ceil, method, seconds)
    prov = provenance(
        config={"bayes": to_jsonable(config)}, dataset_id=source.dataset_id, seed=config.seed, device=str(dev)
    )
    prov.update({"source": source.describe(), **extra})
    attrs = {
        "provenance": json.dumps(prov, sort_keys=True, default=str),
        "noise": float(noise),
        "mag": MagRange.parse(mag).label(),
        "n_stars": n_stars,
        "dataset_id": source.dataset_id,
        "method": method,
        "method_description": METHODS[method],
        "window": window_label(window),
        "n_pixels": int(obs.flux.shape[1] if mask is None else mask.sum()),
        "definitions": json.dumps(DEFINITIONS),
    }
    return xr.Dataset(data, coords={"star": obs.rows, **snr_bin_coords()}, attrs=attrs)


def _check_request(source: Source, noise: float, mag, n_stars) -> None:
    if not (np.isfinite(noise) and noise > 0):
        raise ConfigError(f"noise level must be a positive number, got {noise}")
    source.check_cell(mag)
    if not isinstance(n_stars, int) or not 1 <= n_stars <= source.n("test"):
        raise ConfigError(
            f"--stars must be between 1 and the {source.n('test')} test stars of {source.path}, got {n_stars}"
        )


def method_of(method: str, source: Source) -> str:
    """``auto`` -> batched where the source has its simulator (synthetic datasets), else bank."""
    if method != "auto":
        return method
    cfg = getattr(source, "config", None)
    return "batched" if isinstance(cfg, dict) and "atmosphere" in cfg else "bank"


def _posterior(method: str, source: Source, obs, mask, mag, config: BayesConfig, device: str):
    """Per-star posterior summaries of the observed spectra ``obs`` (window ``mask``) by ``method``,
    what the provenance records beside them, and the device used."""
    dev = resolve_device(device)
    if method == "batched":
        keep = slice(None) if mask is None else mask
        model = simulator_of(source)
        model = model if mask is None else PixelSubset(model, mask)
        post = posterior_batched(
            model, obs.flux[:, keep], obs.sigma[:, keep], prior_box(source), obs.rows, config, device=dev
        )
        return post, {"cpu_seconds": post.pop("cpu_seconds")}, dev
    weights = obs.error if config.bank_sigma == "error" else obs.sigma
    post = bank_posterior(source, obs.flux, weights, mag, groups=config.bank_groups, mask=mask, device=dev)
    post["n_sims"] = np.zeros(len(obs.flux))
    return post, {}, dev


def _variables(obs, post: dict, ceil: xr.Dataset, method: str, seconds: float) -> dict:
    """The file's variables: per star (dim star), per S/N bin (dim snr_bin) and scalars."""
    y = obs.labels[:, LOGG].astype(np.float64)
    ev_b = evaluate(y, post["mean"], obs.snr)
    mc = r2_mc_error(y, post["mean"], post["mc_se"])
    bins = snr_bin_index(obs.snr)
    # the headline: MC-debiased for the sampler; raw for the bank, whose error is no zero-mean noise
    headline = "r2" if method == "bank" else "r2_debiased"
    in_bin = [bins == i for i in range(len(SNR_BIN_LABELS))]
    data = {
        "logg": ("star", y),
        "snr": ("star", obs.snr.astype(np.float64)),
        "posterior_mean": ("star", post["mean"]),
        "posterior_sd": ("star", post["sd"]),
        "mc_se": ("star", post["mc_se"]),
        "ess": ("star", post["ess"]),
        "n_sims": ("star", post["n_sims"].astype(np.float64)),
        "crlb_marginal": ("star", ceil["crlb_marginal"].values),
        "r2_bayes_snr_bin": (
            "snr_bin",
            np.array([r2_mc_error(y[m], post["mean"][m], post["mc_se"][m])[headline] for m in in_bin]),
        ),
        "n_snr_bin": ("snr_bin", np.array([int(m.sum()) for m in in_bin])),
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
    return data


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


DEFINITIONS = {
    "posterior_mean": "posterior mean of log g (dex) under the uniform prior of the dataset, the true simulator and "
    "the true per-pixel sigma (method bank: the bank's weights, see specscale.ceiling.bank)",
    "posterior_sd": "posterior standard deviation of log g (dex)",
    "mc_se": "Monte-Carlo standard error of posterior_mean (dex): delta method over independent draws (antithetic "
    "pairs) for batched, delete-a-group jackknife over the bank for bank",
    "ess": "effective sample size (sum w)^2 / sum w^2 of the normalised weights",
    "n_sims": "simulator evaluations spent on the star (bank and mode fits not counted)",
    "r2_bayes": "R^2 of posterior_mean over these stars (specscale.models.metrics)",
    "r2_bayes_debiased": "r2_bayes + sum(mc_se^2) / SST: the R^2 of the exact posterior means (MC noise added back)",
    "r2_bayes_mc_se": "MC standard error of the R^2: 2 sqrt(sum(resid^2 mc_se^2)) / SST",
    "r2_bayes_sampling_se": "standard error of an R^2 over these stars as the population's: delta method for SSE/SST",
    "r2_bayes_err": "total error sqrt(r2_bayes_mc_se^2 + r2_bayes_sampling_se^2)",
    "r2_reference": "the reference's R^2, the headline: r2_bayes_debiased (batched), r2_bayes (bank: its "
    "error is resolution, not zero-mean MC noise)",
    "r2_bayes_snr_bin": "r2_reference of the stars in each S/N bin (NaN for fewer than 2)",
    "rmse_bayes": "RMSE of posterior_mean (dex)",
    "mle": "the maximum-likelihood log g (dex) of the mode fits; r2_mle its R^2 on the same stars",
    "r2_bank_half": "bank method: the R^2 from half the bank (every other jackknife group); the bank estimate is "
    "biased low where the posterior is narrower than the bank's spacing, so r2_bayes - r2_bank_half > 0 says the "
    "bank has not converged (RESULTS-ceiling.md: bank vs exact)",
    "ceiling_*": "the Fisher ceilings of the same stars and pixels (specscale.ceiling.fisher)",
}
