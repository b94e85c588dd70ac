"""LightGBM on raw flux (the study found standardising features hurt it badly).

The study's recipe: learning rate 0.05, 63 leaves, bagging and feature fraction 0.8, up to 5000
trees with early stopping after 50 rounds without improvement of the validation L2. Training rows
stream into LightGBM through a ``lightgbm.Sequence`` (it bins a row sample, then pushes batches),
so the float matrix of all training spectra never sits in memory; only LightGBM's binned copy
(1 byte per value) does. ``deterministic`` + a seed + a fixed histogram layout make runs repeat.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from specscale.core.config import check_fields
from specscale.core.vocab import LOGG, Cell, MagRange
from specscale.data.sources import Observed, Source
from specscale.models.base import Model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LightGBMParams:
    learning_rate: float = 0.05
    num_leaves: int = 63
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    feature_fraction: float = 0.8
    min_data_in_leaf: int = 20
    lambda_l2: float = 0.0
    max_bin: int = 255
    # rows LightGBM samples to find the bin edges: its default (200,000) holds ~16 GB at 4096 px
    # (the Sequence path keeps the sample as doubles, plus copies); below it every row is sampled
    bin_construct_sample_cnt: int = 50_000
    max_trees: int = 5000
    early_stopping_rounds: int = 50
    batch: int = 4096  # rows per streamed read
    log_every: int = 100  # trees between validation log lines (0: quiet)

    def __post_init__(self):
        check_fields(self)
        for name in (
            "num_leaves",
            "max_trees",
            "early_stopping_rounds",
            "batch",
            "max_bin",
            "min_data_in_leaf",
            "bin_construct_sample_cnt",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_bin < 2:
            raise ValueError(f"max_bin={self.max_bin} must be >= 2 (LightGBM needs two bins)")
        for name in ("bagging_fraction", "feature_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in (0, 1]")
        if self.learning_rate <= 0 or self.lambda_l2 < 0 or self.bagging_freq < 0 or self.log_every < 0:
            raise ValueError("learning_rate must be > 0; lambda_l2, bagging_freq, log_every >= 0")

    def lgb_params(self, seed: int, n_threads: int) -> dict:
        """The parameter dict LightGBM's ``train`` receives."""
        p = asdict(self)
        for name in ("max_trees", "early_stopping_rounds", "batch", "log_every"):
            p.pop(name)
        return {
            **p,
            "objective": "regression",
            "metric": "l2",
            "seed": seed,
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": n_threads,
            "verbosity": -1,
        }


class LightGBMModel(Model):
    """Gradient-boosted trees on raw flux; tree count by early stopping on validation."""

    name = "lightgbm"
    Params = LightGBMParams
    cpu_only = True
    feature_options = ("window", "normalisation", "input")  # of a variant's features (models.registry)
    pipeline = None  # the features bound to the data's wavelength grid (by fit)

    def fit(self, source: Source, cell: Cell, workdir: Path) -> dict:
        import lightgbm as lgb  # here: the sweep reads this class's capabilities at parse time

        from specscale.models.gbm_rows import ObservedRows

        p = self.params
        params = p.lgb_params(self.seed, self.n_threads)
        mag = MagRange.parse(cell.mag)
        self.pipeline = None if self.features is None else self.features.bind(source.wave)
        train = lgb.Dataset(
            ObservedRows(source, "train", cell.n_train, mag, cell.noise, cell.seed, p.batch, self.pipeline),
            label=source.labels("train", np.arange(cell.n_train))[:, LOGG],
            params=params,
            free_raw_data=True,
        )
        n_val = source.n("val")
        val = lgb.Dataset(
            ObservedRows(source, "val", n_val, mag, cell.noise, None, p.batch, self.pipeline),
            label=source.labels("val", np.arange(n_val))[:, LOGG],
            reference=train,
            params=params,
        )
        trained = [0]

        def count(env) -> None:
            trained[0] = env.iteration + 1

        callbacks = [count, lgb.early_stopping(p.early_stopping_rounds, first_metric_only=True, verbose=False)]
        if p.log_every:
            callbacks.append(_log_every(p.log_every))
        with warnings.catch_warnings():
            # LightGBM's own Sequence path transposes its bin sample and warns about it
            warnings.filterwarnings("ignore", message="Usage of np.ndarray subset", category=UserWarning)
            self.booster = lgb.train(
                params, train, num_boost_round=p.max_trees, valid_sets=[val], valid_names=["val"], callbacks=callbacks
            )
        best = int(self.booster.best_iteration) or trained[0]
        self.n_trees = best
        workdir.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(workdir / "lightgbm.txt"), num_iteration=best)
        val_l2 = self.booster.best_score.get("val", {}).get("l2")
        return {
            "n_trees": best,
            "trees_trained": trained[0],
            "stopped_early": bool(trained[0] < p.max_trees),
            "val_l2": None if val_l2 is None else float(val_l2),
            "n_threads": self.n_threads,
        }

    def predict(self, observed: Observed) -> np.ndarray:
        rows = observed.flux if self.pipeline is None else self.pipeline(observed.flux, observed.error)
        return self.booster.predict(rows, num_iteration=self.n_trees, num_threads=self.n_threads).astype(np.float64)


def _log_every(period: int):
    def callback(env) -> None:
        if (env.iteration + 1) % period == 0 and env.evaluation_result_list:
            _, name, value, _ = env.evaluation_result_list[0][:4]
            log.info("lightgbm tree %d: val %s %.5f", env.iteration + 1, name, value)

    return callback
