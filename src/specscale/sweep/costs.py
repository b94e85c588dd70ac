"""What the jobs of a sweep are measured to cost: :class:`Cost` (core- or GPU-seconds, a fixed part
plus a part per unit of work), the units of work of each kind of job (:func:`job_units`) and
:data:`MEASURED`, the table ``specscale plan`` estimates from, each entry with its source."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from specscale.sweep.grid import Sweep


@dataclass(frozen=True)
class Cost:
    """Measured cost of one job: ``core_s + core_s_per_unit * units`` core-seconds (GPU-seconds
    when ``gpu``), ``units`` from :data:`UNITS` (``unit``). ``when``: the model hyper-parameters it
    was measured at (a job whose resolved params differ in any of them is not estimated from it;
    empty: any). ``source``: where the numbers come from."""

    core_s: float
    core_s_per_unit: float = 0.0
    unit: str = "none"
    gpu: bool = False
    when: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""


def job_units(sweep: Sweep, params) -> dict[str, Callable[[Mapping[str, Any]], float]]:
    grid, info = sweep.config["grid"], sweep.dataset_info
    ds = sweep.config["datasets"][sweep.dataset]
    stars = grid.get("ceiling", {}).get("stars") or info.n_test
    curves = grid["curves"]
    return {
        "none": lambda job: 0.0,
        "n_train": lambda job: job["n_train"],
        "spectra": lambda job: info.n_train + ds.get("n_val", 0) + info.n_test,
        "ceiling_stars": lambda job: stars,
        "bayes_stars": lambda job: sweep.bayes_stars,
        "curve_points": lambda job: curves.get("stars", 300) * len(sweep.curve_mag) * len(sweep.curve_noise),
        # the oracle fits every test star: n_starts local fits of up to `iterations` steps
        "oracle_fits": lambda job: info.n_test * params.n_starts * params.iterations,
        # the ViT: an upper bound, every epoch run (patience stops earlier)
        "spectrum_epochs": lambda job: job["n_train"] * params.max_epochs,
        # pre-training: every epoch of its schedule over its n_spectra
        "pretrain_epochs": lambda job: job["n_spectra"] * params.max_epochs,
    }


# Measured on this project's 2-core CPU machine (one thread unless said) and one H200. Sources:
# benchmarks/RESULTS-workflow.md (the default sweep, 2026-12-02: job seconds per rule),
# RESULTS-data.md (simulate), RESULTS-ceiling.md (Fisher, Bayes), RESULTS-models.md (the 20k cells
# at the study's settings, ViT spectra/s on the H200).
MEASURED: dict[str, list[Cost]] = {
    "simulate": [Cost(3.0, 1 / 2400, "spectra", source="~2,400 spectra/s/core (RESULTS-data.md)")],
    "ceiling": [Cost(8.1, 0.83e-3, "ceiling_stars", source="9.7 s at 2,000 stars, 16.3 s at 10,000")],
    "bayes": [Cost(8.0, 54.7e-3, "bayes_stars", source="54.7 s per 1,000 stars (RESULTS-ceiling.md)")],
    "ceiling_curves": [Cost(2.0, 0.6e-3, "curve_points", source="7 s for 3 x 9 x 300 star-points")],
    "information": [Cost(7.0, source="7 s (default sweep)")],
    "config_file": [Cost(3.2, source="29 s for 9 jobs (default sweep)")],
    "collect": [Cost(6.0, source="default sweep")],
    "plots": [Cost(8.0, source="default sweep")],
    "report": [Cost(4.0, source="default sweep")],
    # ridge: a 4096^2 eigendecomposition plus the streamed X^T X (3.34 s per 10k rows); below 4096
    # stars the n x n kernel path takes ~1-3 s: this over-estimates those cells, which only pads a request
    "train:ridge": [Cost(20.0, 0.334e-3, "n_train", source="23 s per cell at 2k-8k; 20 s at 20k")],
    "train:lightgbm": [
        Cost(
            5.0,
            2.2e-3,
            "n_train",
            when={"learning_rate": 0.2, "num_leaves": 15, "max_bin": 31, "feature_fraction": 0.2, "max_trees": 120},
            source="config/config.yaml's coarse LightGBM: 262 s for 18 cells at 1k-8k",
        ),
        Cost(
            5.0,
            36.4e-3,
            "n_train",
            when={"learning_rate": 0.05, "num_leaves": 63, "max_bin": 255, "feature_fraction": 0.8},
            source="the study's LightGBM at 20k: 364 s on 2 threads (608 trees; RESULTS-models.md)",
        ),
    ],
    "train:oracle": [Cost(2.0, 27.5 / 12000, "oracle_fits", source="27.5 s at 2,000 stars x 1 start x 6 iterations")],
    "train:vit-tiny": [
        Cost(5.0, 396 / 96000, "spectrum_epochs", source="198 s on 2 threads for 8k spectra x 12 epochs"),
    ],
    "train:vit": [
        Cost(  # config/logg1m.yaml's Route A size: not measured, the measured rate / its FLOPs ratio
            60.0,
            4.5 / 15000,
            "spectrum_epochs",
            gpu=True,
            when={"width": 384, "depth": 12, "mlp": 1536},
            source="train:vit's rate x 4.5, the ratio of the encoder's matmul FLOPs per token (not measured)",
        ),
        Cost(
            60.0,
            1 / 15000,
            "spectrum_epochs",
            gpu=True,
            source="15,000 spectra/s training on one H200, streamed loader (RESULTS-models.md)",
        ),
    ],
    # pre-training: a masked-reconstruction step costs about a supervised step of the same ViT (the
    # same encoder forward and backward; the linear reconstruction head is ~1% of it): estimated so
    "pretrain:vit-tiny": [
        Cost(5.0, 396 / 96000, "pretrain_epochs", source="as train:vit-tiny (a supervised step's cost)"),
    ],
    "pretrain:vit": [
        Cost(60.0, 1 / 15000, "pretrain_epochs", gpu=True, source="as train:vit (a supervised step's cost)"),
    ],
}
