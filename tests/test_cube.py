"""The scaling cube: collect metrics.json + ceiling files into one Dataset, write/read it, query it.

The helpers that fabricate schema-true cell files (``write_cell``, ``write_ceiling``,
``write_curves``) are shared with tests/test_plots_report.py and benchmarks/bench_workflow.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from specscale.cli import main as cli_main
from specscale.cube import (
    Cell, CubeError, collect, endpoints, format_table, headline, open_cube, read_metrics, write_cube,
)
from specscale.metrics import SNR_EDGES, evaluate

# a small synthetic sweep: R^2 grows with n_train towards a per-model plateau, drops with noise
PLATEAU = {"ridge": 0.55, "lightgbm": 0.62, "vit-tiny": 0.7, "oracle": 0.8}


def fake_r2(cell: Cell) -> float:
    """The R^2 the fabricated predictions of ``cell`` aim at."""
    return PLATEAU[cell.model] / cell.noise**0.3 * (1 - 0.5 * (1000 / cell.n_train) ** 0.5) - 0.01 * cell.seed


def metrics_record(cell: Cell, n_test: int = 400) -> dict:
    """A metrics.json record as ``specscale train`` writes it, from real ``evaluate`` numbers."""
    rng = np.random.default_rng([cell.n_train, cell.seed, int(cell.noise * 100), len(cell.model)])
    y = rng.uniform(1, 5, n_test)
    snr = rng.uniform(2, 30, n_test)
    r2 = min(max(fake_r2(cell), 0.05), 0.97)
    pred = y + rng.normal(0, np.sqrt((1 - r2) * y.var()), n_test)
    return {
        "schema": "specscale.metrics/1",
        "cell": {"model": cell.model, "noise": cell.noise, "mag": cell.mag, "n_train": cell.n_train,
                 "seed": cell.seed},
        "metrics": evaluate(y, pred, snr),
        "timing": {"train_s": 0.01 * cell.n_train ** 0.5, "predict_s": 0.1, "peak_mem_mb": 300.0},
        "model_info": {"alpha": 10.0},
        "params": {"alphas": [1, 10, 100]},
        "provenance": {"code_version": "test", "config_hash": "abc", "dataset_id": "d1", "seed": cell.seed,
                       "device": "cpu"},
        "data": {"path": "data.h5", "dataset_id": "d1", "n_val": 100, "n_test": n_test},
    }


def write_cell(root: Path, cell: Cell, record: dict | None = None) -> Path:
    """Write the metrics.json of ``cell`` under ``root`` in the workflow's layout; returns its path."""
    path = root / f"noise{cell.noise:g}" / f"mag{cell.mag}" / cell.model / f"n{cell.n_train}" / f"s{cell.seed}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record or metrics_record(cell)))
    return path


def write_ceiling(path: Path, noise: float, mag: str) -> Path:
    """A ``specscale fisher`` file: scalar ceilings plus one per S/N bin."""
    pop = 0.9 - 0.1 * noise
    ds = xr.Dataset(
        {
            "ceiling_pop": pop, "ceiling_median": min(pop + 0.1, 0.99),
            "ceiling_pop_top20": min(pop + 0.1, 0.99), "ceiling_median_top20": min(pop + 0.12, 0.99),
            "ceiling_pop_snr_bin": ("snr_bin", np.linspace(0.2, 0.95, len(SNR_EDGES) - 1)),
            "var_prior": 4 / 3,
            "r2_max": ("star", np.linspace(0.3, 0.99, 50)),  # per-star: stays in the file
        },
        coords={"snr_bin": [f"{a:g}-{b:g}" for a, b in zip(SNR_EDGES[:-1], SNR_EDGES[1:])],
                "snr_bin_lo": ("snr_bin", np.array(SNR_EDGES[:-1]))},
        attrs={"dataset_id": "d1", "noise": noise, "mag": mag},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def write_curves(path: Path, noises, mags) -> Path:
    """A ``specscale fisher-curves`` file: ceilings on (noise, mag)."""
    noise = np.asarray(noises, float)[:, None]
    mag = np.asarray(mags, float)[None, :]
    pop = np.clip(0.95 - 0.08 * np.exp(mag - 21) * noise, 0, 1)
    ds = xr.Dataset({"ceiling_pop": (("noise", "mag"), pop), "ceiling_median": (("noise", "mag"), np.clip(pop + 0.08, 0, 1))},
                    coords={"noise": np.asarray(noises, float), "mag": np.asarray(mags, float)})
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def sweep_cells(noises=(0.5, 1.0), mags=("21.5", "20.5-22.5"), sizes=(1000, 2000, 4000), seeds=(0, 1)) -> list[Cell]:
    """ridge and lightgbm at every size, vit-tiny at the largest two, the oracle once at the largest."""
    cells = []
    for noise in noises:
        for mag in mags:
            for n in sizes:
                for seed in seeds:
                    cells += [Cell(noise, mag, "ridge", n, seed), Cell(noise, mag, "lightgbm", n, seed)]
                    if n in sizes[-2:]:
                        cells.append(Cell(noise, mag, "vit-tiny", n, seed))
            cells.append(Cell(noise, mag, "oracle", sizes[-1], seeds[0]))
    return cells


def fake_sweep(root: Path, **kwargs) -> dict:
    """Write a whole fabricated sweep (cells, ceilings, curves); returns collect()'s arguments."""
    cells = sweep_cells(**kwargs)
    pairs = [(c, write_cell(root / "cells", c)) for c in cells]
    ceilings = {
        (c.noise, c.mag): write_ceiling(root / "ceiling" / f"noise{c.noise:g}_mag{c.mag}.nc", c.noise, c.mag)
        for c in cells
    }
    noises = sorted({c.noise for c in cells})
    curves = write_curves(root / "ceiling" / "curves.nc", noises, np.arange(19.0, 23.01, 0.5))
    return {"cells": pairs, "ceilings": ceilings, "curves": curves}


@pytest.fixture
def sweep(tmp_path):
    return fake_sweep(tmp_path)


def test_collect_fills_every_cell_and_nan_elsewhere(sweep):
    ds = collect(sweep["cells"], ceilings=sweep["ceilings"], curves=sweep["curves"],
                 attrs={"config": {"grid": {"noise": [0.5, 1.0]}}})
    assert dict(ds.sizes) == {"noise": 2, "mag": 2, "model": 4, "n_train": 3, "seed": 2, "snr_bin": 7,
                                   "curve_noise": 2, "curve_mag": 9}
    assert list(ds.model.values) == ["ridge", "lightgbm", "vit-tiny", "oracle"]
    assert list(ds.mag.values) == ["20.5-22.5", "21.5"]  # sorted by (lo, hi)
    assert int(ds.done.sum()) == len(sweep["cells"])
    for cell, path in sweep["cells"]:
        expected = read_metrics(path)["metrics"]
        at = ds.sel(noise=cell.noise, mag=cell.mag, model=cell.model, n_train=cell.n_train, seed=cell.seed)
        assert float(at.r2) == pytest.approx(expected["r2"])
        assert float(at.rmse_top20) == pytest.approx(expected["rmse_top20"])
        np.testing.assert_allclose(at.snr_n.values, expected["snr_bins"]["n"])
        assert json.loads(str(at.cell_record.values))["provenance"]["dataset_id"] == "d1"
    # excluded / not-run cells are NaN: vit-tiny at the smallest size, the oracle with seed 1
    assert np.isnan(ds.r2.sel(model="vit-tiny", n_train=1000)).all()
    assert np.isnan(ds.r2.sel(model="oracle", seed=1)).all()
    assert not ds.done.sel(model="oracle", n_train=2000).any()
    # ceilings per (noise, mag), the per-bin one keeps its dim; curves on their own dims
    assert ds.ceiling_pop.dims == ("noise", "mag")
    assert float(ds.ceiling_pop.sel(noise=0.5, mag="21.5")) == pytest.approx(0.85)
    assert ds.ceiling_pop_snr_bin.dims == ("noise", "mag", "snr_bin")
    assert "ceiling_var_prior" in ds and "ceiling_r2_max" not in ds
    assert ds.curve_ceiling_pop.dims == ("curve_noise", "curve_mag")
    assert json.loads(ds.attrs["config"]) == {"grid": {"noise": [0.5, 1.0]}}
    assert json.loads(ds.attrs["dataset_ids"]) == ["d1"]


def test_write_open_roundtrip_and_table(sweep, tmp_path, capsys):
    ds = collect(sweep["cells"], ceilings=sweep["ceilings"], curves=sweep["curves"])
    out = write_cube(ds, tmp_path / "out" / "cube.nc")
    assert not list(out.parent.glob("*.tmp-*"))
    back = open_cube(out)
    xr.testing.assert_identical(back.drop_vars("cell_record"), ds.drop_vars("cell_record"))
    assert back.cell_record.values.tolist() == ds.cell_record.values.tolist()
    # the CLI prints one block per (noise, mag) with its ceiling, one row per (model, n_train) run
    assert cli_main(["cube", str(out)]) == 0
    text = capsys.readouterr().out
    assert text == format_table(back) + "\n"
    assert text.count("noise 0.5  mag 21.5   R2 ceiling: population 0.850  median 0.950") == 1
    blocks = text.split("\n\n")[1:]
    assert len(blocks) == 4
    rows = [line for line in blocks[0].splitlines()[2:]]
    assert len(rows) == 3 + 3 + 2 + 1  # ridge, lightgbm at 3 sizes, vit-tiny at 2, oracle once
    assert rows[0].split()[:3] == ["ridge", "1000", "2"]


def test_headline_and_endpoints(sweep):
    ds = collect(sweep["cells"], ceilings=sweep["ceilings"], attrs={"baseline_model": "ridge"})
    ends = endpoints(ds)
    e = ends.sel(noise=1.0, mag="21.5")
    assert int(e.n_train.sel(model="vit-tiny")) == 4000 and int(e.n_seeds.sel(model="vit-tiny")) == 2
    assert int(e.n_train.sel(model="oracle")) == 4000 and int(e.n_seeds.sel(model="oracle")) == 1
    r2 = ds.r2.sel(noise=1.0, mag="21.5", model="lightgbm", n_train=4000)
    assert float(e["mean"].sel(model="lightgbm")) == pytest.approx(float(r2.mean()))
    assert float(e["std"].sel(model="lightgbm")) == pytest.approx(float(r2.std()))
    rows = headline(ds)
    assert [(r["noise"], r["mag"]) for r in rows] == [(0.5, "20.5-22.5"), (0.5, "21.5"), (1.0, "20.5-22.5"), (1.0, "21.5")]
    for row in rows:
        # the oracle (a reference) is never the best learned model
        assert row["best_model"] == "vit-tiny"
        assert row["difference"] == pytest.approx(row["best_r2"] - row["baseline_r2"]) and row["difference"] > 0
        assert row["gap"] == pytest.approx(row["ceiling_pop"] - row["best_r2"])
        assert np.isfinite(row["oracle_r2"])


def test_mismatched_or_malformed_cells_fail_naming_the_file(tmp_path):
    cell = Cell(1.0, "21.5", "ridge", 1000, 0)
    wrong = metrics_record(Cell(1.0, "21.5", "ridge", 2000, 0))
    path = write_cell(tmp_path, cell, wrong)
    with pytest.raises(CubeError, match=rf"{path}.*expects"):
        collect([(cell, path)])
    bad = metrics_record(cell) | {"schema": "other/1"}
    path.write_text(json.dumps(bad))
    with pytest.raises(CubeError, match=rf"{path}: schema is 'other/1'"):
        collect([(cell, path)])
    path.write_text("{not json")
    with pytest.raises(CubeError, match="not readable JSON"):
        collect([(cell, path)])
    path.unlink()
    with pytest.raises(CubeError, match="not found"):
        collect([(cell, path)])
    # cells from two different datasets cannot share a cube
    other = Cell(1.0, "21.5", "ridge", 2000, 0)
    rec = metrics_record(other)
    rec["provenance"]["dataset_id"] = "d2"
    pairs = [(cell, write_cell(tmp_path, cell)), (other, write_cell(tmp_path, other, rec))]
    with pytest.raises(CubeError, match="different datasets"):
        collect(pairs)
    # ... and neither can a ceiling of another dataset
    stale = write_ceiling(tmp_path / "c.nc", 1.0, "21.5")  # dataset d1
    rec["provenance"]["dataset_id"] = rec["data"]["dataset_id"] = "d2"
    with pytest.raises(CubeError, match=r"c\.nc: ceiling of dataset d1, the cells' is \['d2'\]"):
        collect([(other, write_cell(tmp_path, other, rec))], ceilings={(1.0, "21.5"): stale})


def test_collecting_a_thousand_cells_takes_seconds(tmp_path):
    cells = sweep_cells(noises=(0.5, 1.0, 2.0, 4.0, 8.0), mags=("21", "21.5", "22", "22.5", "20.5-22.5"),
                        sizes=(1000, 2000, 4000, 8000, 16000), seeds=(0, 1, 2, 3))
    assert len(cells) >= 1000
    record = metrics_record(cells[0])
    pairs = []
    for c in cells:  # same numbers, right cell: writing 1000 evaluate() records would dominate the test
        record["cell"] = {"model": c.model, "noise": c.noise, "mag": c.mag, "n_train": c.n_train, "seed": c.seed}
        pairs.append((c, write_cell(tmp_path, c, record)))
    t0 = time.perf_counter()
    ds = collect(pairs)
    write_cube(ds, tmp_path / "cube.nc")
    elapsed = time.perf_counter() - t0
    assert int(ds.done.sum()) == len(cells)
    assert elapsed < 10, f"collecting {len(cells)} cells took {elapsed:.1f} s"
