"""Weights & Biases: an offline ViT run holds the keys a dashboard needs; no account, no network."""

from __future__ import annotations

import json

import pytest
import yaml
from factories import read_offline_run

from specscale.cli import main
from specscale.core.config import ConfigError, from_dict
from specscale.sweep.tracking import WandbConfig, run_group, run_name

VIT = {"width": 16, "depth": 1, "heads": 2, "mlp": 32, "batch": 50, "max_epochs": 2, "workers": 0, "log_every": 2}


def run(data, out, config: dict, *extra):
    cfg = out.parent / f"{out.name}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return main(
        [
            "train",
            "vit-tiny",
            "--data",
            str(data),
            "--noise",
            "1",
            "--mag",
            "20.5-22.5",
            "--n-train",
            "200",
            "--seed",
            "4",
            "--out",
            str(out),
            "--config",
            str(cfg),
            "--threads",
            "1",
            *extra,
        ]
    )


def test_offline_run_holds_config_history_summary_and_ceiling(tiny_dataset, tmp_path, monkeypatch):
    import xarray as xr

    monkeypatch.delenv("WANDB_MODE")  # the default must be offline
    monkeypatch.delenv("WANDB_DIR")  # the default must be inside --out
    ceiling = tmp_path / "ceiling.nc"
    xr.Dataset(
        {"ceiling_pop": ((), 0.74), "ceiling_median": ((), 0.89)}, attrs={"mag": "20.5-22.5", "noise": 1.0}
    ).to_netcdf(ceiling, engine="h5netcdf")
    out = tmp_path / "cell"
    assert run(tiny_dataset, out, {"models": {"vit-tiny": VIT}}, "--ceiling", str(ceiling)) == 0
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    rec = read_offline_run(runs[0])
    assert rec["group"] == "noise1_mag20.5-22.5" == run_group(1.0, "20.5-22.5")
    assert rec["name"] == "vit-tiny_n200_s4" == run_name("vit-tiny", 200, 4)
    assert rec["config"]["cell"] == {"model": "vit-tiny", "noise": 1.0, "mag": "20.5-22.5", "n_train": 200, "seed": 4}
    assert rec["config"]["params"]["width"] == 16 and rec["config"]["dataset_id"]
    logged = set().union(*rec["history"])
    assert {
        "train/loss",
        "train/lr",
        "perf/spectra_per_s",
        "val/r2",
        "val/mae",
        "test/r2",
        "test/mae",
        "test/ceiling_pop",
        "test/ceiling_median",
        "test/gap_pop",
    } <= logged
    metrics = json.loads((out / "metrics.json").read_text())
    s = rec["summary"]
    assert s["test/r2"] == pytest.approx(metrics["metrics"]["r2"])
    assert s["test/ceiling_pop"] == 0.74 and s["test/ceiling_median"] == 0.89
    assert s["test/gap_pop"] == pytest.approx(0.74 - metrics["metrics"]["r2"])
    assert metrics["ceiling"]["ceiling_median"] == 0.89
    val_r2 = [h["val/r2"] for h in rec["history"] if "val/r2" in h]
    assert val_r2 == [h["val_r2"] for h in metrics["model_info"]["history"]]


def test_disabled_mode_writes_nothing(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_DIR")
    out = tmp_path / "cell"
    assert (
        run(tiny_dataset, out, {"models": {"vit-tiny": {**VIT, "max_epochs": 1}}, "wandb": {"mode": "disabled"}}) == 0
    )
    assert not (out / "wandb").exists() and (out / "metrics.json").exists()


def test_mode_precedence(monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    assert WandbConfig().effective_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert WandbConfig().effective_mode() == "disabled"
    assert WandbConfig(mode="offline").effective_mode() == "offline"  # the config wins
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match="WANDB_MODE='sometimes'"):
        WandbConfig().effective_mode()
    with pytest.raises(ConfigError, match=r"wandb\.api_key"):
        from_dict(WandbConfig, {"api_key": "secret"}, "wandb")
