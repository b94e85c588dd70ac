"""The sweep's figures, drawn from the scaling cube alone (``specscale plot``, the plots rule).

- scaling: R^2 vs training size per model, seed spread as a band, the Bayes reference (the
  achievable ceiling) as a black line with its error band, and the unbiased Fisher bounds
  (population, median) lighter; one panel per (noise, mag).
- ceiling_curves: the unbiased bound vs magnitude per noise level (the cube's curve_* variables)
  with the best learned model and the Bayes reference of each cell on it.
- gap: Bayes reference - best learned model (else the unbiased population bound - best, labelled),
  heat map over noise x mag.
- snr_bins: R^2 per per-spectrum S/N bin at each model's largest training size, with the Bayes
  reference and the unbiased bound per bin where the cube has them.
- decisions: the hypotheses' paired differences (hyp_* variables) against training size.
- information: log g Fisher information per wavelength chunk and the loss when a chunk is
  removed, with the strong lines marked (:mod:`specscale.report.information`).

A figure with nothing to draw (no hypotheses, no chunk file) is a placeholder panel saying why, so
every figure of FIGURES exists for the workflow.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from specscale.core.files import atomic_write
from specscale.core.vocab import MagRange
from specscale.report.figures import FIGURES
from specscale.report.information import information_figure
from specscale.report.panels import (
    BAYES,
    REFERENCE_STYLE,
    UNBIASED,
    count_label,
    legend,
    model_colors,
    panel_grid,
    placeholder,
    reference_lines,
    window_reference_lines,
)
from specscale.report.queries import endpoints, headline, reference_models
from specscale.sweep.hypotheses import INCONCLUSIVE, REJECTED, SUPPORTED, hypotheses_of


def scaling_figure(ds: xr.Dataset):
    """R^2 vs n_train, one panel per (noise, mag), with the Bayes reference and the unbiased bounds."""
    refs = set(reference_models(ds))
    colors = model_colors(ds.model.values.tolist())
    fig, axes = panel_grid(ds.sizes["noise"], ds.sizes["mag"], sharex=True, sharey=True)
    sizes = ds.n_train.values
    for i, noise in enumerate(ds.noise.values.tolist()):
        for j, mag in enumerate(ds.mag.values.tolist()):
            ax = axes[i, j]
            cell = ds.sel(noise=noise, mag=mag)
            reference_lines(ax, ds, noise, mag)
            window_reference_lines(ax, ds, noise, mag, colors)
            for model in ds.model.values.tolist():
                r2 = cell.r2.sel(model=model)
                has = cell.done.sel(model=model).any("seed").values
                if not has.any():
                    continue
                mean = r2.mean("seed", skipna=True).values[has]
                if model in refs:
                    ax.axhline(float(np.nanmean(mean)), **REFERENCE_STYLE, label=f"{model} (reference)")
                    continue
                ax.plot(sizes[has], mean, "o-", ms=3.5, color=colors[model], label=model)
                if int(cell.done.sel(model=model).sum("seed").max()) > 1:
                    ax.fill_between(
                        sizes[has],
                        r2.min("seed", skipna=True).values[has],
                        r2.max("seed", skipna=True).values[has],
                        color=colors[model],
                        alpha=0.2,
                        lw=0,
                    )
            ax.set_xscale("log")
            ax.set_xticks(sizes, [count_label(n) for n in sizes], fontsize="small")
            ax.minorticks_off()
            ax.set_title(f"noise {noise:g}, mag {mag}", fontsize="medium")
            ax.grid(alpha=0.3, which="both")
            if j == 0:
                ax.set_ylabel("test R$^2$ (log g)")
            if i == ds.sizes["noise"] - 1:
                ax.set_xlabel("training spectra")
    ax.set_ylim(top=1.0)
    legend(fig, axes)
    return fig


def ceiling_curves_figure(ds: xr.Dataset):
    """Unbiased bound vs magnitude per noise level, with each cell's best learned model and Bayes reference."""
    has_curves = "curve_ceiling_pop" in ds
    noises = ds.curve_noise.values.tolist() if has_curves else ds.noise.values.tolist()
    colors = model_colors(ds.model.values.tolist())
    rows = headline(ds)
    fig, axes = panel_grid(1, len(noises), sharey=True)
    for k, noise in enumerate(noises):
        ax = axes[0, k]
        if has_curves:
            curve = ds.sel(curve_noise=noise)
            ax.plot(ds.curve_mag, curve.curve_ceiling_pop, color="0.3", lw=1.5, label=UNBIASED + " (population)")
            if "curve_ceiling_median" in ds:
                ax.plot(
                    ds.curve_mag, curve.curve_ceiling_median, color="0.3", lw=1.2, ls="--", label=UNBIASED + " (median)"
                )
        for row in rows:
            if not np.isclose(row["noise"], noise) or row["best_model"] is None:
                continue
            cell = MagRange.parse(row["mag"])
            centre, half = (cell.lo + cell.hi) / 2, (cell.hi - cell.lo) / 2
            ax.errorbar(
                centre,
                row["best_r2"],
                xerr=half if half else None,
                fmt="o",
                ms=5,
                capsize=2,
                color=colors[row["best_model"]],
                label=f"best: {row['best_model']}",
            )
            ax.annotate(
                f"n={row['best_n_train']}",
                (centre, row["best_r2"]),
                textcoords="offset points",
                xytext=(4, 4 if half else -10),
                fontsize="x-small",
            )  # range cells above, fixed below
            if np.isfinite(row["bayes_r2"]):
                err = row["bayes_r2_err"]
                ax.errorbar(
                    centre,
                    row["bayes_r2"],
                    yerr=err if np.isfinite(err) else None,
                    fmt="*",
                    ms=8,
                    capsize=2,
                    color="k",
                    label=BAYES,
                )
            if np.isfinite(row["ceiling_pop"]) and not has_curves:
                ax.plot(centre, row["ceiling_pop"], "_", ms=14, color="0.3", label=UNBIASED + " (population)")
        ax.set_title(f"noise {noise:g}", fontsize="medium")
        ax.set_xlabel("HSC-i magnitude (AB)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("R$^2$ (log g)")
    axes[0, 0].set_ylim(top=1.0)
    legend(fig, axes)
    return fig


def gap_figure(ds: xr.Dataset):
    """Heat map over noise x mag of the gap: Bayes reference - best learned R^2 (a cube without the
    Bayes reference: unbiased population bound - best), labelled gap +- error and the model."""
    rows = headline(ds)
    noises, mags = ds.noise.values.tolist(), ds.mag.values.tolist()
    gap = np.full((len(noises), len(mags)), np.nan)
    label = np.full(gap.shape, "", dtype=object)
    for row in rows:
        i, j = noises.index(row["noise"]), mags.index(row["mag"])
        gap[i, j] = row["gap"]
        err = f" ± {row['gap_err']:.3f}" if np.isfinite(row["gap_err"]) else ""
        label[i, j] = f"{row['gap']:+.3f}{err}\n{row['best_model']}" if np.isfinite(row["gap"]) else "n/a"
    bayes = "bayes_r2" in ds
    fig, ax = plt.subplots(figsize=(1.9 * len(mags) + 2.4, 1.0 * len(noises) + 1.5), constrained_layout=True)
    finite = gap[np.isfinite(gap)]
    vmax = max(float(np.abs(finite).max()), 1e-3) if finite.size else 1.0
    im = ax.imshow(gap, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    for (i, j), text in np.ndenumerate(label):
        dark = np.isfinite(gap[i, j]) and abs(gap[i, j]) > 0.6 * vmax
        ax.text(j, i, text, ha="center", va="center", fontsize="small", color="w" if dark else "k")
    ax.set_xticks(range(len(mags)), mags)
    ax.set_yticks(range(len(noises)), [f"{n:g}" for n in noises])
    ax.set_xlabel("magnitude cell (HSC-i AB)")
    ax.set_ylabel("noise level")
    if not bayes:
        ax.set_title("no Bayes reference in the cube: gap to the unbiased population bound", fontsize="small")
    reference = "Bayes reference" if bayes else "unbiased bound (population)"
    fig.colorbar(im, ax=ax, label=f"{reference} $-$ best R$^2$")
    return fig


def snr_bins_figure(ds: xr.Dataset):
    """R^2 per S/N bin at each model's largest size, one panel per (noise, mag)."""
    ends = endpoints(ds, "snr_r2")
    counts = endpoints(ds, "snr_n")["mean"]
    refs = set(reference_models(ds))
    colors = model_colors(ds.model.values.tolist())
    lo, hi = ds.snr_bin_lo.values, ds.snr_bin_hi.values
    ticks = [f"{a:g}-{b:g}" if np.isfinite(b) else f">{a:g}" for a, b in zip(lo, hi)]
    x = np.arange(ds.sizes["snr_bin"])
    bayes = "bayes_r2_snr_bin" in ds
    fig, axes = panel_grid(ds.sizes["noise"], ds.sizes["mag"], sharex=True, sharey=True)
    for i, noise in enumerate(ds.noise.values.tolist()):
        for j, mag in enumerate(ds.mag.values.tolist()):
            ax = axes[i, j]
            for model in ds.model.values.tolist():
                e = ends.sel(noise=noise, mag=mag, model=model)
                if int(e.n_seeds) == 0:
                    continue
                # bins with few test stars give meaningless R^2
                y = np.where(counts.sel(noise=noise, mag=mag, model=model).values >= 20, e["mean"].values, np.nan)
                style = REFERENCE_STYLE | {"color": colors[model]} if model in refs else {"color": colors[model]}
                ax.plot(x, y, "o-" if model not in refs else "s", ms=3.5, label=model, **style)
            if bayes:
                ax.plot(x, ds.bayes_r2_snr_bin.sel(noise=noise, mag=mag).values, "k-", lw=1.6, label="Bayes reference")
            if "ceiling_pop_snr_bin" in ds:
                ax.plot(
                    x,
                    ds.ceiling_pop_snr_bin.sel(noise=noise, mag=mag).values,
                    "--",
                    color="0.6" if bayes else "k",
                    lw=1.0 if bayes else 1.2,
                    label=UNBIASED + " (population)",
                )
            ax.set_title(f"noise {noise:g}, mag {mag}", fontsize="medium")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("test R$^2$ in bin")
            if i == ds.sizes["noise"] - 1:
                ax.set_xticks(x, ticks, rotation=45, fontsize="x-small")
                ax.set_xlabel("per-spectrum S/N")
    axes[0, 0].set_ylim(-0.5, 1.0)
    legend(fig, axes)
    return fig


VERDICT_STYLE = {
    SUPPORTED: dict(marker="o", label="supported"),
    REJECTED: dict(marker="X", label="rejected"),
    INCONCLUSIVE: dict(marker="o", mfc="none", label="inconclusive"),
}


def decisions_figure(ds: xr.Dataset):
    """Per hypothesis, hyp_diff with its confidence interval against n_train, one line per
    (noise, mag) cell; the decision threshold dashed; markers by verdict."""
    hyps = hypotheses_of(ds)
    if not hyps:
        return placeholder("no decision hypotheses in this cube\n(config section `hypotheses:`)")
    cols = min(len(hyps), 3)
    fig, axes = panel_grid(-(-len(hyps) // cols), cols, size=(4.0, 3.0))
    cells = [(n, m) for n in ds.noise.values.tolist() for m in ds.mag.values.tolist()]
    cmap = plt.get_cmap("tab10")
    sizes = ds.n_train.values
    for ax in axes.flat[len(hyps) :]:
        ax.set_visible(False)
    for ax, h in zip(axes.flat, hyps):
        scale = 100.0 if h.change == "relative" else 1.0
        sel = ds.sel(hypothesis=h.name)
        for c, (noise, mag) in enumerate(cells):
            at = sel.sel(noise=noise, mag=mag)
            verdict = at.hyp_verdict.values
            ok = verdict != 0
            if not ok.any():
                continue
            x = sizes[ok] * 1.04 ** (c - (len(cells) - 1) / 2)  # cells side by side on the log axis
            y, lo, hi = (at[v].values[ok] * scale for v in ("hyp_diff", "hyp_ci_lo", "hyp_ci_hi"))
            color = cmap(c % 10)
            ax.errorbar(
                x, y, yerr=[y - lo, hi - y], color=color, lw=1.0, capsize=2, label=f"noise {noise:g}, mag {mag}"
            )
            for code, style in VERDICT_STYLE.items():
                pick = verdict[ok] == code
                if pick.any():
                    kw = {k: v for k, v in style.items() if k != "label"}
                    ax.plot(x[pick], y[pick], ls="none", ms=6, color=color, **kw)
        ax.axhline(h.threshold * scale, color="tab:red", ls="--", lw=1.2, label="decision threshold")
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(sizes, [count_label(n) for n in sizes], fontsize="small")
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.set_title(f"{h.name}: {h.variant} vs {h.base}\n{h.decision()}", fontsize="small")
        metric = h.metric.replace("_top20", " top20")
        ax.set_ylabel(f"{metric}: (variant $-$ base)/|base| [%]" if scale != 1 else f"{metric}: variant $-$ base")
        ax.set_xlabel("training spectra")
    for style in VERDICT_STYLE.values():  # verdict legend entries, once
        axes[0, 0].plot([], [], ls="none", ms=6, color="0.3", **style)
    legend(fig, axes)
    return fig


BUILDERS = {
    "scaling": scaling_figure,
    "ceiling_curves": ceiling_curves_figure,
    "gap": gap_figure,
    "snr_bins": snr_bins_figure,
    "decisions": decisions_figure,
    "information": information_figure,
}


def plot_all(ds: xr.Dataset, out, formats=("png", "pdf"), information=None) -> list[Path]:
    """Draw every figure of ``FIGURES`` into ``out/<name>.<format>`` (written atomically).
    ``information``: the log g information-per-chunk netCDF file (:func:`information_data`); without
    it (or if it does not exist) the information figure is a placeholder unless the cube carries
    the chunk variables."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    builders = BUILDERS | {"information": lambda d: information_figure(d, information)}
    paths = []
    for name in FIGURES:
        fig = builders[name](ds)
        fig.suptitle(FIGURES[name].title)
        try:
            for fmt in formats:
                path = out / f"{name}.{fmt}"
                with atomic_write(path) as tmp:
                    # metadata without dates so the same cube gives the same files
                    fig.savefig(tmp, format=fmt, dpi=150, metadata={"CreationDate": None} if fmt == "pdf" else None)
                paths.append(path)
        finally:
            plt.close(fig)
    return paths
