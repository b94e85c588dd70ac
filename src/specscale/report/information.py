"""The information figure: log g Fisher information per wavelength chunk and the loss when a
chunk is removed, with the strong lines marked. Its data are not in the cube as collected: a chunk
netCDF file (``plot_all(information=PATH)``, ``specscale plot --information PATH``, the workflow's
information rule) or, if a cube carries them, its variables on a ``chunk`` dim; layout in
:func:`information_data`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from specscale.report.panels import legend, panel_grid, placeholder
from specscale.sim.instrument import air_to_vacuum
from specscale.sim.linelist import STRONG_LINES

# the strong log g lines the information figure marks: (species, air wavelength A) of STRONG_LINES
MARKED_SPECIES = ("Ca II", "Na I", "Mg I")
MARKED_LINES = tuple((species, air) for species, air, *_ in STRONG_LINES if species in MARKED_SPECIES)
# names the information figure reads in a chunk file (first present), on its dim "chunk"
INFO_NAMES = ("info_logg", "information", "fisher_info", "info")
LOSS_NAMES = ("loss_logg", "removal_loss", "info_loss", "loss")


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
        return placeholder(f"no log g information-per-chunk file ({where})\n`specscale plot --information FILE`")
    info_name, loss_name = _first(data, INFO_NAMES), _first(data, LOSS_NAMES)
    lo, hi = _chunk_edges(data)
    names = [info_name] + ([loss_name] if loss_name else [])
    fig, axes = panel_grid(len(names), 1, size=(9.0, 2.6), sharex=True)
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
    legend(fig, axes)
    return fig
