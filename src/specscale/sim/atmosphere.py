"""Simulator version 1: a differentiable synthetic stellar atmosphere for the PFS MR red arm, with
weak lines grouped into families that share one strength law.

flux(Teff [K], log g [dex], [M/H] [dex], [alpha/M] [dex]) -> median-normalised PFS MR spectrum.

The model, top-down (every step is smooth in all four parameters, so the Fisher ceiling can
differentiate it; no clamps, no table look-ups in the parameters):

1. A fine grid uniform in ln(lambda) (``step_kms``, vacuum Angstrom) over ``wave_min..wave_max``,
   wide enough to integrate the HSC-i filter (6400-9000 A), not only the 7100-8850 A arm.
2. Continuum: Planck f_lambda(Teff). After median normalisation only its slope remains.
3. Line opacity tau(lambda), the sum of
   - weak lines: a seeded pseudo list (:mod:`specscale.sim.linelist`) at ~1.5 lines/A, grouped into
     families (Fe-peak and alpha neutrals by excitation potential, ions, CN, TiO, VO) whose
     strengths share one law each: tau_weak = sum_g F_g(theta) T_g(lambda), with the templates
     T_g precomputed (Gaussian profiles of ``broadening_kms``). Molecular templates also hold the
     smooth band envelopes redward of each head.
   - strong lines (Ca II triplet, Na I, K I, Mg I, Si I, Fe I, Ca I, Ti I, O I, C I, Mg II, Paschen):
     pseudo-Voigt profiles (Thompson-Cox-Hastings, ~1% of Voigt) in fixed windows with smooth tapers.
   Strength laws (log10, relative to the reference star 4500 K / 2.5 / 0 / 0; theta = 5040/Teff):
   - abundance: +[M/H] (+[alpha/M] for O, Mg, Si, Ca, Ti).
   - neutral minority species: line/continuum opacity independent of gravity (Saha x H- continuum).
   - majority species (Ca II, ions, O I, C I): ~ 1/P_e with P_e ~ g^(1/3) Z^(pe_z_exp): g^(ion_g_exp).
   - damping (van der Waals) Lorentz width ~ P_gas ~ g^(2/3) Z^(-1/3): broad Na I, Mg I, Ca II wings
     in dwarfs; Paschen (Stark) widths ~ P_e ~ g^(1/3); Paschen strength follows the n=3
     Boltzmann factor (12.09 eV), so the lines appear above ~5500 K and blend with the Ca II triplet.
   - molecules: TiO switches on below ~4000 K, VO below ~3800 K (exponential in theta), CN strongest
     in cool giants (g^(cn_g_exp)); all scale with metallicity.
   - temperature: d log S / d theta per line or family (low-excitation neutrals strengthen in cool
     stars, high-excitation lines and ions weaken).
4. Turbulence: line profiles get an extra Gaussian width sqrt(xi_dwarf^2 + (xi_giant (5 - log g)/4)^2)
   km/s (exactly, in the strong lines' Voigt; by interpolating two template sets linearly in
   sigma^2 for the weak lines), so saturated lines grow in giants (the luminosity effect that makes
   the Ca II triplet cores stronger in giants) while weak lines keep their equivalent widths.
5. f = continuum * exp(-tau), convolved with the Gaussian LSF at constant R (a fixed kernel in
   ln lambda), averaged over each PFS pixel, divided by a smoothed median. Steps 1, 2 and 5, the
   strong lines' windows and the Jacobian are shared with version 2
   (:mod:`specscale.sim.atmosphere_base`); this module holds the line opacity.

Every gravity exponent is multiplied by ``gravity_scale``, the one knob used to calibrate how much
log g information the spectra carry against the study's Fisher ceilings on BOSZ (see README).

Not modelled: NLTE, isotopic and hyperfine structure, rotation, a real molecular line list,
chromospheric emission, telluric absorption (not part of the intrinsic spectrum), [C/M].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from specscale.core.vocab import LOGG
from specscale.sim.atmosphere_base import LOGG_REF, AtmosphereBase
from specscale.sim.instrument import C_KMS, Instrument, air_to_vacuum
from specscale.sim.linelist import BAND_HEADS, WEAK_GROUPS, pseudo_lines
from specscale.sim.numerics import band_envelope, pseudo_voigt_terms

THETA_REF = 5040.0 / 4500.0  # theta of the reference star (4500 K)


@dataclass(frozen=True)
class AtmosphereConfig:
    """Knobs of the synthetic atmosphere (see the module docstring for what each does)."""

    wave_min: float = 6400.0  # model grid, vacuum A (covers HSC-i)
    wave_max: float = 9000.0
    step_kms: float = 8.0  # fine-grid spacing, km/s
    broadening_kms: float = 8.0  # intrinsic Gaussian sigma (thermal+micro+macro), km/s
    xi_dwarf_kms: float = 2.0  # extra turbulence sigma of a dwarf, km/s
    xi_giant_kms: float = 12.0  # extra turbulence sigma at log g = 1, km/s
    weak_lines_per_A: float = 1.5
    linelist_seed: int = 20261126
    gravity_scale: float = 0.73  # calibrated: study Fisher ceilings vs S/N (README)
    damping_g_exp: float = 2.0 / 3.0
    ion_g_exp: float = -1.0 / 3.0
    pe_z_exp: float = 0.5
    cn_g_exp: float = -0.25
    tio_g_exp: float = 0.1
    median_width: float = 0.005  # flux width of the smoothed median (normalised units)

    def __post_init__(self):
        if not self.wave_min < 7000.0 or not self.wave_max > 8900.0:
            raise ValueError("atmosphere wave_min/wave_max must cover the PFS red arm (7100-8850 A)")
        if self.step_kms <= 0 or self.broadening_kms <= 0:
            raise ValueError("atmosphere step_kms and broadening_kms must be positive")


class SyntheticAtmosphere(AtmosphereBase):
    """Simulator version 1 (module docstring); the shared stages are :class:`AtmosphereBase`'s.

    theta: tensor (..., 4) of (Teff K, log g dex, [M/H] dex, [alpha/M] dex).
    """

    def __init__(self, config: AtmosphereConfig | None = None, instrument: Instrument | None = None):
        super().__init__(config or AtmosphereConfig(), instrument)

    # ---- weak-line family templates (numpy, built once) ----------------------------------------
    @cached_property
    def _templates(self) -> np.ndarray:
        """Weak-line templates (2 n_groups, n_fine): optical depth per unit group strength, first
        with the intrinsic broadening alone, then with the turbulence of a log g = 1 giant added.
        A star's turbulence interpolates between the two linearly in sigma^2 (the heat equation:
        Gaussian broadening is linear in sigma^2 to first order)."""
        return np.concatenate(
            [
                self._template_set(self.config.broadening_kms),
                self._template_set(math.hypot(self.config.broadening_kms, self.xi_max_kms)),
            ]
        )

    def _template_set(self, sigma_kms: float) -> np.ndarray:
        c, wave = self.config, self.fine_wave
        lam_air, grp, s = pseudo_lines(c.linelist_seed, c.weak_lines_per_A, c.wave_min - 20, c.wave_max + 20)
        lam = air_to_vacuum(lam_air)
        sig_px = sigma_kms / c.step_kms
        pos = np.log(lam / c.wave_min) / self.dln - 0.5  # fractional fine index
        offs = np.arange(-6, 7)
        idx = np.floor(pos).astype(int)[:, None] + offs[None, :]
        w = np.exp(-0.5 * ((idx - pos[:, None]) / sig_px) ** 2)
        w /= w.sum(axis=1, keepdims=True)
        dlam = wave * self.dln  # A per fine pixel
        ok = (idx >= 0) & (idx < wave.size)
        tau = np.zeros((len(WEAK_GROUPS), wave.size))
        np.add.at(tau, (np.broadcast_to(grp[:, None], idx.shape)[ok], idx[ok]), (w * s[:, None])[ok] / dlam[idx[ok]])
        names = [g.name for g in WEAK_GROUPS]
        for mol, head, amp, length in BAND_HEADS:
            tau[names.index(mol)] += band_envelope(wave, air_to_vacuum(head), amp, length)
        return tau

    def _model_tensors(self, T: dict, dtype, device) -> None:
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)
        T["templates_t"] = t(self._templates.T.copy())  # (n_fine, 2 n_groups)
        T["groups"] = {
            "neutral": t([g.kind == "neutral" for g in WEAK_GROUPS]),
            "majority": t([g.kind == "majority" for g in WEAK_GROUPS]),
            "alpha": t([g.alpha for g in WEAK_GROUPS]),
            "chi": t([g.chi for g in WEAK_GROUPS]),
        }

    # ---- physics -----------------------------------------------------------------------------
    def _axes(self, theta: torch.Tensor):
        """(theta - theta_ref, scaled log g - log g_ref, [M/H], [alpha/M]), each (B, 1)."""
        teff, logg, mh, am = theta.unbind(-1)
        th = (5040.0 / teff)[:, None] - THETA_REF
        dg = (logg - LOGG_REF)[:, None] * self.config.gravity_scale
        return th, dg, mh[:, None], am[:, None]

    def group_log_strength(self, theta: torch.Tensor, T) -> torch.Tensor:
        """log10 F_g(theta) of the weak-line families, (B, n_groups)."""
        c = self.config
        th, dg, mh, am = self._axes(theta)
        g = T["groups"]
        neutral = mh + g["alpha"] * am + (2.0 - 0.5 * g["chi"]) * th
        majority = (1 - c.pe_z_exp) * mh + g["alpha"] * am - (0.5 + 0.3 * g["chi"]) * th + c.ion_g_exp * dg
        atoms = g["neutral"] * neutral + g["majority"] * majority
        ln10 = math.log(10.0)
        th_abs = th + THETA_REF
        cn = mh + 1.5 * th + c.cn_g_exp * dg
        tio = mh + am + (th_abs - 1.34) / (0.035 * ln10) + c.tio_g_exp * dg
        vo = mh + (th_abs - 1.38) / (0.030 * ln10) + c.tio_g_exp * dg
        mol = torch.cat([cn, tio, vo], dim=-1)
        return torch.cat([atoms[:, : len(WEAK_GROUPS) - 3], mol], dim=-1)

    def _strong_coefficients(self, theta: torch.Tensor, T) -> tuple[torch.Tensor, ...]:
        """Per-line pseudo-Voigt coefficients (B, n_lines) each: profile(x) = a_g exp(c_g x^2) +
        a_l / (c_l x^2 + 1/4), x the offset from the line centre in A."""
        c = self.config
        th, dg, mh, am = self._axes(theta)
        metal = 1.0 - T["hydrogen"]
        ab = T["neutral"] * mh + T["majority"] * (1 - c.pe_z_exp) * mh + T["alpha"] * am
        log_s = T["log_s"] + ab + T["tcoef"] * th + T["majority"] * c.ion_g_exp * dg
        log_gamma = T["log_gamma"] + metal * (c.damping_g_exp * dg - mh / 3.0) + T["hydrogen"] * dg / 3.0
        s, gamma = 10**log_s, 10**log_gamma  # (B, n_lines): area (A), Lorentz HWHM (A)
        # Thompson-Cox-Hastings pseudo-Voigt; the Gaussian part holds intrinsic + turbulent widths
        sig_kms = torch.sqrt(c.broadening_kms**2 + self.turbulence_kms(theta[:, LOGG]) ** 2)
        f_g = (2.3548200450309493 / C_KMS) * T["lam"] * sig_kms[:, None]
        return pseudo_voigt_terms(s, f_g, 2.0 * gamma)

    def _star_laws(self, theta: torch.Tensor, T) -> dict[str, torch.Tensor]:
        """Everything in the line opacity that depends on theta, per star and small: the
        weak-template weights (B, 2 n_groups) and the strong-line coefficients (B, n_lines each)."""
        strength = 10 ** self.group_log_strength(theta, T)
        u = (self.turbulence_kms(theta[:, LOGG]) / self.xi_max_kms)[:, None] ** 2
        a_g, c_g, a_l, c_l = self._strong_coefficients(theta, T)
        return {
            "weak": torch.cat([(1 - u) * strength, u * strength], 1),
            "a_g": a_g,
            "c_g": c_g,
            "a_l": a_l,
            "c_l": c_l,
        }

    def _weak_columns(self, law, T) -> torch.Tensor:
        return law["weak"].T

    def _weak_jvp(self, law, dlaw, T) -> torch.Tensor:
        return torch.cat([law["weak"].T, dlaw["weak"].permute(2, 0, 1).flatten(1)], 1)

    def _weak_ln(self, weak: torch.Tensor, T) -> torch.Tensor:
        return torch.mm(T["templates_t"], -weak)
