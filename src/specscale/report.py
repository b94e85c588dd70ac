"""The markdown report of a sweep (``results/report.md``): headline numbers per (noise, mag) cell
and the figures, from the cube alone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from .cube import DIMS, format_number, headline, json_attr, reference_models
from .plots import FIGURES


def _num(value, spec: str = ".3f") -> str:
    return format_number(value, spec, missing="–")


def headline_table(ds: xr.Dataset) -> list[str]:
    """Markdown table: per cell the best learned model, the baseline, their difference, the
    references (oracle), the ceilings and the gap."""
    rows = headline(ds)
    refs = reference_models(ds)
    baseline = rows[0]["baseline_model"] if rows else "baseline"
    cols = ["noise", "mag", "best model", "R² best (n_train)", f"R² {baseline}", "best − baseline",
            *(f"R² {r}" for r in refs), "ceiling pop", "ceiling median", "gap (pop − best)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        best = row["best_model"] or "–"
        spread = f" ± {row['best_std']:.3f}" if np.isfinite(row["best_std"]) and row["best_std"] > 0 else ""
        cells = [
            f"{row['noise']:g}", row["mag"], best,
            f"{_num(row['best_r2'])}{spread} ({row['best_n_train']})" if row["best_model"] else "–",
            _num(row["baseline_r2"]), _num(row["difference"], "+.3f"),
            *(_num(row[f"{r}_r2"]) for r in refs),
            _num(row["ceiling_pop"]), _num(row["ceiling_median"]), _num(row["gap"], "+.3f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_report(ds: xr.Dataset, plots_rel: str | None, cube_name: str = "cube.nc") -> str:
    """The report text; ``plots_rel`` is the figures folder relative to the report (None: no figures)."""
    config = json_attr(ds, "config", {}) or {}
    sizes = " × ".join(f"{ds.sizes[d]} {d}" for d in DIMS)
    lines = [
        "# specscale sweep report",
        "",
        f"Scaling cube `{cube_name}`: {int(ds['done'].sum())} cells run of {int(np.prod([ds.sizes[d] for d in DIMS]))} "
        f"grid points ({sizes}); code `{ds.attrs.get('code_version', '?')}`; dataset "
        f"`{', '.join(json_attr(ds, 'dataset_ids', []) or ['?'])}`"
        + (f"; config hash `{ds.attrs['config_hash']}`" if "config_hash" in ds.attrs else "") + ".",
        "",
        f"- noise levels: {', '.join(f'{v:g}' for v in ds.noise.values.tolist())}",
        f"- magnitude cells (HSC-i AB): {', '.join(ds.mag.values.tolist())}",
        f"- models: {', '.join(ds.model.values.tolist())}"
        + (f" (references: {', '.join(reference_models(ds))})" if reference_models(ds) else ""),
        f"- training sizes: {', '.join(str(v) for v in ds.n_train.values.tolist())}; "
        f"seeds: {', '.join(str(v) for v in ds.seed.values.tolist())}",
        "",
        "## Headline numbers per cell",
        "",
        "Test R² of log g: seed mean (± population std over seeds) at each model's largest training size "
        "in the cell. *Best* is the best learned model (references such as the oracle, a likelihood fit with "
        "the true forward model, are not contenders); *gap* = population ceiling − best.",
        "",
        *headline_table(ds),
        "",
        "Ceilings (Fisher information / Cramér–Rao bound, same observing conditions as the cell): "
        "*population* = 1 − mean(CRLB)/Var(log g) over the stars; *median* = median over stars of the "
        "per-star R²max (the study's definition, optimistic). Both bound *unbiased* estimators: a "
        "regressor that shrinks towards the training mean at low S/N (every learned model does), or the "
        "box-bounded oracle fit, can score above them, so a small or negative gap is not an error; the "
        "shrinkage-aware reference that no estimator beats on average is the Bayes posterior mean "
        "(`specscale bayes`).",
    ]
    if plots_rel is not None:
        lines += ["", "## Figures"]
        for name, (title, caption) in FIGURES.items():
            lines += ["", f"### {title}", "", f"![{title}]({plots_rel}/{name}.png)", "",
                      f"{caption} [PDF]({plots_rel}/{name}.pdf)"]
    if config:
        lines += ["", "## Provenance", "",
                  "The full sweep configuration is stored JSON-encoded in the cube's `config` attribute; "
                  "each cell's provenance (code version, config hash, dataset id, seed, device) in its "
                  "`cell_record` variable."]
    return "\n".join(lines) + "\n"


def write_report(ds: xr.Dataset, out, plots=None, cube_path=None) -> Path:
    """Write the markdown report to ``out`` (atomically); figures are linked relative to it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots_rel = None if plots is None else os.path.relpath(Path(plots), out.parent)
    cube_name = os.path.relpath(cube_path, out.parent) if cube_path else "cube.nc"
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(render_report(ds, plots_rel, cube_name))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
