"""The one model interface. A sweep cell trains a model on the first ``n_train`` training stars
at (noise_level, magnitude cell, seed), selects what needs selecting on the validation split only,
and predicts log g for observed test spectra. ``specscale.sweep.cell`` runs a cell around it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specscale.core.vocab import MagRange
from specscale.data.sources import Observed, Source


@dataclass(frozen=True)
class TrainCell:
    """What a model trains on: the first ``n_train`` stars of the train split, at this noise
    level and magnitude cell; ``seed`` drives the training noise and the model's randomness."""

    noise: float
    mag: MagRange
    n_train: int
    seed: int


class Model(ABC):
    """Subclasses: a ``Params`` dataclass (hyper-parameters with the study's defaults, filled
    strictly from config ``models.<name>``), ``fit`` and ``predict``."""

    name: str = "abstract"

    def __init__(self, params, *, seed: int, device: str = "cpu", n_threads: int = 1):
        self.params, self.seed, self.device, self.n_threads = params, seed, device, n_threads

    @abstractmethod
    def fit(self, source: Source, cell: TrainCell, workdir: Path) -> dict:
        """Train (validation split only for selection); returns JSON-able info for metrics.json
        (e.g. chosen alpha, trees, epochs). ``workdir`` holds checkpoints and logs."""

    @abstractmethod
    def predict(self, observed: Observed) -> np.ndarray:
        """log g (dex) for each observed spectrum, shape (n,)."""
