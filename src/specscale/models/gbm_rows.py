"""The training rows of LightGBM as a ``lightgbm.Sequence``: LightGBM bins a row sample, then
pulls batches, so the float matrix of all training spectra never sits in memory. Apart from
:mod:`specscale.models.gbm` so that reading the model's class (the sweep does, at parse time)
does not import LightGBM."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from specscale.core.vocab import MagRange
from specscale.data.sources import Source


class ObservedRows(lgb.Sequence):
    """Observed (noisy) flux of the first ``n`` stars of a split as a LightGBM Sequence.
    Single-row access (LightGBM's bin sample, in increasing row order) is served from a cached
    block of ``batch_size`` rows, so each row is read and noised once per pass. ``features`` (a
    bound FeaturePipeline of a variant) turns each block's flux and pipeline error into its rows."""

    def __init__(
        self, source: Source, split: str, n: int, cell: MagRange, noise: float, seed, batch: int, features=None
    ):
        self.source, self.split, self.n, self.cell = source, split, n, cell
        self.noise, self.seed, self.batch_size = noise, seed, batch
        self.features = features
        self._block = (-1, None)

    def __len__(self) -> int:
        return self.n

    def _rows(self, start: int, stop: int) -> np.ndarray:
        obs = self.source.observed(self.split, np.arange(start, stop), self.cell, self.noise, self.seed)
        rows = obs.flux if self.features is None else self.features(obs.flux, obs.error)
        return rows.astype(np.float64)  # LightGBM's Sequence path takes doubles only

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            start, stop, step = idx.indices(self.n)
            if step != 1:
                raise TypeError("ObservedRows supports contiguous slices only")
            return self._rows(start, stop)
        idx = int(idx)
        if not 0 <= idx < self.n:
            raise IndexError(idx)
        b = idx // self.batch_size
        if self._block[0] != b:
            self._block = (b, self._rows(b * self.batch_size, min(self.n, (b + 1) * self.batch_size)))
        return self._block[1][idx - b * self.batch_size]
