"""Figures and the markdown report, from a cube alone (fabricated sweep of tests/factories.py):
every figure with and without the Bayes reference, hypotheses and the information-per-chunk file;
the redefined headline (gap = Bayes reference - best, unbiased bounds beside it), the error
against the theoretical sigma and the decision table."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import xarray as xr
from factories import fake_sweep, write_cell

from specscale.cli import main as cli_main
from specscale.core.vocab import Cell
from specscale.report.figures import FIGURES
from specscale.report.information import information_data
from specscale.report.markdown import dg1_verdict, render_report
from specscale.report.plots import plot_all
from specscale.report.queries import headline
from specscale.sweep.cube import collect, open_cube, write_cube
from specscale.sweep.hypotheses import Hypothesis

HYPOTHESES = [
    Hypothesis("vit_mae", "Does the ViT cut ridge's MAE by 5%?", "ridge", "vit-tiny", "mae", "relative", "<=", -0.05),
    Hypothesis("gbm_r2", "Does lightgbm add 0.02 to R^2?", "ridge", "lightgbm", "r2", "absolute", ">=", 0.02),
]


def with_bayes(ds: xr.Dataset) -> xr.Dataset:
    """Fabricated Bayes reference variables on (noise, mag) (as the cube's bayes_* will be): R^2
    a bit above every model, its error, RMSE (dex) and one R^2 per S/N bin."""
    ds = ds.copy()
    best = ds.r2.max(("model", "n_train", "seed"))
    ds["bayes_r2"] = (best + 0.05).clip(max=0.99)
    ds["bayes_r2_err"] = xr.full_like(best, 0.004)
    ds["bayes_rmse"] = np.sqrt((1 - ds["bayes_r2"]) * 4 / 3)
    ds["bayes_r2_snr_bin"] = ds["ceiling_pop_snr_bin"] + 0.03
    return ds


def write_information(path, noises=(0.5, 1.0)):
    """A chunk file: log g information (dex^-2) and the loss when each of 14 chunks of 7100-8850 A
    is removed, per noise level."""
    edges = np.linspace(7100.0, 8850.0, 15)
    info = np.outer(1 / np.asarray(noises) ** 2, np.linspace(1, 3, 14))
    ds = xr.Dataset(
        {
            "wave_lo": ("chunk", edges[:-1]),
            "wave_hi": ("chunk", edges[1:]),
            "info_logg": (("noise", "chunk"), info, {"units": "dex^-2"}),
            "loss_logg": (("noise", "chunk"), 0.3 * info, {"units": "dex^-2"}),
        },
        coords={"noise": list(noises)},
    )
    ds.to_netcdf(path, engine="h5netcdf")
    return path


@pytest.fixture(scope="module")
def cube_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    sweep = fake_sweep(root)
    ds = collect(
        sweep["cells"],
        ceilings=sweep["ceilings"],
        curves=sweep["curves"],
        attrs={"baseline_model": "ridge", "config": {"grid": {}}},
    )
    return write_cube(ds, root / "cube.nc")


@pytest.fixture(scope="module")
def rich_cube(tmp_path_factory):
    """A cube with predictions-backed cells, hypotheses and the Bayes reference."""
    root = tmp_path_factory.mktemp("rich")
    sweep = fake_sweep(root, predictions=True)
    ds = collect(
        sweep["cells"],
        ceilings=sweep["ceilings"],
        curves=sweep["curves"],
        attrs={"baseline_model": "ridge"},
        hypotheses=HYPOTHESES,
    )
    return with_bayes(ds)


def _table(text: str, first_col: str) -> list[dict]:
    """The rows of the markdown table whose header starts with ``first_col``, as dicts."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_col} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("| "):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def test_plot_cli_writes_every_figure_as_png_and_pdf_reproducibly(cube_file, tmp_path):
    out = tmp_path / "plots"
    assert cli_main(["plot", str(cube_file), "--out", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(f"{name}.{ext}" for name in FIGURES for ext in ("png", "pdf"))
    for name in FIGURES:
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert cli_main(["plot", str(cube_file), "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # same cube, same files


def test_plot_cli_writes_the_captions_of_the_one_figure_list(cube_file, tmp_path):
    """The plots rule's report items read their captions from these files; the markdown report
    prints the same captions under the same titles."""
    captions = tmp_path / "captions"
    assert cli_main(["plot", str(cube_file), "--out", str(tmp_path / "plots"), "--captions", str(captions)]) == 0
    assert sorted(p.name for p in captions.iterdir()) == sorted(f"{name}.rst" for name in FIGURES)
    text = render_report(open_cube(cube_file), "plots")
    for name, figure in FIGURES.items():
        assert (captions / f"{name}.rst").read_text() == figure.caption + "\n"
        assert f"### {figure.title}" in text and figure.caption in text


def test_figures_render_with_bayes_hypotheses_and_the_information_file(rich_cube, cube_file, tmp_path):
    chunks = write_information(tmp_path / "info.nc")
    rich = plot_all(rich_cube, tmp_path / "rich", formats=("png",), information=chunks)
    plain = plot_all(open_cube(cube_file), tmp_path / "plain", formats=("png",))
    assert [p.name for p in rich] == [p.name for p in plain] == [f"{name}.png" for name in FIGURES]
    for a, b in zip(rich, plain):
        assert a.stat().st_size > 1000 and b.stat().st_size > 1000
    # drawn, not placeholders: the decisions and information figures are much richer than the stand-ins
    for name in ("decisions", "information"):
        assert (tmp_path / "rich" / f"{name}.png").stat().st_size > 2 * (
            tmp_path / "plain" / f"{name}.png"
        ).stat().st_size
    # the chunk file: read if present, absent path or none -> nothing (placeholder), no information variable -> error
    assert information_data(rich_cube, chunks) is not None
    assert information_data(rich_cube, tmp_path / "missing.nc") is None and information_data(rich_cube) is None
    xr.Dataset({"x": ("chunk", np.ones(3))}).to_netcdf(tmp_path / "bad.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match=r"bad\.nc: no log g information variable"):
        information_data(rich_cube, tmp_path / "bad.nc")
    # the CLI passes the chunk file on
    assert (
        cli_main(
            ["plot", str(cube_file), "--out", str(tmp_path / "cli"), "--formats", "png", "--information", str(chunks)]
        )
        == 0
    )
    drawn = (tmp_path / "cli" / "information.png").stat().st_size
    assert drawn > 2 * (tmp_path / "plain" / "information.png").stat().st_size


def test_figures_survive_a_cube_without_ceilings(tmp_path):
    cells = [Cell(1.0, "21.5", "ridge", n, 0) for n in (1000, 2000)]
    ds = collect([(c, write_cell(tmp_path, c)) for c in cells])
    paths = plot_all(ds, tmp_path / "plots", formats=("png",))
    assert len(paths) == len(FIGURES) and all(p.stat().st_size > 1000 for p in paths)
    text = render_report(ds, "plots")
    assert "| 1 | 21.5 | ridge |" in text and "| – | – | – |" in text  # no ceiling: dashes, not NaN
    assert "## Decision table" not in text  # no hypotheses, no table


def test_report_headline_table_matches_the_cube(cube_file, tmp_path):
    """Without a Bayes reference the gap falls back to the unbiased population bound, labelled."""
    out = tmp_path / "sub" / "report.md"
    plots = tmp_path / "plots"
    assert cli_main(["report", str(cube_file), "--plots", str(plots), "--out", str(out)]) == 0
    text = out.read_text()
    rows = headline(open_cube(cube_file))
    table = _table(text, "noise")
    assert len(table) == len(rows) == 4
    for cells, row in zip(table, rows):
        assert [cells["noise"], cells["mag"], cells["best model"]] == [f"{row['noise']:g}", row["mag"], "vit-tiny"]
        assert row["best_err_kind"] == "seeds"  # two seeds: the error of their mean
        assert (
            cells["R² best ± err (n_train)"]
            == f"{row['best_r2']:.3f} ± {row['best_r2_err']:.3f} ({row['best_n_train']})"
        )
        assert row["best_r2_err"] == pytest.approx(row["best_std"])  # std / sqrt(2 - 1)
        assert (
            cells["R² ridge"] == f"{row['baseline_r2']:.3f}" and cells["best − baseline"] == f"{row['difference']:+.3f}"
        )
        assert cells["R² oracle"] == f"{row['oracle_r2']:.3f}"  # the reference model's column
        assert cells["R² Bayes ± err"] == "–"
        assert row["gap_reference"] == "ceiling_pop" and np.isclose(row["gap"], row["ceiling_pop"] - row["best_r2"])
        assert cells["gap (unbiased pop. bound − best) ± err"] == f"{row['gap']:+.3f} ± {row['gap_err']:.3f}"
        assert cells["unbiased bound: pop"] == f"{row['ceiling_pop']:.3f}"
        assert cells["unbiased bound: median"] == f"{row['ceiling_median']:.3f}"
    assert "**This cube has no Bayes reference**" in text
    # figures linked relative to the report, PNG shown and PDF linked
    for name in FIGURES:
        assert f"](../plots/{name}.png)" in text and f"](../plots/{name}.pdf)" in text
    assert re.search(r"code `[^`]+`; dataset `d1`", text)


def test_headline_gap_is_the_bayes_reference_minus_the_best(rich_cube):
    rows = headline(rich_cube)
    text = render_report(rich_cube, "plots")
    table, sigma = _table(text, "noise"), _table(text.split("## Error against the theoretical sigma")[1], "noise")
    assert "no Bayes reference" not in text
    for cells, srow, row in zip(table, sigma, rows):
        at = rich_cube.sel(noise=row["noise"], mag=row["mag"])
        assert row["gap_reference"] == "bayes"
        assert row["gap"] == pytest.approx(float(at.bayes_r2) - row["best_r2"])
        assert row["gap_err"] == pytest.approx(math.hypot(0.004, row["best_r2_err"]))
        assert row["gap_pop"] == pytest.approx(row["ceiling_pop"] - row["best_r2"])  # the unbiased bound stays
        assert cells["R² Bayes ± err"] == f"{float(at.bayes_r2):.3f} ± 0.004"
        assert cells["gap (Bayes − best) ± err"] == f"{row['gap']:+.3f} ± {row['gap_err']:.3f}"
        # error / theoretical sigma: RMSE against sqrt(mean CRLB) = sqrt((1 - pop) var_prior) and the Bayes RMSE
        best_rmse = float(at.rmse.sel(model=row["best_model"], n_train=row["best_n_train"]).mean())
        assert row["best_rmse"] == pytest.approx(best_rmse)
        assert row["crlb_rmse"] == pytest.approx(math.sqrt((1 - row["ceiling_pop"]) * 4 / 3))
        assert row["rmse_over_crlb"] == pytest.approx(best_rmse / row["crlb_rmse"])
        assert row["rmse_over_bayes"] == pytest.approx(best_rmse / float(at.bayes_rmse))
        assert srow["best model"] == row["best_model"] and srow["RMSE best (dex)"] == f"{best_rmse:.3f}"
        assert srow["√mean CRLB (dex)"] == f"{row['crlb_rmse']:.3f}"
        assert srow["RMSE / √mean CRLB"] == f"{row['rmse_over_crlb']:.2f}"
        assert srow["RMSE / RMSE Bayes"] == f"{row['rmse_over_bayes']:.2f}"
        crlb_says = "keep improving the model" if row["rmse_over_crlb"] > 2 else "physical priors"
        assert srow["DG1 verdict"].startswith(crlb_says)


def test_dg1_verdict_follows_the_threshold_of_two():
    assert dg1_verdict(2.5, 2.2) == "keep improving the model"
    assert dg1_verdict(1.4, 1.1) == "physical priors"
    assert dg1_verdict(2.5, 1.5) == "keep improving the model (vs Bayes: physical priors)"
    assert dg1_verdict(float("nan"), 1.5) == "physical priors" and dg1_verdict(None, None) == "–"


def test_report_decision_table_lists_every_evaluated_cell(rich_cube):
    text = render_report(rich_cube, None)
    rows = _table(text, "question")
    evaluated = rich_cube.hyp_verdict > 0
    assert len(rows) == int(evaluated.sum())
    # vit-tiny ran at the two largest sizes only: vit_mae is evaluated there, gbm_r2 everywhere
    assert int(evaluated.sel(hypothesis="vit_mae").sum()) == 4 * 2
    assert int(evaluated.sel(hypothesis="gbm_r2").sum()) == 4 * 3
    assert {r["verdict"] for r in rows} <= {"**supported**", "rejected", "inconclusive"}
    vit = [r for r in rows if r["question"].startswith("vit_mae: ")]
    assert all(r["threshold"] == "relative <= -5.0%" and r["difference [CI]"].endswith("%]") for r in vit)
    assert all(r["seeds (base/variant)"] == "2/2" for r in vit)
    assert "- **vit_mae**: Does the ViT cut ridge's MAE by 5%? Base `ridge`, variant `vit-tiny`" in text
