"""Counter-based random streams: every star's draws depend only on (key, split, row, stream),
never on batch size, chunking or order, so one dataset serves every cell reproducibly."""

from __future__ import annotations

import hashlib

import numpy as np

from specscale.core.vocab import SPLIT_CODE

# what a per-star stream is for; keeps streams of one star independent
STREAM = {"noise": 1}


def seed_key(*parts) -> int:
    """A 64-bit key from any parts (stable across runs and machines)."""
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "little")


def star_normals(key: int, split: str, rows: np.ndarray, n_pix: int, stream: str = "noise") -> np.ndarray:
    """Standard-normal vectors (len(rows), n_pix) float32, one counter-based Philox stream per star.

    The draw of a star depends only on (key, split, row, stream): never on batch or order."""
    out = np.empty((len(rows), n_pix), dtype=np.float32)
    k = np.array([key & 0xFFFFFFFFFFFFFFFF, STREAM[stream]], dtype=np.uint64)
    code = SPLIT_CODE[split]
    for i, row in enumerate(np.asarray(rows, dtype=np.int64)):
        # the star sits in the upper counter words; drawing advances only the lowest one
        ctr = np.array([0, int(row), code, 0], dtype=np.uint64)
        out[i] = np.random.Generator(np.random.Philox(counter=ctr, key=k)).standard_normal(n_pix, dtype=np.float32)
    return out
