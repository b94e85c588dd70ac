"""The sweep's figures, drawn from the scaling cube alone (``specscale plot``, the plots rule).

- scaling: R^2 vs training size per model, seed spread as a band, the Fisher ceiling as a band
  between its population and median definitions; one panel per (noise, mag).
- ceiling_curves: the ceiling vs magnitude per noise level (the cube's curve_* variables) with
  the best learned model of each cell on it.
- gap: population ceiling - best learned model, heat map over noise x mag.
- snr_bins: R^2 per per-spectrum S/N bin at each model's largest training size, with the
  ceiling per bin where the cube has it.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from .cells import MagCell  # noqa: E402
from .cube import endpoints, headline, reference_models  # noqa: E402

# name -> (title, one-line caption); the order of the report
FIGURES = {
    "scaling": ("R^2 vs training size",
                "Seed mean (line) and seed range (band) of test R^2 per model; grey band: Fisher ceiling "
                "between its population (solid) and median (dotted) definitions; dash-dot: reference models."),
    "ceiling_curves": ("Ceiling vs magnitude",
                       "Fisher R^2 ceiling vs HSC-i magnitude per noise level (population solid, median dashed) "
                       "with the best learned model of each cell (range cells: bar over the range)."),
    "gap": ("Gap to the ceiling",
            "Population ceiling minus the best learned model's R^2 per (noise, mag); label: gap and model."),
    "snr_bins": ("R^2 per S/N bin",
                 "Test R^2 per per-spectrum S/N bin at each model's largest training size; black dashed: "
                 "population ceiling per bin."),
}
REFERENCE_STYLE = dict(ls="-.", lw=1.2, color="k")


def model_colors(models) -> dict[str, tuple]:
    """One fixed colour per model, by its place on the cube's model axis."""
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def _panel_grid(n_rows: int, n_cols: int, size=(3.4, 2.8), **kw):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size[0] * n_cols + 1.0, size[1] * n_rows + 0.8),
                             squeeze=False, constrained_layout=True, **kw)
    return fig, axes


def _value(ds: xr.Dataset, name: str, **at) -> float:
    return float(ds[name].sel(at)) if name in ds else float("nan")


def _legend(fig, axes) -> None:
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if handles:
        fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center",
                   ncols=min(len(labels), 4), fontsize="small", frameon=False)


def _count(n: int) -> str:
    """1000 -> "1k", 1000000 -> "1M"."""
    for div, unit in ((1_000_000, "M"), (1_000, "k")):
        if n >= div:
            return f"{n / div:g}{unit}"
    return str(n)


def _ceiling_band(ax, pop: float, median: float) -> None:
    if np.isfinite(pop) and np.isfinite(median):
        ax.axhspan(min(pop, median), max(pop, median), color="0.6", alpha=0.25, lw=0,
                   label="ceiling: population..median")
    if np.isfinite(pop):
        ax.axhline(pop, color="0.35", lw=1.2, label="ceiling (population)")
    if np.isfinite(median):
        ax.axhline(median, color="0.35", lw=1.2, ls=":", label="ceiling (median)")


# ---------------------------------------------------------------------------------------- figures
def scaling_figure(ds: xr.Dataset):
    """R^2 vs n_train, one panel per (noise, mag)."""
    refs = set(reference_models(ds))
    colors = model_colors(ds.model.values.tolist())
    fig, axes = _panel_grid(ds.sizes["noise"], ds.sizes["mag"], sharex=True, sharey=True)
    sizes = ds.n_train.values
    for i, noise in enumerate(ds.noise.values.tolist()):
        for j, mag in enumerate(ds.mag.values.tolist()):
            ax = axes[i, j]
            cell = ds.sel(noise=noise, mag=mag)
            _ceiling_band(ax, _value(ds, "ceiling_pop", noise=noise, mag=mag),
                          _value(ds, "ceiling_median", noise=noise, mag=mag))
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
                    ax.fill_between(sizes[has], r2.min("seed", skipna=True).values[has],
                                    r2.max("seed", skipna=True).values[has], color=colors[model], alpha=0.2, lw=0)
            ax.set_xscale("log")
            ax.set_xticks(sizes, [_count(n) for n in sizes], fontsize="small")
            ax.minorticks_off()
            ax.set_title(f"noise {noise:g}, mag {mag}", fontsize="medium")
            ax.grid(alpha=0.3, which="both")
            if j == 0:
                ax.set_ylabel("test R$^2$ (log g)")
            if i == ds.sizes["noise"] - 1:
                ax.set_xlabel("training spectra")
    ax.set_ylim(top=1.0)
    _legend(fig, axes)
    return fig


def ceiling_curves_figure(ds: xr.Dataset):
    """Ceiling vs magnitude per noise level, with each cell's best learned model on it."""
    has_curves = "curve_ceiling_pop" in ds
    noises = ds.curve_noise.values.tolist() if has_curves else ds.noise.values.tolist()
    colors = model_colors(ds.model.values.tolist())
    rows = headline(ds)
    fig, axes = _panel_grid(1, len(noises), sharey=True)
    for k, noise in enumerate(noises):
        ax = axes[0, k]
        if has_curves:
            curve = ds.sel(curve_noise=noise)
            ax.plot(ds.curve_mag, curve.curve_ceiling_pop, color="0.3", lw=1.5, label="ceiling (population)")
            if "curve_ceiling_median" in ds:
                ax.plot(ds.curve_mag, curve.curve_ceiling_median, color="0.3", lw=1.2, ls="--",
                        label="ceiling (median)")
        for row in rows:
            if not np.isclose(row["noise"], noise) or row["best_model"] is None:
                continue
            cell = MagCell.parse(row["mag"])
            centre, half = (cell.lo + cell.hi) / 2, (cell.hi - cell.lo) / 2
            ax.errorbar(centre, row["best_r2"], xerr=half if half else None, fmt="o", ms=5, capsize=2,
                        color=colors[row["best_model"]], label=f"best: {row['best_model']}")
            ax.annotate(f"n={row['best_n_train']}", (centre, row["best_r2"]), textcoords="offset points",
                        xytext=(4, 4 if half else -10), fontsize="x-small")  # range cells above, fixed below
            if np.isfinite(row["ceiling_pop"]) and not has_curves:
                ax.plot(centre, row["ceiling_pop"], "_", ms=14, color="0.3", label="ceiling (population)")
        ax.set_title(f"noise {noise:g}", fontsize="medium")
        ax.set_xlabel("HSC-i magnitude (AB)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("R$^2$ (log g)")
    axes[0, 0].set_ylim(top=1.0)
    _legend(fig, axes)
    return fig


def gap_figure(ds: xr.Dataset):
    """Heat map of population ceiling - best learned model R^2 over noise x mag."""
    rows = headline(ds)
    noises, mags = ds.noise.values.tolist(), ds.mag.values.tolist()
    gap = np.full((len(noises), len(mags)), np.nan)
    label = np.full(gap.shape, "", dtype=object)
    for row in rows:
        i, j = noises.index(row["noise"]), mags.index(row["mag"])
        gap[i, j] = row["gap"]
        label[i, j] = f"{row['gap']:.3f}\n{row['best_model']}" if np.isfinite(row["gap"]) else "n/a"
    fig, ax = plt.subplots(figsize=(1.6 * len(mags) + 2.2, 1.0 * len(noises) + 1.4), constrained_layout=True)
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
    fig.colorbar(im, ax=ax, label="ceiling (population) $-$ best R$^2$")
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
    fig, axes = _panel_grid(ds.sizes["noise"], ds.sizes["mag"], sharex=True, sharey=True)
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
            if "ceiling_pop_snr_bin" in ds:
                ax.plot(x, ds.ceiling_pop_snr_bin.sel(noise=noise, mag=mag).values, "k--", lw=1.2,
                        label="ceiling (population)")
            ax.set_title(f"noise {noise:g}, mag {mag}", fontsize="medium")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("test R$^2$ in bin")
            if i == ds.sizes["noise"] - 1:
                ax.set_xticks(x, ticks, rotation=45, fontsize="x-small")
                ax.set_xlabel("per-spectrum S/N")
    axes[0, 0].set_ylim(-0.5, 1.0)
    _legend(fig, axes)
    return fig


BUILDERS = {"scaling": scaling_figure, "ceiling_curves": ceiling_curves_figure, "gap": gap_figure,
            "snr_bins": snr_bins_figure}


def plot_all(ds: xr.Dataset, out, formats=("png", "pdf")) -> list[Path]:
    """Draw every figure of ``FIGURES`` into ``out/<name>.<format>`` (written atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in FIGURES:
        fig = BUILDERS[name](ds)
        fig.suptitle(FIGURES[name][0])
        try:
            for fmt in formats:
                path = out / f"{name}.{fmt}"
                tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
                try:
                    # metadata without dates so the same cube gives the same files
                    fig.savefig(tmp, format=fmt, dpi=150, metadata={"CreationDate": None} if fmt == "pdf" else None)
                    os.replace(tmp, path)
                finally:
                    tmp.unlink(missing_ok=True)
                paths.append(path)
        finally:
            plt.close(fig)
    return paths
