"""Figures and the markdown report, from a cube alone (fabricated sweep of tests/test_cube.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from specscale.cli import main as cli_main
from specscale.cube import collect, headline, write_cube
from specscale.plots import FIGURES, plot_all
from specscale.report import render_report
from test_cube import Cell, fake_sweep, write_cell


@pytest.fixture(scope="module")
def cube_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    sweep = fake_sweep(root)
    ds = collect(sweep["cells"], ceilings=sweep["ceilings"], curves=sweep["curves"],
                 attrs={"baseline_model": "ridge", "config": {"grid": {}}})
    return write_cube(ds, root / "cube.nc")


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


def test_figures_survive_a_cube_without_ceilings(tmp_path):
    cells = [Cell(1.0, "21.5", "ridge", n, 0) for n in (1000, 2000)]
    ds = collect([(c, write_cell(tmp_path, c)) for c in cells])
    paths = plot_all(ds, tmp_path / "plots", formats=("png",))
    assert len(paths) == len(FIGURES) and all(p.stat().st_size > 1000 for p in paths)
    text = render_report(ds, "plots")
    assert "| 1 | 21.5 | ridge |" in text and "| – | – | – |" in text  # no ceiling: dashes, not NaN


def test_report_headline_table_matches_the_cube(cube_file, tmp_path):
    out = tmp_path / "sub" / "report.md"
    plots = tmp_path / "plots"
    assert cli_main(["report", str(cube_file), "--plots", str(plots), "--out", str(out)]) == 0
    text = out.read_text()
    from specscale.cube import open_cube

    rows = headline(open_cube(cube_file))
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| noise")]
    assert len(table) == len(rows) == 4
    for line, row in zip(table, rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:3] == [f"{row['noise']:g}", row["mag"], "vit-tiny"]
        assert cells[3].startswith(f"{row['best_r2']:.3f} ± ") and cells[3].endswith(f"({row['best_n_train']})")
        assert cells[4] == f"{row['baseline_r2']:.3f}" and cells[5] == f"{row['difference']:+.3f}"
        assert cells[6] == f"{row['oracle_r2']:.3f}"  # the reference model's column
        assert cells[7] == f"{row['ceiling_pop']:.3f}" and cells[9] == f"{row['gap']:+.3f}"
        assert np.isclose(row["gap"], row["ceiling_pop"] - row["best_r2"])
    # figures linked relative to the report, PNG shown and PDF linked
    for name in FIGURES:
        assert f"](../plots/{name}.png)" in text and f"](../plots/{name}.pdf)" in text
    assert re.search(r"code `[^`]+`; dataset `d1`", text)
