"""The reader of the study's PFS-resampled HDF5 files (one per split, named in a YAML manifest):
flux and pipeline errors as stored, labels and magnitudes from each file's pandas table (read
without pandas' unpickling, :mod:`specscale.data.pandas_hdf5`)."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np

from specscale.core.config import read_yaml
from specscale.core.vocab import SPLITS, MagRange
from specscale.data.pandas_hdf5 import read_pandas_frame
from specscale.data.rows import as_rows, first_bad, read_rows, row_blocks
from specscale.data.sources import SCAN_BLOCK_BYTES, Batch, DataError, Source
from specscale.data.streams import seed_key

log = logging.getLogger(__name__)

STUDY_FORMAT = "pfs-study"  # the manifest's ``format``


class StudySource(Source):
    """The study's PFS-resampled HDF5 files, one per split, named in a YAML manifest:

        format: pfs-study
        train: train.h5      # paths relative to the manifest
        val: val.h5
        test: test.h5

    Each file holds ``spectrumdataset/wave``, ``dataset/arrays/flux/value``,
    ``dataset/arrays/error/value`` (optional ``dataset/arrays/mask/value``: non-zero = bad pixel,
    given zero weight through a huge error) and a pandas table ``dataset/params`` with T_eff,
    log_g, M_H, a_M, mag. Flux and error are divided by the flux median per spectrum. The error is
    the file's (scaled by noise_level); the magnitude axis is the file's own, so the only cell is
    one that covers the file's magnitudes.
    """

    kind = "study"
    PARAM_COLUMNS = ("T_eff", "log_g", "M_H", "a_M")

    def __init__(self, manifest):
        self.path = Path(manifest)
        spec = read_yaml(self.path, "study manifest") or {}
        if not isinstance(spec, dict) or spec.get("format") != STUDY_FORMAT:
            raise DataError(f"{self.path}: manifest needs 'format: {STUDY_FORMAT}'")
        self.files, self.params, hashes = {}, {}, []
        for split in SPLITS:
            if split not in spec:
                raise DataError(f"{self.path}: manifest has no '{split}' file (no silent fallback to another split)")
            p = (self.path.parent / spec[split]).resolve()
            self.files[split] = p
            self.params[split] = self._read_params(p)
            hashes.append(_file_digest(p))
        wave = self._read(self.files["test"], "spectrumdataset/wave")
        self.wave = np.asarray(wave, dtype=np.float64)
        self.dataset_id = seed_key(*hashes).to_bytes(8, "little").hex()
        mags = np.concatenate([self.params[s]["mag"].to_numpy(np.float64) for s in SPLITS])
        finite = mags[np.isfinite(mags)]  # a NaN row is check_finite's to report, by name
        self.mag_range = (float(finite.min()), float(finite.max())) if finite.size else (np.nan, np.nan)

    @staticmethod
    def _read(path, key):
        try:
            with h5py.File(path, "r") as f:
                if key not in f:
                    raise DataError(f"{path}: missing '{key}' (not a PFS study file?)")
                return f[key][()]
        except OSError as exc:
            raise DataError(f"{path}: not a readable HDF5 file ({exc})") from exc

    def _read_params(self, path):
        """The numeric columns of the pandas table ``dataset/params``, read with h5py, never with
        pandas or PyTables: both unpickle what the file holds (object columns, and PyTables any
        attribute that looks like a pickle), so a crafted file would run code. Columns that are
        pickled Python objects are refused when needed and left unread otherwise."""
        import pandas as pd

        needed = (*self.PARAM_COLUMNS, "mag")
        try:
            with h5py.File(path, "r") as f:
                if "dataset/params" not in f or not isinstance(f["dataset/params"], h5py.Group):
                    raise DataError(f"{path}: missing pandas table 'dataset/params' (not a PFS study file?)")
                columns, pickled, other = read_pandas_frame(f["dataset/params"], f"{path}: dataset/params")
        except OSError as exc:
            raise DataError(f"{path}: not a readable HDF5 file ({exc})") from exc
        refused = [c for c in needed if c in pickled]
        if refused:
            raise DataError(
                f"{path}: dataset/params column(s) {refused} hold Python objects stored as pickles, which could run "
                "code when read: refused; store them as numbers"
            )
        if pickled:
            log.warning("%s: dataset/params column(s) %s hold pickled Python objects: not read", path, pickled)
        odd = [c for c in needed if c in other]
        if odd:
            raise DataError(
                f"{path}: dataset/params column(s) {odd} are not numeric ({', '.join(other[c] for c in odd)})"
            )
        missing = [c for c in needed if c not in columns]
        if missing:
            raise DataError(f"{path}: dataset/params lacks column(s) {missing}")
        return pd.DataFrame(columns)

    def check_finite(self, split: str, n: int | None = None, block_bytes: int = SCAN_BLOCK_BYTES) -> None:
        n = self.n(split) if n is None else n
        path = self.files[split]
        names = [*self.PARAM_COLUMNS, "mag"]
        hit = first_bad(self.params[split][names].to_numpy(np.float64)[:n])
        if hit is not None:
            row, col, value = hit
            raise DataError(
                f"{path}: {split} dataset/params row {row} ({names[col]}) holds {value}, not a finite number"
            )
        try:
            with h5py.File(path, "r") as f:
                flux, err = f["dataset/arrays/flux/value"], f["dataset/arrays/error/value"]
                mask = f.get("dataset/arrays/mask/value")
                itemsize = flux.dtype.itemsize + err.dtype.itemsize + (0 if mask is None else mask.dtype.itemsize)
                row_bytes = flux.shape[1] * itemsize
                for start, stop in row_blocks(n, row_bytes, block_bytes):
                    fl = flux[start:stop]
                    hit = first_bad(fl)
                    if hit is not None:
                        raise DataError(f"{path}: {split} flux row {start + hit[0]} holds {hit[2]} at pixel {hit[1]}")
                    med = np.median(fl, axis=1)
                    if (med <= 0).any():
                        row = int(np.argmax(med <= 0))
                        raise DataError(
                            f"{path}: {split} flux row {start + row} has median {float(med[row])}: cannot normalise"
                        )
                    er = err[start:stop]
                    if mask is not None:  # masked pixels get a huge error anyway: theirs is never used
                        er = np.where(mask[start:stop] != 0, 0, er)
                    hit = first_bad(er)
                    if hit is not None:
                        raise DataError(f"{path}: {split} error row {start + hit[0]} holds {hit[2]} at pixel {hit[1]}")
        except (OSError, KeyError) as exc:
            raise DataError(f"{path}: cannot read the {split} spectra ({exc})") from exc

    def n(self, split):
        self.check_split(split)
        return len(self.params[split])

    def labels(self, split, rows=None):
        rows = as_rows(slice(None) if rows is None else rows, self.n(split), f"{self.files[split]}")
        return self.params[split].loc[rows, list(self.PARAM_COLUMNS)].to_numpy(np.float32)

    def check_cell(self, cell) -> None:
        cell = MagRange.parse(cell)
        lo, hi = self.mag_range
        if not (cell.lo <= lo + 1e-6 and cell.hi >= hi - 1e-6):
            raise DataError(
                f"magnitude cell {cell} is outside the data: the study files' magnitudes are their own "
                f"({lo:g}-{hi:g}); use a cell that covers them"
            )

    def noiseless(self, split, rows, cell, variances: bool = True) -> Batch:
        self.check_cell(cell)
        path = self.files[split]
        rows = as_rows(rows, self.n(split), str(path))
        with h5py.File(path, "r") as f:
            flux = read_rows(f["dataset/arrays/flux/value"], rows).astype(np.float64)
            err = read_rows(f["dataset/arrays/error/value"], rows).astype(np.float64)
            mask = read_rows(f["dataset/arrays/mask/value"], rows) if "dataset/arrays/mask/value" in f else None
        bad = ~np.isfinite(flux).all(axis=1)
        if bad.any():
            raise DataError(f"{path}: non-finite flux in row {int(rows[np.argmax(bad)])}")
        med = np.median(flux, axis=1, keepdims=True)
        if (med <= 0).any():
            raise DataError(f"{path}: non-positive flux median in row {int(rows[np.argmax(med[:, 0] <= 0)])}")
        flux, err = flux / med, err / med
        if mask is not None:
            err = np.where(mask != 0, 1e6, err)
        labels = self.params[split].loc[rows, list(self.PARAM_COLUMNS)].to_numpy(np.float32)
        mag = self.params[split].loc[rows, "mag"].to_numpy(np.float64)
        return Batch(
            rows, flux.astype(np.float32), np.zeros_like(flux, np.float32), (err**2).astype(np.float32), labels, mag
        )


def _file_digest(path: Path) -> str:
    """Content digest from the size and the first and last MiB (cheap for multi-GB files)."""
    import hashlib

    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh:
        h.update(str(size).encode() + fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        h.update(fh.read())
    return h.hexdigest()
