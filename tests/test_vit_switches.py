"""The ViT's question switches: input channels, error mask, RoPE, multi-scale tokens, binned log g,
linear probe. Each refuses bad values naming its key, means what it says, and trains on tiny data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from factories import small_vit

from specscale.core.config import ConfigError, from_dict
from specscale.core.vocab import Cell
from specscale.data.sources import open_source
from specscale.models.registry import resolve_model
from specscale.models.vit import SpectrumViT, ViTModel, ViTParams
from specscale.models.vit.channels import model_input
from specscale.models.vit.network import rotate
from specscale.models.vit.targets import BinnedTarget

WAVE = np.linspace(7100.0, 8850.0, 4096)
SMALL = small_vit(patch=32, max_steps=2)
CELL = Cell(noise=1.0, mag="20.5-22.5", model="vit", n_train=128, seed=3)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("extra_channels", {"extra_channels": ["d_flux", "curvature"]}),
        ("extra_channels", {"extra_channels": ["highpass", "highpass"]}),
        ("highpass_pixels", {"highpass_pixels": 64}),
        ("error_mask", {"error_mask": 0.5}),
        ("error_mask", {"error_mask": -1.0}),
        ("pos_encoding", {"pos_encoding": "alibi"}),
        ("pos_encoding", {"pos_encoding": "rope", "width": 36, "heads": 4}),  # 9 channels per head: no pairs
        ("patches", {"patches": [16]}),
        ("patches", {"patches": [32, 64]}),  # the default patch 16 is not among them
        ("patches", {"patches": [16, 16]}),
        ("patches", {"patches": [16, 0]}),
        ("target", {"target": "ordinal-ish"}),
        ("target", {"target": "binned", "targets": ["logg", "teff"]}),
        ("target", {"target": "binned", "loss": "mae"}),
        ("n_bins", {"target": "binned", "n_bins": 1}),
        ("bin_smoothing", {"target": "binned", "bin_smoothing": -0.5}),
        ("pool", {"pool": "max"}),
        ("freeze", {"freeze": "yes"}),
        ("pretrain", {"pretrain": 3}),
    ],
)
def test_bad_switches_are_refused_naming_the_key(key, bad):
    with pytest.raises(ConfigError, match=rf"models\.vit: {key}="):
        from_dict(ViTParams, bad, "models.vit")


def test_derived_channels_and_error_mask_mean_what_they_say():
    ramp = 1.0 + 0.01 * torch.arange(200.0)[None].repeat(2, 1)
    error = torch.full_like(ramp, 0.1)
    error[1, 50] = 5.0  # a sky line in the second spectrum
    p = dataclasses.replace(ViTParams(), extra_channels=("d_flux", "highpass"), highpass_pixels=5, error_mask=3.0)
    x = model_input(p, ramp, error)
    assert x.shape == (2, p.n_channels(), 200) == (2, 4, 200)
    flux, d_flux, highpass, mask = x.unbind(1)
    np.testing.assert_allclose(flux[0], (ramp[0] - 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(d_flux[0, 1:-1], 0.01, rtol=1e-4)  # the slope per pixel
    np.testing.assert_allclose(highpass[0, 3:-3], 0.0, atol=1e-5)  # a line has no high frequencies
    assert mask[0].sum() == 0 and mask[1].nonzero().flatten().tolist() == [50]
    assert flux[1, 50] == 0 and d_flux[1, 50] == 0 and highpass[1, 50] == 0
    # at noise level 0 the error is 0 everywhere: nothing is masked
    assert model_input(p, ramp, torch.zeros_like(ramp))[:, -1].sum() == 0


def test_rope_rotates_by_position_differences_only():
    q = torch.randn(1, 1, 5, 8)
    pos = torch.arange(5.0)[:, None] * torch.tensor([1.0, 0.1, 0.01, 0.001])
    a = rotate(q, pos.cos(), pos.sin())
    b = rotate(q, (pos + 7.0).cos(), (pos + 7.0).sin())  # every position shifted
    assert torch.allclose(a.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    torch.testing.assert_close(a @ a.transpose(-1, -2), b @ b.transpose(-1, -2), atol=1e-4, rtol=1e-4)
    net = SpectrumViT(dataclasses.replace(SMALL, pos_encoding="rope"), WAVE, n_out=1)
    assert net.pos is None and "pos" not in dict(net.named_parameters())
    assert torch.all(net.rope_cos[0] == 1) and torch.all(net.rope_sin[0] == 0)  # CLS: no rotation
    assert net(torch.randn(2, 1, 4096)).shape == (2, 1)


def test_multiscale_tokens_have_their_own_tokenizers_and_scale_embedding():
    p = dataclasses.replace(ViTParams(), width=32, heads=2, depth=1, mlp=32, patch=16, patches=(16, 64))
    net = SpectrumViT(p, WAVE, n_out=1)
    assert net.n_tokens == 1 + 256 + 64 and net.scale_tokens == [256, 64]
    assert net.tokenizer.kernel_size == (16,) and net.other_tokenizers[0].kernel_size == (64,)
    assert net.scale_embed.shape == (2, 32) and net.pos.shape == (1, 321, 32)
    x = torch.randn(2, 1, 4096)
    assert net(x).shape == (2, 1)
    with torch.no_grad():  # the coarse scale reaches the output
        net.other_tokenizers[0].weight.mul_(0)
    assert not torch.allclose(net(x), SpectrumViT(p, WAVE, n_out=1)(x))
    assert p.pixel_multiple() == 64
    with pytest.raises(ConfigError, match="patch=48 does not divide"):
        SpectrumViT(dataclasses.replace(p, patches=(16, 48)), WAVE, n_out=1)


def test_binned_target_predicts_the_expectation_and_an_interval():
    bins = BinnedTarget(4, -2.0, 2.0, smoothing=0.0)
    soft = bins.soft_labels(torch.tensor([-1.5, 0.2, 9.0]))
    assert soft.argmax(1).tolist() == [0, 2, 3] and torch.all(soft.sum(1) == 1)
    smooth = BinnedTarget(4, -2.0, 2.0, smoothing=1.0).soft_labels(torch.tensor([0.5]))
    assert smooth.argmax().item() == 2 and 0 < smooth[0, 1] < smooth[0, 2]  # neighbours share the mass
    mean, sigma = bins.decode(torch.zeros(1, 4), with_sigma=True)  # uniform over [-2, 2]
    assert mean.item() == pytest.approx(0.0, abs=1e-6)
    assert sigma.item() == pytest.approx(0.5 * (0.84 - 0.16) * 4.0, rel=1e-5)
    mean, sigma = bins.decode(torch.tensor([[0.0, 0.0, 30.0, 0.0]]), with_sigma=True)  # all in bin 2
    assert mean.item() == pytest.approx(0.5, abs=1e-4) and sigma.item() == pytest.approx(0.34, abs=1e-3)


SWITCHES = {
    "channels": {"extra_channels": ("d_flux", "highpass")},
    "error_mask": {"error_mask": 3.0, "inputs": "flux+error"},
    "rope": {"pos_encoding": "rope"},
    "multiscale": {"patch": 16, "patches": (16, 64)},
    "binned": {"target": "binned", "n_bins": 20},
    "mean_pool": {"pool": "mean"},
    "probe": {"freeze": True},
}


@pytest.mark.parametrize("name", list(SWITCHES))
def test_each_switch_trains_and_predicts(tiny_dataset, tmp_path, name):
    src = open_source(tiny_dataset)
    model = ViTModel(dataclasses.replace(SMALL, **SWITCHES[name]), seed=CELL.seed)
    info = model.fit(src, CELL, tmp_path)
    assert info["steps"] == 2 and np.isfinite(info["history"][0]["train_loss"])
    test = src.observed("test", np.arange(20), CELL.mag, CELL.noise)
    pred = model.predict(test)
    assert pred.shape == (20,) and np.all((pred > 0) & (pred < 6))  # dex, inside the prior's scale
    if name == "binned":
        assert model.predicts_sigma and model.n_out == 20
        mean, sigma = model.predict_with_sigma(test)
        np.testing.assert_allclose(mean, pred)
        assert np.all(sigma > 0) and np.all(sigma < 4.0)


def test_a_frozen_encoder_trains_only_its_head(tiny_dataset, tmp_path):
    src = open_source(tiny_dataset)
    model = ViTModel(dataclasses.replace(SMALL, freeze=True, dropout=0.1), seed=CELL.seed)
    model.build(src, CELL)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    model.close()
    model.fit(src, CELL, tmp_path)
    after = model.net.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["head.bias", "head.weight"]
    assert not model.net.drop.training and model.net.head.training  # the encoder's dropout stays off


def test_a_variant_sets_the_switches():
    config = {
        "variants": {
            "vit-probe": {"base": "vit-tiny", "params": {"freeze": True, "pool": "mean", "patches": [32, 128]}}
        }
    }
    spec = resolve_model("vit-probe", config)
    base, params = spec.base, spec.params
    assert base == "vit-tiny" and params.freeze and params.patches == (32, 128)
    config["variants"]["vit-probe"]["params"]["patches"] = [16, 64]  # vit-tiny's patch is 32
    with pytest.raises(ConfigError, match=r"variants\.vit-probe\.params.*patches=\[16, 64\]"):
        resolve_model("vit-probe", config)
