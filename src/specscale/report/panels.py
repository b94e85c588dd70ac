"""What the figures of :mod:`specscale.report.plots` and :mod:`specscale.report.information`
share: model colours, panel grids, one legend per figure, the reference lines of a panel and the
placeholder of a figure with nothing to draw."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from specscale.report.queries import value_at

REFERENCE_STYLE = dict(ls="-.", lw=1.2, color="k")
BAYES = "Bayes reference (± error)"
UNBIASED = "unbiased bound"


def model_colors(models) -> dict[str, tuple]:
    """One fixed colour per model, by its place on the cube's model axis."""
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def panel_grid(n_rows: int, n_cols: int, size=(3.4, 2.8), **kw):
    """A figure of n_rows x n_cols panels of ``size`` (inches) each, axes always 2-d."""
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(size[0] * n_cols + 1.0, size[1] * n_rows + 0.8),
        squeeze=False,
        constrained_layout=True,
        **kw,
    )
    return fig, axes


def legend(fig, axes) -> None:
    """One legend below the figure with every label of its panels once."""
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if handles:
        fig.legend(
            [handles[lab] for lab in labels],
            labels,
            loc="outside lower center",
            ncols=min(len(labels), 4),
            fontsize="small",
            frameon=False,
        )


def count_label(n: int) -> str:
    """1000 -> "1k", 1000000 -> "1M"."""
    for div, unit in ((1_000_000, "M"), (1_000, "k")):
        if n >= div:
            return f"{n / div:g}{unit}"
    return str(n)


def reference_lines(ax, ds: xr.Dataset, noise, mag) -> None:
    """The Bayes reference (black line, band: +- its error) as the ceiling, and the unbiased
    bounds (population solid, median dotted, band between them): lighter where the Bayes
    reference is drawn, the ceiling themselves in a cube without it."""
    at = dict(noise=noise, mag=mag)
    bayes, err = value_at(ds, "bayes_r2", **at), value_at(ds, "bayes_r2_err", **at)
    pop, median = value_at(ds, "ceiling_pop", **at), value_at(ds, "ceiling_median", **at)
    light = "bayes_r2" in ds
    grey, alpha = ("0.65", 0.12) if light else ("0.35", 0.25)
    if np.isfinite(pop) and np.isfinite(median):
        ax.axhspan(
            min(pop, median), max(pop, median), color="0.6", alpha=alpha, lw=0, label=UNBIASED + " population..median"
        )
    if np.isfinite(pop):
        ax.axhline(pop, color=grey, lw=1.0 if light else 1.2, label=UNBIASED + " (population)")
    if np.isfinite(median):
        ax.axhline(median, color=grey, lw=1.0 if light else 1.2, ls=":", label=UNBIASED + " (median)")
    if np.isfinite(bayes):
        if np.isfinite(err):
            ax.axhspan(bayes - err, bayes + err, color="k", alpha=0.15, lw=0)
        ax.axhline(bayes, color="k", lw=1.6, label=BAYES)


def window_reference_lines(ax, ds: xr.Dataset, noise, mag, colors) -> None:
    """Each window's own Bayes reference in the cell (dashed, the colour of its first model): the
    ceiling of the variants that see only that window."""
    if "window_bayes_r2" not in ds:
        return
    for window in ds.window.values.tolist():
        value = float(ds.window_bayes_r2.sel(window=window, noise=noise, mag=mag))
        models = [m for m, w in zip(ds.model.values.tolist(), ds.model_window.values.tolist()) if w == window]
        if np.isfinite(value) and models:
            ax.axhline(value, color=colors[models[0]], lw=1.2, ls="--", label=f"Bayes reference, {window} only")


def placeholder(text: str, size=(6.0, 2.4)):
    """A figure that says why there is nothing to draw (so every figure of FIGURES exists)."""
    fig, ax = plt.subplots(figsize=size, constrained_layout=True)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize="medium", color="0.3")
    ax.set_axis_off()
    return fig
