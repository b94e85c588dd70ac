"""LightGBM: streamed rows equal the in-memory matrix, runs repeat, early stopping on validation."""

from __future__ import annotations

import dataclasses

import lightgbm as lgb
import numpy as np
import pytest

from specscale.core.config import ConfigError, from_dict
from specscale.core.hardware import cpu_count
from specscale.core.vocab import Cell
from specscale.data.sources import open_source
from specscale.models.gbm import LightGBMModel, LightGBMParams
from specscale.models.gbm_rows import ObservedRows

CELL = Cell(noise=1.0, mag="20.5-22.5", model="lightgbm", n_train=200, seed=1)
FAST = LightGBMParams(num_leaves=7, max_trees=60, early_stopping_rounds=10, batch=64, log_every=0)


def test_sequence_rows_are_the_observed_spectra(tiny_dataset):
    src = open_source(tiny_dataset)
    seq = ObservedRows(src, "train", 150, CELL.mag, CELL.noise, CELL.seed, batch=64)
    ref = src.observed("train", np.arange(150), CELL.mag, CELL.noise, CELL.seed).flux
    np.testing.assert_array_equal(seq[10:140], ref[10:140])
    for i in (0, 63, 64, 149):  # single rows come from the block cache
        np.testing.assert_array_equal(seq[i], ref[i])
    with pytest.raises(IndexError):
        seq[150]


@pytest.mark.filterwarnings("ignore:Usage of np.ndarray subset")  # LightGBM, on the in-memory reference
def test_fit_repeats_and_matches_in_memory_training(tiny_dataset, tmp_path):
    src = open_source(tiny_dataset)
    a = LightGBMModel(FAST, seed=5, n_threads=1)
    info = a.fit(src, CELL, tmp_path / "a")
    b = LightGBMModel(FAST, seed=5, n_threads=1)
    b.fit(src, CELL, tmp_path / "b")
    test = src.observed("test", np.arange(src.n("test")), CELL.mag, CELL.noise)
    np.testing.assert_array_equal(a.predict(test), b.predict(test))  # deterministic
    assert 1 <= info["n_trees"] <= info["trees_trained"] <= FAST.max_trees
    assert (tmp_path / "a" / "lightgbm.txt").is_file()

    # the same model trained from in-memory matrices: streaming must not change the data
    params = FAST.lgb_params(5, 1)
    train = src.observed("train", np.arange(CELL.n_train), CELL.mag, CELL.noise, CELL.seed)
    val = src.observed("val", np.arange(src.n("val")), CELL.mag, CELL.noise)
    dtrain = lgb.Dataset(train.flux.astype(np.float64), train.labels[:, 1], params=params)
    dval = lgb.Dataset(val.flux.astype(np.float64), val.labels[:, 1], reference=dtrain, params=params)
    ref = lgb.train(
        params,
        dtrain,
        FAST.max_trees,
        valid_sets=[dval],
        callbacks=[lgb.early_stopping(FAST.early_stopping_rounds, verbose=False)],
    )
    assert ref.best_iteration == info["n_trees"]
    np.testing.assert_allclose(a.predict(test), ref.predict(test.flux, num_iteration=ref.best_iteration), atol=1e-12)


def test_different_seed_changes_the_bagging(tiny_dataset, tmp_path):
    src = open_source(tiny_dataset)
    test = src.observed("test", np.arange(20), CELL.mag, CELL.noise)
    preds = []
    for seed in (5, 6):
        m = LightGBMModel(dataclasses.replace(FAST, early_stopping_rounds=60), seed=seed, n_threads=1)
        m.fit(src, CELL, tmp_path / str(seed))
        preds.append(m.predict(test))
    assert not np.array_equal(*preds)


def test_threads_follow_the_job_allocation(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert cpu_count() == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert cpu_count() == len(__import__("os").sched_getaffinity(0))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "many")
    with pytest.raises(ValueError, match="SLURM_CPUS_PER_TASK"):
        cpu_count()


def test_recipe_defaults_and_strict_config():
    p = LightGBMParams()
    assert (
        p.learning_rate,
        p.num_leaves,
        p.bagging_fraction,
        p.feature_fraction,
        p.max_trees,
        p.early_stopping_rounds,
    ) == (0.05, 63, 0.8, 0.8, 5000, 50)
    lp = p.lgb_params(seed=3, n_threads=4)
    assert lp["deterministic"] and lp["seed"] == 3 and lp["num_threads"] == 4 and "max_trees" not in lp
    with pytest.raises(ConfigError, match=r"models\.lightgbm.*feature_fraction"):
        from_dict(LightGBMParams, {"feature_fraction": 1.5}, "models.lightgbm")
    with pytest.raises(ConfigError, match=r"models\.lightgbm\.n_estimators"):
        from_dict(LightGBMParams, {"n_estimators": 100}, "models.lightgbm")


def test_bin_sample_is_capped_and_every_row_binned_below_the_cap(tiny_dataset, tmp_path):
    """LightGBM's bin sample is capped (memory: its default 200,000 rows of 4096 doubles held ~16 GB
    on the Sequence path); below the cap every row is sampled, so the cap does not move a cell."""
    assert LightGBMParams().lgb_params(0, 1)["bin_construct_sample_cnt"] == 50_000
    with pytest.raises(ConfigError, match=r"bin_construct_sample_cnt"):
        from_dict(LightGBMParams, {"bin_construct_sample_cnt": 0}, "models.lightgbm")
    src = open_source(tiny_dataset)
    test = src.observed("test", np.arange(src.n("test")), CELL.mag, CELL.noise)
    preds = []
    for cap in (CELL.n_train, 200_000):
        model = LightGBMModel(dataclasses.replace(FAST, bin_construct_sample_cnt=cap), seed=5, n_threads=1)
        model.fit(src, CELL, tmp_path / str(cap))
        preds.append(model.predict(test))
    np.testing.assert_array_equal(*preds)
