"""Tests of the data sources: the finiteness scan of every split, study files, and their params
tables read without unpickling."""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from bad_input import INF, NAN, copy_of, error_line, train

from specscale.cli import main
from specscale.data.sources import DataError, open_source


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
