"""One interface to spectra, whatever their origin: a specscale synthetic HDF5 dataset
(:mod:`specscale.data.synthetic`) or the study's PFS-resampled HDF5 files
(:mod:`specscale.data.study`). Models, the Fisher ceiling and the workflow only see this:
:class:`Source`, the batches it returns, :class:`DataError`, and :func:`open_source`, the one way
to open a dataset.

Noise is never stored. ``observed(split, rows, cell, noise_level, seed)`` draws it on read, per
star, from a counter-based stream keyed by (dataset id, split, row): validation and test noise is
fixed for a dataset (the same for every model, seed and the ceiling); training noise also depends
on the model's seed. One dataset therefore serves the whole noise x magnitude grid.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specscale.core.vocab import LABELS, SPLITS, MagRange
from specscale.data.streams import seed_key, star_normals
from specscale.sim.observe import ObservingConfig, observe

SCAN_BLOCK_BYTES = 32 << 20  # rows read per block by the finiteness scans (memory bound, ~ a few HDF5 chunks)


class DataError(ValueError):
    """A dataset file or request is unusable; the message names the file, split, row or key."""


@dataclass
class Batch:
    """Noiseless spectra of some stars of a split, with their variance coefficients."""

    rows: np.ndarray  # (n,) row indices in the split
    flux: np.ndarray  # (n, n_pix) float32, median-normalised, noiseless
    var_a: np.ndarray | None  # (n, n_pix) float32: sigma^2 = var_a * flux + var_b at noise_level 1
    var_b: np.ndarray | None  # (both None when asked for variances=False)
    labels: np.ndarray  # (n, 4) float32: teff K, logg dex, mh dex, am dex
    mag: np.ndarray  # (n,) HSC-i AB magnitude of each star in this cell
    # (n, 3) float32 per-star coefficients of Source.variance_basis(), where the source has one
    noise_coef: np.ndarray | None = None


@dataclass
class Observed:
    """Noisy spectra as a model sees them, plus what the evaluation needs."""

    rows: np.ndarray
    flux: np.ndarray  # (n, n_pix) float32: observed = flux + N(0,1) sigma noise_level
    error: np.ndarray  # (n, n_pix) float32: pipeline 1-sigma from the observed counts
    sigma: np.ndarray  # (n, n_pix) float32: true 1-sigma (for the ceiling, never for models)
    labels: np.ndarray
    mag: np.ndarray
    snr: np.ndarray  # (n,) per-spectrum S/N = ||noiseless flux|| / ||sigma||


class Source(ABC):
    """A dataset of train/val/test spectra. A reader provides ``wave``, ``dataset_id``, ``n``,
    ``labels``, ``check_cell``, ``check_finite`` and ``noiseless``; the noise draws
    (``observed``, ``iter_observed``) are shared."""

    kind = "abstract"
    label_names = LABELS
    # set by each reader's constructor
    path: Path  # the file (or manifest) the source reads, named in every DataError
    wave: np.ndarray  # (n_pix,) pixel wavelengths, vacuum Angstrom
    dataset_id: str  # content identity of the data (keys the noise streams; a changed file gets new noise)

    @abstractmethod
    def n(self, split: str) -> int:
        """Number of stars in ``split``."""

    @abstractmethod
    def labels(self, split: str, rows=None) -> np.ndarray:
        """(n, 4) float32 labels (Teff K, log g dex, [M/H] dex, [alpha/M] dex) of ``rows`` (default all)."""

    @abstractmethod
    def check_cell(self, cell: MagRange) -> None:
        """Raise DataError when the data cannot serve magnitude range ``cell`` (HSC-i AB)."""

    @abstractmethod
    def noiseless(self, split: str, rows, cell, variances: bool = True) -> Batch:
        """Noiseless stars ``rows`` of ``split`` in magnitude ``cell``. ``variances=False`` leaves
        var_a/var_b out where the source has a ``variance_basis`` (the per-star ``noise_coef`` give
        them: 3 numbers per star instead of 2 x n_pix; the ViT loader ships those)."""

    def variance_basis(self) -> np.ndarray | None:
        """(3, n_pix) float32 pixel vectors B with var_a = c0 B0, var_b = c1 B1 + c2 B2 for a star's
        ``Batch.noise_coef`` c, or None when the variances do not factor (files with errors)."""
        return None

    @abstractmethod
    def check_finite(self, split: str, n: int | None = None, block_bytes: int = SCAN_BLOCK_BYTES) -> None:
        """Scan the first ``n`` stars of ``split`` (default all) for NaN or infinity in anything a
        model or the noise draws read; raises DataError naming the file, split, array and row.
        Reads row blocks of about ``block_bytes``, so memory stays bounded whatever the size."""

    def check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")

    def noise_key(self, split: str, seed: int | None) -> int:
        """Stream key: fixed per dataset for val/test, per (dataset, seed) for train."""
        return seed_key(self.dataset_id, "fixed" if split != "train" else ("train", int(seed or 0)))

    def observed(self, split: str, rows, cell, noise_level: float, seed: int | None = None) -> Observed:
        """Noisy spectra of ``rows`` at ``noise_level`` in magnitude ``cell`` (deterministic)."""
        if not noise_level >= 0:
            raise DataError(f"noise level must be >= 0, got {noise_level}")
        b = self.noiseless(split, rows, cell)
        z = star_normals(self.noise_key(split, seed), split, b.rows, b.flux.shape[1])
        obs, err, sig = observe(b.flux, b.var_a, b.var_b, noise_level, z)
        with np.errstate(divide="ignore"):
            snr = np.linalg.norm(b.flux, axis=1) / np.linalg.norm(sig, axis=1)
        return Observed(
            b.rows, obs.astype(np.float32), err.astype(np.float32), sig.astype(np.float32), b.labels, b.mag, snr
        )

    def iter_observed(self, split, cell, noise_level, seed=None, n=None, batch=2048):
        """Yield :class:`Observed` batches over the first ``n`` stars of ``split`` in order."""
        n = self.n(split) if n is None else n
        for start in range(0, n, batch):
            yield self.observed(split, np.arange(start, min(n, start + batch)), cell, noise_level, seed)

    def describe(self) -> dict:
        """Provenance summary of the source."""
        return {
            "kind": self.kind,
            "path": str(self.path),
            "dataset_id": self.dataset_id,
            "sizes": {s: self.n(s) for s in SPLITS},
        }


def open_source(path, observation: ObservingConfig | None = None) -> Source:
    """Open a dataset: a specscale synthetic ``.h5`` or a study manifest (``.yaml``); ``observation``
    overrides a synthetic dataset's stored observing setup."""
    # the readers subclass Source, so they can only be imported once this module is
    from specscale.data.study import StudySource
    from specscale.data.synthetic import SYNTHETIC_FORMAT, SyntheticSource, stored_format

    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset not found: {path}")
    if path.suffix in (".yaml", ".yml"):
        if observation is not None:
            raise DataError(f"{path}: study files carry their own errors; an observing setup cannot be applied")
        return StudySource(path)
    fmt = stored_format(path)
    if fmt != SYNTHETIC_FORMAT:
        raise DataError(
            f"{path}: not a specscale dataset (attribute format={fmt!r}); for the study's PFS files "
            "write a manifest (see StudySource)"
        )
    return SyntheticSource(path, observation)
