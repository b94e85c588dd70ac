"""`specscale train`: one cell end to end, its outputs, and bad input refused before training."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from bad_input import SIM, error_line
from bad_input import train as train_lightgbm

from specscale.cli import main
from specscale.data.sources import DataError, open_source
from specscale.models.metrics import evaluate

FAST = {
    "models": {
        "vit-tiny": {"width": 16, "depth": 1, "heads": 2, "mlp": 32, "batch": 100, "max_epochs": 2, "workers": 0},
        "lightgbm": {"num_leaves": 7, "max_trees": 30, "early_stopping_rounds": 5, "log_every": 0},
    },
    "wandb": {"mode": "disabled"},
}


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(FAST))
    return path


def train(data, out, *extra, model="vit-tiny", n_train=300, mag="20.5-22.5"):
    return main(
        [
            "train",
            model,
            "--data",
            str(data),
            "--noise",
            "1",
            "--mag",
            mag,
            "--n-train",
            str(n_train),
            "--seed",
            "2",
            "--out",
            str(out),
            "--threads",
            "1",
            *extra,
        ]
    )


@pytest.mark.parametrize("model", ["vit-tiny", "lightgbm"])
def test_cell_writes_metrics_and_predictions(tiny_dataset, tmp_path, config, model):
    out = tmp_path / model
    assert train(tiny_dataset, out, "--config", str(config), model=model, n_train=200) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == {"schema", "cell", "metrics", "timing", "model_info", "params", "provenance", "data"}
    assert m["schema"] == "specscale.metrics/1"
    assert m["cell"] == {"model": model, "noise": 1.0, "mag": "20.5-22.5", "n_train": 200, "seed": 2}
    assert {"train_s", "predict_s", "peak_mem_mb"} <= set(m["timing"]) and m["timing"]["peak_mem_mb"] > 0
    assert {"dataset_id", "config_hash", "code_version", "seed", "device"} <= set(m["provenance"])
    assert m["data"]["n_test"] == 100 and m["data"]["n_val"] == 100 and m["data"]["path"] == str(tiny_dataset)
    with h5py.File(out / "predictions.h5") as f:
        true, pred, snr = f["logg_true"][:], f["logg_pred"][:], f["snr"][:]
        assert f["labels"].shape == (100, 4) and np.array_equal(f["labels"][:, 1], true.astype(np.float32))
        assert json.loads(f.attrs["cell"])["model"] == model
    # metrics.json says what the predictions say
    assert m["metrics"]["r2"] == pytest.approx(evaluate(true, pred, snr)["r2"])
    assert m["metrics"]["r2"] == pytest.approx(1 - np.sum((pred - true) ** 2) / np.sum((true - true.mean()) ** 2))
    assert not list(out.glob("*.tmp-*"))
    if model == "vit-tiny":
        assert m["model_info"]["epochs"] == 2 and m["params"]["width"] == 16 and m["model_info"]["n_params"] > 0
    else:
        assert 1 <= m["model_info"]["n_trees"] <= 30 and m["params"]["num_leaves"] == 7


def test_rerun_of_a_finished_cell(tiny_dataset, tmp_path, config, capsys):
    out = tmp_path / "cell"
    assert train(tiny_dataset, out, "--config", str(config)) == 0
    stamp = (out / "metrics.json").stat().st_mtime_ns
    assert train(tiny_dataset, out, "--config", str(config)) == 0  # same configuration: nothing to do
    assert (out / "metrics.json").stat().st_mtime_ns == stamp
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**FAST, "models": {"vit-tiny": {**FAST["models"]["vit-tiny"], "lr": 1e-4}}}))
    capsys.readouterr()
    assert train(tiny_dataset, out, "--config", str(other)) == 2  # another configuration: refused
    assert "different configuration" in capsys.readouterr().err
    assert train(tiny_dataset, out, "--config", str(other), "--force") == 0
    assert json.loads((out / "metrics.json").read_text())["params"]["lr"] == 1e-4


@pytest.mark.parametrize(
    "case, expect",
    [
        ({"model": "resnet"}, "unknown model 'resnet'; known models: ridge, lightgbm, vit, vit-tiny, oracle"),
        ({"n_train": 301}, "--n-train 301 is not in 1..300"),
        ({"n_train": 0}, "--n-train must be an integer >= 1, got 0"),
        ({"mag": "27.0"}, "magnitude cell 27 is outside the data"),
        ({"mag": "bright"}, "magnitude cell 'bright'"),
        ({"config": {"models": {"vit-tiny": {"depth": 1, "nlayers": 3}}}}, "models.vit-tiny.nlayers"),
        ({"config": {"models": {"vit-tiny": {"loss": "mae2"}}}}, "models.vit-tiny: loss='mae2'"),
        ({"config": {"models": {"ridge": {"alpha_max": "big"}}}, "model": "ridge"}, "models.ridge: alpha_max='big'"),
        ({"config": {"models": {"ridge": {"batch": 2.5}}}, "model": "ridge"}, "models.ridge: batch=2.5"),
        ({"config": {"wandb": {"mode": "cloud"}}}, "wandb: mode='cloud'"),
        ({"config": {"wandb": {"key": "x"}}}, "wandb.key"),
        ({"config": {"modles": {}}}, "unknown top-level config key(s) ['modles']"),
        ({"data": "missing.h5"}, "dataset not found"),
        ({"ceiling": "missing.nc"}, "ceiling file not found"),
        ({"extra": ["--noise", "-1"]}, "--noise must be a finite number >= 0"),
        ({"extra": ["--device", "tpu"]}, "--device 'tpu': expected auto, cpu or cuda"),
        ({"extra": ["--device", "cuda"], "model": "ridge"}, "model 'ridge' runs on the CPU only"),
        ({"extra": ["--nlayers=3"]}, "models.vit-tiny.nlayers"),
        ({"extra": ["--depth=two"]}, "models.vit-tiny: depth='two'"),
        ({"extra": ["--depth", "3"]}, "unrecognized argument '--depth': hyper-parameter overrides take the form"),
        ({"extra": ["-x", "lr=3"]}, "unrecognized argument '-x'"),
    ],
)
def test_bad_input_fails_before_training(tiny_dataset, tmp_path, capsys, case, expect):
    data = tmp_path / case["data"] if "data" in case else tiny_dataset
    extra = list(case.get("extra", []))
    if "config" in case:
        cfg = tmp_path / "bad.yaml"
        cfg.write_text(yaml.safe_dump(case["config"]))
        extra += ["--config", str(cfg)]
    if "ceiling" in case:
        extra += ["--ceiling", str(tmp_path / case["ceiling"])]
    out = tmp_path / "out"
    rc = train(
        data,
        out,
        *extra,
        model=case.get("model", "vit-tiny"),
        n_train=case.get("n_train", 300),
        mag=case.get("mag", "20.5-22.5"),
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert expect in err and err.startswith("specscale train: error:")
    assert not out.exists()  # nothing was trained or written


def test_n_train_error_names_both_numbers(tiny_dataset, tmp_path, capsys):
    assert train(tiny_dataset, tmp_path / "o", n_train=5000) == 2
    err = capsys.readouterr().err
    assert "5000" in err and "has 300 stars" in err and str(tiny_dataset) in err


def test_ceiling_file_must_hold_both_values(tiny_dataset, tmp_path, capsys):
    import xarray as xr

    path = tmp_path / "c.nc"
    xr.Dataset(attrs={"ceiling_pop": 0.7}).to_netcdf(path, engine="h5netcdf")
    assert train(tiny_dataset, tmp_path / "o", "--ceiling", str(path)) == 2
    assert "has no 'ceiling_median'" in capsys.readouterr().err
    xr.Dataset(attrs={"ceiling_pop": 0.7, "ceiling_median": 0.8, "mag": "21.5"}).to_netcdf(path, engine="h5netcdf")
    assert train(tiny_dataset, tmp_path / "o", "--ceiling", str(path)) == 2
    assert "magnitude cell 21.5" in capsys.readouterr().err


def test_sweep_agent_command_line(tiny_dataset, tmp_path, config, monkeypatch, capsys):
    """What a W&B sweep agent runs: ${args} as --NAME=VALUE overrides of models.MODEL, and
    '{run_id}' in --out from $WANDB_RUN_ID; the overrides reach the model and its config hash."""
    from specscale.cli.train import parse_overrides

    assert parse_overrides(["--lr=3e-4", "--depth=2", "--weight-decay=1e-2", "--loss=mse"]) == {
        "lr": 3e-4,
        "depth": 2,
        "weight_decay": 1e-2,
        "loss": "mse",
    }
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    assert train(tiny_dataset, tmp_path / "sweep" / "{run_id}", "--config", str(config)) == 2
    assert "WANDB_RUN_ID is not set" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_RUN_ID", "abc123")
    assert (
        train(
            tiny_dataset,
            tmp_path / "sweep" / "{run_id}",
            "--config",
            str(config),
            "--width=8",
            "--lr=1e-3",
            "--max_epochs=1",
            n_train=200,
        )
        == 0
    )
    m = json.loads((tmp_path / "sweep" / "abc123" / "metrics.json").read_text())
    assert m["params"]["width"] == 8 and m["params"]["lr"] == 1e-3 and m["params"]["depth"] == 1  # file value kept
    assert m["model_info"]["epochs"] == 1
    # every parameter the shipped sweep definition varies is a field of models.vit
    from specscale.models.registry import resolve_model

    sweep = yaml.safe_load((Path(__file__).parents[1] / "config" / "wandb_sweep.yaml").read_text())
    values = {k: (v["values"][0] if "values" in v else v["min"]) for k, v in sweep["parameters"].items()}
    assert resolve_model("vit", {"models": {"vit": values}}).params.depth == values["depth"]
    assert "{run_id}" in " ".join(sweep["command"]) and "${args}" in sweep["command"]


def test_other_commands_reject_unknown_arguments(capsys):
    assert main(["snr", "x.h5", "--mag", "21.5", "--lr=3"]) == 2
    assert "unrecognized arguments: --lr=3" in capsys.readouterr().err


# ---------------------------------------------------------------- command line
@pytest.mark.parametrize(
    "override, name", [("--learning_rate=NaN", "learning_rate"), ("--lambda_l2=Infinity", "lambda_l2")]
)
def test_nonfinite_hyper_parameter_override_fails_before_training(tiny_dataset, tmp_path, fast, capsys, override, name):
    out = tmp_path / "out"
    assert train_lightgbm(tiny_dataset, out, override, config=fast) == 2
    err = error_line(capsys, "train")
    assert f"--{name}" in err and "finite" in err
    assert not out.exists()


def test_threads_zero_is_an_error_naming_the_option(tiny_dataset, tmp_path, fast, capsys):
    out = tmp_path / "out"
    assert train_lightgbm(tiny_dataset, out, "--threads", "0", config=fast) == 2
    assert "--threads" in error_line(capsys, "train")
    assert not out.exists()


def test_simulate_and_snr_command_line_numbers(tiny_dataset, tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path / "x.h5"), *SIM, "--seed", "-1"]) == 2
    assert "seed" in error_line(capsys, "simulate")
    assert not list(tmp_path.glob("x.h5*"))
    assert main(["snr", str(tiny_dataset), "--mag", "21.5", "--noise", "inf"]) == 2
    assert "--noise" in error_line(capsys, "snr")
    assert main(["snr", str(tiny_dataset), "--mag", "21.5", "--n", "0"]) == 2
    assert "--n" in error_line(capsys, "snr")


# ---------------------------------------------------------------- mismatched files
def _ceiling(path, **attrs):
    import xarray as xr

    base = {"ceiling_pop": 0.7, "ceiling_median": 0.8, "noise": 1.0, "mag": "20.5-22.5"}
    xr.Dataset(attrs={**base, **attrs}).to_netcdf(path, engine="h5netcdf")
    return path


def test_ceiling_of_another_dataset_is_refused_naming_both_ids(tiny_dataset, tmp_path, fast, capsys):
    ours = open_source(tiny_dataset).dataset_id
    ceiling = _ceiling(tmp_path / "c.nc", dataset_id="0123456789abcdef")
    out = tmp_path / "out"
    assert train_lightgbm(tiny_dataset, out, "--ceiling", str(ceiling), config=fast) == 2
    err = error_line(capsys, "train")
    assert "0123456789abcdef" in err and ours in err and str(ceiling) in err
    assert not out.exists()
    for attrs, expect in (({"noise": 2.0}, "noise 2"), ({"mag": "21.5"}, "magnitude cell 21.5")):
        assert (
            train_lightgbm(tiny_dataset, out, "--ceiling", str(_ceiling(tmp_path / "d.nc", **attrs)), config=fast) == 2
        )
        assert expect in error_line(capsys, "train")
    # the matching ceiling is taken
    assert (
        train_lightgbm(tiny_dataset, out, "--ceiling", str(_ceiling(tmp_path / "e.nc", dataset_id=ours)), config=fast)
        == 0
    )
    assert json.loads((out / "metrics.json").read_text())["ceiling"]["ceiling_pop"] == 0.7


# ---------------------------------------------------------------- paths and --out
def test_simulate_out_must_be_a_writable_file_path(tmp_path, capsys):
    (tmp_path / "dir.h5").mkdir()
    assert main(["simulate", "--out", str(tmp_path / "dir.h5"), *SIM]) == 2
    assert f"{tmp_path / 'dir.h5'} is a directory" in error_line(capsys, "simulate")
    (tmp_path / "file").write_text("x")
    assert main(["simulate", "--out", str(tmp_path / "file" / "x.h5"), *SIM]) == 2
    assert str(tmp_path / "file") in error_line(capsys, "simulate")


def test_hdf5_with_a_format_attribute_and_nothing_else(tmp_path, capsys):
    path = tmp_path / "bare.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "specscale-synthetic"
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: .*'config'"):
        open_source(path)
    assert main(["snr", str(path), "--mag", "21.5"]) == 2
    assert str(path) in error_line(capsys, "snr")
    with h5py.File(path, "a") as f:
        f.attrs["config"] = "{not json"
        f.attrs["content_hash"] = "abc"
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: .*config"):
        open_source(path)
    with h5py.File(path, "a") as f:
        f.attrs["config"] = json.dumps({"simulation": {"mag_limits": [14, 26]}, "observation": {}})
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: missing dataset 'wave'"):
        open_source(path)


def test_truncated_metrics_json_is_named_and_force_replaces_it(tiny_dataset, tmp_path, fast, capsys):
    out = tmp_path / "cell"
    out.mkdir()
    (out / "metrics.json").write_text('{\n  "schema": "specscale.metrics/1",\n  "cell": {')
    assert train_lightgbm(tiny_dataset, out, config=fast) == 2
    err = error_line(capsys, "train")
    assert str(out / "metrics.json") in err and "--force" in err
    assert train_lightgbm(tiny_dataset, out, "--force", config=fast) == 0
    assert json.loads((out / "metrics.json").read_text())["schema"] == "specscale.metrics/1"


def test_train_out_must_be_a_writable_directory(tiny_dataset, tmp_path, fast, capsys):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "cell"):
        assert train_lightgbm(tiny_dataset, out, config=fast) == 2
        assert str(tmp_path / "file") in error_line(capsys, "train")
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: no unwritable directory to try")
def test_unwritable_out_is_named(tiny_dataset, tmp_path, fast, capsys):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert train_lightgbm(tiny_dataset, locked / "cell", config=fast) == 2
        assert str(locked) in error_line(capsys, "train")
        assert main(["simulate", "--out", str(locked / "x.h5"), *SIM]) == 2
        assert str(locked) in error_line(capsys, "simulate")
    finally:
        locked.chmod(0o700)
