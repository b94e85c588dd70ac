"""The oracle likelihood fit: efficient at high S/N, finds the global maximum, respects the prior
box, plugs into the model interface, fails early and clearly."""

import numpy as np
import pytest
import torch

from specscale.ceiling.bounds import fisher_matrix, marginal_crlb, sigma_unit
from specscale.ceiling.configs import FisherConfig
from specscale.ceiling.jacobians import SimulatorJacobian
from specscale.core.config import ConfigError, from_dict
from specscale.core.vocab import Cell
from specscale.data.simulate import SimulationConfig, simulate
from specscale.data.simulator import prior_box
from specscale.data.sources import DataError, open_source
from specscale.models.oracle import OracleModel, OracleParams
from specscale.models.registry import model_class, resolve_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("oracle") / "small.h5"
    simulate(path, SimulationConfig(n_train=10, n_val=5, n_test=40, seed=5, device="cpu"), progress=False)
    return open_source(path)


def _fitted(source, mag="21.5", noise=1.0, **params):
    model = OracleModel(OracleParams(**params), seed=0)
    model.fit(source, Cell(noise, mag, "oracle", 1, 0), None)
    return model


def test_registered_and_strict_params():
    assert model_class("oracle") is OracleModel
    with pytest.raises(ConfigError, match=r"models\.oracle\.n_start"):
        resolve_model("oracle", {"models": {"oracle": {"n_start": 2}}})
    with pytest.raises(ConfigError, match="n_starts"):
        from_dict(OracleParams, {"n_starts": 0}, "models.oracle")


def test_efficiency_near_one_at_high_snr(source):
    """Variance of the ML log g over repeated noise draws of one star ~ its CRLB (within 20%)."""
    rows = np.arange(source.n("test"))
    b = source.noiseless("test", rows, "18")
    sig = sigma_unit(b)
    info = fisher_matrix(SimulatorJacobian(source, FisherConfig())("test", rows, b.flux), sig)
    box = prior_box(source)
    sd = np.sqrt(np.einsum("nii->ni", np.linalg.inv(info)))
    margin = np.minimum(b.labels - box[:, 0], box[:, 1] - b.labels) / sd
    # a star whose ML estimate is far from the prior bounds and whose log g is not trivially sharp
    star = int(np.flatnonzero((margin.min(1) > 10) & (sd[:, 1] > 0.03))[0])
    crlb = marginal_crlb(info[star : star + 1])[0]
    draws = 300
    rng = np.random.default_rng(11)
    obs = b.flux[star] + rng.standard_normal((draws, b.flux.shape[1])) * sig[star]
    model = _fitted(source, "18", n_starts=1, bank_size=256)
    fit = model.fit_spectra(obs, np.broadcast_to(sig[star], obs.shape))
    assert fit.converged.all()
    ratio = np.var(fit.theta[:, 1], ddof=1) / crlb
    assert 0.8 < ratio < 1.2, f"efficiency {1 / ratio:.3f} (star {star}, CRLB sd {np.sqrt(crlb):.4f} dex)"
    assert abs(fit.theta[:, 1].mean() - b.labels[star, 1]) < 4 * np.sqrt(crlb / draws)


def test_finds_the_global_maximum_inside_the_box(source):
    model = _fitted(source)
    obs = source.observed("test", np.arange(12), "21.5", 1.0)
    fit = model.fit_spectra(obs.flux, obs.sigma)
    box = prior_box(source)
    assert ((fit.theta >= box[:, 0]) & (fit.theta <= box[:, 1])).all()
    with torch.no_grad():
        truth = model.model.flux(torch.as_tensor(obs.labels, dtype=torch.float64)).numpy()
    chi2_truth = (((obs.flux - truth) / obs.sigma) ** 2).sum(1)
    # a maximum-likelihood point is at least as likely as the truth (which is a feasible point)
    assert np.all(fit.chi2 <= chi2_truth + 1e-6)
    assert np.median(fit.chi2) / obs.flux.shape[1] == pytest.approx(1.0, abs=0.05)
    again = _fitted(source).fit_spectra(obs.flux[:3], obs.sigma[:3]).theta
    np.testing.assert_allclose(fit.theta[:3], again, rtol=1e-9)  # batch-independent up to round-off


def test_model_interface_and_exact_spectra(source):
    model = resolve_model("oracle", {"models": {"oracle": {"n_starts": 2, "bank_size": 512}}}).build(seed=1)
    model.check(source, Cell(0.0, "20.5-22.5", "oracle", 5, 1))
    info = model.fit(source, Cell(0.0, "20.5-22.5", "oracle", 5, 1), None)
    assert info["bank_size"] == 512 and info["n_starts"] == 2
    obs = source.observed("test", np.arange(6), "20.5-22.5", 0.0)  # noise level 0: exact spectra
    pred = model.predict(obs)
    assert pred.shape == (6,)
    np.testing.assert_allclose(pred, obs.labels[:, 1], atol=2e-3)


def test_predict_before_fit_and_foreign_source_fail_clearly(source, tmp_path):
    with pytest.raises(RuntimeError, match="fit"):
        OracleModel().predict(source.observed("test", [0], "21", 1.0))
    src = open_source(source.path)
    del src.config["atmosphere"]
    with pytest.raises(DataError, match="no simulator"):
        OracleModel().check(src, Cell(1.0, "21", "oracle", 1, 0))
