"""The Bayes (MMSE) reference: exact on a case with a closed form, honest Monte-Carlo errors, and
the cell reference on simulated spectra."""

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.stats import truncnorm

from specscale.ceiling.bank import bank_posterior
from specscale.ceiling.bayes import bayes_reference, r2_mc_error
from specscale.ceiling.configs import BayesConfig
from specscale.ceiling.jacobians import forward_jacobian
from specscale.ceiling.sampler import PriorBank, posterior_batched
from specscale.cli import main
from specscale.data.simulate import SimulationConfig, simulate
from specscale.data.sources import open_source

pytestmark = pytest.mark.usefixtures("one_thread")


class Linear:
    """flux = A theta: a Gaussian likelihood, so under a box prior the posterior is a truncated normal."""

    def __init__(self, a):
        self.a = torch.as_tensor(a)

    def flux(self, theta):
        return theta @ self.a.to(theta.dtype).T

    def jacobian(self, theta):
        return forward_jacobian(self.flux, theta)


def test_mc_standard_error_of_r2():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = np.array([1.1, 1.9, 3.2, 3.9])
    se = np.array([0.01, 0.02, 0.01, 0.03])
    out = r2_mc_error(y, m, se)
    sst = 5.0
    assert out["r2"] == pytest.approx(1 - 0.07 / sst)
    assert out["r2_mc_se"] == pytest.approx(2 * np.sqrt(np.sum((m - y) ** 2 * se**2)) / sst)
    assert out["r2_debiased"] == pytest.approx(out["r2"] + np.sum(se**2) / sst)


def test_cell_reference_on_simulated_spectra(tmp_path):
    data = tmp_path / "d.h5"
    simulate(data, SimulationConfig(n_train=4, n_val=2, n_test=8, seed=9, device="cpu"), progress=False)
    out = tmp_path / "bayes.nc"
    args = [
        "bayes",
        "--data",
        str(data),
        "--noise",
        "1",
        "--mag",
        "22",
        "--stars",
        "6",
        "--samples",
        "256",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    ds = xr.open_dataset(out, engine="h5netcdf")
    assert ds.sizes["star"] == 6
    assert ((ds.posterior_mean >= 1) & (ds.posterior_mean <= 5)).all()
    assert (ds.mc_se < 0.5 * ds.posterior_sd).all() and float(ds.ess_median) > 30
    for key in ("r2_bayes", "r2_bayes_mc_se", "r2_mle", "ceiling_pop", "ess_median"):
        assert np.isfinite(float(ds[key]))
    # bad input fails before any work
    assert main([*args[:-2], "--out", str(tmp_path / "x.nc"), "--samples", "3"]) == 2
    assert main([*args[:7], "--stars", "99", "--out", str(tmp_path / "x.nc")]) == 2
    assert not (tmp_path / "x.nc").exists()


def _toy():
    """The linear-Gaussian toy on the unit box (orthogonal columns: the posterior factorises into
    truncated normals): model, obs, sigma, box, and per parameter the exact posterior mean and sd."""
    n_pix, sigma = 40, 1.0
    k = np.arange(n_pix)
    a = np.stack([np.cos(2 * np.pi * k / n_pix), np.sin(2 * np.pi * k / n_pix)], 1) * np.array([1.2, 0.6])
    truth = np.array([[0.03, 0.5], [0.5, 0.97], [0.3, 0.2], [0.8, 0.6]])
    obs = truth @ a.T + sigma * np.random.default_rng(4).standard_normal((len(truth), n_pix))
    sd = sigma / np.sqrt(np.diag(a.T @ a))
    ls = np.linalg.lstsq(a, obs.T, rcond=None)[0].T
    lo, hi = (0 - ls) / sd, (1 - ls) / sd
    exact = truncnorm.mean(lo, hi, loc=ls, scale=sd), truncnorm.std(lo, hi, loc=ls, scale=sd)
    return Linear(a), obs, np.full_like(obs, sigma), np.array([[0.0, 1.0], [0.0, 1.0]]), exact


def test_batched_posterior_mean_matches_the_truncated_normal():
    model, obs, sig, box, (exact, exact_sd) = _toy()
    rows = np.arange(len(obs))
    cfg = BayesConfig(method="batched", seed=1, bank_size=256, mc_target=0.03, n_samples=8192, batch=3)
    bank = PriorBank.simulate(model, box, cfg.bank_size, cfg.seed)
    for index in (0, 1):
        post = posterior_batched(model, obs, sig, box, rows, cfg, index=index, bank=bank)
        err = np.abs(post["mean"] - exact[:, index])
        assert np.all(err < 4 * post["mc_se"] + 1e-4), (post["mean"], exact[:, index], post["mc_se"])
        np.testing.assert_allclose(post["sd"], exact_sd[:, index], rtol=0.1)
        assert np.all(post["mc_se"] <= 0.03 * post["sd"]) and np.all(post["n_sims"] < 8192)
    # each star has its own stream: batching (3 per batch above, 1 here) does not change the numbers
    one = posterior_batched(model, obs, sig, box, rows, BayesConfig(**{**cfg.__dict__, "batch": 1}), index=1, bank=bank)
    np.testing.assert_allclose(one["mean"], post["mean"], rtol=0, atol=1e-9)
    # the cheap default stops early and still reports an honest error
    quick = posterior_batched(model, obs, sig, box, rows, BayesConfig(method="batched", seed=2), index=1, bank=bank)
    assert np.all(np.abs(quick["mean"] - exact[:, 1]) < 4 * quick["mc_se"] + 1e-4)
    assert quick["n_sims"].mean() < 200


class ToyBank:
    """A source-like bank of n uniform prior draws of the toy (labels, noiseless flux)."""

    def __init__(self, model, n, seed=0):
        self.theta = np.random.default_rng(seed).random((n, 2))
        self.flux = model.flux(torch.as_tensor(self.theta)).numpy().astype(np.float32)

    def n(self, split):
        return len(self.theta)

    def labels(self, split, rows):
        return self.theta[rows]

    def noiseless(self, split, rows, cell, variances=True):
        return type("Batch", (), {"flux": self.flux[rows]})


def test_bank_estimator_converges_to_the_exact_posterior_mean():
    model, obs, sig, _, (exact, exact_sd) = _toy()
    errors = []
    for n in (200, 2000, 40000):
        post = bank_posterior(ToyBank(model, n), obs, sig, cell=None, index=1, block=4096)
        err = np.abs(post["mean"] - exact[:, 1])
        errors.append(err.max())
        # the jackknife error is honest at every bank size
        assert np.all(err < 4 * post["mc_se"] + 2e-3), (n, err, post["mc_se"])
    assert errors[2] < errors[0] and errors[2] < 0.01
    np.testing.assert_allclose(post["sd"], exact_sd[:, 1], rtol=0.05)
    assert post["ess"].min() > 1000
    # a window (pixel mask) keeps only its pixels: fewer pixels, a wider posterior
    mask = np.zeros(obs.shape[1], bool)
    mask[:10] = True
    win = bank_posterior(ToyBank(model, 40000), obs, sig, cell=None, index=1, mask=mask)
    assert np.all(win["sd"] > post["sd"])


def test_window_reference_is_at_most_the_full_spectrum(tiny_dataset):
    source = open_source(tiny_dataset)
    cfg = BayesConfig(method="batched", bank_size=512, n_samples=256)
    full = bayes_reference(source, 1.0, "21.5", 16, cfg)
    win = bayes_reference(source, 1.0, "21.5", 16, cfg, window="ca_triplet")
    assert win.attrs["n_pixels"] < full.attrs["n_pixels"] == source.wave.size
    assert win.attrs["window"] == '"ca_triplet"' and full.attrs["window"] == "full"
    err = float(np.hypot(win.r2_bayes_err, full.r2_bayes_err))
    assert float(win.r2_bayes_debiased) <= float(full.r2_bayes_debiased) + err
    assert float(win.ceiling_pop) <= float(full.ceiling_pop)
    assert float(win.posterior_sd.mean()) > float(full.posterior_sd.mean())
    for ds in (full, win):
        assert ds.attrs["method"] == "batched" and ds.r2_bayes_snr_bin.dims == ("snr_bin",)
        assert float(ds.r2_bayes_err) > 0 and float(ds.r2_bayes_mc_se) < float(ds.r2_bayes_sampling_se)


def test_bank_method_from_the_cli(tiny_dataset, tmp_path):
    out = tmp_path / "bank.nc"
    args = ["bayes", "--data", str(tiny_dataset), "--noise", "2", "--mag", "21.5", "--stars", "20"]
    assert main([*args, "--method", "bank", "--window", '["ca_triplet", [8790, 8830]]', "--out", str(out)]) == 0
    ds = xr.open_dataset(out, engine="h5netcdf")
    assert ds.attrs["method"] == "bank" and "mle" not in ds and float(ds.n_sims_mean) == 0
    assert ((ds.posterior_mean >= 1) & (ds.posterior_mean <= 5)).all() and (ds.mc_se > 0).all()
    assert main([*args, "--window", "ca_triplett", "--out", str(tmp_path / "x.nc")]) == 2
    assert not (tmp_path / "x.nc").exists()
