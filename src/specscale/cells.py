"""Sweep-cell vocabulary: magnitude cells and deterministic per-star random streams."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")
SPLIT_CODE = {"train": 1, "val": 2, "test": 3}
# what a per-star stream is for; keeps streams of one star independent
STREAM = {"noise": 1, "train_noise": 2}


@dataclass(frozen=True)
class MagCell:
    """An HSC-i AB magnitude cell: a fixed value ("21.5") or a range ("20.5-22.5") drawn per star.

    A range maps each star's stored quantile u in [0, 1) to lo + u (hi - lo), so the same star is
    always at the same relative place in any range."""

    lo: float
    hi: float

    @classmethod
    def parse(cls, text) -> "MagCell":
        """Parse "21.5", "20.5-22.5" or "20.5:22.5" (AB mag). Raises ValueError naming the text."""
        if isinstance(text, MagCell):
            return text
        s = str(text).strip()
        try:
            if isinstance(text, (int, float)):
                lo = hi = float(text)
            else:
                parts = s.replace(":", "-").split("-") if not s.startswith("-") else [s]
                if len(parts) == 1:
                    lo = hi = float(parts[0])
                elif len(parts) == 2:
                    lo, hi = float(parts[0]), float(parts[1])
                else:
                    raise ValueError
        except ValueError:
            raise ValueError(f"magnitude cell {text!r} is not a number or a range like '20.5-22.5'") from None
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
            raise ValueError(f"magnitude cell {text!r}: need finite lo <= hi")
        return cls(lo, hi)

    @property
    def is_fixed(self) -> bool:
        return self.lo == self.hi

    def label(self) -> str:
        """Canonical text form, used in paths and cube coordinates ("21.5", "20.5-22.5")."""
        f = lambda v: f"{v:g}"  # noqa: E731
        return f(self.lo) if self.is_fixed else f"{f(self.lo)}-{f(self.hi)}"

    def magnitudes(self, u_mag: np.ndarray) -> np.ndarray:
        """Per-star magnitudes (AB) from stored quantiles u_mag in [0, 1)."""
        return self.lo + np.asarray(u_mag, dtype=np.float64) * (self.hi - self.lo)

    def __str__(self) -> str:
        return self.label()


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
