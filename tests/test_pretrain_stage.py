"""The pre-training stage of the sweep: the config section ``pretrain`` is checked naming the key,
``specscale pretrain`` refuses bad values naming the option or key, a fine-tuned variant's train
job depends on the run's encoder (dry run) and ``specscale plan`` counts the run; the conditional
bias metric means what it says in metrics.json and in the paired bootstrap; and (slow) a tiny
sweep runs pre-train -> fine-tune -> cube -> report with a decision row for a pre-training
hypothesis."""

from __future__ import annotations

import copy
import os
import signal

import numpy as np
import pytest
import yaml
from test_workflow import planned, snakemake

from specscale.cli import main
from specscale.cli.plan import load_config
from specscale.core.config import ConfigError
from specscale.models.metrics import conditional_bias, evaluate, label_bins
from specscale.sweep.bootstrap import paired_bootstrap
from specscale.sweep.grid import Sweep
from specscale.sweep.plan import sweep_jobs

TINY_VIT = {
    "width": 32,
    "depth": 1,
    "heads": 2,
    "mlp": 64,
    "batch": 64,
    "max_epochs": 2,
    "workers": 0,
    "eval_batch": 64,
}
CONFIG = {
    "datasets": {"tiny": {"n_train": 400, "n_val": 100, "n_test": 200, "seed": 3}},
    "grid": {
        "noise": [1.0],
        "mag": ["21.5"],
        "model": ["ridge", "vit-tiny", "vt-msm", "vt-probe", "vt-rand-probe"],
        "n_train": [200],
        "ceiling": {"stars": 40},
        "bayes": {"stars": 40},
        "curves": {"mag": [21.0, 22.0], "stars": 20},
    },
    "models": {"ridge": {"n_alphas": 9}, "vit-tiny": TINY_VIT},
    "pretrain": {
        "msm": {
            "base": "vit-tiny",
            "tasks": ["msm"],
            "n_spectra": 400,
            "max_epochs": 2,
            "val_spectra": 50,
            "mag": "21.5",
        }
    },
    "variants": {
        "vt-msm": {"base": "vit-tiny", "params": {"pretrain": "msm"}},
        "vt-probe": {"base": "vit-tiny", "params": {"pretrain": "msm", "freeze": True}},
        "vt-rand-probe": {"base": "vit-tiny", "params": {"freeze": True}},
    },
    "hypotheses": [
        {
            "name": "msm_helps",
            "question": "Does msm pre-training lower the ViT's MAE?",
            "base": "vit-tiny",
            "variant": "vt-msm",
            "metric": "mae",
            "op": "<",
            "threshold": 0.0,
            "n_boot": 200,
        },
        {
            "name": "msm_bias_cond",
            "question": "Does msm pre-training lower the conditional bias?",
            "base": "vit-tiny",
            "variant": "vt-msm",
            "metric": "bias_cond",
            "op": "<",
            "threshold": 0.0,
            "n_boot": 200,
        },
    ],
    "wandb": {"mode": "disabled"},
}


def sweep_of(config: dict, tmp_path) -> Sweep:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return Sweep.from_config(load_config(str(path)))


def edited(**changes) -> dict:
    config = copy.deepcopy(CONFIG)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        place = config
        for key in path:
            place = place[key]
        place[last] = value
    return config


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"pretrain__msm__base": "nosuch"}, "pretrain.msm.base"),
        ({"pretrain__msm__base": "ridge"}, "pretrain.msm.base"),
        ({"pretrain__msm__mask_frac": 1.5}, "pretrain.msm: mask_frac"),
        ({"pretrain__msm__lr_warm": 1}, "pretrain.msm.lr_warm"),
        ({"pretrain__msm__n_spectra": 5000}, "pretrain.msm.n_spectra"),
        ({"variants__vt-msm__params": {"pretrain": "msn"}}, "variants.vt-msm.params.pretrain"),
        ({"variants__vt-msm__params": {"pretrain": "msm", "width": 64, "heads": 2}}, "variants.vt-msm.params.pretrain"),
    ],
)
def test_bad_pretraining_config_names_the_key(tmp_path, changes, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        sweep_of(edited(**changes), tmp_path)


def test_variant_config_holds_the_encoder_path_and_plan_counts_the_run(tmp_path):
    sweep = sweep_of(CONFIG, tmp_path)
    assert sweep.pretrain_runs == ["msm"]
    assert sweep.pretrain_of("vt-probe") == "msm" and sweep.pretrain_of("vt-rand-probe") is None
    sections = sweep.config_sections("model/vt-msm")
    assert sections["variants"]["vt-msm"]["params"]["pretrain"] == "results/pretrain/tiny/msm/encoder.pt"
    assert CONFIG["variants"]["vt-msm"]["params"]["pretrain"] == "msm"  # the config itself untouched
    assert sweep.config_sections("pretrain/msm")["pretrain"]["msm"]["base"] == "vit-tiny"
    jobs = [j for j in sweep_jobs(sweep) if j.rule == "pretrain"]
    assert [(j.label, j.wildcards["n_spectra"]) for j in jobs] == [("pretrain msm", 400)]
    assert jobs[0].est_s is not None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nosuch"], "pretrain.nosuch: no such pre-training run"),
        (["msm", "--seed", "-1"], "--seed must be an integer >= 0"),
        (["msm", "--noise", "nan"], "--noise must be a finite number"),
        (["msm", "--threads", "0"], "--threads must be an integer >= 1"),
    ],
)
def test_pretrain_command_refuses_bad_values(tmp_path, capsys, argv, message):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({k: CONFIG[k] for k in ("models", "pretrain", "wandb")}))
    name, *rest = argv
    code = main(
        [
            "pretrain",
            name,
            "--data",
            str(tmp_path / "none.h5"),
            "--config",
            str(config),
            "--out",
            str(tmp_path / "o"),
            *rest,
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err


def test_conditional_bias_is_the_rms_of_the_bin_means():
    rng = np.random.default_rng(0)
    n = 4000
    labels = np.column_stack(
        [rng.uniform(3750, 6000, n), rng.uniform(1, 5, n), rng.uniform(-2.5, 0.75, n), np.zeros(n)]
    )
    groups = label_bins(labels)
    shift = np.where(groups % 4 == 0, 0.2, 0.0)  # the most metal-poor bins biased by +0.2 dex
    y = labels[:, 1]
    pred = y + shift  # no noise: the bin means are exact
    expected = np.sqrt(np.mean(shift**2))  # star-weighted RMS of the bin means
    assert conditional_bias(y, pred, labels) == pytest.approx(expected, rel=1e-9)
    m = evaluate(y, pred, np.full(n, 10.0), labels=labels)
    assert m["bias_cond"] == pytest.approx(expected) and abs(m["bias"] - expected**2 / 0.2) < 1e-9
    res = paired_bootstrap(y, y + 0.01 * rng.normal(size=n), pred, metric="bias_cond", n_boot=200, groups=groups)
    assert res.variant == pytest.approx(expected) and res.ci_lo > 0.08


def test_dry_run_plans_the_pretraining_before_its_fine_tunes(tmp_path):
    proc = snakemake(tmp_path, "-n", config=CONFIG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = planned(proc.stdout + proc.stderr)
    assert jobs["pretrain"] == 1 and jobs["train_vit"] == 4
    proc = snakemake(
        tmp_path, "-n", "results/cells/tiny/noise1/mag21.5/vt-rand-probe/n200/s0/metrics.json", config=CONFIG
    )
    assert "pretrain" not in planned(proc.stdout + proc.stderr)  # the random probe needs no encoder


def run_pretrain_sweep(root):
    """The tiny sweep with its pre-training and fine-tunes (started early)."""
    return root, snakemake(root, "--cores", "2", config=CONFIG, timeout=900, nice=10)


@pytest.mark.slow
@pytest.mark.started_early(run=run_pretrain_sweep, lane="local-sweeps")
def test_tiny_sweep_pretrains_fine_tunes_and_decides(early_run):
    tmp_path, proc = early_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "results/pretrain/tiny/msm/encoder.pt").is_file()
    import xarray as xr

    with xr.open_dataset(tmp_path / "results/cube.nc") as cube:
        assert np.isfinite(cube["bias_cond"].sel(model="vt-msm")).any()
    report = (tmp_path / "results/report.md").read_text()
    assert "| msm_helps:" in report and "| msm_bias_cond:" in report


class _SigtermAt:
    """A Tracker stand-in that sends this process SIGTERM when it logs step ``step``'s loss."""

    def __init__(self, step: int):
        self.step = step

    def __call__(self, *args, **kwargs):  # built by the command like a Tracker
        return self

    def log(self, values: dict, step: int | None = None) -> None:
        if step == self.step and "train/loss" in values:
            os.kill(os.getpid(), signal.SIGTERM)

    def finish(self, exit_code: int = 0) -> None:
        pass


def test_pretrain_command_exits_75_on_sigterm_and_resumes_to_the_same_encoder(
    tiny_dataset, tmp_path, monkeypatch, capsys
):
    import torch

    import specscale.sweep.tracking as tracking

    config = tmp_path / "c.yaml"
    run = {"base": "vit-tiny", "tasks": ["msm", "denoise"], "n_spectra": 128, "max_epochs": 3, "batch": 64}
    models = {"vit-tiny": {**TINY_VIT, "batch": 64}}
    config.write_text(yaml.safe_dump({"models": models, "pretrain": {"m": {**run, "val_spectra": 50, "log_every": 1}}}))

    def cmd(out):
        return ["pretrain", "m", "--data", str(tiny_dataset), "--config", str(config), "--out", str(tmp_path / out)]

    common = ["--mag", "20.5-22.5", "--seed", "5", "--threads", "1", "--device", "cpu"]
    assert main(cmd("full") + common) == 0
    out = capsys.readouterr().out  # the reconstruction against the pixels' noise, per task
    assert "msm (hidden pixels): RMSE" in out and "denoise (visible pixels): RMSE" in out and "vs noise RMS" in out
    real = tracking.Tracker
    monkeypatch.setattr(tracking, "Tracker", _SigtermAt(3))
    assert main(cmd("cut") + common) == 75
    assert not (tmp_path / "cut" / "encoder.pt").exists()
    monkeypatch.setattr(tracking, "Tracker", real)
    assert main(cmd("cut") + common) == 0
    full, cut = (torch.load(tmp_path / d / "encoder.pt", weights_only=True)["encoder"] for d in ("full", "cut"))
    assert full.keys() == cut.keys() and all(torch.equal(full[k], cut[k]) for k in full)
