"""One interface to spectra, whatever their origin: a specscale synthetic HDF5 dataset or the
study's PFS-resampled HDF5 files. Models, the Fisher ceiling and the workflow only see this.

Noise is never stored. ``observed(split, rows, cell, noise_level, seed)`` draws it on read, per
star, from a counter-based stream keyed by (dataset id, split, row): validation and test noise is
fixed for a dataset (the same for every model, seed and the ceiling); training noise also depends
on the model's seed. One dataset therefore serves the whole noise x magnitude grid.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from specscale.core.config import from_dict, read_yaml
from specscale.core.vocab import LABELS, SPLITS, MagRange
from specscale.data.streams import seed_key, star_normals
from specscale.sim.observe import NoiseModel, ObservingConfig, expand_variances, observe

log = logging.getLogger(__name__)

SYNTHETIC_FORMAT = "specscale-synthetic"
STUDY_FORMAT = "pfs-study"
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


def _as_rows(rows, n: int, where: str) -> np.ndarray:
    if isinstance(rows, slice):
        rows = np.arange(n)[rows]
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise DataError(f"{where}: rows out of range 0..{n - 1}")
    return rows


def _read_rows(dset, rows: np.ndarray) -> np.ndarray:
    """h5py read of arbitrary rows (contiguous ranges read as slices, fancy reads sorted)."""
    if rows.size == 0:
        return np.empty((0,) + dset.shape[1:], dtype=dset.dtype)
    if rows.size == rows[-1] - rows[0] + 1 and np.all(np.diff(rows) == 1):
        return dset[rows[0] : rows[-1] + 1]
    order = np.argsort(rows)
    uniq, inv = np.unique(rows[order], return_inverse=True)
    data = dset[uniq][inv]
    out = np.empty_like(data)
    out[order] = data
    return out


def _row_blocks(n: int, row_bytes: int, block_bytes: int):
    """(start, stop) row ranges of about ``block_bytes`` each over rows 0..n-1."""
    step = max(1, int(block_bytes) // max(1, int(row_bytes)))
    for start in range(0, n, step):
        yield start, min(n, start + step)


def _first_bad(block: np.ndarray, positive: bool = False):
    """(row, column, value) of the first NaN/infinity in ``block`` (rows first; with ``positive``
    also values <= 0), or None. The fast path is one row sum (NaN and infinity survive it); only a
    block whose sums are not all finite is searched value by value (so an overflowing sum of
    finite values is no false alarm)."""
    flat = block.reshape(len(block), -1)
    if positive:
        bad = ~(np.isfinite(flat) & (flat > 0))
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(flat.sum(axis=1)).all():
                return None
        bad = ~np.isfinite(flat)
    if not bad.any():
        return None
    row, col = np.unravel_index(np.argmax(bad), bad.shape)
    return int(row), int(col), float(flat[row, col])


class Source:
    """Base class. Subclasses provide ``wave``, ``dataset_id``, ``n``, ``labels``,
    ``check_cell`` and ``noiseless``; ``observed`` and ``iter_observed`` are shared."""

    kind = "abstract"
    label_names = LABELS
    wave: np.ndarray
    dataset_id: str
    path: Path

    def n(self, split: str) -> int:
        raise NotImplementedError

    def labels(self, split: str, rows=None) -> np.ndarray:
        raise NotImplementedError

    def check_cell(self, cell: MagRange) -> None:
        raise NotImplementedError

    def noiseless(self, split: str, rows, cell, variances: bool = True) -> Batch:
        """Noiseless stars ``rows`` of ``split`` in magnitude ``cell``. ``variances=False`` leaves
        var_a/var_b out where the source has a ``variance_basis`` (the per-star ``noise_coef`` give
        them: 3 numbers per star instead of 2 x n_pix; the ViT loader ships those)."""
        raise NotImplementedError

    def variance_basis(self) -> np.ndarray | None:
        """(3, n_pix) float32 pixel vectors B with var_a = c0 B0, var_b = c1 B1 + c2 B2 for a star's
        ``Batch.noise_coef`` c, or None when the variances do not factor (files with errors)."""
        return None

    def check_finite(self, split: str, n: int | None = None, block_bytes: int = SCAN_BLOCK_BYTES) -> None:
        """Scan the first ``n`` stars of ``split`` (default all) for NaN or infinity in anything a
        model or the noise draws read; raises DataError naming the file, split, array and row.
        Reads row blocks of about ``block_bytes``, so memory stays bounded whatever the size."""
        raise NotImplementedError

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
        rows = _as_rows(slice(None) if rows is None else rows, self.n(split), f"{self.path}:{split}")
        return _read_rows(self._file[f"{split}/labels"], rows)

    def check_finite(self, split: str, n: int | None = None, block_bytes: int = SCAN_BLOCK_BYTES) -> None:
        n = self.n(split) if n is None else n
        g = self._file[split]
        arrays = {name: g[name] for name in ("flux", "labels", "obs_u", "fmed0")}
        row_bytes = sum(int(np.prod(d.shape[1:], dtype=np.int64)) * d.dtype.itemsize for d in arrays.values())
        columns = {"flux": "pixel", "labels": "label", "obs_u": "quantile"}
        for start, stop in _row_blocks(n, row_bytes, block_bytes):
            for name, dset in arrays.items():
                hit = _first_bad(dset[start:stop], positive=name == "fmed0")
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
        rows = _as_rows(rows, self.n(split), f"{self.path}:{split}")
        g = self._file[split]
        flux = _read_rows(g["flux"], rows)
        u = _read_rows(g["obs_u"], rows)
        fmed0 = _read_rows(g["fmed0"], rows)
        mag = cell.magnitudes(u[:, 0])
        obs = self.observation
        seeing = obs.seeing_arcsec[0] + u[:, 1] * (obs.seeing_arcsec[1] - obs.seeing_arcsec[0])
        zenith = obs.zenith_deg[0] + u[:, 2] * (obs.zenith_deg[1] - obs.zenith_deg[0])
        coef = self.noise_model.star_coefficients(fmed0, mag, seeing, zenith)
        a = b = None
        if variances:
            a, b = (v.astype(np.float32) for v in expand_variances(coef, self.noise_model.variance_basis))
        return Batch(rows, flux, a, b, _read_rows(g["labels"], rows), mag, coef.astype(np.float32))


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
        hit = _first_bad(self.params[split][names].to_numpy(np.float64)[:n])
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
                for start, stop in _row_blocks(n, row_bytes, block_bytes):
                    fl = flux[start:stop]
                    hit = _first_bad(fl)
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
                    hit = _first_bad(er)
                    if hit is not None:
                        raise DataError(f"{path}: {split} error row {start + hit[0]} holds {hit[2]} at pixel {hit[1]}")
        except (OSError, KeyError) as exc:
            raise DataError(f"{path}: cannot read the {split} spectra ({exc})") from exc

    def n(self, split):
        self.check_split(split)
        return len(self.params[split])

    def labels(self, split, rows=None):
        rows = _as_rows(slice(None) if rows is None else rows, self.n(split), f"{self.files[split]}")
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
        rows = _as_rows(rows, self.n(split), str(path))
        with h5py.File(path, "r") as f:
            flux = _read_rows(f["dataset/arrays/flux/value"], rows).astype(np.float64)
            err = _read_rows(f["dataset/arrays/error/value"], rows).astype(np.float64)
            mask = _read_rows(f["dataset/arrays/mask/value"], rows) if "dataset/arrays/mask/value" in f else None
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


# pickle opcodes that build only literals (numbers, strings, bytes, None, bools) and containers of
# them: no GLOBAL/STACK_GLOBAL (imports), REDUCE/BUILD/INST/OBJ/NEWOBJ (calls), EXT* or PERSID
# fmt: off
_LITERAL_OPS = frozenset({
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP", "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT",
    "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING",
    "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    "BYTEARRAY8", "EMPTY_LIST", "APPEND", "APPENDS", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_SET", "ADDITEMS", "FROZENSET", "GET", "BINGET",
    "LONG_BINGET", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE",
})
# fmt: on


class _LiteralUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # never reached after the opcode check; refuses all the same
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def literal_unpickle(data: bytes, what: str):
    """Python literals from a pickle (how PyTables stores list attributes, e.g. pandas' column
    names), refusing any pickle that would import or call anything: ``what`` names it in the
    DataError."""
    try:
        ops = {op.name for op, _, _ in pickletools.genops(data)}
    except Exception as exc:
        raise DataError(f"{what}: not a readable pickle ({exc})") from None
    if ops - _LITERAL_OPS:
        raise DataError(
            f"{what} refused: a pickle that builds Python objects ({', '.join(sorted(ops - _LITERAL_OPS))}), "
            "which would run code when read"
        )
    try:
        return _LiteralUnpickler(io.BytesIO(data)).load()
    except Exception as exc:
        raise DataError(f"{what}: not a readable pickle ({exc})") from None


def _text(value) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _raw(value) -> bytes | None:
    """An HDF5 attribute as bytes (h5py gives fixed-length strings as bytes, variable ones as str)."""
    if value is None:
        return None
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def read_pandas_frame(group: h5py.Group, what: str):
    """Columns of a pandas DataFrame written by ``DataFrame.to_hdf`` (format "table" or "fixed"),
    read with h5py only. Returns ``(numeric, pickled, other)``: {name: 1-d array} of the numeric
    columns in file order, the names of columns stored as pickled Python objects (never read), and
    {name: stored type} of the other columns (strings, categories, datetimes; not read). The
    index is not read. ``what`` names the table in errors."""
    kind = _text(group.attrs.get("pandas_type", b""))
    numeric, pickled, other = {}, [], {}
    if kind == "frame_table":
        if "table" not in group:
            raise DataError(f"{what}: pandas table without its 'table' dataset")
        table = group["table"]
        attrs = table.attrs
        for field in table.dtype.names or ():
            if field == "index":
                continue
            raw = _raw(attrs.get(f"{field}_kind"))
            names = [field] if raw is None else literal_unpickle(raw, f"{what}: attribute {field}_kind")
            if not isinstance(names, list) or not all(isinstance(n, (str, int, float)) for n in names):
                raise DataError(f"{what}: attribute {field}_kind is not a list of column names")
            names = [str(n) for n in names]
            sub = table.dtype[field]
            base = sub.base if sub.subdtype is not None else sub
            stored = _text(attrs.get(f"{field}_dtype", base.name))
            meta = _raw(attrs.get(f"{field}_meta"))  # b"N." (a pickled None) for plain columns
            try:
                plain = np.dtype(stored).kind in "fiu" and base.kind in "fiu" and meta in (None, b"N.")
            except TypeError:
                plain = False
            if not plain:
                other.update({n: stored if meta in (None, b"N.") else f"{stored}, {_text(meta)}" for n in names})
                continue
            values = np.asarray(table.fields([field])[:][field]).reshape(len(table), -1)
            if values.shape[1] != len(names):
                raise DataError(f"{what}: {field} holds {values.shape[1]} columns but names {len(names)}")
            numeric.update({n: values[:, i] for i, n in enumerate(names)})
    elif kind == "frame":
        try:
            nblocks = int(group.attrs["nblocks"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{what}: pandas fixed-format frame without 'nblocks'") from None
        for i in range(nblocks):
            items, values = group.get(f"block{i}_items"), group.get(f"block{i}_values")
            if not isinstance(items, h5py.Dataset) or not isinstance(values, h5py.Dataset):
                raise DataError(f"{what}: block {i} of the pandas frame is missing")
            if items.dtype.kind == "O" or _text(group.attrs.get(f"block{i}_items_variety", b"regular")) != "regular":
                raise DataError(f"{what}: the column names of block {i} are pickled or a MultiIndex: refused")
            names = [_text(n) for n in items[()]]
            if values.dtype.kind == "O" or _text(values.attrs.get("PSEUDOATOM", b"")) == "object":
                pickled += names  # a VLArray of pickles: never read
                continue
            value_type = values.attrs.get("value_type")
            if values.dtype.kind not in "fiu" or value_type is not None:
                other.update({n: _text(value_type) if value_type is not None else values.dtype.name for n in names})
                continue
            block = values[()]
            if not int(values.attrs.get("transposed", 0)):
                block = block.T
            if block.ndim != 2 or block.shape[1] != len(names):
                raise DataError(f"{what}: block {i} has shape {block.shape} for {len(names)} columns")
            numeric.update({n: block[:, j] for j, n in enumerate(names)})
    else:
        raise DataError(f"{what}: not a pandas DataFrame written by to_hdf (pandas_type={kind!r})")
    lengths = {len(v) for v in numeric.values()}
    if len(lengths) > 1:
        raise DataError(f"{what}: columns of different lengths {sorted(lengths)}")
    return numeric, pickled, other


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


def open_source(path, observation: ObservingConfig | None = None) -> Source:
    """Open a dataset: a specscale synthetic ``.h5`` or a study manifest (``.yaml``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset not found: {path}")
    if path.suffix in (".yaml", ".yml"):
        if observation is not None:
            raise DataError(f"{path}: study files carry their own errors; an observing setup cannot be applied")
        return StudySource(path)
    try:
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
            fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or not HDF5: {exc})") from exc
    if fmt != SYNTHETIC_FORMAT:
        raise DataError(
            f"{path}: not a specscale dataset (attribute format={fmt!r}); for the study's PFS files "
            "write a manifest (see StudySource)"
        )
    return SyntheticSource(path, observation)
