"""The emulated source: spectra of real LTE synthesis (SME on ATLAS-family model atmospheres,
:mod:`specscale.synth`) through an MLP emulator (:mod:`specscale.sim.emulator`).

Select it with ``atmosphere: {version: emulated}`` (the shipped lowT emulator,
``sim/tables/emulator_lowT.npz``) or ``atmosphere: {version: emulated, path: FILE}`` (one a user
trained with ``specscale synth``). The emulator maps (Teff K, log g dex, [M/H] dex, [alpha/M] dex)
straight to the median-normalised PFS pixels and ln fmed0: the LSF, the pixel map, the median
normalisation and the HSC-i zero point were applied to the synthesised spectra it learnt from
(:class:`specscale.sim.atmosphere_base.PfsStages`), so nothing of them runs here. Labels outside the
box it was trained on are refused (an MLP extrapolates without warning).

The Jacobian is forward-mode autodiff of the network: one dual pass of the batch repeated four
times with tangent e_k on block k (the stars are independent rows, so one pass of 4B rows costs
less than four passes of B).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from specscale.core.config import ConfigError, check_fields
from specscale.core.vocab import LABELS
from specscale.sim.emulator import EmulatorFileError, EmulatorNet, EmulatorWeights, read_emulator
from specscale.sim.instrument import Instrument

UNITS = {"teff": "K", "logg": "dex", "mh": "dex", "am": "dex"}
SHIPPED = "emulator_lowT.npz"


@dataclass(frozen=True)
class EmulatedAtmosphereConfig:
    """The emulated source (module docstring). ``path``: an emulator file; empty: the shipped one."""

    version: str = "emulated"
    path: str = ""

    def __post_init__(self):
        check_fields(self)
        if self.version != "emulated":
            raise ValueError(f"EmulatedAtmosphereConfig is version 'emulated', got version={self.version!r}")


def shipped_emulator() -> Path:
    """The emulator that ships inside the package (trained on the lowT prior)."""
    return Path(str(resources.files("specscale.sim") / "tables" / SHIPPED))


@cache
def _weights(path: str, mtime_ns: int) -> EmulatorWeights:
    """One read per file version per process (a Fisher or Bayes job builds the source often)."""
    return read_emulator(path)


class EmulatedAtmosphere:
    """Spectra from an emulator of synthesised spectra; ``spectrum``, ``flux`` and ``jacobian``
    as the other sources'."""

    JACOBIAN = "forward-mode autodiff of the emulator (float64)"

    def __init__(self, config: EmulatedAtmosphereConfig | None = None, instrument: Instrument | None = None):
        self.config = config or EmulatedAtmosphereConfig()
        self.instrument = instrument or Instrument()
        self.path = Path(self.config.path) if self.config.path else shipped_emulator()
        if not self.path.is_file():
            raise ConfigError(f"atmosphere.path={self.config.path!r}: no emulator file there")
        try:
            self.weights = _weights(str(self.path.resolve()), self.path.stat().st_mtime_ns)
        except EmulatorFileError as exc:
            raise ConfigError(f"atmosphere.path: {exc}") from None
        wave = self.instrument.wave
        if self.weights.wave.shape != wave.shape or not np.allclose(self.weights.wave, wave, rtol=0, atol=1e-3):
            raise ConfigError(
                f"atmosphere.path: emulator file {self.path} is for other pixels ({self.weights.n_pix} from "
                f"{self.weights.wave[0]:.2f} A) than this instrument's ({wave.size} from {wave[0]:.2f} A)"
            )
        self.net = EmulatorNet(self.weights)
        self.box = np.stack([self.weights.x_lo, self.weights.x_hi], 1)

    def provenance(self) -> dict:
        """What a dataset records about the emulator (HDF5 attributes: strings)."""
        return {
            "emulator_path": str(self.path),
            "emulator_sha256": self.weights.sha256,
            "emulator_provenance": json.dumps(self.weights.provenance, sort_keys=True),
        }

    def check_prior(self, prior: dict, where: str) -> None:
        for k, name in enumerate(LABELS):
            lo, hi = prior[name]
            a, b = self.box[k]
            if lo < a - 1e-9 * max(1, abs(a)) or hi > b + 1e-9 * max(1, abs(b)):
                raise ConfigError(
                    f"{where}: {name} {lo:g}..{hi:g} {UNITS[name]} leaves the box the emulator {self.path.name} "
                    f"was trained on ({name} {a:g}..{b:g}); use a prior inside it or an emulator that covers it"
                )

    def _check_inside(self, theta: torch.Tensor) -> None:
        if theta.numel() == 0:
            return
        lo, hi = theta.min(0).values.tolist(), theta.max(0).values.tolist()
        for k, name in enumerate(LABELS):
            a, b = self.box[k]
            tol = 1e-6 * (b - a)
            if lo[k] < a - tol or hi[k] > b + tol:
                raise ValueError(f"{name} {lo[k]:g}..{hi[k]:g} leaves the emulator's box ({a:g}..{b:g})")

    def spectrum(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised PFS flux (..., n_pix) and fmed0 (...), erg s^-1 cm^-2 A^-1 at HSC-i AB 0."""
        shape = theta.shape[:-1]
        flat = theta.reshape(-1, 4)
        self._check_inside(flat.detach())
        out = self.net.outputs(flat)
        return out[:, :-1].reshape(*shape, -1), torch.exp(out[:, -1]).reshape(shape)

    def flux(self, theta: torch.Tensor) -> torch.Tensor:
        """Median-normalised PFS flux (..., n_pix) for theta (..., 4); differentiable."""
        return self.spectrum(theta)[0]

    def jacobian(self, theta: torch.Tensor, method: str = "forward_ad") -> tuple[torch.Tensor, torch.Tensor]:
        """Flux (B, n_pix) and J = d flux / d theta (B, n_pix, 4) (per K, per dex, per dex, per dex)
        by forward-mode autodiff (module docstring). Use float64 for Fisher work."""
        import torch.autograd.forward_ad as fwad

        if method != "forward_ad":
            raise ValueError(f"unknown Jacobian method {method!r} for the emulated source (forward_ad)")
        theta = theta.reshape(-1, 4)
        n_b = theta.shape[0]
        self._check_inside(theta.detach())
        tangent = torch.eye(4, dtype=theta.dtype, device=theta.device).repeat_interleave(n_b, 0)
        with fwad.dual_level():
            out = self.net.outputs(fwad.make_dual(theta.repeat(4, 1), tangent))
            primal, tan = fwad.unpack_dual(out)
        flux = primal[:n_b, :-1]
        jac = tan[:, :-1].reshape(4, n_b, -1).permute(1, 2, 0)
        return flux, jac
