"""The oracle: a maximum-likelihood fit of each test spectrum with the TRUE forward model.

Not a learned model but the achievable reference beside the Fisher ceiling: for every observed
spectrum it maximises the Gaussian likelihood of the simulator that wrote the data, with the true
per-pixel 1-sigma (``Observed.sigma``), over (Teff, log g, [M/H], [alpha/M]) inside the prior box,
and reports the maximum-likelihood log g. At high S/N its errors reach the Cramer-Rao bound
(efficiency ~1); at low S/N it shows how far an unbiased-in-spirit estimator falls short of a
shrinking one (compare :mod:`specscale.ceiling.bayes`).

Per spectrum, top-down:
1. Starts: a fixed bank of ``bank_size`` scrambled-Sobol draws from the prior is simulated once
   (at ``fit``); each spectrum's chi^2 against the whole bank is two matrix products; the best
   ``n_starts`` candidates that are at least ``start_separation`` apart (in prior-box units) start
   local fits, so distinct likelihood modes get their own fit.
2. Local fits: projected Levenberg-Marquardt in box coordinates z = (theta - lo) / (hi - lo) in
   [0, 1]: Gauss-Newton normal equations (J^T W J + lambda diag(J^T W J)) dz = J^T W r with J by
   forward-mode autodiff (float64), parameters pinned at a bound with the gradient pointing out
   are frozen for that step, steps are clipped to the box, accepted only if chi^2 falls.
3. The start with the lowest final chi^2 wins.
Everything is batched over spectra x starts and runs on CPU or GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from specscale.core.hardware import resolve_device
from specscale.core.vocab import LOGG, Cell
from specscale.data.simulator import check_resimulated, prior_box, simulator_of
from specscale.data.sources import Observed, Source
from specscale.models.base import Model


@dataclass(frozen=True)
class OracleParams:
    """Hyper-parameters, config section ``models.oracle`` (filled strictly by the model registry)."""

    n_starts: int = 3  # local fits per spectrum (distinct bank candidates)
    iterations: int = 40  # max Levenberg-Marquardt iterations per local fit
    damping: float = 1e-3  # initial LM lambda, relative to diag(J^T W J)
    bank_size: int = 2048  # prior draws screened by chi^2 for the starts
    start_separation: float = 0.2  # min distance between starts, prior-box units
    tol: float = 1e-4  # converged when an accepted step lowers chi^2 by less than this
    batch: int = 64  # spectra per batch (x n_starts local fits)

    def __post_init__(self):
        for name in ("n_starts", "iterations", "bank_size", "batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"oracle.{name} must be a positive integer, got {v!r}")
        if self.n_starts > self.bank_size:
            raise ValueError("oracle.n_starts must not exceed oracle.bank_size")
        if not self.damping > 0 or not self.tol > 0 or not self.start_separation >= 0:
            raise ValueError("oracle.damping and oracle.tol must be positive, oracle.start_separation >= 0")


@dataclass
class OracleFit:
    """Result of fitting n spectra (numpy, physical units)."""

    theta: np.ndarray  # (n, 4) maximum-likelihood Teff K, log g dex, [M/H] dex, [alpha/M] dex
    chi2: np.ndarray  # (n,) chi^2 at the maximum
    theta_starts: np.ndarray  # (n, n_starts, 4) end point of every local fit
    chi2_starts: np.ndarray  # (n, n_starts)
    n_iter: np.ndarray  # (n, n_starts) LM iterations used
    converged: np.ndarray  # (n, n_starts) bool


def levenberg_marquardt(
    model,
    obs: torch.Tensor,
    sigma: torch.Tensor,
    z0: torch.Tensor,
    box: torch.Tensor,
    iterations: int,
    damping: float,
    tol: float,
):
    """Projected LM of m spectra at once. obs, sigma (m, n_pix); z0 (m, P) in [0, 1]; box (P, 2).
    ``model`` has ``flux(theta)`` and ``jacobian(theta) -> (flux, J)``. Returns (z, chi2, n_iter,
    converged), all per spectrum."""
    lo, width = box[:, 0], box[:, 1] - box[:, 0]
    w = sigma.pow(-2)
    z = z0.clone()
    m, p = z.shape
    lam = torch.full((m,), damping, dtype=z.dtype, device=z.device)
    chi2 = ((obs - model.flux(lo + z * width)) ** 2 * w).sum(-1)
    hess = torch.zeros(m, p, p, dtype=z.dtype, device=z.device)
    grad = torch.zeros(m, p, dtype=z.dtype, device=z.device)
    stale = torch.ones(m, dtype=torch.bool, device=z.device)  # J^T W J must be recomputed
    done = torch.zeros(m, dtype=torch.bool, device=z.device)
    n_iter = torch.zeros(m, dtype=torch.long, device=z.device)
    for _ in range(iterations):
        act = (~done).nonzero()[:, 0]
        if act.numel() == 0:
            break
        upd = act[stale[act]]
        if upd.numel():
            f, jac = model.jacobian(lo + z[upd] * width)
            jw = jac * width * w[upd, :, None]  # W J in box coordinates
            hess[upd] = jac.mul(width).transpose(1, 2) @ jw
            grad[upd] = ((obs[upd] - f)[:, None, :] @ jw)[:, 0]
        h, g, za = hess[act], grad[act], z[act]
        # a parameter at a bound whose descent direction points out of the box is frozen
        pinned = ((za <= 0) & (g < 0)) | ((za >= 1) & (g > 0))
        keep = (~pinned).to(z.dtype)
        dh = torch.diagonal(h, dim1=1, dim2=2)
        a = h * keep[:, :, None] * keep[:, None, :] + torch.diag_embed(
            lam[act, None] * dh * keep + (1 - keep) + 1e-12 * dh.amax(1, keepdim=True)
        )
        step = torch.linalg.solve(a, (g * keep)[..., None])[..., 0]
        z_try = (za + step).clamp(0.0, 1.0)
        chi2_try = ((obs[act] - model.flux(lo + z_try * width)) ** 2 * w[act]).sum(-1)
        better = chi2_try < chi2[act]
        gain = chi2[act] - chi2_try
        n_iter[act] += 1
        z[act] = torch.where(better[:, None], z_try, za)
        chi2[act] = torch.where(better, chi2_try, chi2[act])
        lam[act] = torch.where(better, (lam[act] * 0.3).clamp(min=1e-9), lam[act] * 10.0)
        stale[act] = better
        moved = (z_try - za).abs().amax(1)
        done[act] = (better & (gain < tol)) | (moved < 1e-12) | (lam[act] > 1e10)
    return z, chi2, n_iter, done


class OracleModel(Model):
    """Maximum-likelihood log g with the dataset's own simulator and the true sigma."""

    name = "oracle"
    Params = OracleParams

    def __init__(self, params: OracleParams | None = None, *, seed: int = 0, device: str = "cpu", n_threads: int = 1):
        super().__init__(params or OracleParams(), seed=seed, device=device, n_threads=n_threads)
        self.model = None

    def check(self, source: Source, cell: Cell) -> None:
        """Before any work: the oracle needs the simulator that wrote the data."""
        simulator_of(source)

    def fit(self, source: Source, cell: Cell, workdir: Path) -> dict:
        """Nothing to learn: load the source's simulator (checked against a few stored training
        spectra), its prior box, and simulate the start bank."""
        p = self.params
        self.torch_device = torch.device(resolve_device(self.device))
        self.model = simulator_of(source)
        rows = np.arange(min(8, source.n("train")))
        stored = source.noiseless("train", rows, cell.mag).flux
        theta = torch.as_tensor(source.labels("train", rows), dtype=torch.float64, device=self.torch_device)
        with torch.no_grad():
            check_resimulated(source, "train", rows, self.model.flux(theta).cpu().numpy(), stored, 1e-4)
        self.box = torch.as_tensor(prior_box(source), dtype=torch.float64, device=self.torch_device)
        sobol = torch.quasirandom.SobolEngine(4, scramble=True, seed=self.seed)
        self.bank_z = sobol.draw(p.bank_size, dtype=torch.float64).to(self.torch_device)
        lo, width = self.box[:, 0], self.box[:, 1] - self.box[:, 0]
        with torch.no_grad():
            self.bank_flux = torch.cat(
                [self.model.flux((lo + self.bank_z[i : i + 256] * width).float()) for i in range(0, p.bank_size, 256)]
            )
        return {
            "bank_size": p.bank_size,
            "n_starts": p.n_starts,
            "iterations": p.iterations,
            "prior_box": self.box.cpu().tolist(),
            "simulator": getattr(source, "attrs", {}).get("simulator_version"),
        }

    def starts(self, obs: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """(n, n_starts, 4) start points in box coordinates: the lowest-chi^2 bank members that
        are at least ``start_separation`` apart (the best candidates if too few are)."""
        p = self.params
        w = sigma.float().pow(-2)
        o = obs.float()
        f = self.bank_flux
        chi2 = (w * o * o).sum(1, keepdim=True) - 2 * (w * o) @ f.T + w @ (f * f).T
        k = min(p.bank_size, max(32, 4 * p.n_starts))
        cand = self.bank_z[torch.topk(chi2, k, dim=1, largest=False).indices]  # (n, k, 4), best first
        n = obs.shape[0]
        ar = torch.arange(n, device=obs.device)
        free = torch.ones(n, k, dtype=torch.bool, device=obs.device)
        free[:, 0] = False
        chosen = [cand[:, 0]]
        for _ in range(1, p.n_starts):
            dist = torch.stack([(cand - c[:, None]).norm(dim=-1) for c in chosen]).amin(0)
            ok = free & (dist > p.start_separation)
            pick = torch.where(ok.any(1), ok.float().argmax(1), free.float().argmax(1))
            chosen.append(cand[ar, pick])
            free[ar, pick] = False
        return torch.stack(chosen, 1)

    def fit_spectra(self, flux: np.ndarray, sigma: np.ndarray) -> OracleFit:
        """Maximum-likelihood fits of spectra ``flux`` with true 1-sigma ``sigma`` (n, n_pix)."""
        if self.model is None:
            raise RuntimeError("OracleModel.fit(source, cell, workdir) must run before predicting")
        p, dev = self.params, self.torch_device
        # noise level 0: exact spectra, the likelihood's limit is the unweighted least-squares fit
        sigma = np.where((np.asarray(sigma) > 0).any(1, keepdims=True), sigma, 1.0)
        lo, width = self.box[:, 0], self.box[:, 1] - self.box[:, 0]
        out = []
        for i in range(0, len(flux), p.batch):
            obs = torch.as_tensor(np.array(flux[i : i + p.batch]), dtype=torch.float64, device=dev)
            sig = torch.as_tensor(np.array(sigma[i : i + p.batch]), dtype=torch.float64, device=dev)
            n = obs.shape[0]
            with torch.no_grad():
                z0 = self.starts(obs, sig).reshape(n * p.n_starts, 4)
                rep = lambda t: t.repeat_interleave(p.n_starts, 0)
                z, chi2, it, conv = levenberg_marquardt(
                    self.model, rep(obs), rep(sig), z0, self.box, p.iterations, p.damping, p.tol
                )
            theta = (lo + z * width).reshape(n, p.n_starts, 4)
            chi2 = chi2.reshape(n, p.n_starts)
            best = chi2.argmin(1)
            ar = torch.arange(n, device=dev)
            out.append([theta[ar, best], chi2[ar, best], theta, chi2, it.reshape(n, -1), conv.reshape(n, -1)])
        cols = [np.concatenate([o[k].cpu().numpy() for o in out]) for k in range(6)]
        return OracleFit(*cols)

    def predict(self, observed: Observed) -> np.ndarray:
        """Maximum-likelihood log g (dex), using the TRUE sigma of the observation."""
        return self.fit_spectra(observed.flux, observed.sigma).theta[:, LOGG]
