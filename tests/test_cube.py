"""The scaling cube: collect metrics.json + ceiling files into one Dataset, write/read it, query it
(specscale.report.queries) and print it (specscale.report.tables).

The fabricated, schema-true sweep files come from tests/factories.py.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import xarray as xr
from factories import fake_sweep, metrics_record, sweep_cells, write_ceiling, write_cell

from specscale.cli import main as cli_main
from specscale.core.vocab import Cell
from specscale.report.queries import endpoints, headline
from specscale.report.tables import format_table
from specscale.sweep.cube import collect, open_cube, write_cube
from specscale.sweep.cube_records import CubeError, read_metrics


@pytest.fixture
def sweep(tmp_path):
    return fake_sweep(tmp_path)


def test_collect_fills_every_cell_and_nan_elsewhere(sweep):
    ds = collect(
        sweep["cells"],
        ceilings=sweep["ceilings"],
        curves=sweep["curves"],
        attrs={"config": {"grid": {"noise": [0.5, 1.0]}}},
    )
    assert dict(ds.sizes) == {
        "noise": 2,
        "mag": 2,
        "model": 4,
        "n_train": 3,
        "seed": 2,
        "snr_bin": 7,
        "curve_noise": 2,
        "curve_mag": 9,
    }
    assert list(ds.model.values) == ["ridge", "lightgbm", "vit-tiny", "oracle"]
    assert list(ds.mag.values) == ["20.5-22.5", "21.5"]  # sorted by (lo, hi)
    assert int(ds.done.sum()) == len(sweep["cells"])
    for cell, path in sweep["cells"]:
        expected = read_metrics(path)["metrics"]
        at = ds.sel(noise=cell.noise, mag=cell.mag.label(), model=cell.model, n_train=cell.n_train, seed=cell.seed)
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
    assert [(r["noise"], r["mag"]) for r in rows] == [
        (0.5, "20.5-22.5"),
        (0.5, "21.5"),
        (1.0, "20.5-22.5"),
        (1.0, "21.5"),
    ]
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
    cells = sweep_cells(
        noises=(0.5, 1.0, 2.0, 4.0, 8.0),
        mags=("21", "21.5", "22", "22.5", "20.5-22.5"),
        sizes=(1000, 2000, 4000, 8000, 16000),
        seeds=(0, 1, 2, 3),
    )
    assert len(cells) >= 1000
    record = metrics_record(cells[0])
    pairs = []
    for c in cells:  # same numbers, right cell: writing 1000 evaluate() records would dominate the test
        record["cell"] = c.info()
        pairs.append((c, write_cell(tmp_path, c, record)))
    t0 = time.perf_counter()
    ds = collect(pairs)
    write_cube(ds, tmp_path / "cube.nc")
    elapsed = time.perf_counter() - t0
    assert int(ds.done.sum()) == len(cells)
    assert elapsed < 10, f"collecting {len(cells)} cells took {elapsed:.1f} s"
