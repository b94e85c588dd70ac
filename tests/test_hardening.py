"""Hardening: bad numbers, corrupt datasets, mismatched files, bad paths, concurrent writers and
pickles are refused at the door, with one line naming the culprit, before any work is done."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from specscale.cli import main
from specscale.core.config import ConfigError, from_dict
from specscale.data.sources import DataError, open_source

NAN, INF = float("nan"), float("inf")
FAST = {
    "models": {"lightgbm": {"num_leaves": 7, "max_trees": 20, "early_stopping_rounds": 5, "log_every": 0}},
    "wandb": {"mode": "disabled"},
}
SIM = ["--n-train", "5", "--n-val", "5", "--n-test", "5", "--no-progress", "--device", "cpu"]


@pytest.fixture
def fast(tmp_path):
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


# ---------------------------------------------------------------- config numbers


@pytest.mark.parametrize(
    "sections, key",
    [
        ({"observation": {"exptime_s": NAN}}, "observation.exptime_s"),
        ({"observation": {"sky_ab_arcsec2": [21.3, NAN, 20.9]}}, "observation.sky_ab_arcsec2"),
        ({"observation": {"zenith_deg": [0.0, 90.0]}}, "observation.zenith_deg"),
        ({"atmosphere": {"gravity_scale": INF}}, "atmosphere.gravity_scale"),
        ({"simulation": {"mag_limits": [-INF, INF]}}, "simulation.mag_limits"),
    ],
)
def test_simulate_refuses_nonfinite_or_out_of_range_config_numbers(tmp_path, capsys, sections, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(sections))  # NaN and infinity as YAML's .nan / .inf
    assert main(["simulate", "--out", str(tmp_path / "x.h5"), "--config", str(cfg), *SIM]) == 2
    assert key in error_line(capsys, "simulate")
    assert not list(tmp_path.glob("x.h5*"))


@pytest.mark.parametrize(
    "cls, values, key",
    [
        ("specscale.models.ridge:RidgeParams", {"alpha_max": INF}, "models.x.alpha_max"),
        ("specscale.models.gbm:LightGBMParams", {"lambda_l2": NAN}, "models.x.lambda_l2"),
        ("specscale.models.gbm:LightGBMParams", {"learning_rate": "nan"}, "learning_rate"),  # YAML 1.1: a string
        ("specscale.models.gbm:LightGBMParams", {"learning_rate": "1e400"}, "learning_rate"),  # overflows to inf
        ("specscale.models.gbm:LightGBMParams", {"max_bin": 1}, "max_bin"),  # LightGBM needs > 1
        ("specscale.models.vit:ViTTinyParams", {"lr": INF}, "models.x.lr"),
        ("specscale.ceiling.configs:FisherConfig", {"check_atol": INF}, "models.x.check_atol"),
        ("specscale.sim.observe:ObservingConfig", {"field_angle_deg": -1.0}, "field_angle_deg"),
        ("specscale.sim.observe:ObservingConfig", {"sky_ab_arcsec2": [21.0, 21.0]}, "sky_ab_arcsec2"),
        ("specscale.sim.observe:ObservingConfig", {"extinction_mag_per_airmass": -0.1}, "extinction_mag_per_airmass"),
        ("specscale.data.simulate:SimulationConfig", {"seed": -1}, "seed"),
    ],
)
def test_from_dict_names_nonfinite_and_out_of_range_numbers(cls, values, key):
    import importlib

    module, name = cls.split(":")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(getattr(importlib.import_module(module), name), values, "models.x")


def test_dataclasses_built_in_code_refuse_nonfinite_floats_too():
    from specscale.models.ridge import RidgeParams
    from specscale.sim.observe import ObservingConfig

    with pytest.raises(ValueError, match="alpha_max=inf"):
        RidgeParams(alpha_max=INF)
    with pytest.raises(ValueError, match="exptime_s"):
        ObservingConfig(exptime_s=NAN)
    assert RidgeParams() == RidgeParams(alpha_min=1e-2)  # valid values unchanged


# ---------------------------------------------------------------- command line


@pytest.mark.parametrize(
    "override, name", [("--learning_rate=NaN", "learning_rate"), ("--lambda_l2=Infinity", "lambda_l2")]
)
def test_nonfinite_hyper_parameter_override_fails_before_training(tiny_dataset, tmp_path, fast, capsys, override, name):
    out = tmp_path / "out"
    assert train(tiny_dataset, out, override, config=fast) == 2
    err = error_line(capsys, "train")
    assert f"--{name}" in err and "finite" in err
    assert not out.exists()


def test_threads_zero_is_an_error_naming_the_option(tiny_dataset, tmp_path, fast, capsys):
    out = tmp_path / "out"
    assert train(tiny_dataset, out, "--threads", "0", config=fast) == 2
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


# ---------------------------------------------------------------- dataset contents


@pytest.mark.parametrize(
    "split, name, index, value",
    [
        ("train", "flux", (5, 100), NAN),
        ("val", "flux", (3, 0), INF),
        ("test", "flux", (7, 4095), -INF),
        ("train", "labels", (2, 1), NAN),
        ("train", "obs_u", (9, 2), NAN),
        ("test", "fmed0", (4,), 0.0),
    ],
)
def test_nonfinite_data_in_a_split_the_cell_uses_is_found_before_training(
    tiny_dataset, tmp_path, fast, capsys, split, name, index, value
):
    path = copy_of(tiny_dataset, tmp_path)
    with h5py.File(path, "r+") as f:
        f[f"{split}/{name}"][index] = value
    out = tmp_path / "out"
    assert train(path, out, config=fast) == 2
    err = error_line(capsys, "train")
    assert str(path) in err and f"{split}/{name} row {index[0]}" in err, err
    assert not out.exists()


def test_scan_reads_bounded_blocks_and_only_the_rows_asked_for(tiny_dataset, tmp_path):
    path = copy_of(tiny_dataset, tmp_path)
    with h5py.File(path, "r+") as f:
        f["train/flux"][250, 17] = NAN
    src = open_source(path)
    src.check_finite("train", n=250, block_bytes=7 * 4096 * 4)  # rows 0..249: clean
    with pytest.raises(DataError, match=r"train/flux row 250 .*nan"):
        src.check_finite("train", block_bytes=7 * 4096 * 4)  # blocks of 7 rows
    for split in ("val", "test"):
        src.check_finite(split)


def _study_file(path, n, rng, *, n_pix=64, fmt="table", params=None, flux_nan=None, error_nan=None, mask=True):
    flux = 1 + 0.1 * rng.standard_normal((n, n_pix))
    error = np.full((n, n_pix), 0.1)
    if flux_nan is not None:
        flux[flux_nan] = np.nan
    if error_nan is not None:
        error[error_nan] = np.nan
    with h5py.File(path, "w") as f:
        f["spectrumdataset/wave"] = np.linspace(7100, 8850, n_pix)
        f["dataset/arrays/flux/value"] = flux
        f["dataset/arrays/error/value"] = error
        if mask:
            m = np.zeros((n, n_pix), np.int8)
            m[:, :5] = 1
            f["dataset/arrays/mask/value"] = m
    table = {
        "T_eff": rng.uniform(3750, 6000, n),
        "log_g": rng.uniform(1, 5, n),
        "M_H": rng.uniform(-2.5, 0.75, n),
        "a_M": rng.uniform(-0.25, 0.5, n),
        "mag": rng.uniform(20.5, 22.5, n),
        "snr": 10.0,
        **(params or {}),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas' PerformanceWarning: "PyTables will pickle object types"
        pd.DataFrame(table).to_hdf(path, key="dataset/params", mode="a", format=fmt)
    return path


def _study(tmp_path, **per_split) -> Path:
    rng = np.random.default_rng(1)
    for split, n in (("train", 30), ("val", 10), ("test", 20)):
        _study_file(tmp_path / f"{split}.h5", n, rng, **per_split.get(split, {}))
    manifest = tmp_path / "study.yaml"
    manifest.write_text("format: pfs-study\ntrain: train.h5\nval: val.h5\ntest: test.h5\n")
    return manifest


@pytest.mark.parametrize(
    "split, contents, where",
    [
        ("val", {"flux_nan": (3, 40)}, "val.h5: val flux row 3 "),
        ("train", {"error_nan": (2, 30)}, "train.h5: train error row 2 "),
        ("test", {"params": {"mag": np.r_[21.0, np.nan, np.full(18, 21.0)]}}, "test.h5: test dataset/params row 1 "),
    ],
)
def test_study_files_are_scanned_too(tmp_path, split, contents, where):
    src = open_source(_study(tmp_path, **{split: contents}))
    with pytest.raises(DataError, match=where):
        for s in ("train", "val", "test"):
            src.check_finite(s)


def test_study_scan_ignores_masked_error_pixels(tmp_path):
    src = open_source(_study(tmp_path, train={"error_nan": (2, 3)}))  # pixel 3 is masked: weight 0 anyway
    for s in ("train", "val", "test"):
        src.check_finite(s)


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
    assert train(tiny_dataset, out, "--ceiling", str(ceiling), config=fast) == 2
    err = error_line(capsys, "train")
    assert "0123456789abcdef" in err and ours in err and str(ceiling) in err
    assert not out.exists()
    for attrs, expect in (({"noise": 2.0}, "noise 2"), ({"mag": "21.5"}, "magnitude cell 21.5")):
        assert train(tiny_dataset, out, "--ceiling", str(_ceiling(tmp_path / "d.nc", **attrs)), config=fast) == 2
        assert expect in error_line(capsys, "train")
    # the matching ceiling is taken
    assert train(tiny_dataset, out, "--ceiling", str(_ceiling(tmp_path / "e.nc", dataset_id=ours)), config=fast) == 0
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
    assert train(tiny_dataset, out, config=fast) == 2
    err = error_line(capsys, "train")
    assert str(out / "metrics.json") in err and "--force" in err
    assert train(tiny_dataset, out, "--force", config=fast) == 0
    assert json.loads((out / "metrics.json").read_text())["schema"] == "specscale.metrics/1"


def test_train_out_must_be_a_writable_directory(tiny_dataset, tmp_path, fast, capsys):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "cell"):
        assert train(tiny_dataset, out, config=fast) == 2
        assert str(tmp_path / "file") in error_line(capsys, "train")
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: no unwritable directory to try")
def test_unwritable_out_is_named(tiny_dataset, tmp_path, fast, capsys):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert train(tiny_dataset, locked / "cell", config=fast) == 2
        assert str(locked) in error_line(capsys, "train")
        assert main(["simulate", "--out", str(locked / "x.h5"), *SIM]) == 2
        assert str(locked) in error_line(capsys, "simulate")
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------- concurrent writers

HOLDER = """
import sys, time
from specscale.core.files import writer_lock
with writer_lock(sys.argv[1]):
    print("ready", flush=True)
    time.sleep(120)
"""


@contextmanager
def holder_of(target):
    """A process holding the writer lock of ``target`` until the block ends (then SIGKILLed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(target)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.wait(30)
            pytest.fail(f"lock holder did not start: {proc.stderr.read()}")
        yield proc
    finally:
        proc.kill()
        proc.wait(30)


def test_file_system_without_flock_writes_unlocked_with_a_warning(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    from specscale.core import files

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with caplog.at_level(logging.WARNING), files.writer_lock(tmp_path / "x.h5"):
        pass
    assert "does not support flock" in caplog.text and not list(tmp_path.iterdir())


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_second_train_writer_fails_at_once_naming_the_holder(tiny_dataset, tmp_path, fast, capsys):
    from specscale.core.files import writer_lock

    out = tmp_path / "cell"
    with holder_of(out) as holder:
        assert train(tiny_dataset, out, config=fast) == 2
        err = error_line(capsys, "train")
        assert f"PID {holder.pid}" in err and str(out) in err
        assert not out.exists()
    # the holder was SIGKILLed: its lock file may stay, but it does not block the next writer
    with writer_lock(out):
        pass
    assert not list(tmp_path.glob("*.lock"))


def test_second_simulate_writer_fails_at_once_naming_the_holder(tmp_path, capsys):
    target = tmp_path / "x.h5"
    with holder_of(target) as holder:
        assert main(["simulate", "--out", str(target), *SIM]) == 2
        assert f"PID {holder.pid}" in error_line(capsys, "simulate")
    assert not target.exists()


def test_stale_temp_files_of_dead_writers_are_removed(tiny_dataset, tmp_path, fast, caplog):
    dead = dead_pid()
    target = tmp_path / "x.h5"
    stale, live = tmp_path / f"x.h5.tmp-{dead}", tmp_path / "x.h5.tmp-1"  # PID 1 is always alive
    stale.write_bytes(b"half a file"), live.write_bytes(b"someone else's")
    with caplog.at_level(logging.INFO):
        assert main(["simulate", "--out", str(target), *SIM]) == 0
    assert target.exists() and not stale.exists() and live.exists()
    assert str(stale) in caplog.text and str(live) in caplog.text
    out = tmp_path / "cell"
    (out / "work").mkdir(parents=True)
    old = [out / f"metrics.json.tmp-{dead}", out / f"predictions.h5.tmp-{dead}", out / "work" / f"ckpt.pt.tmp-{dead}"]
    for p in old:
        p.write_text("partial")
    assert train(tiny_dataset, out, config=fast) == 0
    assert not [p for p in old if p.exists()] and (out / "metrics.json").exists()


# ---------------------------------------------------------------- pickles


class Reducer:
    """Unpickling this creates the directory ``marker``: the side effect a crafted file would hide."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker, 0o777, True))


def test_pickled_object_column_is_refused_without_unpickling(tmp_path, capsys):
    marker = tmp_path / "pwned"
    manifest = _study(tmp_path, train={"fmt": "fixed", "params": {"mag": [Reducer(marker)] * 30}})
    with pytest.raises(DataError, match=r"train\.h5: .*'mag'.*pickle"):
        open_source(manifest)
    assert not marker.exists()
    assert main(["snr", str(manifest), "--mag", "20-23"]) == 2
    assert "'mag'" in error_line(capsys, "snr")
    assert not marker.exists()


def test_pickled_extra_column_is_left_unread(tmp_path, caplog):
    marker = tmp_path / "pwned"
    manifest = _study(tmp_path, val={"fmt": "fixed", "params": {"note": [Reducer(marker)] * 10}})
    with caplog.at_level(logging.WARNING):
        src = open_source(manifest)
    assert not marker.exists()
    assert "'note'" in caplog.text and src.labels("val").shape == (10, 4)


def test_crafted_table_attribute_is_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    manifest = _study(tmp_path)
    with h5py.File(tmp_path / "test.h5", "a") as f:
        f["dataset/params/table"].attrs["values_block_0_kind"] = np.bytes_(pickle.dumps(Reducer(marker), protocol=0))
    with pytest.raises(DataError, match=r"test\.h5: .*values_block_0_kind.*refused"):
        open_source(manifest)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["table", "fixed"])
def test_params_read_without_pandas_match_pandas(tmp_path, fmt):
    manifest = _study(tmp_path, **{s: {"fmt": fmt, "params": {"n_obs": 3, "name": "star"}} for s in ("train", "test")})
    src = open_source(manifest)
    for split in ("train", "val", "test"):
        ref = pd.read_hdf(tmp_path / f"{split}.h5", "dataset/params")
        np.testing.assert_array_equal(src.labels(split), ref[["T_eff", "log_g", "M_H", "a_M"]].to_numpy(np.float32))
        np.testing.assert_array_equal(src.params[split]["mag"].to_numpy(), ref["mag"].to_numpy())
