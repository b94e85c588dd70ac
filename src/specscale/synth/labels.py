"""Label draws for the synthesis: a scrambled Sobol sequence over the prior box (space-filling,
so a few hundred stars cover the 4-d box far more evenly than independent uniform draws), one
sequence per set with its own seed, so the held-out stars are not points of the training
sequence.
"""

from __future__ import annotations

import warnings

import numpy as np

from specscale.synth.config import SynthesisConfig

SETS = ("train", "test")


def sobol_labels(box, n: int, seed: int) -> np.ndarray:
    """``n`` labels (n, 4) float64 inside ``box`` ((lo, hi) per label): the first n points of a
    scrambled Sobol sequence (scipy.stats.qmc, Owen scrambling seeded with ``seed``)."""
    from scipy.stats import qmc

    lo, hi = np.asarray(box, dtype=np.float64).T
    sampler = qmc.Sobol(d=lo.size, scramble=True, seed=seed)
    with warnings.catch_warnings():  # n not a power of 2 only loses balance properties
        warnings.simplefilter("ignore", UserWarning)
        unit = sampler.random(n)
    return lo + unit * (hi - lo)


def draw_labels(config: SynthesisConfig, which: str) -> np.ndarray:
    """The labels of set ``which`` ("train": n_train stars, seed_train; "test": n_test, seed_test)."""
    if which not in SETS:
        raise ValueError(f"set must be one of {list(SETS)}, got {which!r}")
    n = config.n_train if which == "train" else config.n_test
    seed = config.seed_train if which == "train" else config.seed_test
    return sobol_labels(config.box, n, seed)


def chunk_labels(labels: np.ndarray, chunk_size: int, index: int) -> np.ndarray:
    """Rows ``index * chunk_size`` .. of ``labels`` (ValueError naming the index when out of range)."""
    n_chunks = -(-len(labels) // chunk_size)
    if not 0 <= index < n_chunks:
        raise ValueError(f"chunk index {index} outside 0..{n_chunks - 1}")
    return labels[index * chunk_size : (index + 1) * chunk_size]
