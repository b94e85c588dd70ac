"""Jacobians J = d flux / d theta (n_pix x 4, flux median-normalised; theta = Teff K, log g dex,
[M/H] dex, [alpha/M] dex) of a source's stars, float64: by autodiff of the dataset's simulator
(synthetic datasets, checked against the stored noiseless flux), or, for files without a
simulator (the study's PFS files), by local-linear finite differences against the nearest
noiseless training spectra. J does not depend on noise level or magnitude."""

from __future__ import annotations

import numpy as np
import torch

from specscale.ceiling.configs import FisherConfig
from specscale.core.hardware import resolve_device
from specscale.core.vocab import MagRange
from specscale.data.simulator import check_resimulated, simulator_of
from specscale.data.sources import DataError, Source


def forward_jacobian(flux_fn, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flux (B, n_pix) and J = d flux / d theta (B, n_pix, P) of any differentiable ``flux_fn``
    by forward-mode AD, one dual pass per parameter (the simulator's own ``jacobian`` does this)."""
    import torch.autograd.forward_ad as fwad

    cols, flux = [], None
    for k in range(theta.shape[-1]):
        tangent = torch.zeros_like(theta)
        tangent[..., k] = 1.0
        with fwad.dual_level():
            primal, tan = fwad.unpack_dual(flux_fn(fwad.make_dual(theta, tangent)))
        flux = primal if flux is None else flux
        cols.append(tan)
    return flux, torch.stack(cols, dim=-1)


class SimulatorJacobian:
    """J of a synthetic dataset's stars from its simulator's ``jacobian``, float64: autodiff for
    versions 1 and 2, central finite differences on the interpolant for a model grid."""

    def __init__(self, source: Source, config: FisherConfig):
        self.source, self.config = source, config
        self.model = simulator_of(source)
        self.method = f"{self.model.JACOBIAN}, checked against the stored flux"
        self.device = torch.device(resolve_device(config.device, "fisher.device"))

    def __call__(self, split: str, rows: np.ndarray, stored_flux: np.ndarray) -> np.ndarray:
        """(n, n_pix, 4) float64 for ``rows``; ``stored_flux`` is their stored noiseless flux."""
        theta = torch.as_tensor(self.source.labels(split, rows), dtype=torch.float64, device=self.device)
        with torch.no_grad():
            flux, jac = self.model.jacobian(theta)
        check_resimulated(self.source, split, rows, flux.cpu().numpy(), stored_flux, self.config.check_atol)
        return jac.cpu().numpy()


class NeighbourJacobian:
    """J for files without a simulator: local-linear finite differences.

    For each star, the ``k`` nearest training stars in label space (each axis scaled by its
    training range) give  f_j - f_star ~ J (theta_j - theta_star); J is the least-squares
    solution. On a regular grid with the +-1 grid neighbours this is the study's central
    difference; on random draws its truncation error grows with the neighbour distance
    (~ range / N_train^(1/4)), so use the largest training split. A label that does not vary in
    the training set (e.g. [alpha/M] fixed) gets a zero column: it is treated as known.
    """

    method = "local-linear finite differences over the nearest noiseless training spectra"

    def __init__(self, source: Source, config: FisherConfig, cell):
        from scipy.spatial import cKDTree

        self.source, self.k, self.cell = source, config.neighbours, MagRange.parse(cell)
        train = source.labels("train").astype(np.float64)
        if len(train) < self.k:
            raise DataError(f"{source.path}: {len(train)} training stars, need >= fisher.neighbours={self.k}")
        span = train.max(0) - train.min(0)
        self.free = span > 1e-6 * np.maximum(1.0, np.abs(train).max(0))
        self.scale = np.where(self.free, span, 1.0)
        self.tree = cKDTree(train[:, self.free] / self.scale[self.free])
        self.train = train

    def __call__(self, split: str, rows: np.ndarray, stored_flux: np.ndarray) -> np.ndarray:
        """(n, n_pix, 4) float64 for ``rows`` (zero columns for labels fixed in the file)."""
        theta = self.source.labels(split, rows).astype(np.float64)
        _, idx = self.tree.query(theta[:, self.free] / self.scale[self.free], k=self.k)
        jac = np.zeros(stored_flux.shape + (4,))
        flat = np.unique(idx)
        ref = self.source.noiseless("train", flat, self.cell).flux.astype(np.float64)
        pos = np.searchsorted(flat, idx)
        for i in range(len(rows)):
            dtheta = (self.train[idx[i]] - theta[i])[:, self.free] / self.scale[self.free]
            df = ref[pos[i]] - stored_flux[i].astype(np.float64)
            coef, *_ = np.linalg.lstsq(dtheta, df, rcond=None)
            jac[i][:, self.free] = (coef / self.scale[self.free][:, None]).T
        return jac


def jacobian_for(source: Source, config: FisherConfig, cell):
    """The Jacobian provider of a source: autodiff where the source has a simulator."""
    if isinstance(getattr(source, "config", None), dict) and "atmosphere" in source.config:
        return SimulatorJacobian(source, config)
    return NeighbourJacobian(source, config, cell)
