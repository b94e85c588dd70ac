"""The Bayes (MMSE) reference: exact on a case with a closed form, honest Monte-Carlo errors, and
the cell reference on simulated spectra."""

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.stats import truncnorm

from specscale.bayes import BayesConfig, posterior_moments, r2_mc_error
from specscale.cli import main
from specscale.fisher import forward_jacobian
from specscale.models.oracle import levenberg_marquardt
from specscale.store import SimulationConfig, simulate


pytestmark = pytest.mark.usefixtures("one_thread")


class Linear:
    """flux = A theta: a Gaussian likelihood, so under a box prior the posterior is a truncated normal."""

    def __init__(self, a):
        self.a = torch.as_tensor(a)

    def flux(self, theta):
        return theta @ self.a.to(theta.dtype).T

    def jacobian(self, theta):
        return forward_jacobian(self.flux, theta)


def test_posterior_mean_matches_the_truncated_normal():
    n_pix, sigma = 40, 1.0
    k = np.arange(n_pix)
    # orthogonal columns: the posterior factorises into independent truncated normals
    a = np.stack([np.cos(2 * np.pi * k / n_pix), np.sin(2 * np.pi * k / n_pix)], 1) * np.array([1.2, 0.6])
    model = Linear(a)
    box = np.array([[0.0, 1.0], [0.0, 1.0]])
    truth = np.array([[0.03, 0.5], [0.5, 0.97], [0.3, 0.2]])
    rng = np.random.default_rng(4)
    obs = truth @ a.T + sigma * rng.standard_normal((len(truth), n_pix))
    sig = np.full_like(obs, sigma)
    t = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    z, chi2, _, _ = levenberg_marquardt(model, t(obs), t(sig), t(np.full((len(truth), 2), 0.5)), t(box), 20, 1e-3, 1e-8)
    cfg = BayesConfig(n_samples=4000, seed=1)
    prec = np.diag(a.T @ a) / sigma**2
    ls = np.linalg.lstsq(a, obs.T, rcond=None)[0].T  # unconstrained posterior means
    for index in (0, 1):
        post = posterior_moments(model, obs, sig, box, z.numpy()[:, None], chi2.numpy()[:, None],
                                 np.arange(len(truth)), cfg, index=index)
        sd = 1 / np.sqrt(prec[index])
        lo, hi = (0 - ls[:, index]) / sd, (1 - ls[:, index]) / sd
        exact = truncnorm.mean(lo, hi, loc=ls[:, index], scale=sd)
        exact_sd = truncnorm.std(lo, hi, loc=ls[:, index], scale=sd)
        assert np.all(np.abs(post["mean"] - exact) < 4 * post["mc_se"] + 1e-4), (post["mean"], exact, post["mc_se"])
        np.testing.assert_allclose(post["sd"], exact_sd, rtol=0.1)
        assert np.all(post["ess"] > 1000) and np.all(post["mc_se"] < 0.05 * exact_sd + 1e-4)
    # the same stars and seed give the same numbers
    again = posterior_moments(model, obs, sig, box, z.numpy()[:, None], chi2.numpy()[:, None], np.arange(3), cfg, index=1)
    np.testing.assert_array_equal(again["mean"], post["mean"])


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
    cfg = tmp_path / "c.yaml"
    cfg.write_text("models:\n  oracle:\n    n_starts: 2\n    bank_size: 512\n")
    out = tmp_path / "bayes.nc"
    args = ["bayes", "--data", str(data), "--noise", "1", "--mag", "22", "--stars", "6", "--samples", "256",
            "--config", str(cfg), "--out", str(out)]
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
