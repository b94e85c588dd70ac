"""Row reads and bounded row-block scans shared by the dataset readers (HDF5 datasets or arrays)."""

from __future__ import annotations

import numpy as np

from specscale.data.sources import DataError


def as_rows(rows, n: int, where: str) -> np.ndarray:
    """Row indices (int64) from a slice or array of rows of a split of ``n`` stars; out-of-range
    rows are a DataError naming ``where``."""
    if isinstance(rows, slice):
        rows = np.arange(n)[rows]
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise DataError(f"{where}: rows out of range 0..{n - 1}")
    return rows


def read_rows(dset, rows: np.ndarray) -> np.ndarray:
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


def row_blocks(n: int, row_bytes: int, block_bytes: int):
    """(start, stop) row ranges of about ``block_bytes`` each over rows 0..n-1."""
    step = max(1, int(block_bytes) // max(1, int(row_bytes)))
    for start in range(0, n, step):
        yield start, min(n, start + step)


def first_bad(block: np.ndarray, positive: bool = False):
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
