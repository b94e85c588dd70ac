"""Variants: named experiments as values of the model axis (config ``variants``), their feature
pipeline (specscale.models.features) and the calibration metrics of a predicted uncertainty.

Malformed variants fail when the Sweep is built, naming the key; a variant cell and its base cell
see the same test stars and the same test noise; every feature option changes the input as it
says; a window variant of ridge trains on the window's pixels only; the coverage metrics of
calibrated Gaussian predictions are 0.68 / 0.95 with mean z^2 = 1; the ViT's predicted sigma is
read off the head's log-variance column; the tiny workflow plans variant cells (train and
train_vit) with the base's resources."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace

import h5py
import numpy as np
import pytest
import xarray as xr
from factories import metrics_record, write_cell
from snakemake.utils import validate
from test_workflow import REPO, TINY, planned, snakemake

from specscale.core.config import ConfigError
from specscale.core.vocab import LOGG, Cell, MagRange
from specscale.data.sources import open_source
from specscale.models.features import (
    FeatureConfig,
    apply_features,
    chunk_stats,
    continuum,
)
from specscale.models.metrics import calibration, evaluate
from specscale.models.registry import resolve_model
from specscale.sim.windows import window_mask, window_pixels
from specscale.sweep.cell import CellRequest, run_cell
from specscale.sweep.cube import collect
from specscale.sweep.grid import Sweep

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
WAVE = np.linspace(7100.2, 8849.8, 4096)  # the arm's grid (vacuum Angstrom)


def sweep_config(variants: dict, models=("ridge", "lightgbm", "vit-tiny"), **grid) -> dict:
    """A small synthetic sweep (checked from the config alone) with ``variants`` on its model axis."""
    config = {
        "datasets": {"d": {"n_train": 1000, "n_val": 100, "n_test": 300, "seed": 1}},
        "grid": {
            "noise": [1.0],
            "mag": ["21.5"],
            "model": [*models, *variants],
            "n_train": [200, 400],
            "curves": {"mag": [21.0], "stars": 100},
            **grid,
        },
        "variants": variants,
        "models": {"vit-tiny": {"max_epochs": 1}},
        "report": {"references": []},  # no oracle in these grids
        "wandb": {"mode": "disabled"},
    }
    validate(config, str(SCHEMA))  # the schema checks the structure and fills the defaults
    return config


# ---------------------------------------------------------------- malformed variants
MALFORMED = {
    "unknown-base": ({"v": {"base": "lasso"}}, r"variants\.v\.base: unknown base model 'lasso'"),
    "base-is-a-variant": (
        {"v1": {"base": "ridge"}, "v2": {"base": "v1"}},
        r"variants\.v2\.base: 'v1' is itself a variant; a variant's base must be a registered model \(no chains\)",
    ),
    "name-collides-with-a-model": (
        {"oracle": {"base": "ridge"}},
        r"variants\.oracle: the name collides with the registered model 'oracle'",
    ),
    "unknown-window": (
        {"v": {"base": "ridge", "features": {"window": ["ca_triplet", "ca_tripplet"]}}},
        r"variants\.v\.features\.window\[1\]: unknown window 'ca_tripplet'",
    ),
    "malformed-window-range": (
        {"v": {"base": "ridge", "features": {"window": [[8600, 8500]]}}},
        r"variants\.v\.features\.window\[0\]: range \[8600, 8500\] needs finite lo < hi",
    ),
    "window-outside-the-arm": (
        {"v": {"base": "lightgbm", "features": {"window": [[8500, 8600], [9000, 9100]]}}},
        r"variants\.v\.features\.window: range 9000\.0-9100\.0 A holds no pixel of the arm; "
        r"the arm covers 7100\.2-8849\.8 A",
    ),
    "window-past-the-arms-edge": (
        {"v": {"base": "ridge", "features": {"window": [[8800, 9500]]}}},
        r"variants\.v\.features\.window: range 8800\.0-9500\.0 A runs past the arm's edge; "
        r"the arm covers 7100\.2-8849\.8 A",
    ),
    "vit-window-under-one-patch": (
        {"v": {"base": "vit-tiny", "features": {"window": [[8000, 8005]]}}},
        r"variants\.v\.features\.window: the window holds 11 pixels, fewer than one patch of 32",
    ),
    "unknown-normalisation": (
        {"v": {"base": "ridge", "features": {"normalisation": "mean"}}},
        r"variants\.v\.features\.normalisation: 'mean' is not one of \['median', 'continuum', 'chunk_zscore'\]",
    ),
    "unknown-input": (
        {"v": {"base": "ridge", "features": {"input": "ivar"}}},
        r"variants\.v\.features\.input: 'ivar' is not one of \['flux', 'flux\+error', 'flux/error'\]",
    ),
    "unknown-feature-option": (
        {"v": {"base": "ridge", "features": {"windw": "ca_triplet"}}},
        r"variants\.v\.features\.windw: unknown feature option",
    ),
    "bad-chunk": (
        {"v": {"base": "ridge", "features": {"normalisation": "chunk_zscore", "chunk": 1}}},
        r"variants\.v\.features\.chunk: 1 must be an integer >= 2",
    ),
    "unknown-param": (
        {"v": {"base": "ridge", "params": {"alpha_mni": 1}}},
        r"variants\.v\.params: unknown config key\(s\) \['variants\.v\.params\.alpha_mni'\]",
    ),
    "bad-param-value": (
        {"v": {"base": "lightgbm", "params": {"num_leaves": 0}}},
        r"variants\.v\.params: num_leaves=0 must be >= 1",
    ),
    "bad-vit-option": (
        {"v": {"base": "vit-tiny", "params": {"loss": "huber"}}},
        r"variants\.v\.params: loss='huber' is not one of \['mse', 'mae', 'gaussian_nll'\]",
    ),
    "vit-input-conflict": (
        {"v": {"base": "vit-tiny", "params": {"inputs": "flux/error"}, "features": {"input": "flux+error"}}},
        r"variants\.v\.features\.input: 'flux\+error' conflicts with variants\.v\.params\.inputs='flux/error'",
    ),
    "vit-normalisation": (
        {"v": {"base": "vit-tiny", "features": {"normalisation": "continuum"}}},
        r"variants\.v\.features\.normalisation: model 'vit-tiny' does not apply feature option 'normalisation'",
    ),
    "oracle-features": (
        {"v": {"base": "oracle", "features": {"window": "ca_triplet"}}},
        r"variants\.v\.features\.window: model 'oracle' does not apply feature option 'window'",
    ),
}


@pytest.mark.parametrize("variants, message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_variant_fails_naming_the_key(variants, message):
    with pytest.raises(ConfigError) as err:
        Sweep.from_config(sweep_config(variants))
    assert str(err.value).startswith("config error at variants."), str(err.value)
    assert re.search(message, str(err.value)), str(err.value)


def test_variant_hyper_parameters_do_not_go_under_models():
    config = sweep_config({"v": {"base": "ridge"}})
    config["models"]["v"] = {"n_alphas": 3}
    with pytest.raises(ConfigError, match=r"config error at models\.v: unknown model 'v'.*variants\.v\.params"):
        Sweep.from_config(config)


def test_an_unknown_model_names_models_and_variants():
    config = sweep_config({"v": {"base": "ridge"}})
    config["grid"]["model"].append("w")
    with pytest.raises(ConfigError, match=r"config error at grid\.model\[4\]: unknown model 'w'; known: \[.*'v'\]"):
        Sweep.from_config(config)


# ---------------------------------------------------------------- the sweep treats a variant as a model
def test_variants_are_values_of_the_model_axis():
    variants = {
        "ridge-ca": {"base": "ridge", "params": {"n_alphas": 5}, "features": {"window": "ca_triplet"}},
        "vit-nll": {"base": "vit-tiny", "params": {"loss": "gaussian_nll"}, "features": {"input": "flux+error"}},
    }
    sweep = Sweep.from_config(sweep_config(variants, per_model={"vit-nll": {"n_train": [400]}}))
    assert sweep.cube_axes["model"] == ["ridge", "lightgbm", "vit-tiny", "ridge-ca", "vit-nll"]
    assert {c.n_train for c in sweep.cells if c.model == "vit-nll"} == {400}
    assert sweep.vit_models == ("vit-tiny", "vit-nll") and sweep.cpu_models == ("ridge", "lightgbm", "ridge-ca")
    # the generated config of a variant carries its definition and its base's section
    assert sweep.config_sections("model/ridge-ca") == {
        "models": {"ridge": {}},
        "variants": {"ridge-ca": variants["ridge-ca"]},
    }
    vit = sweep.config_sections("model/vit-nll")
    assert vit["models"] == {"vit-tiny": {"max_epochs": 1}} and vit["variants"] == {"vit-nll": variants["vit-nll"]}
    assert vit["wandb"] == {"mode": "disabled"}
    assert sweep.config_sections("model/ridge") == {"models": {"ridge": {}}}
    # provenance: the definitions sit in the cube's attributes
    assert sweep.cube_attrs()["variants"] == variants
    # the generated config resolves as `specscale train` reads it
    spec = resolve_model("vit-nll", vit)
    assert (spec.base, spec.params.loss, spec.params.inputs, spec.params.max_epochs, spec.features) == (
        "vit-tiny",
        "gaussian_nll",
        "flux+error",
        1,
        None,
    )
    spec = resolve_model("ridge-ca", sweep.config_sections("model/ridge-ca"))
    assert (spec.base, spec.params.n_alphas, spec.features.window) == ("ridge", 5, "ca_triplet")
    assert spec.cpu_only and not spec.tracked and resolve_model("vit-nll", vit).tracked


def test_a_sweep_without_variants_is_unchanged():
    sweep = Sweep.from_config(sweep_config({}))
    assert "variants" not in sweep.cube_attrs()
    spec = resolve_model("ridge", {})
    assert spec.features is None and not spec.is_variant and spec.variant_info() is None
    model = spec.build(seed=0)
    assert model.features is None and model.pipeline is None


# ---------------------------------------------------------------- the feature pipeline
@pytest.fixture(scope="module")
def batch():
    """Noisy spectra: a sloped continuum times Gaussian absorption lines, with their error."""
    rng = np.random.default_rng(5)
    n = 64
    t = (WAVE - WAVE.mean()) / (WAVE[-1] - WAVE[0])
    cont = (1.0 + rng.uniform(-0.3, 0.3, (n, 1)) * t + 0.1 * t**2) * rng.uniform(0.5, 2.0, (n, 1))
    lines = np.ones((n, WAVE.size))
    for c in (7700.0, 8200.0, 8498.0, 8542.0, 8662.0, 8807.0):
        lines -= 0.5 * np.exp(-0.5 * ((WAVE - c) / 2.0) ** 2)
    error = 0.05 * cont * rng.uniform(0.8, 1.2, (n, WAVE.size))
    flux = cont * lines + error * rng.standard_normal((n, WAVE.size))
    return flux.astype(np.float32), error.astype(np.float32), cont


def test_default_features_hand_over_the_flux(batch):
    flux, error, _ = batch
    assert FeatureConfig().is_identity and FeatureConfig.from_config({"window": "full"}, "f").is_identity
    assert apply_features(None, flux, error, WAVE) is flux
    np.testing.assert_array_equal(apply_features(FeatureConfig(), flux, error, WAVE), flux)


def test_window_keeps_the_window_pixels(batch):
    flux, error, _ = batch
    config = FeatureConfig.from_config({"window": ["ca_triplet", [7200, 7300]]}, "f")
    x = apply_features(config, flux, error, WAVE)
    mask = window_mask(WAVE, ["ca_triplet", [7200, 7300]])
    assert x.shape == (flux.shape[0], mask.sum()) and 300 < mask.sum() < 800
    np.testing.assert_array_equal(x, flux[:, mask])
    # the ViT's window: whole patches (the last pixels dropped)
    idx = window_pixels(WAVE, "ca_triplet", multiple=16)
    assert idx.size % 16 == 0 and 0 <= window_mask(WAVE, "ca_triplet").sum() - idx.size < 16


def test_inputs_add_the_error_or_divide_by_it(batch):
    flux, error, _ = batch
    both = apply_features(FeatureConfig(window="mg_8807", input="flux+error"), flux, error, WAVE)
    mask = window_mask(WAVE, "mg_8807")
    np.testing.assert_array_equal(both, np.concatenate([flux[:, mask], error[:, mask]], axis=1).astype(np.float64))
    ratio = apply_features(FeatureConfig(input="flux/error"), flux, error, WAVE)
    np.testing.assert_allclose(ratio, flux.astype(np.float64) / error.astype(np.float64))
    with pytest.raises(ValueError, match="flux/error' needs a pipeline error > 0"):
        apply_features(FeatureConfig(input="flux/error"), flux, np.zeros_like(error), WAVE)


def test_continuum_normalisation_divides_by_a_noise_robust_continuum(batch):
    flux, error, cont = batch
    fit = continuum(flux, WAVE)
    assert np.median(np.abs(fit / cont - 1)) < 0.005 and np.abs(fit / cont - 1).max() < 0.03
    x = apply_features(FeatureConfig(normalisation="continuum", input="flux+error"), flux, error, WAVE)
    np.testing.assert_allclose(x[:, : WAVE.size], flux / fit, rtol=1e-12)
    np.testing.assert_allclose(x[:, WAVE.size :], error / fit, rtol=1e-12)  # the error scales with the flux
    assert abs(np.median(x[:, : WAVE.size]) - 1) < 0.01
    # a scaled spectrum normalises to the same features
    np.testing.assert_allclose(
        apply_features(FeatureConfig(normalisation="continuum"), 3 * flux, error, WAVE), x[:, : WAVE.size], rtol=1e-6
    )


def test_chunk_zscore_standardises_each_chunk(batch):
    flux, error, _ = batch
    config = FeatureConfig(normalisation="chunk_zscore", chunk=500, input="flux+error")
    x = apply_features(config, flux, error, WAVE)
    z, e = x[:, : WAVE.size], x[:, WAVE.size :]
    for start in range(0, WAVE.size, 500):  # 8 chunks of 500 and one of 96
        block = z[:, start : start + 500]
        np.testing.assert_allclose(block.mean(axis=1), 0, atol=1e-9)
        np.testing.assert_allclose(block.std(axis=1), 1, rtol=1e-9)
    _, scale = chunk_stats(flux, 500)
    np.testing.assert_allclose(e, error / scale, rtol=1e-12)
    # a window picks its pixels after the chunks are z-scored over the whole arm
    win = apply_features(FeatureConfig(window="na_8190", normalisation="chunk_zscore", chunk=500), flux, error, WAVE)
    np.testing.assert_array_equal(win, z[:, window_mask(WAVE, "na_8190")])


# ---------------------------------------------------------------- variant cells on the tiny dataset
def _config_file(tmp_path, variants) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(
        json.dumps({"models": {"ridge": {"n_alphas": 9}}, "variants": variants, "wandb": {"mode": "disabled"}})
    )
    return str(path)


@pytest.mark.slow
def test_a_window_variant_sees_the_base_cells_stars_and_noise(tiny_dataset, tmp_path, monkeypatch):
    from specscale.models.ridge import RidgeModel

    seen = {}
    predict = RidgeModel.predict

    def spy(self, observed):  # the observed test batch each model is handed
        seen.setdefault(self.features is not None, []).append((observed.rows.copy(), observed.flux.copy()))
        return predict(self, observed)

    monkeypatch.setattr(RidgeModel, "predict", spy)
    config = _config_file(tmp_path, {"ridge-ca": {"base": "ridge", "features": {"window": "ca_triplet"}}})
    common = dict(data=str(tiny_dataset), config=config, threads=1)
    cell = Cell(noise=1.0, mag="21.5", model="ridge", n_train=300, seed=0)
    base = run_cell(CellRequest(cell=cell, out=str(tmp_path / "ridge"), **common))
    variant = run_cell(CellRequest(cell=replace(cell, model="ridge-ca"), out=str(tmp_path / "ridge-ca"), **common))
    with h5py.File(tmp_path / "ridge/predictions.h5") as a, h5py.File(tmp_path / "ridge-ca/predictions.h5") as b:
        for key in ("rows", "logg_true", "labels", "snr", "mag"):
            np.testing.assert_array_equal(a[key][:], b[key][:])
        assert not np.array_equal(a["logg_pred"][:], b["logg_pred"][:])
    for (rows_a, flux_a), (rows_b, flux_b) in zip(seen[False], seen[True], strict=True):
        np.testing.assert_array_equal(rows_a, rows_b)
        np.testing.assert_array_equal(flux_a, flux_b)  # the same test noise
    # the window variant trained on the window's pixels only; its definition is in metrics.json
    n_win = int(window_mask(open_source(tiny_dataset).wave, "ca_triplet").sum())
    assert base["model_info"]["n_features"] == 4096 and variant["model_info"]["n_features"] == n_win
    assert variant["cell"]["model"] == "ridge-ca" and "variant" not in base
    assert variant["variant"]["base"] == "ridge" and variant["variant"]["features"]["window"] == "ca_triplet"
    assert variant["variant"]["definition"] == {"base": "ridge", "features": {"window": "ca_triplet"}}
    assert variant["params"] == base["params"]
    assert variant["provenance"]["config_hash"] != base["provenance"]["config_hash"]
    assert "cover68" not in variant["metrics"]


def test_a_window_variant_of_ridge_ignores_pixels_outside_its_window(tiny_dataset):
    source = open_source(tiny_dataset)
    config = {"variants": {"r": {"base": "ridge", "params": {"n_alphas": 5}, "features": {"window": "mg_8807"}}}}
    model = resolve_model("r", config).build(seed=0)
    model.fit(source, Cell(noise=1.0, mag="21.5", model="r", n_train=200, seed=0), None)
    mask = window_mask(source.wave, "mg_8807")
    assert model.coef_.shape == (mask.sum(),)
    obs = source.observed("test", np.arange(50), MagRange.parse("21.5"), 1.0, None)
    pred = model.predict(obs)
    obs.flux[:, ~mask] = 1e6  # nothing outside the window reaches the model
    np.testing.assert_array_equal(model.predict(obs), pred)


def test_a_gaussian_nll_vit_variant_writes_calibration_metrics(tiny_dataset, tmp_path, one_thread):
    variants = {
        "vit-nll": {
            "base": "vit-tiny",
            "params": {"loss": "gaussian_nll", "max_epochs": 1, "max_steps": 3, "depth": 1, "width": 32, "heads": 2},
            "features": {"window": "ca_triplet", "input": "flux+error"},
        }
    }
    config = _config_file(tmp_path, variants)
    result = run_cell(
        CellRequest(
            cell=Cell(noise=1.0, mag="21.5", model="vit-nll", n_train=128, seed=0),
            data=str(tiny_dataset),
            out=str(tmp_path / "vit"),
            config=config,
            threads=1,
            device="cpu",
            overrides={"workers": 0, "mlp": 32},
        )
    )
    m = result["metrics"]
    for key in ("cover68", "cover95", "z2_mean", "sigma_median"):
        assert np.isfinite(m[key]) and len(m["snr_bins"][key]) == 7
    assert 0 <= m["cover68"] <= m["cover95"] <= 1 and m["sigma_median"] > 0
    assert result["params"]["inputs"] == "flux+error" and result["params"]["mlp"] == 32
    assert result["variant"]["features"]["window"] == "ca_triplet"
    with h5py.File(tmp_path / "vit/predictions.h5") as f:
        sigma = f["logg_sigma"][:]
        z2 = np.mean(((f["logg_pred"][:] - f["logg_true"][:]) / sigma) ** 2)
    assert sigma.shape == (100,) and np.isclose(z2, m["z2_mean"])


def test_vit_sigma_is_read_off_the_log_variance_column_of_logg(tiny_dataset, one_thread):
    import torch

    source = open_source(tiny_dataset)
    params = {"loss": "gaussian_nll", "targets": ["teff", "logg"], "depth": 1, "width": 16, "heads": 2, "mlp": 16}
    config = {
        "variants": {
            "v": {"base": "vit-tiny", "params": {**params, "workers": 0}, "features": {"window": "ca_triplet"}}
        }
    }
    model = resolve_model("v", config).build(seed=0)
    model.build(source, Cell(noise=1.0, mag="21.5", model="v", n_train=100, seed=0))
    try:
        assert model.net.n_tokens == model.pixels.size // 32 + 1 and model.predicts_sigma
        with torch.no_grad():  # head columns: mean teff, mean logg, log var teff, log var logg
            model.net.head.weight.zero_()
            model.net.head.bias.copy_(torch.tensor([9.0, 0.5, 9.0, np.log(4.0)]))
        obs = source.observed("test", np.arange(10), MagRange.parse("21.5"), 1.0, None)
        assert model.observed_inputs(obs).shape == (10, 1, model.pixels.size)
        mean, sigma = model.predict_with_sigma(obs)
        y = source.labels("train", np.arange(100))[:, LOGG].astype(np.float64)
        np.testing.assert_allclose(mean, 0.5 * y.std() + y.mean(), rtol=1e-5)
        np.testing.assert_allclose(sigma, 2.0 * y.std(), rtol=1e-5)  # exp(log 4 / 2) in z units, in dex
        np.testing.assert_allclose(model.predict(obs), mean)
    finally:
        model.close()


# ---------------------------------------------------------------- calibration metrics
def test_calibrated_gaussian_predictions_cover_68_and_95_percent():
    rng = np.random.default_rng(0)
    n = 200_000
    y = rng.uniform(1, 5, n)
    sigma = rng.uniform(0.05, 1.0, n)
    pred = y + sigma * rng.standard_normal(n)
    snr = rng.uniform(1, 60, n)
    cal = calibration(y, pred, sigma, snr)
    assert abs(cal["cover68"] - 0.68) < 0.005 and abs(cal["cover95"] - 0.95) < 0.003
    assert abs(cal["z2_mean"] - 1) < 0.01
    assert np.allclose(cal["snr_bins"]["cover68"], 0.68, atol=0.02) and np.allclose(
        cal["snr_bins"]["z2_mean"], 1, atol=0.05
    )
    # over-confident sigmas (half the truth): z^2 ~ 4, coverage far below nominal
    over = calibration(y, pred, sigma / 2, snr)
    assert abs(over["z2_mean"] - 4) < 0.05 and over["cover68"] < 0.4
    # evaluate: the calibration keys only with a sigma; an empty S/N bin is NaN
    m = evaluate(y[:500], pred[:500], np.full(500, 10.0), sigma_pred=sigma[:500])
    assert (
        np.isfinite(m["cover95"]) and np.isnan(m["snr_bins"]["cover95"][0]) and np.isfinite(m["snr_bins"]["cover95"][3])
    )
    assert "cover68" not in evaluate(y[:500], pred[:500], snr[:500])
    with pytest.raises(ValueError, match="predicted sigmas are not finite and > 0"):
        calibration(y[:5], pred[:5], np.zeros(5), snr[:5])


def test_the_cube_folds_calibration_and_nan_for_models_without_sigma(tmp_path):
    cells = [Cell(1.0, "21.5", m, 400, 0) for m in ("ridge", "vit-tiny")]
    rng = np.random.default_rng(1)
    y, snr, sigma = rng.uniform(1, 5, 400), rng.uniform(2, 30, 400), np.full(400, 0.3)
    nll = metrics_record(cells[1])
    nll["metrics"] = evaluate(y, y + sigma * rng.standard_normal(400), snr, sigma_pred=sigma)
    paths = [write_cell(tmp_path, cells[0]), write_cell(tmp_path, cells[1], nll)]
    cube = collect(zip(cells, paths, strict=True))
    ridge, vit = cube.sel(model="ridge").squeeze(), cube.sel(model="vit-tiny").squeeze()
    assert np.isnan(float(ridge.cover68)) and np.isnan(ridge.snr_cover95.values).all()
    assert float(vit.cover68) == nll["metrics"]["cover68"] and float(vit.z2_mean) == nll["metrics"]["z2_mean"]
    assert np.allclose(vit.snr_z2_mean.values, nll["metrics"]["snr_bins"]["z2_mean"], equal_nan=True)
    assert cube.sigma_median.attrs["units"].startswith("dex")


# ---------------------------------------------------------------- the workflow
@pytest.mark.slow
def test_the_tiny_workflow_plans_variant_cells(tmp_path):
    config = copy.deepcopy(TINY)
    config["variants"] = {
        "ridge-ca": {"base": "ridge", "features": {"window": "ca_triplet", "normalisation": "continuum"}},
        "vit-nll": {"base": "vit-tiny", "params": {"loss": "gaussian_nll"}},
    }
    config["grid"]["model"] = ["ridge", "ridge-ca", "vit-nll"]
    config["grid"]["per_model"] = {"vit-nll": {"n_train": [400]}}
    config["resources"] = {"train": {"vit-tiny": {"threads": 2, "mem_mb": 1234, "gpu": 0}}}
    cells = [("ridge", 200), ("ridge", 400), ("ridge-ca", 200), ("ridge-ca", 400), ("vit-nll", 400)]
    targets = [f"results/cells/tiny/noise1/mag21.5/{m}/n{n}/s0/metrics.json" for m, n in cells]
    proc = snakemake(tmp_path, "-n", "-p", *targets, config=config)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs = planned(out)
    assert jobs["train"] == 4 and jobs["train_vit"] == 1, out
    assert "model=ridge-ca, n_train=200" in out and "model=vit-nll, n_train=400" in out
    # the variant's own generated config; the base's resources (resources.train.vit-tiny)
    assert "specscale train ridge-ca" in out and "--config results/configs/model/ridge-ca.yaml" in out
    vit_job = out[out.index("rule train_vit:") :].split("specscale train")[0]
    assert re.search(r"mem_mb=1234\b", vit_job) and re.search(r"cpus_per_gpu=2\b", vit_job), vit_job


def run_window_variant_sweep(root):
    """The tiny sweep with a Ca II triplet variant of ridge (started early)."""
    config = copy.deepcopy(TINY)
    config["variants"] = {"ridge-ca": {"base": "ridge", "features": {"window": "ca_triplet"}}}
    config["grid"]["model"] = ["ridge", "ridge-ca"]
    config["grid"]["per_model"] = {"ridge-ca": {"n_train": [400]}}
    return root, snakemake(root, "--cores", "2", config=config, timeout=900, nice=10)


@pytest.mark.slow
@pytest.mark.started_early(run=run_window_variant_sweep, lane="local-sweeps")
def test_a_window_variant_gets_its_own_ceiling_and_bayes_reference_in_the_sweep(early_run):
    """The tiny sweep with a Ca II triplet variant: the window's Fisher ceiling and Bayes reference
    (rules ceiling_window, bayes_window) on the same stars are in the cube, at most the full
    spectrum's, and the report compares them."""
    tmp_path, proc = early_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    results = tmp_path / "results"
    log = (results / "logs/bayes_window/tiny/ca_triplet/noise1_mag21.5.log").read_text()
    assert 'window "ca_triplet"' in log
    assert (results / "benchmarks/ceiling_window/tiny/ca_triplet/noise1_mag21.5.tsv").exists()
    with xr.open_dataset(results / "cube.nc", engine="h5netcdf") as cube:
        assert list(cube.model_window.values) == ["full", "ca_triplet"]
        cell = dict(noise=1.0, mag="21.5")
        at = dict(window="ca_triplet", **cell)
        window_pop, full_pop = float(cube.window_ceiling_pop.sel(**at)), float(cube.ceiling_pop.sel(**cell))
        assert 0 < window_pop < full_pop
        window_bayes, full_bayes = float(cube.window_bayes_r2.sel(**at)), float(cube.bayes_r2.sel(**cell))
        errors = float(cube.window_bayes_r2_err.sel(**at)) + float(cube.bayes_r2_err.sel(**cell))
        assert window_bayes <= full_bayes + 2 * errors
    report = (results / "report.md").read_text()
    assert "## What a window carries" in report
    assert re.search(r"\| ca_triplet \| 1 \| 21.5 \| 0\.\d{3} / 0\.\d{3} \|", report), report
