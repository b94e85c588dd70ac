"""The settings of the reference stage: ``FisherConfig`` (the ``fisher:`` config section) and
``BayesConfig`` (options of ``specscale bayes``). Plain dataclasses with no torch or xarray, so the
sweep's planning code can read them without importing the numerics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FisherConfig:
    """The ``fisher:`` config section."""

    batch: int = 128  # stars per Jacobian batch (fits in cache on a CPU; raise it on a GPU)
    device: str = "cpu"  # torch device for the Jacobian ("auto": CUDA when available)
    check_atol: float = 1e-4  # max |re-simulated - stored| noiseless flux (float32 round-off is ~2e-6)
    neighbours: int = 24  # files without a simulator: training spectra per local-linear Jacobian

    def __post_init__(self):
        if not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"fisher.batch must be a positive integer, got {self.batch!r}")
        if not self.check_atol > 0:
            raise ValueError("fisher.check_atol must be positive")
        if not isinstance(self.neighbours, int) or self.neighbours < 6:
            raise ValueError("fisher.neighbours must be an integer >= 6 (4 parameters + margin)")


# how the posterior mean is computed (``BayesConfig.method``)
METHODS = {
    "batched": "adaptive multiple importance sampling, stars batched through the simulator, prior bank as the "
    "defensive component (posterior_batched)",
    "bank": "noiseless training spectra (prior draws) weighted by the likelihood (specscale.ceiling.bank)",
    "auto": "batched where the source has a simulator, else bank",
}

_POSITIVE_INTS = ("bank_size", "round_samples", "n_starts", "iterations", "batch", "sim_batch", "jac_batch")


@dataclass(frozen=True)
class BayesConfig:
    """Importance-sampling settings (command-line options of ``specscale bayes``)."""

    method: str = "auto"  # batched | bank | auto (see METHODS)
    n_samples: int = 1024  # importance draws per star, at most (adaptive)
    df: float = 4.0  # Student-t degrees of freedom of the proposal components
    inflate: float = 1.5  # proposal scale / Laplace scale
    chi2_window: float = 25.0  # local maxima within this chi^2 of the best become components
    seed: int = 0
    # batched (specscale.ceiling.sampler)
    sim_batch: int = 128  # simulations per forward call (the simulator's per-spectrum cost is lowest at ~32-128)
    jac_batch: int = 64  # Jacobians per call
    bank_size: int = 4096  # prior draws simulated once per call: mode starts and defensive component
    round_samples: int = 16  # draws of the first round (each further round doubles)
    mc_target: float = 0.1  # stop a star when its MC standard error <= this x its posterior sd
    min_rounds: int = 2  # ... and at least this many rounds ran (round 2 adapts to the draws of round 1)
    min_ess: float = 50.0  # ... and its ESS (bank members and draws) is at least this
    n_starts: int = 1  # at most this many LM fits per star (bank members >= start_separation apart)
    start_window: float = 50.0  # a further start only if its bank chi^2 is within this of the best
    start_separation: float = 0.2  # prior-box units (max norm)
    iterations: int = 10  # LM iterations per start (the draws correct an inexact mode)
    lm_tol: float = 0.5  # LM stops when an accepted step lowers chi^2 by less than this
    batch: int = 128  # stars per batch
    # bank (specscale.ceiling.bank)
    bank_sigma: str = "sigma"  # weights from the true sigma ("sigma", the exact likelihood) or the pipeline error
    bank_groups: int = 16  # jackknife groups of the bank (MC standard error)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"bayes method must be one of {sorted(METHODS)}, got {self.method!r}")
        if not isinstance(self.n_samples, int) or self.n_samples < 16:
            raise ValueError(f"bayes n_samples must be an integer >= 16, got {self.n_samples!r}")
        if not self.df > 0 or not self.inflate > 0 or not self.chi2_window >= 0:
            raise ValueError("bayes: need df > 0, inflate > 0, chi2_window >= 0")
        for name in _POSITIVE_INTS:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"bayes {name} must be a positive integer, got {v!r}")
        if self.round_samples < 2 or not self.mc_target > 0 or not self.lm_tol > 0 or not self.start_window >= 0:
            raise ValueError("bayes: need round_samples >= 2, mc_target > 0, lm_tol > 0, start_window >= 0")
        if self.bank_sigma not in ("error", "sigma"):
            raise ValueError(f"bayes bank_sigma must be 'error' or 'sigma', got {self.bank_sigma!r}")
        if not isinstance(self.bank_groups, int) or self.bank_groups < 2:
            raise ValueError(f"bayes bank_groups must be an integer >= 2, got {self.bank_groups!r}")
