"""What the bad-input tests of several units share: a fast LightGBM config, a train command,
the one-line error check and a copy of the tiny dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from specscale.cli import main

NAN, INF = float("nan"), float("inf")
FAST = {
    "models": {"lightgbm": {"num_leaves": 7, "max_trees": 20, "early_stopping_rounds": 5, "log_every": 0}},
    "wandb": {"mode": "disabled"},
}
SIM = ["--n-train", "5", "--n-val", "5", "--n-test", "5", "--no-progress", "--device", "cpu"]


def write_fast_config(tmp_path):
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(FAST))
    return path


def train(data, out, *extra, config=None, n_train=200, model="lightgbm"):
    argv = ["train", model, "--data", str(data), "--noise", "1", "--mag", "20.5-22.5", "--n-train", str(n_train)]
    argv += ["--seed", "2", "--out", str(out), "--threads", "1"]
    if config is not None:
        argv += ["--config", str(config)]
    return main([*argv, *extra])


def error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"specscale {command}: error:"), err
    assert "Traceback" not in err
    return err


def copy_of(tiny_dataset, tmp_path, name="copy.h5") -> Path:
    path = tmp_path / name
    shutil.copyfile(tiny_dataset, path)
    return path
