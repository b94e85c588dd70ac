"""ViT: shapes, options that mean what they say, overfitting a tiny set, exact resume."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import small_vit

from specscale.core.config import ConfigError, from_dict
from specscale.core.vocab import LOGG, Cell
from specscale.data.loader import SlabBatchSampler, batch_variances, train_loader
from specscale.data.sources import open_source
from specscale.models.registry import resolve_model
from specscale.models.vit import (
    SpectrumViT,
    TrainingInterrupted,
    ViTModel,
    ViTParams,
    ViTTinyParams,
    input_channels,
    loss_function,
    lr_factor,
)

WAVE = np.linspace(7100.0, 8850.0, 4096)
SMALL = small_vit(max_epochs=3, warmup_frac=0.1, log_every=2)
CELL = Cell(noise=1.0, mag="20.5-22.5", model="vit-tiny", n_train=300, seed=11)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_default_is_the_study_recipe_and_shapes():
    p = ViTParams()
    assert (p.patch, p.width, p.depth, p.heads, p.mlp, p.dropout, p.lr, p.lr_min, p.batch, p.grad_clip) == (
        16,
        256,
        6,
        8,
        1024,
        0.1,
        3e-4,
        1e-5,
        256,
        0.5,
    )
    net = SpectrumViT(p, WAVE, n_out=1)
    assert net.n_tokens == 257  # 256 patches + CLS
    assert 4.7e6 < net.n_params() < 5.1e6  # the study's 4.9M
    assert net(torch.ones(2, 1, 4096)).shape == (2, 1)
    # 6 N T + attention, with N the matmul weights
    assert net.train_flops_per_spectrum() == pytest.approx(
        6 * (16 * 256 + 6 * 12 * 256**2 + 256) * 257 + 12 * 6 * 257**2 * 256, rel=0.01
    )


def test_options_change_the_network():
    p = dataclasses.replace(
        ViTTinyParams(),
        inputs="flux+error",
        pos_encoding="sinusoidal",
        targets=("logg", "teff", "mh"),
        loss="gaussian_nll",
    )
    net = SpectrumViT(p, WAVE, n_out=6)
    assert net.tokenizer.in_channels == 2
    assert "pos" not in dict(net.named_parameters()) and net.pos.shape == (1, 129, 64)
    assert torch.all(net.pos[0, 0] == 0)
    assert net(torch.ones(3, 2, 4096)).shape == (3, 6)


def test_losses_mean_what_they_say():
    out, y = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [0.0]])
    assert loss_function("mse", out, y).item() == pytest.approx(5.0)
    assert loss_function("mae", out, y).item() == pytest.approx(2.0)
    mu_logvar = torch.tensor([[1.0, math.log(4.0)]])
    assert loss_function("gaussian_nll", mu_logvar, torch.tensor([[0.0]])).item() == pytest.approx(
        0.5 * (math.log(4) + 0.25)
    )
    for bad in (
        {"loss": "huberish"},
        {"inputs": "flux/sigma"},
        {"pos_encoding": "alibi"},
        {"targets": ["teff"]},
        {"amp": "fp16"},
        {"width": 30, "heads": 4},
    ):
        key = next(iter(bad))
        with pytest.raises(ConfigError, match=rf"models\.vit: {key}"):
            from_dict(ViTParams, bad, "models.vit")
    with pytest.raises(ConfigError, match=r"models\.vit\.nheads"):
        from_dict(ViTParams, {"nheads": 4}, "models.vit")


def test_vit_tiny_preset_comes_from_its_own_section():
    p = resolve_model("vit-tiny", {"models": {"vit": {"depth": 12}, "vit-tiny": {"max_epochs": 2}}}).params
    assert isinstance(p, ViTTinyParams) and p.depth == ViTTinyParams().depth and p.max_epochs == 2


def test_schedule_length_is_the_real_number_of_steps():
    total, warmup, lr, lr_min = 1000, 20, 3e-4, 1e-5
    f = [lr * lr_factor(s, total, warmup, lr, lr_min) for s in range(total)]
    assert f[0] == pytest.approx(lr / warmup) and f[warmup - 1] == pytest.approx(lr)
    assert f[warmup] == pytest.approx(lr) and f[-1] == pytest.approx(lr_min, rel=0.01)
    assert all(a >= b for a, b in zip(f[warmup:], f[warmup + 1 :]))


@pytest.mark.slow
def test_overfits_a_tiny_set(tiny_dataset):
    src = open_source(tiny_dataset)
    b = src.noiseless("train", np.arange(32), "21.5")
    x = input_channels("flux", torch.from_numpy(b.flux), None)
    y = torch.from_numpy(b.labels[:, LOGG : LOGG + 1])
    y = (y - y.mean()) / y.std()
    torch.manual_seed(0)
    net = SpectrumViT(dataclasses.replace(SMALL, dropout=0.0), src.wave, n_out=1)
    # lr 1e-3 and 300 steps: at 3e-3 the loss bounced, and whether step 200 fell below the
    # threshold turned on the CPU's rounding (seeds 0-3 here: 0.005-0.043 of the first loss)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(300):
        loss = loss_function("mse", net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-10:]) < 0.1 * losses[0]


def test_slab_sampler_covers_every_row_once_and_repeats(tiny_dataset):
    s = SlabBatchSampler(300, 64, 8, seed=3)
    s.set_epoch(2)
    batches = list(s)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(300)) and len(batches) == 5
    assert all(b == sorted(b) for b in batches)
    s.set_epoch(2, skip=2)
    assert list(s) == batches[2:]
    s.set_epoch(3)
    assert list(s) != batches
    # worker processes serve exactly what the main process would
    src = open_source(tiny_dataset)
    a, sa = train_loader(src, 300, "21.5", batch=64, slab=8, seed=3, workers=0)
    b, sb = train_loader(src, 300, "21.5", batch=64, slab=8, seed=3, workers=2)
    sa.set_epoch(1), sb.set_epoch(1)
    for x, y in zip(a, b, strict=True):
        assert set(x) == {"flux", "noise_coef", "labels", "rows"}  # 3 numbers of noise model per star
        assert all(torch.equal(x[k], y[k]) for k in x)
    ref = src.noiseless("train", x["rows"].numpy(), "21.5")
    np.testing.assert_array_equal(x["flux"].numpy(), ref.flux)
    # the per-star coefficients times the basis are the source's variances (float32 rounding)
    var_a, var_b = batch_variances(x, torch.from_numpy(src.variance_basis()))
    np.testing.assert_allclose(var_a.numpy(), ref.var_a, rtol=1e-6)
    np.testing.assert_allclose(var_b.numpy(), ref.var_b, rtol=1e-6)


def test_training_noise_is_fresh_each_step_and_reproducible(tiny_dataset):
    src = open_source(tiny_dataset)
    m1, m2 = ViTModel(SMALL, seed=11), ViTModel(SMALL, seed=11)
    m1.build(src, CELL), m2.build(src, CELL)
    assert torch.equal(m1.step_normals((4, 8), 5), m2.step_normals((4, 8), 5))
    assert not torch.equal(m1.step_normals((4, 8), 5), m1.step_normals((4, 8), 6))
    m3 = ViTModel(SMALL, seed=12)
    m3.build(src, dataclasses.replace(CELL, seed=12))
    assert not torch.equal(m1.step_normals((4, 8), 5), m3.step_normals((4, 8), 5))


def _fit(src, workdir, stop_steps=None, stop_epochs=None, params=SMALL):
    model = ViTModel(params, seed=CELL.seed)
    model.stop_after_steps, model.stop_after_epochs = stop_steps, stop_epochs
    return model, model.fit(src, CELL, workdir)


@pytest.mark.slow
def test_resume_continues_and_equals_an_uninterrupted_run(tiny_dataset, tmp_path):
    src = open_source(tiny_dataset)
    test = src.observed("test", np.arange(50), CELL.mag, CELL.noise)
    full, info_full = _fit(src, tmp_path / "full")
    assert info_full["steps"] == 15 == info_full["schedule_steps"] and info_full["epochs"] == 3

    work = tmp_path / "interrupted"
    with pytest.raises(TrainingInterrupted, match="step 7"):  # inside epoch 1 (5 steps per epoch)
        _fit(src, work, stop_steps=7)
    assert torch.load(work / "checkpoint.pt", weights_only=False)["step"] == 7
    with pytest.raises(TrainingInterrupted, match="after epoch 1"):  # resumes at step 7, stops at the epoch's end
        _fit(src, work, stop_epochs=1)
    ck = torch.load(work / "checkpoint.pt", weights_only=False)
    assert (ck["step"], ck["epoch"], ck["batch_in_epoch"]) == (10, 2, 0)
    resumed, info = _fit(src, work)
    assert info["resumed_from_step"] == 10 and info["steps"] == 15
    assert [h["val_r2"] for h in info["history"]] == [h["val_r2"] for h in info_full["history"]]
    assert info["best_epoch"] == info_full["best_epoch"]
    np.testing.assert_array_equal(resumed.predict(test), full.predict(test))
    # a finished checkpoint is reused as is (a job that died after training does not retrain)
    again, info_again = _fit(src, work)
    np.testing.assert_array_equal(again.predict(test), full.predict(test))
    # ... but never one written for another configuration
    with pytest.raises(ConfigError, match="different configuration"):
        _fit(src, work, params=dataclasses.replace(SMALL, lr=1e-3))


class _CreatesAFile:
    """Unpickling this creates ``path``: what a planted checkpoint could do with any code."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_checkpoint_is_never_unpickled(tiny_dataset, tmp_path):
    src = open_source(tiny_dataset)
    marker = tmp_path / "pwned"
    work = tmp_path / "work"
    work.mkdir()
    torch.save({"fingerprint": "x", "step": 3, "model": _CreatesAFile(marker)}, work / "checkpoint.pt")
    with pytest.raises(ConfigError, match=r"checkpoint .*checkpoint\.pt.* cannot be loaded safely") as err:
        _fit(src, work)
    assert not marker.exists()
    assert "Unsupported global" in str(err.value)  # torch's reason: what it refused to import
    # a real checkpoint loads without unpickling anything
    with pytest.raises(TrainingInterrupted):
        _fit(src, tmp_path / "real", stop_steps=2)
    ck = torch.load(tmp_path / "real" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 2 and ck["fingerprint"]


def test_multitask_and_nll_train_and_predict_logg(tiny_dataset, tmp_path):
    src = open_source(tiny_dataset)
    p = dataclasses.replace(
        SMALL,
        targets=("logg", "teff"),
        loss="gaussian_nll",
        inputs="flux/error",
        pos_encoding="sinusoidal",
        max_epochs=1,
    )
    model = ViTModel(p, seed=1)
    info = model.fit(src, CELL, tmp_path)
    assert model.n_out == 4 and info["steps"] == 5
    pred = model.predict(src.observed("test", np.arange(10), CELL.mag, CELL.noise))
    assert pred.shape == (10,) and np.all(np.abs(pred - 3.0) < 3.0)  # log g scale, not teff's


def test_device_resident_loader_trains_the_same_model(tiny_dataset, tmp_path):
    src = open_source(tiny_dataset)
    p = dataclasses.replace(SMALL, max_epochs=1)
    stream, _ = _fit(src, tmp_path / "stream", params=p)
    device, info = _fit(src, tmp_path / "device", params=dataclasses.replace(p, loader="device"))
    test = src.observed("test", np.arange(20), CELL.mag, CELL.noise)
    np.testing.assert_array_equal(device.predict(test), stream.predict(test))


def test_logg_is_read_from_its_own_head_column(tiny_dataset, tmp_path):
    # multi-task with log g second: predictions come from the log g column, scaled as log g
    src = open_source(tiny_dataset)
    model = ViTModel(dataclasses.replace(SMALL, targets=("teff", "logg"), max_epochs=1), seed=1)
    model.fit(src, CELL, tmp_path)
    x = model.observed_inputs(src.observed("test", np.arange(10), CELL.mag, CELL.noise))
    model.net.eval()
    with torch.no_grad():
        out = model.net(x.to(model.dev)).float().numpy().astype(np.float64)
    expected = out[:, 1] * model.y_std[1] + model.y_mean[1]
    np.testing.assert_allclose(model.predict_inputs(x), expected, rtol=1e-6)
