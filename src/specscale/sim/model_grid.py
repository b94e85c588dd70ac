"""Model-spectrum grids on disk: BOSZ's layout as distributed, and a generic HDF5 layout.

Both readers return a :class:`ModelGrid`: four sorted label axes (Teff K, log g dex, [M/H] dex,
[alpha/M] dex), vacuum wavelengths (A) and f_lambda at every node (any units: the simulator
normalises). A grid must be regular: every combination of the axis values present exactly once.

**BOSZ 2024** (Meszaros et al. 2024, https://archive.stsci.edu/hlsp/bosz): a directory (searched
recursively, e.g. ``r50000/m+0.00/...``) of per-spectrum text files named by their parameters,
``bosz2024_{mp|ms|ap}_t{Teff}_g{logg:+.1f}_m{[M/H]:+.2f}_a{[alpha/M]:+.2f}_c{[C/M]:+.2f}_v{xi}_r{R}_{resam|noresam}.txt[.gz]``.
Resampled files (``_r{R}_resam``) hold two columns, flux (Eddington flux H_lambda) and continuum,
on the wavelengths of ``bosz2024_wave_r{R}.txt`` (one column, A) in the same tree; files at the
synthesis' own resolution (``_rorig``) hold three columns, wavelength first. One [C/M] and one
microturbulence are read (config keys ``carbon`` and ``microturbulence``).

**Generic HDF5** (one file, ``*.h5`` or ``*.hdf5``):
    /wave    (n_wave,) float, Angstrom, increasing; attribute ``medium``: "air" or "vacuum"
    /flux    (n_models, n_wave) float, f_lambda (any units), finite and > 0
    /labels  (n_models, 4) float: Teff K, log g dex, [M/H] dex, [alpha/M] dex, a regular grid
:func:`write_hdf5_grid` writes it (e.g. from a simulator's ``fine_flux``, or a synthesised
training set).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from specscale.core.config import ConfigError
from specscale.core.vocab import LABELS
from specscale.sim.instrument import air_to_vacuum

BOSZ_NAME = re.compile(
    r"bosz\d*_(?P<family>[a-z]+)_t(?P<teff>[\d.]+)_g(?P<logg>[+-][\d.]+)_m(?P<mh>[+-][\d.]+)"
    r"_a(?P<am>[+-][\d.]+)_c(?P<cm>[+-][\d.]+)_v(?P<xi>[\d.]+)_r(?P<res>[a-z0-9]+)_(?P<kind>[a-z]+)\.txt(\.gz)?$"
)
MEDIA = ("air", "vacuum")


@dataclass(frozen=True, eq=False)
class ModelGrid:
    """A regular grid of model spectra. ``flux`` (n_teff, n_logg, n_mh, n_am, n_wave) f_lambda at
    the nodes ``axes`` (four increasing arrays, :data:`LABELS` order); ``wave`` vacuum A."""

    axes: tuple[np.ndarray, ...]
    wave: np.ndarray
    flux: np.ndarray
    source: str  # the file or directory, for messages

    @property
    def box(self) -> np.ndarray:
        """(4, 2) label bounds of the grid."""
        return np.array([[a[0], a[-1]] for a in self.axes])

    @property
    def content_hash(self) -> str:
        """sha256 (16 hex) of axes, wavelengths and fluxes: a dataset's record of its grid."""
        h = hashlib.sha256()
        for a in (*self.axes, self.wave, self.flux):
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]


def read_grid(
    path, medium: str = "vacuum", carbon: float = 0.0, microturbulence: float = 2.0, window=None
) -> ModelGrid:
    """The grid at ``path``: a directory in BOSZ's layout, or a generic HDF5 file. ``medium``
    ("air" or "vacuum") is BOSZ's wavelength medium (the HDF5 file states its own); ``carbon``
    ([C/M] dex) and ``microturbulence`` (km/s) select BOSZ files; ``window`` (lo, hi) vacuum A crops
    the wavelengths. Cached per file state."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"atmosphere.path={str(path)!r}: no such file or directory")
    if medium not in MEDIA:
        raise ConfigError(f"atmosphere.wave_medium={medium!r}: one of {list(MEDIA)}")
    stamp = max((p.stat().st_mtime_ns for p in [path, *path.rglob("*")]), default=0) if path.is_dir() else None
    stamp = stamp if stamp is not None else path.stat().st_mtime_ns
    window = None if window is None else (float(window[0]), float(window[1]))
    return _read_cached(str(path.resolve()), stamp, medium, float(carbon), float(microturbulence), window)


@lru_cache(maxsize=4)
def _read_cached(path: str, stamp: int, medium: str, carbon: float, microturbulence: float, window) -> ModelGrid:
    p = Path(path)
    if p.is_dir():
        return read_bosz(p, medium, carbon, microturbulence, window)
    if p.suffix in (".h5", ".hdf5"):
        return read_hdf5_grid(p, window)
    raise ConfigError(f"atmosphere.path={path!r}: a BOSZ directory or a .h5/.hdf5 grid file, got neither")


def regular_grid(labels: np.ndarray, where: str) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Axes of a regular grid and each row's node index (n, 4); ConfigError naming the row of a
    duplicate node, or a missing node, when ``labels`` (n, 4) is not one."""
    labels = np.round(np.asarray(labels, dtype=np.float64), 6)
    if labels.ndim != 2 or labels.shape[1] != 4 or not np.isfinite(labels).all():
        raise ConfigError(f"{where}: labels must be finite (n_models, 4) ({', '.join(LABELS)})")
    axes = tuple(np.unique(labels[:, k]) for k in range(4))
    idx = np.stack([np.searchsorted(axes[k], labels[:, k]) for k in range(4)], 1)
    flat = np.ravel_multi_index(idx.T, [a.size for a in axes])
    order = np.argsort(flat, kind="stable")
    dup = np.flatnonzero(np.diff(flat[order]) == 0)
    if dup.size:
        i, j = sorted(order[dup[0] : dup[0] + 2])
        raise ConfigError(f"{where}: rows {i} and {j} are the same node {labels[i].tolist()}")
    if any(a.size < 2 for a in axes):
        short = [LABELS[k] for k in range(4) if axes[k].size < 2]
        raise ConfigError(f"{where}: axes {short} have a single value; a grid needs >= 2 nodes on every axis")
    n_nodes = int(np.prod([a.size for a in axes]))
    if flat.size != n_nodes:
        missing = np.setdiff1d(np.arange(n_nodes), flat)[0]
        node = [float(axes[k][i]) for k, i in enumerate(np.unravel_index(missing, [a.size for a in axes]))]
        raise ConfigError(
            f"{where}: not a regular grid: {flat.size} models for {n_nodes} axis combinations, node {node} missing"
        )
    return axes, idx


def _checked_flux(flux: np.ndarray, wave: np.ndarray, where: str, row_name) -> None:
    """ConfigError naming the model whose flux is not finite and positive, or bad wavelengths."""
    if wave.ndim != 1 or wave.size < 2 or not np.isfinite(wave).all() or not (np.diff(wave) > 0).all():
        raise ConfigError(f"{where}: wavelengths must be finite and strictly increasing")
    bad = ~(np.isfinite(flux) & (flux > 0)).all(1)
    if bad.any():
        raise ConfigError(f"{where}: flux of {row_name(int(np.argmax(bad)))} has NaN, inf or values <= 0")


def _assemble(axes, idx, wave, rows: np.ndarray, source: str) -> ModelGrid:
    shape = tuple(a.size for a in axes)
    flux = np.empty(shape + (wave.size,), dtype=np.float64)
    flux[tuple(idx.T)] = rows
    return ModelGrid(tuple(axes), wave, flux, source)


def read_hdf5_grid(path: Path, window=None) -> ModelGrid:
    """The generic HDF5 layout (module docstring), cropped to ``window`` ((lo, hi) vacuum A)."""
    import h5py

    where = str(path)
    with h5py.File(path, "r") as f:
        for key in ("wave", "flux", "labels"):
            if key not in f:
                raise ConfigError(f"{where}: no /{key} dataset (a grid file holds /wave, /flux, /labels)")
        medium = f["wave"].attrs.get("medium")
        medium = medium.decode() if isinstance(medium, bytes) else medium
        wave, flux, labels = (np.asarray(f[k][()], dtype=np.float64) for k in ("wave", "flux", "labels"))
    if medium not in MEDIA:
        raise ConfigError(f"{where}: /wave needs attribute medium = 'air' or 'vacuum', got {medium!r}")
    if flux.ndim != 2 or flux.shape != (labels.shape[0], wave.size):
        raise ConfigError(f"{where}: /flux is {flux.shape}, expected (n_models, n_wave) = ({len(labels)}, {wave.size})")
    _checked_flux(flux, wave, where, lambda i: f"row {i} (labels {labels[i].tolist()})")
    axes, idx = regular_grid(labels, where)
    wave = air_to_vacuum(wave) if medium == "air" else wave
    keep = _window(wave, window)
    return _assemble(axes, idx, wave[keep], flux[:, keep], where)


def write_hdf5_grid(path, labels: np.ndarray, wave: np.ndarray, flux: np.ndarray, medium: str = "vacuum") -> None:
    """Write the generic HDF5 layout: labels (n, 4), wave (n_wave,) A, flux (n, n_wave)."""
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("wave", data=np.asarray(wave, dtype=np.float64)).attrs["medium"] = medium
        f.create_dataset("flux", data=np.asarray(flux, dtype=np.float32))
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.float64))


def bosz_name(teff, logg, mh, am, cm=0.0, xi=2, res="50000", family="mp") -> str:
    """The BOSZ 2024 file name of a resampled spectrum (without ``.gz``)."""
    return f"bosz2024_{family}_t{teff:.0f}_g{logg:+.1f}_m{mh:+.2f}_a{am:+.2f}_c{cm:+.2f}_v{xi:g}_r{res}_resam.txt"


def read_bosz(root: Path, medium: str, carbon: float, microturbulence: float, window=None) -> ModelGrid:
    """BOSZ's per-spectrum text files under ``root`` (module docstring), cropped to ``window``
    ((lo, hi) vacuum A; the full distributed range is ~1e6 samples per file)."""
    found = [(p, BOSZ_NAME.match(p.name)) for p in sorted(root.rglob("bosz*_t*.txt*"))]
    found = [
        (p, m)
        for p, m in found
        if m and abs(float(m["cm"]) - carbon) < 1e-6 and abs(float(m["xi"]) - microturbulence) < 1e-6
    ]
    if not found:
        raise ConfigError(
            f"atmosphere.path={str(root)!r}: no BOSZ spectra bosz2024_..._c{carbon:+.2f}_v{microturbulence:g}"
            "_r*_*.txt[.gz] (atmosphere.carbon, atmosphere.microturbulence)"
        )
    res = sorted({m["res"] for _, m in found})
    if len(res) > 1:
        raise ConfigError(f"atmosphere.path={str(root)!r}: spectra at several resolutions {res}; keep one")
    labels = np.array([[float(m[k]) for k in ("teff", "logg", "mh", "am")] for _, m in found])
    axes, idx = regular_grid(labels, f"atmosphere.path={str(root)!r} (rows: files in sorted order)")
    orig = res[0] == "orig"
    wave = np.loadtxt(found[0][0], ndmin=2)[:, 0] if orig else _bosz_wave(root, res[0])
    keep = _window(air_to_vacuum(wave) if medium == "air" else wave, window)
    rows = []
    for p, _ in found:  # original-resolution files carry their own wavelengths: onto the first's
        cols = np.loadtxt(p, ndmin=2)
        own = cols[:, 0] if orig else wave
        if cols.shape[1] < 2 or cols.shape[0] != own.size:
            raise ConfigError(f"{p}: {cols.shape} values, expected {own.size} rows of (flux, continuum)")
        rows.append(np.interp(wave[keep], own, cols[:, -2]) if orig else cols[keep, -2])
    flux, wave = np.stack(rows), wave[keep]
    _checked_flux(flux, wave, str(root), lambda i: str(found[i][0]))
    return _assemble(axes, idx, air_to_vacuum(wave) if medium == "air" else wave, flux, str(root))


def _window(wave: np.ndarray, window) -> np.ndarray:
    """Indices of ``wave`` (vacuum A) inside ``window`` (lo, hi), one sample beyond each end."""
    if window is None:
        return np.arange(wave.size)
    lo = max(int(np.searchsorted(wave, window[0])) - 1, 0)
    hi = min(int(np.searchsorted(wave, window[1])) + 1, wave.size)
    return np.arange(lo, hi)


def _bosz_wave(root: Path, res: str) -> np.ndarray:
    name = f"bosz2024_wave_r{res}.txt"
    hits = sorted(root.rglob(name))
    if not hits:
        raise ConfigError(f"atmosphere.path={str(root)!r}: resampled BOSZ spectra need {name} in the same tree")
    return np.loadtxt(hits[0], ndmin=1).reshape(-1)
