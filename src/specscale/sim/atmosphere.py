"""A differentiable synthetic stellar atmosphere for the PFS MR red arm (the default data source).

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
   ln lambda), averaged over each PFS pixel, divided by a smoothed median.

Every gravity exponent is multiplied by ``gravity_scale``, the one knob used to calibrate how much
log g information the spectra carry against the study's Fisher ceilings on BOSZ (see README).

Not modelled: NLTE, isotopic and hyperfine structure, rotation, a real molecular line list,
chromospheric emission, telluric absorption (not part of the intrinsic spectrum), [C/M].
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from specscale.core.vocab import LOGG
from specscale.sim.instrument import C_KMS, Instrument, air_to_vacuum
from specscale.sim.linelist import (
    BAND_HEADS,
    PASCHEN,
    PASCHEN_LOG_GAMMA_REF,
    PASCHEN_LOG_S_REF,
    STRONG_LINES,
    WEAK_GROUPS,
    pseudo_lines,
)

THETA_REF = 5040.0 / 4500.0
LOGG_REF = 2.5
AB_ZERO_FNU = 10 ** (-0.4 * 48.6)  # erg s^-1 cm^-2 Hz^-1 at AB magnitude 0
C_A_PER_S = 2.99792458e18
HC_OVER_K = 1.438777e8  # h c / k in Angstrom K


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


def _newton_median(m: torch.Tensor, x: torch.Tensor, width: float) -> torch.Tensor:
    """One Newton step towards the root m of mean(sigmoid((x - m) / width)) = 1/2; m (..., 1)."""
    z = torch.sigmoid((x - m) / width)
    g = z.mean(-1, keepdim=True) - 0.5
    dg = (z * (1 - z)).mean(-1, keepdim=True) / width
    return m + g / dg


def _converged_median(x: torch.Tensor, width: float, iterations: int) -> torch.Tensor:
    """The detached Newton iterate (..., 1) from the exact median."""
    n = x.shape[-1]
    xd = x.detach()
    m = torch.kthvalue(xd, (n + 1) // 2, dim=-1).values[..., None]
    for _ in range(iterations):
        m = _newton_median(m, xd, width)
    return m


def smoothed_median(x: torch.Tensor, width: float, iterations: int = 3) -> torch.Tensor:
    """A smooth median along the last axis: the root m of mean(sigmoid((x - m) / width)) = 1/2,
    found by Newton steps from the exact median.

    The value stays within ~width of the median, but it is a smooth function of x: its derivative
    is the sigmoid-weighted mean of the pixels near the median (implicit function theorem, given by
    the last, attached Newton step), so it has no jumps when the median pixel changes.
    """
    return _newton_median(_converged_median(x, width, iterations), x, width)[..., 0]


def smoothed_median_jvp(x: torch.Tensor, dx: torch.Tensor, width: float, iterations: int = 3):
    """``smoothed_median(x)`` (B,) and its directional derivatives (K, B) along tangents dx (K, B, n):
    the exact derivative of the attached last Newton step, written out (what forward-mode AD gives)."""
    m = _converged_median(x, width, iterations)
    z = torch.sigmoid((x - m) / width)
    zz = z * (1 - z)
    g = z.mean(-1) - 0.5
    dg = zz.mean(-1) / width
    d_g = (zz * dx).mean(-1) / width
    d_dg = ((1 - 2 * z) * zz * dx).mean(-1) / width**2
    return m[..., 0] + g / dg, d_g / dg - g * d_dg / dg**2


def _csr(a, dtype, device) -> torch.Tensor:
    """A scipy sparse matrix as a torch CSR tensor of ``dtype`` on ``device``."""
    with warnings.catch_warnings():  # torch flags sparse CSR as beta
        warnings.simplefilter("ignore", UserWarning)
        a = a.tocoo()
        idx = torch.as_tensor(np.vstack([a.row, a.col]), device=device)
        coo = torch.sparse_coo_tensor(idx, torch.as_tensor(a.data, dtype=dtype, device=device), a.shape)
        return coo.coalesce().to_sparse_csr()


def _matmul(m, x: torch.Tensor) -> torch.Tensor:
    """m @ x for a torch CSR tensor or a scipy CSR matrix (CPU, x's dtype)."""
    if isinstance(m, torch.Tensor):
        return m @ x
    return torch.from_numpy(m @ x.detach().numpy())


class _SparseMatmul(torch.autograd.Function):
    """y = M @ x for a fixed sparse CSR M and a dense x (n_in, R), with reverse- and forward-mode
    derivatives (torch's CSR matmul has no forward-mode AD). M (and its transpose) is a torch CSR
    tensor or, on the CPU, a scipy CSR matrix (its kernel is ~3x torch's CPU one on version 2's
    per-line map, same results). The simulator keeps the fine-grid axis first so that x is
    contiguous in the layout the CSR kernels are fast on (a transposed operand costs ~4x)."""

    @staticmethod
    def forward(x, m, mt):
        return _matmul(m, x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.m, ctx.mt = inputs

    @staticmethod
    def backward(ctx, g):
        return _matmul(ctx.mt, g.contiguous()), None, None

    @staticmethod
    def jvp(ctx, x_t, m_t, mt_t):
        return _matmul(ctx.m, x_t.contiguous())


class SyntheticAtmosphere:
    """Batched, differentiable forward model. ``flux(theta)`` is the public entry point.

    theta: tensor (..., 4) of (Teff K, log g dex, [M/H] dex, [alpha/M] dex).
    """

    def __init__(self, config: AtmosphereConfig | None = None, instrument: Instrument | None = None):
        self.config = config or AtmosphereConfig()
        self.instrument = instrument or Instrument()
        self._cache: dict = {}

    # ---- fixed grids and templates (numpy, built once) -------------------------------------
    @cached_property
    def dln(self) -> float:
        return self.config.step_kms / C_KMS

    @cached_property
    def fine_wave(self) -> np.ndarray:
        """Fine-grid centres, vacuum A."""
        c = self.config
        n = int(math.ceil(math.log(c.wave_max / c.wave_min) / self.dln))
        return c.wave_min * np.exp((np.arange(n) + 0.5) * self.dln)

    @property
    def xi_max_kms(self) -> float:
        """Turbulence sigma at log g = 1 (km/s): the width of the broad template set."""
        c = self.config
        return math.hypot(c.xi_dwarf_kms, c.xi_giant_kms)

    def turbulence_kms(self, logg: torch.Tensor) -> torch.Tensor:
        """Extra Gaussian sigma (km/s) of turbulent broadening; grows smoothly towards giants."""
        c = self.config
        return torch.sqrt(c.xi_dwarf_kms**2 + (c.xi_giant_kms * c.gravity_scale * (5.0 - logg) / 4.0) ** 2)

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
            x = (wave - air_to_vacuum(head)) / 1.0
            env = amp * 0.5 * (1.0 + np.tanh(x / 1.2)) * np.exp(-np.clip(x, 0, None) / length)
            tau[names.index(mol)] += env
        return tau

    @cached_property
    def _strong(self) -> dict:
        """Strong lines: per-line data, and their windows padded per window size (a class) so
        profiles broadcast without gathers; each window column has a fine-grid index (where it is
        added) and a smooth taper."""
        rows = list(STRONG_LINES)
        rows += [
            ("H I", lam, "hydrogen", False, PASCHEN_LOG_S_REF, -12.09, PASCHEN_LOG_GAMMA_REF, 25.0) for lam in PASCHEN
        ]
        wave = self.fine_wave
        lam_vac = air_to_vacuum(np.array([r[1] for r in rows]))
        win = np.array([r[7] for r in rows])
        classes, cols = [], []
        for w in np.unique(win):
            ids = np.flatnonzero(win == w)
            n_w = int(np.ceil(w / (wave[-1] * self.dln))) * 2 + 1
            centre = np.searchsorted(wave, lam_vac[ids])
            idx = centre[:, None] + np.arange(n_w)[None, :] - n_w // 2
            off = wave[idx] - lam_vac[ids][:, None]
            r = np.abs(off) / w
            taper = np.where(r < 0.6, 1.0, 0.5 * (1 + np.cos(np.pi * np.clip((r - 0.6) / 0.4, 0, 1))))
            classes.append((ids, off, taper))
            cols.append(idx.reshape(-1))
        cls = np.array([r[2] for r in rows])
        return {
            "classes": classes,
            "fine_index": np.concatenate(cols),
            "lam": lam_vac,
            "neutral": (cls == "neutral").astype(float),
            "majority": (cls == "majority").astype(float),
            "hydrogen": (cls == "hydrogen").astype(float),
            "alpha": np.array([r[3] for r in rows], dtype=float),
            "log_s": np.array([r[4] for r in rows]),
            "tcoef": np.array([r[5] for r in rows]),
            "log_gamma": np.array([r[6] for r in rows]),
        }

    @cached_property
    def _pixel_matrix(self):
        """Sparse (n_pix, n_fine) map: LSF convolution then the average over each PFS pixel.

        The LSF is Gaussian with constant R, so on the ln(lambda) fine grid it is one kernel."""
        from scipy import sparse

        inst, wave = self.instrument, self.fine_wave
        e_fine = self.config.wave_min * np.exp(np.arange(wave.size + 1) * self.dln)
        lo = inst.wave - inst.dlambda / 2
        hi = inst.wave + inst.dlambda / 2
        first = np.searchsorted(e_fine, lo, side="right") - 1
        idx = first[:, None] + np.arange(4)[None, :]
        a = np.maximum(e_fine[idx], lo[:, None])
        b = np.minimum(e_fine[idx + 1], hi[:, None])
        w = np.clip(b - a, 0, None) / inst.dlambda
        assert np.allclose(w.sum(1), 1.0), "fine grid coarser than expected"
        kern = self.lsf_kernel
        half = (kern.size - 1) // 2
        rows = np.repeat(np.arange(inst.n_pix), 4 * kern.size)
        cols = (idx[:, :, None] + np.arange(-half, half + 1)[None, None, :]).reshape(-1)
        vals = (w[:, :, None] * kern[None, None, :]).reshape(-1)
        if cols.min() < 0 or cols.max() >= wave.size:
            raise ValueError("atmosphere grid too narrow for the LSF at the arm edges")
        return sparse.csr_matrix((vals, (rows, cols)), shape=(inst.n_pix, wave.size))

    @cached_property
    def _filter_weights(self) -> np.ndarray:
        """Weights w with sum(w * f_lambda) = mean f_nu through HSC-i (photon-counting AB)."""
        import speclite.filters

        filt = speclite.filters.load_filter("hsc2017-i")
        wave = self.fine_wave
        resp = np.interp(wave, filt.wavelength, filt.response, left=0.0, right=0.0)
        dlam = wave * self.dln
        num = resp * wave * dlam
        den = np.sum(resp * C_A_PER_S / wave * dlam)
        if filt.wavelength.min() < wave[0] or filt.wavelength.max() > wave[-1] * 1.0001:
            raise ValueError("atmosphere grid does not cover the HSC-i filter")
        return num / den

    @cached_property
    def lsf_kernel(self) -> np.ndarray:
        """LSF kernel on the fine grid (constant R -> fixed in ln lambda)."""
        sig = self.instrument.lsf_sigma_ln / self.dln
        half = int(math.ceil(4 * sig))
        k = np.exp(-0.5 * (np.arange(-half, half + 1) / sig) ** 2)
        return k / k.sum()

    NODE_STEP = 16  # fine pixels between Planck continuum nodes (linear between them: < 1e-5 in ln f)

    def _tensors(self, dtype, device):
        key = (dtype, str(device))
        if key not in self._cache:
            t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)
            st = self._strong
            m = self._pixel_matrix.tocoo()
            self._cache[key] = {
                "wave": t(self.fine_wave),
                "templates_t": t(self._templates.T.copy()),  # (n_fine, 2 n_groups)
                "pix": _csr(m, dtype, device),
                "pix_t": _csr(m.T.tocoo(), dtype, device),
                "filter": t(self._filter_weights),
                "s_classes": [
                    (torch.as_tensor(ids, device=device), t(off[..., None] ** 2), t(taper[..., None]))
                    for ids, off, taper in st["classes"]
                ],
                "s_fine": torch.as_tensor(st["fine_index"], device=device),
                **{k: t(v) for k, v in st.items() if k not in ("classes", "fine_index")},
                "groups": {
                    "neutral": t([g.kind == "neutral" for g in WEAK_GROUPS]),
                    "majority": t([g.kind == "majority" for g in WEAK_GROUPS]),
                    "alpha": t([g.alpha for g in WEAK_GROUPS]),
                    "chi": t([g.chi for g in WEAK_GROUPS]),
                },
            }
        return self._cache[key]

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

    def _log_continuum_nodes(self, teff: torch.Tensor) -> torch.Tensor:
        """ln Planck f_lambda(Teff) relative to 8000 A on the continuum nodes (B, k): node j at fine
        pixel NODE_STEP j, the last one at or beyond the red end."""
        n_blocks = -(-self.fine_wave.size // self.NODE_STEP)
        pos = torch.arange(n_blocks + 1, dtype=teff.dtype, device=teff.device) * self.NODE_STEP
        coarse = self.config.wave_min * torch.exp((pos + 0.5) * self.dln)
        x = HC_OVER_K / (coarse[None, :] * teff[:, None])
        x0 = HC_OVER_K / (8000.0 * teff[:, None])
        return -5 * torch.log(coarse / 8000.0) + torch.log(torch.expm1(x0)) - torch.log(torch.expm1(x))

    def _line_laws(self, theta: torch.Tensor, T) -> dict[str, torch.Tensor]:
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

    def _law_jvps(self, theta: torch.Tensor, T, laws=None) -> tuple[dict, dict, torch.Tensor, torch.Tensor]:
        """The line laws (B, L), their derivatives along each parameter (4, B, L), the continuum
        nodes (B, k) and their Teff derivative (B, k), by forward-mode autodiff. The line laws take
        ONE dual pass: the stars are independent, so the batch is repeated four times with tangent
        e_k on block k (one pass of 4B stars costs less than four passes of B). ``laws``: the
        per-star law function (default :meth:`_line_laws`; version 2 passes its own)."""
        import torch.autograd.forward_ad as fwad

        laws = self._line_laws if laws is None else laws
        n_b = theta.shape[0]
        tangent = torch.eye(4, dtype=theta.dtype, device=theta.device).repeat_interleave(n_b, 0)
        with fwad.dual_level():
            out = laws(fwad.make_dual(theta.repeat(4, 1), tangent), T)
            pairs = {name: fwad.unpack_dual(v) for name, v in out.items()}
            cont = fwad.unpack_dual(
                self._log_continuum_nodes(fwad.make_dual(theta[:, 0], torch.ones_like(theta[:, 0])))
            )
        law = {name: p.primal[:n_b] for name, p in pairs.items()}
        return law, {name: p.tangent.view(4, n_b, -1) for name, p in pairs.items()}, cont.primal, cont.tangent

    _COEFS = ("a_g", "c_g", "a_l", "c_l")

    @classmethod
    def _profiles(cls, law, T, dlaw=None) -> torch.Tensor:
        """Tapered strong-line profiles in their windows (n_cols, B), 1/A, from the laws (B, n_lines).
        With ``dlaw`` (4, B, n_lines): (n_cols, 5B), the profiles and then their derivatives along
        each parameter (column (k + 1) B + b), by the chain rule."""
        blocks = []
        for ids, x2, taper in T["s_classes"]:  # x2, taper: (n_ids, n_w, 1)
            a_g, c_g, a_l, c_l = (law[k].T[ids, None, :] for k in cls._COEFS)  # (n_ids, 1, B)
            e = taper * torch.exp(c_g * x2)
            d = 1.0 / (c_l * x2 + 0.25)
            td = taper * d
            prof = a_g * e + a_l * td
            if dlaw is None:
                blocks.append(prof.flatten(0, 1))
                continue
            da_g, dc_g, da_l, dc_l = (dlaw[k].permute(2, 0, 1)[ids, None] for k in cls._COEFS)  # (n_ids, 1, 4, B)
            e, d, td, x2 = e[:, :, None], d[:, :, None], td[:, :, None], x2[..., None]
            a_g, a_l = a_g[:, :, None], a_l[:, :, None]
            tan = e * (da_g + (a_g * x2) * dc_g) + td * (da_l - (a_l * x2 * d) * dc_l)
            blocks.append(torch.cat([prof[:, :, None], tan], 2).flatten(0, 1).flatten(1))
        return torch.cat(blocks, 0)

    def _ln_fine(self, weak, lncont, profiles, T) -> torch.Tensor:
        """ln f_lambda on the fine grid (n_fine, R) = ln continuum - tau, from column-layout inputs
        weak (2 n_groups, R) and profiles (n_cols, R); the continuum nodes lncont (k, R_c) enter
        the first R_c <= R columns (tangents along parameters other than Teff have none). Linear in
        its inputs, so the same call maps tangents. S (A) x area-normalised profile (1/A) is an
        optical depth."""
        ln = torch.mm(T["templates_t"], -weak)
        ln.index_add_(0, T["s_fine"], profiles, alpha=-1.0)
        # linear interpolation between nodes NODE_STEP pixels apart: one broadcast, no gathers
        n, n_c, step = ln.shape[0], lncont.shape[1], self.NODE_STEP
        w = torch.arange(step, dtype=ln.dtype, device=ln.device)[None, :, None] / step
        cont = torch.lerp(lncont[:-1, None, :], lncont[1:, None, :], w).flatten(0, 1)[:n]
        ln[:, :n_c] += cont
        return ln

    def _pixel_flux(self, f_fine: torch.Tensor, T) -> torch.Tensor:
        """LSF + pixel map: fine-grid flux (n_fine, R) -> PFS pixels, star-major (R, n_pix)."""
        return _SparseMatmul.apply(f_fine, T["pix"], T["pix_t"]).T.contiguous()

    def spectrum(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised PFS flux (B, n_pix) and fmed0 (B,): the median f_lambda of the arm, in
        erg s^-1 cm^-2 A^-1, for the same star scaled to HSC-i AB magnitude 0."""
        shape = theta.shape[:-1]
        theta = theta.reshape(-1, 4)
        T = self._tensors(theta.dtype, theta.device)
        law = self._line_laws(theta, T)
        lncont = self._log_continuum_nodes(theta[:, 0])
        f_fine = torch.exp(self._ln_fine(law["weak"].T, lncont.T, self._profiles(law, T), T))
        f_pix = self._pixel_flux(f_fine, T)
        med = smoothed_median(f_pix, self.config.median_width)
        fnu = T["filter"] @ f_fine
        fmed0 = med / fnu * AB_ZERO_FNU
        flux = f_pix / med[:, None]
        return flux.reshape(*shape, -1), fmed0.reshape(shape)

    def flux(self, theta: torch.Tensor) -> torch.Tensor:
        """Median-normalised PFS flux (..., n_pix) for theta (..., 4); differentiable."""
        return self.spectrum(theta)[0]

    def jacobian(self, theta: torch.Tensor, method: str = "laws") -> tuple[torch.Tensor, torch.Tensor]:
        """Flux (B, n_pix) and J = d flux / d theta (B, n_pix, 4) (units: per K, per dex, per dex,
        per dex). Use float64 for Fisher work.

        ``method="laws"`` (default): forward-mode autodiff through the per-star physical laws
        (small tensors), then the chain rule through the fixed fine-grid stages written out
        (profiles, the linear template/continuum/LSF/pixel maps, exp, smoothed median), the primal
        and all four tangents as one (n_fine, 5B) array. ``method="forward_ad"``: one forward-mode
        dual pass of the whole simulator per parameter, several times slower; the two agree to
        rounding (tested). (torch.func transforms cannot see through the sparse LSF map.)"""
        theta = theta.reshape(-1, 4)
        if method == "forward_ad":
            return self._jacobian_forward_ad(theta)
        if method != "laws":
            raise ValueError(f"unknown Jacobian method {method!r} (laws, forward_ad)")
        T = self._tensors(theta.dtype, theta.device)
        n_b = theta.shape[0]
        law, dlaw, lncont, d_lncont = self._law_jvps(theta, T)
        # ln f is linear in (weak, continuum, profiles): primal and tangents share one pass
        ln = self._ln_fine(
            torch.cat([law["weak"].T, dlaw["weak"].permute(2, 0, 1).flatten(1)], 1),
            torch.cat([lncont.T, d_lncont.T], 1),  # primal and d/dTeff: the first 2B columns
            self._profiles(law, T, dlaw),
            T,
        )
        f_fine = ln[:, :n_b].exp_()
        ln[:, n_b:].view(-1, 4, n_b).mul_(f_fine[:, None, :])  # d f = f d ln f
        pix = self._pixel_flux(ln, T).view(5, n_b, -1)
        f_pix, df_pix = pix[0], pix[1:]
        med, d_med = smoothed_median_jvp(f_pix, df_pix, self.config.median_width)
        flux = f_pix / med[:, None]
        jac = df_pix / med[:, None] - flux * (d_med / med)[..., None]
        return flux, jac.permute(1, 2, 0)

    def _jacobian_forward_ad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference Jacobian: one forward-mode dual pass of the whole simulator per parameter."""
        import torch.autograd.forward_ad as fwad

        cols, flux = [], None
        for k in range(4):
            tangent = torch.zeros_like(theta)
            tangent[:, k] = 1.0
            with fwad.dual_level():
                out = self.flux(fwad.make_dual(theta, tangent))
                primal, tan = fwad.unpack_dual(out)
            flux = primal if flux is None else flux
            cols.append(tan)
        return flux, torch.stack(cols, dim=-1)


def pseudo_voigt_terms(area, f_g, f_l):
    """Thompson-Cox-Hastings pseudo-Voigt (~1% of a Voigt) of lines of ``area`` (A) with Gaussian
    and Lorentzian FWHMs ``f_g``, ``f_l`` (A): the coefficients (a_g, c_g, a_l, c_l) of the profile
    a_g exp(c_g x^2) + a_l / (c_l x^2 + 1/4) at offset x (A) from the line centre (both versions'
    strong lines)."""
    f5 = (
        f_g**5
        + 2.69269 * f_g**4 * f_l
        + 2.42843 * f_g**3 * f_l**2
        + 4.47163 * f_g**2 * f_l**3
        + 0.07842 * f_g * f_l**4
        + f_l**5
    )
    inv_w = f5**-0.2  # 1 / FWHM
    q = f_l * inv_w
    eta = q * (1.36603 - q * (0.47719 - 0.11116 * q))
    a_g = area * (1 - eta) * math.sqrt(4 * math.log(2) / math.pi) * inv_w
    a_l = area * eta * 0.5 / math.pi * inv_w
    return a_g, -4 * math.log(2) * inv_w**2, a_l, inv_w**2
