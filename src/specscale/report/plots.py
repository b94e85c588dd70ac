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
  removed, with the strong lines marked. Its data are not in the cube as collected today: a chunk
  netCDF file (``plot_all(information=PATH)``, ``specscale plot --information PATH``) or, if a cube
  carries them, its variables on a ``chunk`` dim; layout in :func:`information_data`.

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
from specscale.sim.instrument import air_to_vacuum
from specscale.sim.linelist import STRONG_LINES
from specscale.sweep.cube import endpoints, headline, reference_models
from specscale.sweep.hypotheses import INCONCLUSIVE, REJECTED, SUPPORTED, hypotheses_of

REFERENCE_STYLE = dict(ls="-.", lw=1.2, color="k")
BAYES = "Bayes reference (± error)"
UNBIASED = "unbiased bound"
# the strong log g lines the information figure marks: (species, air wavelength A) of STRONG_LINES
MARKED_SPECIES = ("Ca II", "Na I", "Mg I")
MARKED_LINES = tuple((species, air) for species, air, *_ in STRONG_LINES if species in MARKED_SPECIES)
# names the information figure reads in a chunk file (first present), on its dim "chunk"
INFO_NAMES = ("info_logg", "information", "fisher_info", "info")
LOSS_NAMES = ("loss_logg", "removal_loss", "info_loss", "loss")


def model_colors(models) -> dict[str, tuple]:
    """One fixed colour per model, by its place on the cube's model axis."""
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def _panel_grid(n_rows: int, n_cols: int, size=(3.4, 2.8), **kw):
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(size[0] * n_cols + 1.0, size[1] * n_rows + 0.8),
        squeeze=False,
        constrained_layout=True,
        **kw,
    )
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
        fig.legend(
            [handles[lab] for lab in labels],
            labels,
            loc="outside lower center",
            ncols=min(len(labels), 4),
            fontsize="small",
            frameon=False,
        )


def _count(n: int) -> str:
    """1000 -> "1k", 1000000 -> "1M"."""
    for div, unit in ((1_000_000, "M"), (1_000, "k")):
        if n >= div:
            return f"{n / div:g}{unit}"
    return str(n)


def _reference_lines(ax, ds: xr.Dataset, noise, mag) -> None:
    """The Bayes reference (black line, band: +- its error) as the ceiling, and the unbiased
    bounds (population solid, median dotted, band between them): lighter where the Bayes
    reference is drawn, the ceiling themselves in a cube without it."""
    bayes, err = _value(ds, "bayes_r2", noise=noise, mag=mag), _value(ds, "bayes_r2_err", noise=noise, mag=mag)
    pop, median = _value(ds, "ceiling_pop", noise=noise, mag=mag), _value(ds, "ceiling_median", noise=noise, mag=mag)
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


def _window_reference_lines(ax, ds: xr.Dataset, noise, mag, colors) -> None:
    """Each window's own Bayes reference in the cell (dashed, the colour of its first model): the
    ceiling of the variants that see only that window."""
    if "window_bayes_r2" not in ds:
        return
    for window in ds.window.values.tolist():
        value = float(ds.window_bayes_r2.sel(window=window, noise=noise, mag=mag))
        models = [m for m, w in zip(ds.model.values.tolist(), ds.model_window.values.tolist()) if w == window]
        if np.isfinite(value) and models:
            ax.axhline(value, color=colors[models[0]], lw=1.2, ls="--", label=f"Bayes reference, {window} only")


def _placeholder(text: str, size=(6.0, 2.4)):
    """A figure that says why there is nothing to draw (so every figure of FIGURES exists)."""
    fig, ax = plt.subplots(figsize=size, constrained_layout=True)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize="medium", color="0.3")
    ax.set_axis_off()
    return fig


# ---------------------------------------------------------------------------------------- figures
def scaling_figure(ds: xr.Dataset):
    """R^2 vs n_train, one panel per (noise, mag), with the Bayes reference and the unbiased bounds."""
    refs = set(reference_models(ds))
    colors = model_colors(ds.model.values.tolist())
    fig, axes = _panel_grid(ds.sizes["noise"], ds.sizes["mag"], sharex=True, sharey=True)
    sizes = ds.n_train.values
    for i, noise in enumerate(ds.noise.values.tolist()):
        for j, mag in enumerate(ds.mag.values.tolist()):
            ax = axes[i, j]
            cell = ds.sel(noise=noise, mag=mag)
            _reference_lines(ax, ds, noise, mag)
            _window_reference_lines(ax, ds, noise, mag, colors)
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
    """Unbiased bound vs magnitude per noise level, with each cell's best learned model and Bayes reference."""
    has_curves = "curve_ceiling_pop" in ds
    noises = ds.curve_noise.values.tolist() if has_curves else ds.noise.values.tolist()
    colors = model_colors(ds.model.values.tolist())
    rows = headline(ds)
    fig, axes = _panel_grid(1, len(noises), sharey=True)
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
    _legend(fig, axes)
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
    _legend(fig, axes)
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
        return _placeholder("no decision hypotheses in this cube\n(config section `hypotheses:`)")
    cols = min(len(hyps), 3)
    fig, axes = _panel_grid(-(-len(hyps) // cols), cols, size=(4.0, 3.0))
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
        ax.set_xticks(sizes, [_count(n) for n in sizes], fontsize="small")
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.set_title(f"{h.name}: {h.variant} vs {h.base}\n{h.decision()}", fontsize="small")
        metric = h.metric.replace("_top20", " top20")
        ax.set_ylabel(f"{metric}: (variant $-$ base)/|base| [%]" if scale != 1 else f"{metric}: variant $-$ base")
        ax.set_xlabel("training spectra")
    for style in VERDICT_STYLE.values():  # verdict legend entries, once
        axes[0, 0].plot([], [], ls="none", ms=6, color="0.3", **style)
    _legend(fig, axes)
    return fig


def _first(ds: xr.Dataset, names) -> str | None:
    return next((n for n in names if n in ds.variables and "chunk" in ds[n].dims), None)


def information_data(ds: xr.Dataset, path=None) -> xr.Dataset | None:
    """The log g information per wavelength chunk: the netCDF file at ``path`` if given and
    present, else the cube's own variables on a ``chunk`` dim, else None (nothing to draw).

    Layout read (dim ``chunk``; other dims, e.g. noise and mag, give one line each):
    ``wave_lo``, ``wave_hi`` (chunk edges, Angstrom; or ``wave``: centres), vacuum unless the
    attribute ``wavelength_frame`` is "air"; the information, the first of ``INFO_NAMES``
    (``info_logg``, ...; units from its attributes, e.g. dex^-2); optionally the loss when the
    chunk is removed, the first of ``LOSS_NAMES`` (``loss_logg``, ...). A file without an
    information variable is an error naming it."""
    if path is not None and Path(path).is_file():
        with xr.open_dataset(path, engine="h5netcdf") as f:
            data = f.load()
        if _first(data, INFO_NAMES) is None:
            raise ValueError(f"{path}: no log g information variable on a 'chunk' dim (one of {list(INFO_NAMES)})")
        return data
    if "chunk" in ds.dims and _first(ds, INFO_NAMES) is not None:
        return ds
    return None


def _chunk_edges(data: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    if "wave_lo" in data.variables and "wave_hi" in data.variables:
        return np.asarray(data["wave_lo"].values, float), np.asarray(data["wave_hi"].values, float)
    if "wave" in data.variables:
        centre = np.asarray(data["wave"].values, float)
        half = np.gradient(centre) / 2 if centre.size > 1 else np.ones(1)
        return centre - half, centre + half
    raise ValueError("information per chunk: no wavelengths (wave_lo/wave_hi or wave on dim 'chunk')")


def information_figure(ds: xr.Dataset, path=None):
    """Log g information per chunk and the loss when each chunk is removed, strong lines marked."""
    data = information_data(ds, path)
    if data is None:
        where = f"{path} not found" if path is not None else "none given"
        return _placeholder(f"no log g information-per-chunk file ({where})\n`specscale plot --information FILE`")
    info_name, loss_name = _first(data, INFO_NAMES), _first(data, LOSS_NAMES)
    lo, hi = _chunk_edges(data)
    names = [info_name] + ([loss_name] if loss_name else [])
    fig, axes = _panel_grid(len(names), 1, size=(9.0, 2.6), sharex=True)
    frame = str(data.attrs.get("wavelength_frame", "vacuum"))
    marks = [(species, air if frame == "air" else float(air_to_vacuum(air))) for species, air in MARKED_LINES]
    for ax, name in zip(axes[:, 0], names):
        var = data[name].transpose("chunk", ...)
        series = var.values.reshape(var.sizes["chunk"], -1)
        others = [d for d in var.dims if d != "chunk"]
        labels = [None]
        if others:  # one line per combination of the other dims, labelled with their values
            grids = np.meshgrid(*[var[d].values for d in others], indexing="ij")
            labels = [", ".join(f"{d} {g.ravel()[k]}" for d, g in zip(others, grids)) for k in range(series.shape[1])]
        for k in range(min(series.shape[1], 10)):
            ax.bar(
                lo, series[:, k], width=hi - lo, align="edge", fill=False, lw=1.1, edgecolor=f"C{k}", label=labels[k]
            )
        units = var.attrs.get("units")
        what = "information" if name == info_name else "loss when removed"
        ax.set_ylabel(f"log g {what}" + (f" [{units}]" if units else ""), fontsize="small")
        ax.grid(alpha=0.3)
        for _, x in marks:
            ax.axvline(x, color="tab:red", ls=":", lw=0.9)
    labelled: dict[str, float] = {}
    for species, x in marks:
        if abs(x - labelled.get(species, -np.inf)) < 30:  # one label per close group (the Na I doublet)
            continue
        labelled[species] = x
        axes[0, 0].annotate(
            species,
            (x, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize="x-small",
            ha="right",
            va="top",
            color="tab:red",
        )
    axes[-1, 0].set_xlabel(f"wavelength ({frame}, Å)")
    _legend(fig, axes)
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
        fig.suptitle(FIGURES[name][0])
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
