"""The reader of datasets written by ``specscale simulate`` (:mod:`specscale.data.simulate` has the
layout): stored noiseless flux, labels and observing quantiles; the variances of a magnitude range
follow from the stored observing setup on read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from specscale.core.config import from_dict
from specscale.core.vocab import LABELS, SPLITS, MagRange
from specscale.data.rows import as_rows, first_bad, read_rows, row_blocks
from specscale.data.sources import SCAN_BLOCK_BYTES, Batch, DataError, Source
from specscale.sim.observe import NoiseModel, ObservingConfig, expand_variances

SYNTHETIC_FORMAT = "specscale-synthetic"  # the file attribute ``format`` of a synthetic dataset


def stored_format(path: Path):
    """The ``format`` attribute of an HDF5 file (None when it has none)."""
    try:
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
            return fmt.decode() if isinstance(fmt, bytes) else fmt
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or not HDF5: {exc})") from exc


class SyntheticSource(Source):
    """A dataset written by ``specscale simulate`` (see :mod:`specscale.data.simulate` for the layout)."""

    kind = "synthetic"

    def __init__(self, path, observation: ObservingConfig | None = None):
        self.path = Path(path)
        self._fh, self._pid = None, None
        f = self._file
        self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        missing = [k for k in ("config", "content_hash") if k not in self.attrs]
        if missing:
            raise DataError(
                f"{self.path}: not a complete specscale dataset: attribute(s) {missing} missing "
                "(truncated or foreign file?)"
            )
        try:
            self.config = json.loads(self.attrs["config"])
            self.mag_limits = tuple(float(v) for v in self.config["simulation"]["mag_limits"])
            observation_config = self.config["observation"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"{self.path}: attribute 'config' is not a specscale dataset config ({type(exc).__name__}: {exc})"
            ) from exc
        self.dataset_id = str(self.attrs["content_hash"])
        for name in ("wave", *(f"{split}/{a}" for split in SPLITS for a in ("flux", "labels", "obs_u", "fmed0"))):
            if name not in f:
                raise DataError(f"{self.path}: missing dataset '{name}' (truncated or foreign file?)")
        self.wave = f["wave"][:]
        self.observation = observation or from_dict(ObservingConfig, observation_config, "observation")
        self.noise_model = NoiseModel(self.observation)

    @property
    def _file(self) -> h5py.File:
        # one handle per process: DataLoader workers fork and must not share HDF5 state
        if self._fh is None or self._pid != os.getpid():
            try:
                self._fh = h5py.File(self.path, "r")
            except OSError as exc:
                raise DataError(f"{self.path}: not a readable HDF5 file ({exc})") from exc
            self._pid = os.getpid()
        return self._fh

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fh"], state["_pid"] = None, None
        return state

    def n(self, split: str) -> int:
        self.check_split(split)
        return int(self._file[f"{split}/labels"].shape[0])

    def labels(self, split: str, rows=None) -> np.ndarray:
        rows = as_rows(slice(None) if rows is None else rows, self.n(split), f"{self.path}:{split}")
        return read_rows(self._file[f"{split}/labels"], rows)

    def check_finite(self, split: str, n: int | None = None, block_bytes: int = SCAN_BLOCK_BYTES) -> None:
        n = self.n(split) if n is None else n
        g = self._file[split]
        arrays = {name: g[name] for name in ("flux", "labels", "obs_u", "fmed0")}
        row_bytes = sum(int(np.prod(d.shape[1:], dtype=np.int64)) * d.dtype.itemsize for d in arrays.values())
        columns = {"flux": "pixel", "labels": "label", "obs_u": "quantile"}
        for start, stop in row_blocks(n, row_bytes, block_bytes):
            for name, dset in arrays.items():
                hit = first_bad(dset[start:stop], positive=name == "fmed0")
                if hit is None:
                    continue
                row, col, value = hit
                where = f" at {columns[name]} {col}" if name in columns else ""
                if name == "labels":
                    where = f" ({LABELS[col]})"
                need = "a finite positive number" if name == "fmed0" else "a finite number"
                raise DataError(
                    f"{self.path}: {split}/{name} row {start + row} holds {value}{where}, not {need}: the file is "
                    "corrupt (re-simulate it)"
                )

    def check_cell(self, cell) -> None:
        cell = MagRange.parse(cell)
        lo, hi = self.mag_limits
        if cell.lo < lo or cell.hi > hi:
            raise DataError(
                f"magnitude cell {cell} is outside the data: {self.path} supports HSC-i {lo:g}-{hi:g} "
                "(simulation.mag_limits)"
            )

    def variance_basis(self) -> np.ndarray:
        return self.noise_model.variance_basis.astype(np.float32)

    def noiseless(self, split: str, rows, cell, variances: bool = True) -> Batch:
        cell = MagRange.parse(cell)
        self.check_cell(cell)
        rows = as_rows(rows, self.n(split), f"{self.path}:{split}")
        g = self._file[split]
        flux = read_rows(g["flux"], rows)
        u = read_rows(g["obs_u"], rows)
        fmed0 = read_rows(g["fmed0"], rows)
        mag = cell.magnitudes(u[:, 0])
        obs = self.observation
        seeing = obs.seeing_arcsec[0] + u[:, 1] * (obs.seeing_arcsec[1] - obs.seeing_arcsec[0])
        zenith = obs.zenith_deg[0] + u[:, 2] * (obs.zenith_deg[1] - obs.zenith_deg[0])
        coef = self.noise_model.star_coefficients(fmed0, mag, seeing, zenith)
        a = b = None
        if variances:
            a, b = (v.astype(np.float32) for v in expand_variances(coef, self.noise_model.variance_basis))
        return Batch(rows, flux, a, b, read_rows(g["labels"], rows), mag, coef.astype(np.float32))
