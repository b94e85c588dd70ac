"""The shared vocabulary every stage speaks: stellar labels and the log g index, the priors,
the dataset splits, magnitude ranges, the sweep's cell and the S/N bins. It sits at the bottom of the package and
imports nothing of it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# stellar labels, in the order of every (N, 4) label array: Teff K, log g dex, [M/H] dex, [alpha/M] dex
LABELS = ("teff", "logg", "mh", "am")
LOGG, ALPHA = LABELS.index("logg"), LABELS.index("am")

PRIORS = {
    # the study's "lowT" set: independent uniform draws
    "lowT": {"teff": (3750.0, 6000.0), "logg": (1.0, 5.0), "mh": (-2.5, 0.75), "am": (-0.25, 0.5)},
}

SPLITS = ("train", "val", "test")
SPLIT_CODE = {"train": 1, "val": 2, "test": 3}

# per-spectrum S/N bins (edges), the same for every metric and ceiling so cells compare bin by bin
SNR_EDGES = (0.0, 3.0, 5.0, 8.0, 12.0, 20.0, 40.0, np.inf)
SNR_BIN_LABELS = tuple(f"{lo:g}-{hi:g}" for lo, hi in zip(SNR_EDGES[:-1], SNR_EDGES[1:]))
N_SNR_BINS = len(SNR_BIN_LABELS)


def snr_bin_index(snr) -> np.ndarray:
    """The S/N bin (0 .. len(SNR_BIN_LABELS) - 1, edges SNR_EDGES) of each per-spectrum S/N."""
    return np.digitize(snr, SNR_EDGES[1:-1])


def snr_bin_coords() -> dict:
    """xarray coordinates of the S/N bins: ``snr_bin`` (labels) with ``snr_bin_lo``/``snr_bin_hi`` (edges)."""
    return {
        "snr_bin": list(SNR_BIN_LABELS),
        "snr_bin_lo": ("snr_bin", np.array(SNR_EDGES[:-1])),
        "snr_bin_hi": ("snr_bin", np.array(SNR_EDGES[1:])),
    }


@dataclass(frozen=True, order=True)
class MagRange:
    """An HSC-i AB magnitude range of a cell: a fixed value ("21.5") or a range ("20.5-22.5") drawn per star.
    Ranges sort by (lo, hi), the order of the cube's mag axis.

    A range maps each star's stored quantile u in [0, 1) to lo + u (hi - lo), so the same star is
    always at the same relative place in any range."""

    lo: float
    hi: float

    @classmethod
    def parse(cls, text) -> MagRange:
        """Parse "21.5", "20.5-22.5" or "20.5:22.5" (AB mag). Raises ValueError naming the text."""
        if isinstance(text, MagRange):
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
        f = lambda v: f"{v:g}"
        return f(self.lo) if self.is_fixed else f"{f(self.lo)}-{f(self.hi)}"

    def magnitudes(self, u_mag: np.ndarray) -> np.ndarray:
        """Per-star magnitudes (AB) from stored quantiles u_mag in [0, 1)."""
        return self.lo + np.asarray(u_mag, dtype=np.float64) * (self.hi - self.lo)

    def __str__(self) -> str:
        return self.label()


@dataclass(frozen=True)
class Cell:
    """One cell of the sweep: ``model`` trained on the first ``n_train`` training stars at noise
    level ``noise`` (a multiplier of the per-pixel sigma) and HSC-i magnitude range ``mag`` (AB),
    with ``seed`` driving the training noise and the model's randomness.

    The one cell type of every stage: the grid lists them, ``specscale train`` runs one, a model
    fits on one, the cube indexes by them. Values are normalised on construction (``mag`` from
    its text or a MagRange, ``noise`` a float, sizes ints), so equal cells compare and hash equal."""

    noise: float
    mag: MagRange
    model: str
    n_train: int
    seed: int

    def __post_init__(self):
        object.__setattr__(self, "noise", float(self.noise))
        object.__setattr__(self, "mag", MagRange.parse(self.mag))
        object.__setattr__(self, "model", str(self.model))
        object.__setattr__(self, "n_train", int(self.n_train))
        object.__setattr__(self, "seed", int(self.seed))

    def info(self) -> dict:
        """The cell as metrics.json states it (and as its config hash covers it): model, noise
        (float), mag (canonical label), n_train, seed."""
        return {
            "model": self.model,
            "noise": self.noise,
            "mag": self.mag.label(),
            "n_train": self.n_train,
            "seed": self.seed,
        }

    def wildcards(self) -> dict[str, str | int]:
        """The cell in its path form (the workflow's wildcards): noise "0.5", mag "20.5-22.5"."""
        return {**self.info(), "noise": f"{self.noise:g}"}
