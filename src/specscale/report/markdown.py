"""The markdown report of a sweep (``results/report.md``): headline numbers per (noise, mag) cell,
the error against the theoretical sigma, the decision table of the hypotheses and the figures,
from the cube alone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from specscale.core.files import write_text
from specscale.report.figures import FIGURES
from specscale.report.queries import headline, json_attr, reference_models, window_rows
from specscale.report.tables import format_number
from specscale.sweep.cube_records import DIMS
from specscale.sweep.hypotheses import NOT_EVALUATED, SUPPORTED, VERDICTS, hypotheses_of

DAGGER = "†"  # marks a one-seed error (test-sampling approximation)


def _num(value, spec: str = ".3f") -> str:
    return format_number(value, spec, missing="–")


def _pm(value, err, spec: str = ".3f", kind: str | None = "seeds") -> str:
    """``value ± err`` (``err`` marked † when it is the one-seed test-sampling approximation)."""
    if value is None or not np.isfinite(value):
        return "–"
    if err is None or not np.isfinite(err):
        return _num(value, spec)
    return f"{_num(value, spec)} ± {err:.3f}{DAGGER if kind == 'test sampling' else ''}"


def _table(cols: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(r) + " |" for r in rows]


def gap_label(ds: xr.Dataset) -> str:
    """What the cube's gap is: Bayes reference - best, or (no Bayes reference) the unbiased population bound - best."""
    return "gap (Bayes − best)" if "bayes_r2" in ds else "gap (unbiased pop. bound − best)"


def headline_table(ds: xr.Dataset) -> list[str]:
    """Markdown table: per cell the best learned model (R^2 ± error, n_train), the baseline and the
    difference, the references (oracle), the Bayes reference, the gap (Bayes - best ± error; without
    a Bayes reference the unbiased population bound - best) and the unbiased bounds."""
    rows = headline(ds)
    refs = reference_models(ds)
    baseline = rows[0]["baseline_model"] if rows else "baseline"
    cols = [
        "noise",
        "mag",
        "best model",
        "R² best ± err (n_train)",
        f"R² {baseline}",
        "best − baseline",
        *(f"R² {r}" for r in refs),
        "R² Bayes ± err",
        f"{gap_label(ds)} ± err",
        "unbiased bound: pop",
        "unbiased bound: median",
    ]
    out = []
    for row in rows:
        best = row["best_model"] or "–"
        out.append(
            [
                f"{row['noise']:g}",
                row["mag"],
                best,
                f"{_pm(row['best_r2'], row['best_r2_err'], kind=row['best_err_kind'])} ({row['best_n_train']})"
                if row["best_model"]
                else "–",
                _num(row["baseline_r2"]),
                _num(row["difference"], "+.3f"),
                *(_num(row[f"{r}_r2"]) for r in refs),
                _pm(row["bayes_r2"], row["bayes_r2_err"]),
                _pm(row["gap"], row["gap_err"], "+.3f", kind=row["best_err_kind"]),
                _num(row["ceiling_pop"]),
                _num(row["ceiling_median"]),
            ]
        )
    return _table(cols, out)


DG1_THRESHOLD = 2.0  # the study's rule: model error / theoretical sigma above it -> the model is the limit


def _dg1(ratio) -> str | None:
    if ratio is None or not np.isfinite(ratio):
        return None
    return "keep improving the model" if ratio > DG1_THRESHOLD else "physical priors"


def dg1_verdict(over_crlb, over_bayes) -> str:
    """The study's DG1 rule on a cell: the best model's RMSE over the theoretical sigma (the root
    of the mean CRLB) above :data:`DG1_THRESHOLD` -> "keep improving the model", else "physical
    priors" (the data are the limit); the same rule against the Bayes RMSE is added where it
    disagrees (the shrinkage-aware floor can move a cell across the threshold)."""
    crlb, bayes = _dg1(over_crlb), _dg1(over_bayes)
    if crlb is None:
        return bayes or "–"
    return crlb if bayes in (None, crlb) else f"{crlb} (vs Bayes: {bayes})"


def sigma_table(ds: xr.Dataset) -> list[str]:
    """Markdown table of the study's first decision question: per cell the best learned model's
    RMSE (dex) against the root of the mean CRLB (dex) and against the Bayes reference's RMSE."""
    cols = [
        "noise",
        "mag",
        "best model",
        "RMSE best (dex)",
        "√mean CRLB (dex)",
        "RMSE / √mean CRLB",
        "RMSE Bayes (dex)",
        "RMSE / RMSE Bayes",
        "DG1 verdict",
    ]
    out = [
        [
            f"{row['noise']:g}",
            row["mag"],
            row["best_model"] or "–",
            _num(row["best_rmse"]),
            _num(row["crlb_rmse"]),
            _num(row["rmse_over_crlb"], ".2f"),
            _num(row["bayes_rmse"]),
            _num(row["rmse_over_bayes"], ".2f"),
            dg1_verdict(row["rmse_over_crlb"], row["rmse_over_bayes"]),
        ]
        for row in headline(ds)
    ]
    return _table(cols, out)


def _metric_label(metric: str) -> str:
    name = metric.removesuffix("_top20")
    label = {"r2": "R²", "mae": "MAE", "rmse": "RMSE", "bias": "bias", "bias_cond": "conditional bias"}[name]
    return label + (" (top 20% S/N)" if metric.endswith("_top20") else "")


def _change(value: float, change: str) -> str:
    return f"{100 * value:+.1f}%" if change == "relative" else f"{value:+.3f}"


def decision_table(ds: xr.Dataset) -> list[str]:
    """The hypotheses: one line per definition, then a table with one row per evaluated
    (hypothesis, noise, mag, n_train): question, cell, n_train, metric base -> variant, the
    difference [confidence interval], the threshold and the verdict. Empty without hypotheses."""
    hyps = hypotheses_of(ds)
    if not hyps:
        return []
    lines = []
    for h in hyps:
        evaluated = int((ds.hyp_verdict.sel(hypothesis=h.name) != NOT_EVALUATED).sum())
        lines.append(
            f"- **{h.name}**: {h.question} Base `{h.base}`, variant `{h.variant}`; decision: {h.decision()} "
            f"({100 * h.confidence:g}% interval, {h.n_boot} bootstrap replicates)"
            + ("." if evaluated else "; not evaluated: no (noise, mag, n_train) has cells of both models.")
        )
    rows = []
    for h in hyps:
        sel = ds.sel(hypothesis=h.name)
        unit = " dex" if h.metric.removesuffix("_top20") in ("mae", "rmse", "bias", "bias_cond") else ""
        for noise in ds.noise.values.tolist():
            for mag in ds.mag.values.tolist():
                for n_train in ds.n_train.values.tolist():
                    at = sel.sel(noise=noise, mag=mag, n_train=n_train)
                    code = int(at.hyp_verdict)
                    if code == NOT_EVALUATED:
                        continue
                    verdict = VERDICTS[code]
                    seeds = f"{int(at.hyp_n_seeds_base)}/{int(at.hyp_n_seeds_variant)}"
                    rows.append(
                        [
                            f"{h.name}: {h.question}",
                            f"noise {noise:g}, mag {mag}",
                            str(n_train),
                            f"{_metric_label(h.metric)}: {h.base} {float(at.hyp_base):.3f} → "
                            f"{h.variant} {float(at.hyp_variant):.3f}{unit}",
                            f"{_change(float(at.hyp_diff), h.change)} "
                            f"[{_change(float(at.hyp_ci_lo), h.change)}, {_change(float(at.hyp_ci_hi), h.change)}]",
                            f"{h.change} {h.op} {_change(h.threshold, h.change)}",
                            f"**{verdict}**" if code == SUPPORTED else verdict,
                            seeds,
                        ]
                    )
    cols = [
        "question",
        "cell",
        "n_train",
        "metric: base → variant",
        "difference [CI]",
        "threshold",
        "verdict",
        "seeds (base/variant)",
    ]
    return lines + [""] + _table(cols, rows) if rows else lines


def window_table(ds: xr.Dataset) -> list[str]:
    """Markdown table: per window and cell, the window's own unbiased bound and Bayes reference
    beside the full spectrum's (same stars), and the best model on each (empty without windows)."""
    rows = []
    for r in window_rows(ds):
        rows.append(
            [
                r["window"],
                f"{r['noise']:g}",
                r["mag"],
                f"{_num(r['window_ceiling_pop'])} / {_num(r['ceiling_pop'])}",
                f"{_pm(r['window_bayes_r2'], r['window_bayes_r2_err'])} / {_pm(r['bayes_r2'], r['bayes_r2_err'])}",
                f"{_num(r['window_best_r2'])} ({r['window_best_model'] or '–'})",
                f"{_num(r['full_best_r2'])} ({r['full_best_model'] or '–'})",
                _num(r["window_bayes_r2"] - r["window_best_r2"]),
            ]
        )
    if not rows:
        return []
    cols = [
        "window",
        "noise",
        "mag",
        "unbiased bound pop: window / full",
        "R² Bayes ± err: window / full",
        "best on window",
        "best on full",
        "gap on window (Bayes − best)",
    ]
    return _table(cols, rows)


# the text under each section heading
HEADLINE_TEXT = (
    "Test R² of log g: seed mean at each model's largest training size in the cell, ± the error of that "
    f"mean (std over seeds / √(k − 1); with one seed {DAGGER} the test-sampling approximation "
    "√(2/n) (1 − R²)). *Best* is the best learned model (references such as the oracle, a likelihood fit with "
    "the true forward model, are not contenders). *Gap* = Bayes reference − best, ± √(Bayes error² + "
    "best error²): the Bayes posterior mean with the true forward model and prior is what no estimator "
    "beats on average, so this is the information the models leave on the table."
)
BOUNDS_TEXT = (
    "Unbiased bounds (Fisher information / Cramér–Rao bound, same observing conditions as the cell): "
    "*pop* = 1 − mean(CRLB)/Var(log g) over the stars; *median* = median over stars of the "
    "per-star R²max (the study's definition, optimistic). They bound *unbiased* estimators only: a "
    "regressor that shrinks towards the training mean at low S/N (every learned model does), or the "
    "box-bounded oracle fit, can score above them, so a small or negative distance to them is not an error."
)
NO_BAYES_TEXT = (
    "**This cube has no Bayes reference** (`bayes_r2`, from `specscale bayes`): the gap shown is the "
    "unbiased population bound − best, which a shrinking regressor may beat."
)
SIGMA_TEXT = (
    "The study's first decision question: how far is the best learned model's RMSE (seed mean, dex) "
    "from the theoretical sigma? √mean CRLB = √((1 − ceiling pop) Var(log g)), the root of the mean over "
    "the test stars of the CRLB capped at the prior variance (an unbiased estimator's RMS floor); the "
    "Bayes RMSE is that of the posterior mean (the shrinkage-aware floor). A ratio near 1 means the model "
    "extracts what the data allow; below 1 against the CRLB is possible (shrinkage), not against Bayes. "
    "DG1 verdict, the study's rule: a ratio to √mean CRLB above 2 -> keep improving the model, else "
    "physical priors (the data are the limit); where the ratio to the Bayes RMSE decides otherwise, both."
)
WINDOW_TEXT = (
    "A variant restricted to a wavelength window has its own references, computed from the window's "
    "pixels alone on the same test stars and noise: the unbiased (CRLB) population bound and the Bayes "
    "reference. *Window / full* compares them with the full spectrum's, so a window hypothesis reads as "
    "information lost by the window (reference: window < full) versus information the model fails to "
    "extract (gap on window). Best: seed-mean R² at the model's largest size in the cell."
)
DECISION_TEXT = (
    "Each hypothesis (config section `hypotheses`) compares two entries of the model axis on the same "
    "test stars with the same noise, per (noise, mag, n_train): difference = variant − base (relative: in "
    "% of |base|) of the seed-mean metric, with a paired bootstrap interval over test stars and seeds. "
    "*Supported* when the whole interval satisfies the threshold, *rejected* when none of it does, "
    "*inconclusive* when it straddles it. With 2–4 seeds the seed part of the interval is too narrow "
    "(bootstrap of few values): read those verdicts with the seed counts."
)
PROVENANCE_TEXT = (
    "The full sweep configuration is stored JSON-encoded in the cube's `config` attribute; "
    "each cell's provenance (code version, config hash, dataset id, seed, device) in its "
    "`cell_record` variable."
)


def render_report(ds: xr.Dataset, plots_rel: str | None, cube_name: str = "cube.nc") -> str:
    """The report text; ``plots_rel`` is the figures folder relative to the report (None: no figures)."""
    lines = _overview(ds, cube_name)
    lines += ["", "## Headline numbers per cell", "", HEADLINE_TEXT, "", *headline_table(ds), "", BOUNDS_TEXT]
    if "bayes_r2" not in ds:
        lines += ["", NO_BAYES_TEXT]
    lines += ["", "## Error against the theoretical sigma", "", SIGMA_TEXT, "", *sigma_table(ds)]
    lines += _section("What a window carries", WINDOW_TEXT, window_table(ds))
    lines += _section("Decision table", DECISION_TEXT, decision_table(ds))
    if plots_rel is not None:
        lines += ["", "## Figures"]
        for name, figure in FIGURES.items():
            lines += [
                "",
                f"### {figure.title}",
                "",
                f"![{figure.title}]({plots_rel}/{name}.png)",
                "",
                f"{figure.caption} [PDF]({plots_rel}/{name}.pdf)",
            ]
    if json_attr(ds, "config", {}):
        lines += ["", "## Provenance", "", PROVENANCE_TEXT]
    return "\n".join(lines) + "\n"


def _overview(ds: xr.Dataset, cube_name: str) -> list[str]:
    """The report's title and what the cube holds: its size, code, dataset, config hash and axes."""
    sizes = " × ".join(f"{ds.sizes[d]} {d}" for d in DIMS)
    return [
        "# specscale sweep report",
        "",
        f"Scaling cube `{cube_name}`: {int(ds['done'].sum())} cells run of {int(np.prod([ds.sizes[d] for d in DIMS]))} "
        f"grid points ({sizes}); code `{ds.attrs.get('code_version', '?')}`; dataset "
        f"`{', '.join(json_attr(ds, 'dataset_ids', []) or ['?'])}`"
        + (f"; config hash `{ds.attrs['config_hash']}`" if "config_hash" in ds.attrs else "")
        + ".",
        "",
        f"- noise levels: {', '.join(f'{v:g}' for v in ds.noise.values.tolist())}",
        f"- magnitude cells (HSC-i AB): {', '.join(ds.mag.values.tolist())}",
        f"- models: {', '.join(ds.model.values.tolist())}"
        + (f" (references: {', '.join(reference_models(ds))})" if reference_models(ds) else ""),
        f"- training sizes: {', '.join(str(v) for v in ds.n_train.values.tolist())}; "
        f"seeds: {', '.join(str(v) for v in ds.seed.values.tolist())}",
    ]


def _section(title: str, text: str, table: list[str]) -> list[str]:
    """A section with its text and table; nothing when the table is empty."""
    return ["", f"## {title}", "", text, "", *table] if table else []


def write_report(ds: xr.Dataset, out, plots=None, cube_path=None) -> Path:
    """Write the markdown report to ``out`` (atomically); figures are linked relative to it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots_rel = None if plots is None else os.path.relpath(Path(plots), out.parent)
    cube_name = os.path.relpath(cube_path, out.parent) if cube_path else "cube.nc"
    return write_text(render_report(ds, plots_rel, cube_name), out)
