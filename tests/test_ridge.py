"""Streaming Ridge: equal to scikit-learn, alpha chosen on validation only, prefix subsets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from specscale.core.config import ConfigError, from_dict
from specscale.core.vocab import Cell
from specscale.data.sources import open_source
from specscale.models.metrics import r2_score
from specscale.models.ridge import RidgeAccumulator, RidgeModel, RidgeParams

CELL = Cell(noise=1.0, mag="20.5-22.5", model="ridge", n_train=250, seed=3)
ALPHAS = [1e-2, 1.0, 1e2, 1e4, 1e7]


@pytest.mark.parametrize(
    ("n", "chunks"),
    [
        (240, [(0, 1), (1, 50), (51, 3), (54, 186)]),  # n > p: kept rows folded into the gram at row 51
        (30, [(0, 1), (1, 12), (13, 17)]),  # n < p: the kernel path
        (40, [(0, 39), (39, 1)]),  # n == p: the gram, 39 kept rows folded in
    ],
)
def test_streaming_path_equals_sklearn_for_several_alphas(n, chunks):
    rng = np.random.default_rng(0)
    p = 40
    X = 1.0 + 0.05 * rng.standard_normal((n, p)) @ rng.standard_normal((p, p))  # correlated, offset like flux
    X[:, 5] = 0.7  # a constant pixel
    X[:, 7] *= 1e3  # very different scales
    y = X[:, :10] @ rng.standard_normal(10) + 0.1 * rng.standard_normal(n)
    acc = RidgeAccumulator(p)
    for start, size in chunks:  # uneven chunks, one of a single row
        acc.add(X[start : start + size], y[start : start + size])
    path = acc.solve()
    assert path.eigvec.shape == (p, p if n >= p else n - 1)  # centring costs the kernel one rank
    X_new = 1.0 + 0.05 * rng.standard_normal((30, p))
    paths = path.predict_path(X_new, ALPHAS)
    for k, alpha in enumerate(ALPHAS):
        ref = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(X, y)
        w, b = path.coef(alpha)
        np.testing.assert_allclose(X_new @ w + b, ref.predict(X_new), rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(paths[:, k], ref.predict(X_new), rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(w * path.scale, ref[-1].coef_, rtol=1e-6, atol=1e-8)


PIXELS = 512  # the first pixels only: the same algebra, a 64x cheaper eigendecomposition


class SpySource:
    """Wraps a Source: keeps the first PIXELS pixels, records every (split, row) it serves, and
    can serve adversarial test data."""

    def __init__(self, source, adversarial_test: bool = False):
        self.inner, self.adversarial = source, adversarial_test
        self.reads: dict[str, set] = {"train": set(), "val": set(), "test": set()}
        self.wave, self.dataset_id = source.wave[:PIXELS], source.dataset_id

    def n(self, split):
        return self.inner.n(split)

    def labels(self, split, rows=None):
        rows = np.arange(self.n(split)) if rows is None else np.asarray(rows)
        self.reads[split].update(int(r) for r in rows)
        lab = self.inner.labels(split, rows)
        return 6.0 - lab if (self.adversarial and split == "test") else lab

    def iter_observed(self, split, cell, noise_level, seed=None, n=None, batch=2048):
        for obs in self.inner.iter_observed(split, cell, noise_level, seed, n, batch):
            obs = crop(obs)
            self.reads[split].update(int(r) for r in obs.rows)
            if self.adversarial and split == "test":  # labels reversed, spectra shuffled
                obs.labels = 6.0 - obs.labels
                obs.flux = obs.flux[::-1].copy()
            yield obs

    def observed(self, split, rows, cell, noise_level, seed=None):
        self.reads[split].update(int(r) for r in np.atleast_1d(rows))
        return crop(self.inner.observed(split, rows, cell, noise_level, seed))


def crop(obs):
    return dataclasses.replace(obs, flux=obs.flux[:, :PIXELS], error=obs.error[:, :PIXELS], sigma=obs.sigma[:, :PIXELS])


@pytest.fixture(scope="module")
def fitted(tiny_dataset, tmp_path_factory):
    source = SpySource(open_source(tiny_dataset))
    model = RidgeModel(RidgeParams(batch=64), seed=CELL.seed)
    info = model.fit(source, CELL, tmp_path_factory.mktemp("ridge"))
    return source, model, info


def test_fit_reads_only_the_training_prefix_and_validation(fitted):
    source, _, info = fitted
    assert source.reads["test"] == set()
    assert source.reads["train"] == set(range(CELL.n_train))  # prefix: the first N stars, nothing else
    assert source.reads["val"] == set(range(source.n("val")))
    assert len(info["val_r2_path"]) == 41 and info["alpha_grid"][0] == pytest.approx(1e-2)
    assert info["alpha_grid"][-1] == pytest.approx(1e8)


def test_predictions_equal_sklearn_at_chosen_alpha(fitted, tiny_dataset):
    source, model, info = fitted
    src = SpySource(open_source(tiny_dataset))
    train = src.observed("train", np.arange(CELL.n_train), CELL.mag, CELL.noise, CELL.seed)
    val = src.observed("val", np.arange(src.n("val")), CELL.mag, CELL.noise)
    test = src.observed("test", np.arange(src.n("test")), CELL.mag, CELL.noise)
    ref = make_pipeline(StandardScaler(), Ridge(alpha=info["alpha"])).fit(
        train.flux.astype(np.float64), train.labels[:, 1]
    )
    np.testing.assert_allclose(model.predict(test), ref.predict(test.flux.astype(np.float64)), rtol=1e-6, atol=1e-6)
    # the recorded validation R^2 of the chosen alpha is sklearn's
    assert info["val_r2"] == pytest.approx(
        r2_score(val.labels[:, 1], ref.predict(val.flux.astype(np.float64))), abs=1e-8
    )
    assert info["val_r2"] == pytest.approx(max(info["val_r2_path"]))


def test_alpha_choice_ignores_test_labels(fitted, tiny_dataset, tmp_path):
    """Adversarial test data (reversed labels, shuffled spectra) must change nothing in the fit.
    The adversarial data would change a choice made on test, so a peek could not hide."""
    _, model, info = fitted
    spy = SpySource(open_source(tiny_dataset), adversarial_test=True)
    model2 = RidgeModel(RidgeParams(batch=64), seed=CELL.seed)
    info2 = model2.fit(spy, CELL, tmp_path)
    assert spy.reads["test"] == set()
    assert info2["alpha"] == info["alpha"] and info2["val_r2_path"] == info["val_r2_path"]
    np.testing.assert_array_equal(model2.coef_, model.coef_)
    # what choosing on (adversarial) test would have given: a different alpha
    test = next(spy.iter_observed("test", CELL.mag, CELL.noise, n=spy.n("test"), batch=1000))
    r2_test = [r2_score(test.labels[:, 1], model.path.predict_path(test.flux, [a])[:, 0]) for a in info["alpha_grid"]]
    assert info["alpha_grid"][int(np.argmax(r2_test))] != info["alpha"]


def test_bad_params_name_the_key():
    with pytest.raises(ConfigError, match=r"models\.ridge.*alpha_min"):
        from_dict(RidgeParams, {"alpha_min": -1.0}, "models.ridge")
    with pytest.raises(ConfigError, match=r"models\.ridge\.alphas"):
        from_dict(RidgeParams, {"alphas": [1, 2]}, "models.ridge")
    with pytest.raises(ConfigError, match="batch"):
        from_dict(RidgeParams, {"batch": "64"}, "models.ridge")
