"""What the head predicts and how its output becomes log g: ``ValueTarget`` (regression on z-scored
labels, the study's recipe; with gaussian_nll also a log variance per target) or ``BinnedTarget``
(``target: binned``: classification over log g bins of the training labels' range, cross-entropy on
Gaussian soft labels so that neighbouring bins count as near misses). Both give the log g estimate
and, where they can, its 1-sigma, in z-scored units; the trainer scales them to dex.

The binned estimate is the EXPECTED log g under the bin probabilities (every metric stays comparable
with the regression's) and its sigma is half the 16-84% interval of that distribution.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from specscale.models.vit.network import loss_function
from specscale.models.vit.params import ViTParams


def output_width(p: ViTParams) -> int:
    """Columns of the head."""
    if p.target == "binned":
        return p.n_bins
    return len(p.targets) * (2 if p.loss == "gaussian_nll" else 1)


def make_target(p: ViTParams, z_logg: np.ndarray):
    """The target of ``p``; ``z_logg`` are the training stars' z-scored log g (the bins' range)."""
    if p.target == "binned":
        return BinnedTarget(p.n_bins, float(np.min(z_logg)), float(np.max(z_logg)), p.bin_smoothing)
    return ValueTarget(p)


class ValueTarget:
    """Regression: the head's columns are the targets' z-scored values (then, with gaussian_nll,
    their log variances)."""

    def __init__(self, p: ViTParams):
        self.loss_kind, self.k, self.n_t = p.loss, p.targets.index("logg"), len(p.targets)
        self.predicts_sigma = p.loss == "gaussian_nll"

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training loss; y (B, n_targets) z-scored labels."""
        return loss_function(self.loss_kind, out, y)

    def decode(self, out: torch.Tensor, with_sigma: bool = False):
        """(z-scored log g, its z-scored sigma or None), each (B,), from head outputs."""
        out = out.float()
        sigma = None
        if with_sigma:  # exp in float64 numpy, as the dex scale that follows
            log_var = out[:, self.n_t + self.k].cpu().numpy().astype(np.float64)
            sigma = torch.from_numpy(np.exp(0.5 * log_var))
        return out[:, self.k], sigma


class BinnedTarget:
    """Classification over ``n_bins`` equal bins of [lo, hi] (z-scored log g)."""

    predicts_sigma = True

    def __init__(self, n_bins: int, lo: float, hi: float, smoothing: float):
        if not hi > lo:
            raise ValueError(f"target='binned' needs training labels that vary (log g range [{lo}, {hi}])")
        self.edges = torch.linspace(lo, hi, n_bins + 1, dtype=torch.float64).float()
        self.centers = 0.5 * (self.edges[1:] + self.edges[:-1])
        self.width, self.smoothing = (hi - lo) / n_bins, smoothing

    def soft_labels(self, y: torch.Tensor) -> torch.Tensor:
        """(B, n_bins) target distribution of z-scored log g y (B,): a Gaussian of ``smoothing``
        bins around it, or (smoothing 0) its bin; values outside [lo, hi] go to the end bins."""
        centers = self.centers.to(y.device)
        if self.smoothing == 0:
            idx = torch.bucketize(y, self.edges.to(y.device)[1:-1])
            return F.one_hot(idx, centers.numel()).float()
        y = y.clamp(float(self.edges[0]), float(self.edges[-1]))
        logits = -0.5 * ((centers[None, :] - y[:, None]) / (self.smoothing * self.width)) ** 2
        return torch.softmax(logits, dim=1)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the head's logits (B, n_bins) against the soft labels of y (B, 1)."""
        return -(self.soft_labels(y[:, 0]) * F.log_softmax(out.float(), dim=1)).sum(1).mean()

    def decode(self, out: torch.Tensor, with_sigma: bool = False):
        """(expected z-scored log g, half its 16-84% interval or None), each (B,)."""
        prob = torch.softmax(out.float(), dim=1)
        mean = prob @ self.centers.to(prob.device)
        if not with_sigma:
            return mean, None
        lo, hi = self.quantile(prob, 0.16), self.quantile(prob, 0.84)
        return mean, 0.5 * (hi - lo)

    def quantile(self, prob: torch.Tensor, q: float) -> torch.Tensor:
        """(B,) the q-quantile of each row's bin distribution, probability spread evenly in a bin."""
        cdf = prob.cumsum(1)
        k = torch.searchsorted(cdf, torch.full((prob.shape[0], 1), q, device=prob.device)).clamp(max=prob.shape[1] - 1)
        below = torch.gather(cdf, 1, k) - torch.gather(prob, 1, k)
        frac = ((q - below) / torch.gather(prob, 1, k).clamp_min(1e-12)).clamp(0, 1)
        return (self.edges.to(prob.device)[k] + frac * self.width)[:, 0]
