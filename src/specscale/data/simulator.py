"""The simulator behind a synthetic dataset, and the prior it was drawn from: what the references
(Fisher ceiling, oracle fit, Bayes posterior) need to re-create a dataset's noiseless spectra."""

from __future__ import annotations

import numpy as np

from specscale.core.vocab import LABELS, PRIORS
from specscale.data.sources import DataError, Source
from specscale.sim.atmosphere_base import PfsStages
from specscale.sim.versions import atmosphere_config, make_atmosphere


def simulator_of(source: Source) -> PfsStages:
    """The simulator that wrote a synthetic dataset (its stored ``atmosphere`` config; version 1
    when it has no ``version`` key, as every file written before version 2 existed)."""
    cfg = getattr(source, "config", None)
    if not isinstance(cfg, dict) or "atmosphere" not in cfg:
        raise DataError(
            f"{source.path}: no simulator config in this source (only specscale synthetic datasets have one)"
        )
    return make_atmosphere(atmosphere_config(cfg["atmosphere"], f"{source.path}: atmosphere"))


def check_resimulated(
    source: Source, split: str, rows: np.ndarray, simulated: np.ndarray, stored: np.ndarray, atol: float
):
    """Fail loudly when the simulator does not reproduce the stored noiseless flux (another
    simulator version wrote the file, so its derivatives would describe other spectra)."""
    diff = np.abs(simulated - stored).max(axis=1)
    if not (diff <= atol).all():
        i = int(np.argmax(~(diff <= atol)))
        version = getattr(source, "attrs", {}).get("simulator_version", "?")
        raise DataError(
            f"{source.path}: the simulator does not reproduce the stored flux of {split} row {int(rows[i])} "
            f"(max |diff| {diff[i]:.3g} > fisher.check_atol {atol:g}); the file was written by simulator "
            f"{version}, re-simulate it with this code version"
        )


def prior_box(source: Source) -> np.ndarray:
    """(4, 2) label bounds: the dataset's prior, or for files without one the training range."""
    cfg = getattr(source, "config", None)
    if isinstance(cfg, dict) and "simulation" in cfg:
        prior = PRIORS[cfg["simulation"].get("prior", "lowT")]
        return np.array([prior[k] for k in LABELS], dtype=np.float64)
    train = source.labels("train").astype(np.float64)
    return np.stack([train.min(0), train.max(0)], 1)
