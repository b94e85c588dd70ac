"""The one model interface. A sweep cell trains a model on the first ``n_train`` training stars
at (noise_level, magnitude range, seed), selects what needs selecting on the validation split
only, and predicts log g for observed test spectra. ``specscale.sweep.cell`` runs a cell around it
and calls nothing of a model that this class does not declare."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from specscale.core.vocab import Cell

if TYPE_CHECKING:  # types only: the workflow resolves models at parse time, without torch
    from specscale.data.sources import Observed, Source
    from specscale.models.features import FeatureConfig


class Model(ABC):
    """Subclasses: a ``Params`` dataclass (hyper-parameters with the study's defaults, filled
    strictly from config ``models.<name>``), ``fit`` and ``predict``; the class attributes below
    declare what the sweep may ask of the model (read by ``models.registry.ModelSpec``)."""

    name: ClassVar[str] = "abstract"
    Params: ClassVar[type]
    tracked: ClassVar[bool] = False  # its runs log to Weights & Biases through ``tracker``
    cpu_only: ClassVar[bool] = False  # runs on the CPU whatever --device says
    feature_options: ClassVar[tuple[str, ...]] = ()  # options of a variant's features it applies
    predicts_sigma: bool = False  # whether ``predict_with_sigma`` works (may depend on params)
    features: FeatureConfig | None = None  # a variant's features (set by ModelSpec.build); None: raw flux
    tracker = None  # a ``sweep.tracking.Tracker`` for tracked models (set by the cell runner)

    def __init__(self, params, *, seed: int, device: str = "cpu", n_threads: int = 1):
        self.params, self.seed, self.device, self.n_threads = params, seed, device, n_threads

    def check(self, source: Source, cell: Cell) -> None:  # noqa: B027 (a default, not abstract)
        """Fail before training on what the data cannot support (the default: nothing to check)."""

    @abstractmethod
    def fit(self, source: Source, cell: Cell, workdir: Path) -> dict:
        """Train (validation split only for selection); returns JSON-able info for metrics.json
        (e.g. chosen alpha, trees, epochs). ``workdir`` holds checkpoints and logs."""

    @abstractmethod
    def predict(self, observed: Observed) -> np.ndarray:
        """log g (dex) for each observed spectrum, shape (n,)."""

    def predict_with_sigma(self, observed: Observed) -> tuple[np.ndarray, np.ndarray]:
        """(log g, predicted 1-sigma of log g), both dex, shape (n,) each; only where
        ``predicts_sigma``."""
        raise NotImplementedError(f"model {self.name!r} predicts no uncertainty")
