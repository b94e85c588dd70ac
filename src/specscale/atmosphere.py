"""A differentiable synthetic stellar atmosphere for the PFS MR red arm (the default data source).

flux(Teff [K], log g [dex], [M/H] [dex], [alpha/M] [dex]) -> median-normalised PFS MR spectrum.

The model, top-down (every step is smooth in all four parameters, so the Fisher ceiling can
differentiate it; no clamps, no table look-ups in the parameters):

1. A fine grid uniform in ln(lambda) (``step_kms``, vacuum Angstrom) over ``wave_min..wave_max``,
   wide enough to integrate the HSC-i filter (6400-9000 A), not only the 7100-8850 A arm.
2. Continuum: Planck f_lambda(Teff). After median normalisation only its slope remains.
3. Line opacity tau(lambda), the sum of
   - weak lines: a seeded pseudo list (:mod:`specscale.linelist`) at ~1.5 lines/A, grouped into
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
import torch.nn.functional as F

from .instrument import C_KMS, Instrument, air_to_vacuum
from .linelist import (
    BAND_HEADS,
    PASCHEN,
    PASCHEN_LOG_GAMMA_REF,
    PASCHEN_LOG_S_REF,
    STRONG_LINES,
    WEAK_GROUPS,
    pseudo_lines,
)

LABELS = ("teff", "logg", "mh", "am")
LABEL_UNITS = ("K", "dex", "dex", "dex")
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


def smoothed_median(x: torch.Tensor, width: float, iterations: int = 4) -> torch.Tensor:
    """A smooth median along the last axis: the root m of mean(sigmoid((x - m) / width)) = 1/2,
    found by Newton steps from the exact median.

    The value stays within ~width of the median, but it is a smooth function of x: its derivative
    is the sigmoid-weighted mean of the pixels near the median (implicit function theorem, given by
    the last, attached Newton step), so it has no jumps when the median pixel changes.
    """
    n = x.shape[-1]

    def newton(m, x):
        z = torch.sigmoid((x - m) / width)
        g = z.mean(-1, keepdim=True) - 0.5
        dg = (z * (1 - z)).mean(-1, keepdim=True) / width
        return m + g / dg

    xd = x.detach()
    m = torch.kthvalue(xd, (n + 1) // 2, dim=-1).values[..., None]
    for _ in range(iterations):
        m = newton(m, xd)
    return newton(m, x)[..., 0]


class _SparseRows(torch.autograd.Function):
    """y = x @ M.T for a fixed sparse M, with reverse- and forward-mode derivatives
    (torch's CSR matmul has no forward-mode AD)."""

    @staticmethod
    def forward(x, m, mt):
        return (m @ x.T).T

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.m, ctx.mt = inputs

    @staticmethod
    def backward(ctx, g):
        return (ctx.mt @ g.T).T, None, None

    @staticmethod
    def jvp(ctx, x_t, m_t, mt_t):
        return (ctx.m @ x_t.T).T


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
            [self._template_set(self.config.broadening_kms), self._template_set(math.hypot(self.config.broadening_kms, self.xi_max_kms))]
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
        profiles broadcast without gathers; one sparse matrix (with the smooth tapers folded in)
        adds all windows onto the fine grid."""
        from scipy import sparse

        rows = list(STRONG_LINES)
        rows += [("H I", lam, "hydrogen", False, PASCHEN_LOG_S_REF, -12.09, PASCHEN_LOG_GAMMA_REF, 25.0) for lam in PASCHEN]
        wave = self.fine_wave
        lam_vac = air_to_vacuum(np.array([r[1] for r in rows]))
        win = np.array([r[7] for r in rows])
        classes, cols, vals, col0 = [], [], [], 0
        for w in np.unique(win):
            ids = np.flatnonzero(win == w)
            n_w = int(np.ceil(w / (wave[-1] * self.dln))) * 2 + 1
            centre = np.searchsorted(wave, lam_vac[ids])
            idx = centre[:, None] + np.arange(n_w)[None, :] - n_w // 2
            off = wave[idx] - lam_vac[ids][:, None]
            r = np.abs(off) / w
            taper = np.where(r < 0.6, 1.0, 0.5 * (1 + np.cos(np.pi * np.clip((r - 0.6) / 0.4, 0, 1))))
            classes.append((ids, off))
            cols.append(idx.reshape(-1)), vals.append(taper.reshape(-1))
            col0 += idx.size
        fine = np.concatenate(cols)
        scatter = sparse.csr_matrix((np.concatenate(vals), (fine, np.arange(col0))), shape=(wave.size, col0))
        cls = np.array([r[2] for r in rows])
        return {
            "classes": classes,
            "scatter": scatter,
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

    def _tensors(self, dtype, device):
        key = (dtype, str(device))
        if key not in self._cache:
            t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
            st = self._strong
            m = self._pixel_matrix.tocoo()

            def csr(a):
                with warnings.catch_warnings():  # torch flags sparse CSR as beta
                    warnings.simplefilter("ignore", UserWarning)
                    idx = torch.as_tensor(np.vstack([a.row, a.col]), device=device)
                    coo = torch.sparse_coo_tensor(idx, torch.as_tensor(a.data, dtype=dtype, device=device), a.shape)
                    return coo.coalesce().to_sparse_csr()
            self._cache[key] = {
                "wave": t(self.fine_wave),
                "templates": t(self._templates),
                "pix": csr(m),
                "pix_t": csr(m.T.tocoo()),
                "filter": t(self._filter_weights),
                "s_classes": [(torch.as_tensor(ids, device=device), t(off**2)) for ids, off in st["classes"]],
                "s_scatter": csr(st["scatter"].tocoo()),
                "s_scatter_t": csr(st["scatter"].T.tocoo()),
                **{k: t(v) for k, v in st.items() if k not in ("classes", "scatter")},
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

    def _strong_tau(self, theta: torch.Tensor, T) -> torch.Tensor:
        c = self.config
        th, dg, mh, am = self._axes(theta)
        metal = 1.0 - T["hydrogen"]
        ab = T["neutral"] * mh + T["majority"] * (1 - c.pe_z_exp) * mh + T["alpha"] * am
        log_s = T["log_s"] + ab + T["tcoef"] * th + T["majority"] * c.ion_g_exp * dg
        log_gamma = T["log_gamma"] + metal * (c.damping_g_exp * dg - mh / 3.0) + T["hydrogen"] * dg / 3.0
        s, gamma = 10**log_s, 10**log_gamma  # (B, n_lines): area (A), Lorentz HWHM (A)
        # Thompson-Cox-Hastings pseudo-Voigt; the Gaussian part holds intrinsic + turbulent widths
        sig_kms = torch.sqrt(c.broadening_kms**2 + self.turbulence_kms(theta[:, 1]) ** 2)
        f_g = (2.3548200450309493 / C_KMS) * T["lam"] * sig_kms[:, None]
        f_l = 2.0 * gamma
        f5 = (
            f_g**5 + 2.69269 * f_g**4 * f_l + 2.42843 * f_g**3 * f_l**2
            + 4.47163 * f_g**2 * f_l**3 + 0.07842 * f_g * f_l**4 + f_l**5
        )
        inv_w = f5**-0.2  # 1 / FWHM
        q = f_l * inv_w
        eta = q * (1.36603 - q * (0.47719 - 0.11116 * q))
        a_g = s * (1 - eta) * math.sqrt(4 * math.log(2) / math.pi) * inv_w
        a_l = s * eta * 0.5 / math.pi * inv_w
        c_g = -4 * math.log(2) * inv_w**2
        c_l = inv_w**2
        blocks = []
        for ids, x2 in T["s_classes"]:
            x2 = x2[None]
            gauss = a_g[:, ids, None] * torch.exp(c_g[:, ids, None] * x2)
            lorentz = a_l[:, ids, None] / (c_l[:, ids, None] * x2 + 0.25)
            blocks.append((gauss + lorentz).flatten(1))
        # S (A) x area-normalised profile (1/A) is an optical depth
        return _SparseRows.apply(torch.cat(blocks, 1), T["s_scatter"], T["s_scatter_t"])

    def _log_continuum(self, teff: torch.Tensor, T) -> torch.Tensor:
        """ln Planck f_lambda(Teff) relative to 8000 A on the fine grid (B, n_fine). Evaluated on
        ~1/16 of the pixels and interpolated linearly (the curvature error is < 1e-5)."""
        n = T["wave"].numel()
        k = (n - 1) // 16 + 1
        # coarse nodes sit exactly where align_corners=True interpolation puts them
        pos = torch.arange(k, dtype=teff.dtype, device=teff.device) * ((n - 1) / (k - 1))
        coarse = self.config.wave_min * torch.exp((pos + 0.5) * self.dln)
        x = HC_OVER_K / (coarse[None, :] * teff[:, None])
        x0 = HC_OVER_K / (8000.0 * teff[:, None])
        ln = -5 * torch.log(coarse / 8000.0) + torch.log(torch.expm1(x0)) - torch.log(torch.expm1(x))
        return F.interpolate(ln[:, None, :], size=n, mode="linear", align_corners=True)[:, 0]

    def spectrum(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised PFS flux (B, n_pix) and fmed0 (B,): the median f_lambda of the arm, in
        erg s^-1 cm^-2 A^-1, for the same star scaled to HSC-i AB magnitude 0."""
        shape = theta.shape[:-1]
        theta = theta.reshape(-1, 4)
        T = self._tensors(theta.dtype, theta.device)
        teff, logg = theta[:, 0], theta[:, 1]
        strength = 10 ** self.group_log_strength(theta, T)
        u = (self.turbulence_kms(logg) / self.xi_max_kms)[:, None] ** 2
        tau = torch.cat([(1 - u) * strength, u * strength], 1) @ T["templates"] + self._strong_tau(theta, T)
        f_fine = torch.exp(self._log_continuum(teff, T) - tau)
        f_pix = _SparseRows.apply(f_fine, T["pix"], T["pix_t"])
        med = smoothed_median(f_pix, self.config.median_width)
        fnu = f_fine @ T["filter"]
        fmed0 = med / fnu * AB_ZERO_FNU
        flux = f_pix / med[:, None]
        return flux.reshape(*shape, -1), fmed0.reshape(shape)

    def flux(self, theta: torch.Tensor) -> torch.Tensor:
        """Median-normalised PFS MR flux (..., n_pix) for theta (..., 4); differentiable."""
        return self.spectrum(theta)[0]

    def jacobian(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flux (B, n_pix) and J = d flux / d theta (B, n_pix, 4) by forward-mode autodiff: one
        dual pass per parameter (units: per K, per dex, per dex, per dex). Use float64 for Fisher work.

        (torch.func transforms cannot see through the sparse LSF map; forward_ad can.)"""
        import torch.autograd.forward_ad as fwad

        theta = theta.reshape(-1, 4)
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
