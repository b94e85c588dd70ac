"""Pre-training of the ViT encoder: its params, mask and loss mean what they say, a run writes an
encoder a supervised ViT starts from (or probes frozen), and a run stopped by SIGTERM resumes to
the same final weights."""

from __future__ import annotations

import dataclasses
import os
import signal

import numpy as np
import pytest
import torch
from factories import small_vit

from specscale.core.config import ConfigError, from_dict
from specscale.core.vocab import Cell
from specscale.data.sources import open_source
from specscale.models.vit import TrainingInterrupted, ViTModel
from specscale.models.vit.params import ENCODER_NAME, PretrainParams
from specscale.models.vit.pretrain import Pretrainer, pretrain

VIT = small_vit(patch=32)
PRE = PretrainParams.like(VIT, tasks=("msm", "denoise"), max_epochs=3, lr=2e-3, log_every=1, val_spectra=50)
RUN = {"n_spectra": 128, "noise": 1.0, "mag": "20.5-22.5", "seed": 5}
CELL = Cell(noise=1.0, mag="20.5-22.5", model="vit", n_train=128, seed=5)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("tasks", {"tasks": ["msm", "contrastive"]}),
        ("tasks", {"tasks": []}),
        ("mask_frac", {"mask_frac": 1.0}),
        ("val_spectra", {"val_spectra": 0}),
        ("loss", {"loss": "mae"}),
        ("freeze", {"freeze": True}),
        ("pretrain", {"pretrain": "other.pt"}),
    ],
)
def test_bad_pretraining_settings_are_refused_naming_the_key(key, bad):
    with pytest.raises(ConfigError, match=rf"pretrain: {key}="):
        from_dict(PretrainParams, bad, "pretrain")


def test_like_keeps_the_architecture_and_drops_supervised_settings():
    vit = dataclasses.replace(VIT, pos_encoding="rope", freeze=True, pool="mean", pretrain="x.pt")
    p = PretrainParams.like(vit, tasks=("denoise",))
    assert (p.pos_encoding, p.width, p.patch, p.tasks) == ("rope", 32, 32, ("denoise",))
    assert (p.freeze, p.pool, p.pretrain) == (False, "cls", "")


def test_mask_and_loss_mean_what_they_say(tiny_dataset):
    src = open_source(tiny_dataset)
    model = Pretrainer(PRE, seed=5)
    model.build(src, CELL)
    model.close()
    mask = model.patch_mask(4, 123)
    assert mask.shape == (4, 128) and mask.sum(1).tolist() == [round(0.3 * 128)] * 4
    assert torch.equal(mask, model.patch_mask(4, 123)) and not torch.equal(mask, model.patch_mask(4, 124))
    # inverse-variance weights: a wrong guess on a noisy (sky-line) pixel costs little
    clean = torch.ones(1, 4096)
    sigma = torch.full_like(clean, 0.1)
    sigma[0, :32] = 100.0  # the first patch sits on a sky line
    pred = torch.zeros_like(clean)
    pred[0, :32] = 50.0  # far off there, exact elsewhere
    hide_first = torch.zeros(1, 128, dtype=torch.bool)
    hide_first[0, :2] = True  # the sky-line patch and a clean one
    losses = model.objective(pred, clean, clean, sigma, hide_first)
    assert losses["msm"] < 1.0 and losses["denoise"] == 0  # unweighted, the msm loss would be 1250
    assert losses["loss"] == losses["msm"] + losses["denoise"]


def _encoder(path):
    return torch.load(path / ENCODER_NAME, weights_only=True)


def test_pretraining_writes_an_encoder_that_a_vit_starts_from(tiny_dataset, tmp_path):
    src = open_source(tiny_dataset)
    info = pretrain(src, PRE, workdir=tmp_path / "pre", **RUN)
    assert info["steps"] == 6 and info["n_spectra"] == 128 and len(info["history"]) == 3
    last = info["history"][-1]
    assert {"val_loss", "val_msm", "val_denoise", "val_msm_chi", "val_denoise_rmse"} <= set(last)
    ck = _encoder(tmp_path / "pre")
    assert ck["architecture"]["width"] == 32 and not any(k.startswith("head.") for k in ck["encoder"])
    # a rerun of a finished run returns at once
    again = pretrain(src, PRE, workdir=tmp_path / "pre", **RUN)
    assert again["resumed_from_step"] == 6

    fine = ViTModel(dataclasses.replace(VIT, pretrain=str(tmp_path / "pre" / ENCODER_NAME)), seed=5)
    fine.build(src, CELL)
    fine.close()
    state = fine.net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ck["encoder"].items())
    scratch = ViTModel(VIT, seed=5)
    scratch.build(src, CELL)
    scratch.close()
    assert torch.equal(state["head.weight"], scratch.net.state_dict()["head.weight"])  # same fresh head
    assert fine.fingerprint != scratch.fingerprint
    # a probe on it trains its head only
    probe = ViTModel(dataclasses.replace(VIT, freeze=True, pretrain=fine.params.pretrain, max_steps=2), seed=5)
    probe.fit(src, CELL, tmp_path / "probe")
    assert all(torch.equal(probe.net.state_dict()[k], v) for k, v in ck["encoder"].items())

    for change, key in (({"width": 64, "heads": 2}, "width"), ({"pos_encoding": "sinusoidal"}, "pos_encoding")):
        other = ViTModel(dataclasses.replace(VIT, pretrain=fine.params.pretrain, **change), seed=5)
        with pytest.raises(ConfigError, match=rf"models\.vit\.pretrain=.*pre-trained with {key}="):
            other.build(src, CELL)
    missing = ViTModel(dataclasses.replace(VIT, pretrain=str(tmp_path / "none.pt")), seed=5)
    with pytest.raises(ConfigError, match=r"models\.vit\.pretrain=.*no such encoder file"):
        missing.build(src, CELL)


class _SigtermAt:
    """A tracker that sends this process SIGTERM when it is given step ``step``'s training loss."""

    def __init__(self, step: int):
        self.step, self.logged = step, []

    def log(self, values: dict, step: int) -> None:
        self.logged.append(step)
        if step == self.step and "train/loss" in values:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_sigterm_run_resumes_to_the_same_weights(tiny_dataset, tmp_path):
    src = open_source(tiny_dataset)
    pretrain(src, PRE, workdir=tmp_path / "full", **RUN)
    with pytest.raises(TrainingInterrupted, match="stopped at step 3"):  # inside epoch 1 (2 steps per epoch)
        pretrain(src, PRE, workdir=tmp_path / "cut", tracker=_SigtermAt(3), **RUN)
    assert not (tmp_path / "cut" / ENCODER_NAME).exists()
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"] == 3
    info = pretrain(src, PRE, workdir=tmp_path / "cut", **RUN)
    assert info["resumed_from_step"] == 3 and info["steps"] == 6
    full, cut = _encoder(tmp_path / "full"), _encoder(tmp_path / "cut")
    assert full["encoder"].keys() == cut["encoder"].keys()
    assert all(torch.equal(full["encoder"][k], cut["encoder"][k]) for k in full["encoder"])
    assert [h["val_loss"] for h in full["info"]["history"]] == [h["val_loss"] for h in cut["info"]["history"]]


def test_more_spectra_than_the_source_holds_is_refused(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="n_spectra=301"):
        pretrain(open_source(tiny_dataset), PRE, workdir=tmp_path, **{**RUN, "n_spectra": 301})


def test_multiscale_rope_encoder_pretrains(tiny_dataset, tmp_path):
    vit = dataclasses.replace(VIT, patch=16, patches=(16, 64), pos_encoding="rope", error_mask=3.0, inputs="flux+error")
    p = PretrainParams.like(vit, max_steps=2, max_epochs=1, val_spectra=20)
    info = pretrain(open_source(tiny_dataset), p, workdir=tmp_path, **RUN)
    assert info["steps"] == 2 and np.isfinite(info["best_val_loss"])
