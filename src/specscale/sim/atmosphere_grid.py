"""The model-grid source: spectra interpolated in a grid of model spectra (BOSZ, or any grid in
the generic HDF5 layout of :mod:`specscale.sim.model_grid`), then the simulators' shared stages.

Select it with ``atmosphere: {version: grid, path: FILE_OR_DIR}``.

1. **Onto the fine grid, once.** Every node's f_lambda is averaged over each pixel of the fine
   ln(lambda) grid (``step_kms``, vacuum A; flux-conserving: differences of the cumulative
   trapezoid integral), and its natural log kept: one table (n_nodes, n_fine).
2. **Multilinear interpolation in ln f_lambda** over the four regular axes (Teff K, log g dex,
   [M/H] dex, [alpha/M] dex): the 16 corners of the star's grid cell, weighted by the product of
   its fractional positions. ln f, because the continuum scales as a power of the labels (Planck
   in Teff), so a straight line in ln f bends less than one in f; every interpolated flux is > 0.
   Hand-rolled in torch (batched, float32 or float64). Labels outside the grid are refused.
   :meth:`GridAtmosphere.leave_one_out` measures the error: each interior node predicted from
   its two neighbours along one axis (the interpolant of a grid twice as coarse there).
3. LSF, PFS pixel average, smoothed median normalisation and the HSC-i magnitude from the
   interpolated SED: :class:`specscale.sim.atmosphere_base.PfsStages`, as versions 1 and 2.
4. **Jacobian by central finite differences** on the interpolant: step ``fd_step`` times the
   axis's median node spacing (0.25: 62.5 K and 0.125 dex on BOSZ's 250 K / 0.5 dex axes), one
   sided where a step would leave the grid. A multilinear interpolant's derivative jumps at the
   nodes; a step of a fraction of the spacing averages the two slopes next to a node rather
   than taking either. All 8 shifted copies of the batch go through one forward pass.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from specscale.core.config import ConfigError, check_fields
from specscale.core.vocab import LABELS
from specscale.sim.atmosphere_base import PfsStages
from specscale.sim.instrument import Instrument
from specscale.sim.model_grid import MEDIA, read_grid
from specscale.sim.numerics import mean_over_bins

UNITS = {"teff": "K", "logg": "dex", "mh": "dex", "am": "dex"}


@dataclass(frozen=True)
class GridAtmosphereConfig:
    """The model-grid source (module docstring). ``path``: a BOSZ directory or a generic HDF5
    grid; ``wave_medium``, ``carbon`` ([C/M] dex), ``microturbulence`` (km/s): BOSZ only."""

    version: str = "grid"
    path: str = ""
    wave_medium: str = "vacuum"
    carbon: float = 0.0
    microturbulence: float = 2.0
    wave_min: float = 6400.0  # fine grid, vacuum A: covers the arm, its LSF and HSC-i
    wave_max: float = 9000.0
    step_kms: float = 8.0
    median_width: float = 0.005
    fd_step: float = 0.25  # central-difference step, in units of each axis's node spacing

    def __post_init__(self):
        check_fields(self)
        if self.version != "grid":
            raise ValueError(f"GridAtmosphereConfig is version 'grid', got version={self.version!r}")
        if not self.path:
            raise ValueError("atmosphere.path must name the model grid (a BOSZ directory or an HDF5 file)")
        if self.wave_medium not in MEDIA:
            raise ValueError(f"atmosphere.wave_medium={self.wave_medium!r}: one of {list(MEDIA)}")
        if not self.wave_min < 7000.0 or not self.wave_max > 8900.0:
            raise ValueError("atmosphere wave_min/wave_max must cover the PFS red arm (7100-8850 A)")
        if not self.step_kms > 0:
            raise ValueError(f"atmosphere.step_kms must be positive, got {self.step_kms!r}")
        if not 0 < self.fd_step <= 0.5:
            raise ValueError(f"atmosphere.fd_step must be in (0, 0.5] node spacings, got {self.fd_step!r}")


class GridAtmosphere(PfsStages):
    """Spectra interpolated in a model grid (module docstring); ``spectrum``, ``flux`` and
    ``jacobian`` as the synthetic atmospheres'."""

    JACOBIAN = "central finite differences on the grid interpolant (float64)"

    def __init__(self, config: GridAtmosphereConfig, instrument: Instrument | None = None):
        super().__init__(config, instrument)
        c = config
        self.grid = read_grid(c.path, c.wave_medium, c.carbon, c.microturbulence, (c.wave_min, c.wave_max))
        lo, hi = self.fine_wave[0] * (1 + 1e-9), self.fine_wave[-1] * (1 - 1e-9)  # outer half pixels: held
        if self.grid.wave[0] > lo or self.grid.wave[-1] < hi:
            raise ConfigError(
                f"atmosphere.path={c.path!r}: the grid's wavelengths {self.grid.wave[0]:.1f}-"
                f"{self.grid.wave[-1]:.1f} A (vacuum) do not cover atmosphere.wave_min..wave_max "
                f"(fine pixels {lo:.1f}-{hi:.1f} A)"
            )
        spacing = [float(np.median(np.diff(a))) for a in self.grid.axes]
        self.fd_steps = np.array(spacing) * c.fd_step

    def provenance(self) -> dict:
        return {"grid_path": str(self.config.path), "grid_hash": self.grid.content_hash}

    def check_prior(self, prior: dict, where: str) -> None:
        for k, name in enumerate(LABELS):
            lo, hi = prior[name]
            a, b = self.grid.box[k]
            if lo < a - 1e-9 * max(1, abs(a)) or hi > b + 1e-9 * max(1, abs(b)):
                raise ConfigError(
                    f"{where}: {name} {lo:g}..{hi:g} {UNITS[name]} leaves the model grid {self.grid.source} "
                    f"({name} {a:g}..{b:g}); use a prior inside the grid or a grid that covers it"
                )

    # ---- the node table ------------------------------------------------------------------------
    @cached_property
    def _ln_table(self) -> np.ndarray:
        """ln of each node's f_lambda averaged over the fine pixels (n_nodes, n_fine): the linear
        interpolant of the grid's samples integrated exactly between the fine edges, bin by bin."""
        g = self.grid
        return np.log(mean_over_bins(g.wave, g.flux.reshape(-1, g.wave.size), self.fine_edges))

    def _tensors(self, dtype, device) -> dict:
        key = (dtype, str(device))
        if key not in self._cache:
            T = self._stage_tensors(dtype, device)
            T["ln"] = torch.as_tensor(self._ln_table, dtype=dtype, device=device)
            T["axes"] = [torch.as_tensor(a, dtype=dtype, device=device) for a in self.grid.axes]
            self._cache[key] = T
        return self._cache[key]

    # ---- the forward model ---------------------------------------------------------------------
    def _check_inside(self, theta: torch.Tensor) -> None:
        box = self.grid.box
        lo, hi = theta.min(0).values.tolist(), theta.max(0).values.tolist()
        for k, name in enumerate(LABELS):
            tol = 1e-6 * (box[k, 1] - box[k, 0])
            if lo[k] < box[k, 0] - tol or hi[k] > box[k, 1] + tol:
                raise ValueError(
                    f"{name} {lo[k]:g}..{hi[k]:g} leaves the model grid {self.grid.source} "
                    f"({box[k, 0]:g}..{box[k, 1]:g})"
                )

    def _interpolated_ln(self, theta: torch.Tensor, T) -> torch.Tensor:
        """Multilinear ln f_lambda (n_fine, B) at theta (B, 4) from the 16 corners of its cell."""
        sizes = [a.numel() for a in T["axes"]]
        strides = [math.prod(sizes[k + 1 :]) for k in range(4)]
        base, frac = 0, []
        for k, ax in enumerate(T["axes"]):
            x = theta[:, k].contiguous()
            i = torch.clamp(torch.searchsorted(ax, x, right=True) - 1, 0, sizes[k] - 2)
            frac.append(((x - ax[i]) / (ax[i + 1] - ax[i])).clamp(0.0, 1.0))
            base = base + i * strides[k]
        out = None
        for corner in itertools.product((0, 1), repeat=4):
            w = math.prod((f if c else 1.0 - f) for f, c in zip(frac, corner))
            term = w[:, None] * T["ln"][base + sum(c * s for c, s in zip(corner, strides))]
            out = term if out is None else out + term
        return out.T

    def fine_flux(self, theta: torch.Tensor, T=None) -> torch.Tensor:
        """Interpolated f_lambda (n_fine, B) on the fine grid for theta (B, 4)."""
        T = T or self._tensors(theta.dtype, theta.device)
        self._check_inside(theta)
        return torch.exp(self._interpolated_ln(theta, T))

    def spectrum(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised PFS flux (B, n_pix) and fmed0 (B,), erg s^-1 cm^-2 A^-1 at HSC-i AB 0."""
        shape = theta.shape[:-1]
        theta = theta.reshape(-1, 4)
        T = self._tensors(theta.dtype, theta.device)
        flux, fmed0 = self._normalised(self.fine_flux(theta, T), T)
        return flux.reshape(*shape, -1), fmed0.reshape(shape)

    def flux(self, theta: torch.Tensor) -> torch.Tensor:
        return self.spectrum(theta)[0]

    def jacobian(self, theta: torch.Tensor, method: str = "fd", step: float | None = None):
        """Flux (B, n_pix) and J (B, n_pix, 4) by central differences (module docstring);
        ``step`` overrides ``fd_step`` (node spacings)."""
        if method != "fd":
            raise ValueError(f"unknown Jacobian method {method!r} for a model grid (fd)")
        theta = theta.reshape(-1, 4)
        n_b = theta.shape[0]
        steps = self.fd_steps if step is None else self.fd_steps / self.config.fd_step * step
        box = torch.as_tensor(self.grid.box, dtype=theta.dtype, device=theta.device)
        shifted = [theta]
        for k in range(4):
            for sign in (1.0, -1.0):
                t = theta.clone()
                t[:, k] = (theta[:, k] + sign * float(steps[k])).clamp(box[k, 0], box[k, 1])
                shifted.append(t)
        flux = self.flux(torch.cat(shifted)).view(9, n_b, -1)
        cols = []
        for k in range(4):
            span = shifted[1 + 2 * k][:, k] - shifted[2 + 2 * k][:, k]
            cols.append((flux[1 + 2 * k] - flux[2 + 2 * k]) / span[:, None])
        return flux[0], torch.stack(cols, -1)

    # ---- accuracy ------------------------------------------------------------------------------
    def leave_one_out(self, batch: int = 256) -> dict[str, dict[str, float]]:
        """Interpolation error per axis: every interior node's normalised PFS flux predicted from
        its two neighbours along the axis, against its own; |difference| per pixel, its median,
        99th percentile and maximum over nodes and pixels (flux is median-normalised)."""
        sizes = [a.size for a in self.grid.axes]
        table = self._ln_table.reshape(*sizes, -1)
        out = {}
        for k, name in enumerate(LABELS):
            if sizes[k] < 3:
                continue
            ax = self.grid.axes[k]
            w = (ax[2:] - ax[1:-1]) / (ax[2:] - ax[:-2])  # weight of the lower neighbour
            shape = [1] * 5
            shape[k] = -1
            w = w.reshape(shape)
            lower, mid, upper = (np.take(table, np.arange(s, s + sizes[k] - 2), axis=k) for s in range(3))
            pred = (w * lower + (1 - w) * upper).reshape(-1, table.shape[-1])
            true = mid.reshape(-1, table.shape[-1])
            err = np.concatenate(
                [
                    np.abs(self._from_ln(pred[i : i + batch]) - self._from_ln(true[i : i + batch])).ravel()
                    for i in range(0, len(true), batch)
                ]
            )
            out[name] = {q: float(v) for q, v in zip(("median", "p99", "max"), np.percentile(err, [50, 99, 100]))}
        return out

    def _from_ln(self, ln: np.ndarray) -> np.ndarray:
        T = self._tensors(torch.float64, "cpu")
        with torch.no_grad():
            return self._normalised(torch.as_tensor(ln.T).exp(), T)[0].numpy()
