"""What both synthetic atmospheres share: the fine wavelength grid, the Planck continuum, the
strong lines' windows, the LSF and PFS pixel map, the HSC-i zero point, the median
normalisation, and the Jacobian's chain rule through these fixed stages.

A version (:mod:`specscale.sim.atmosphere` for version 1, :mod:`specscale.sim.atmosphere_v2` for
version 2) supplies only its line opacity: the per-star laws (``_star_laws``), how they become
columns of the weak-line map (``_weak_columns`` and their tangents ``_weak_jvp``), that map
itself (``_weak_ln``) and the tensors it needs (``_model_tensors``). Every stage here is smooth
in (Teff K, log g dex, [M/H] dex, [alpha/M] dex), so the Fisher ceiling can differentiate it.
:class:`PfsStages` holds the stages from fine-grid f_lambda on, which the model-grid source
(:mod:`specscale.sim.atmosphere_grid`) shares too.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from functools import cached_property

import numpy as np
import torch

from specscale.sim.instrument import C_KMS, Instrument, air_to_vacuum
from specscale.sim.linelist import PASCHEN, PASCHEN_LOG_GAMMA_REF, PASCHEN_LOG_S_REF, STRONG_LINES
from specscale.sim.numerics import SparseMatmul, csr_tensor, smoothed_median, smoothed_median_jvp, window_taper

LOGG_REF = 2.5  # dex, the reference star's gravity (both versions' strength laws)
AB_ZERO_FNU = 10 ** (-0.4 * 48.6)  # erg s^-1 cm^-2 Hz^-1 at AB magnitude 0
C_A_PER_S = 2.99792458e18
HC_OVER_K = 1.438777e8  # h c / k in Angstrom K


class PfsStages:
    """The fixed stages every simulator shares, from f_lambda on the fine ln(lambda) grid to the
    PFS pixels: LSF and pixel map, HSC-i weights, median normalisation. ``config`` needs
    ``wave_min``/``wave_max`` (vacuum A), ``step_kms`` and ``median_width``."""

    def __init__(self, config, instrument: Instrument | None = None):
        self.config = config
        self.instrument = instrument or Instrument()
        self._cache: dict = {}

    def check_prior(self, prior: dict, where: str) -> None:
        """Raise ConfigError naming ``where`` when the labels of ``prior`` ({label: (lo, hi)})
        leave what this simulator can evaluate (a synthetic atmosphere evaluates any labels)."""

    def provenance(self) -> dict:
        """What a dataset records about this simulator's inputs beyond its config (none here)."""
        return {}

    # ---- fixed grids and maps (numpy, built once) ----------------------------------------------
    @cached_property
    def dln(self) -> float:
        return self.config.step_kms / C_KMS

    @cached_property
    def fine_wave(self) -> np.ndarray:
        """Fine-grid centres, vacuum A."""
        c = self.config
        n = int(math.ceil(math.log(c.wave_max / c.wave_min) / self.dln))
        return c.wave_min * np.exp((np.arange(n) + 0.5) * self.dln)

    @cached_property
    def fine_edges(self) -> np.ndarray:
        """Fine-grid pixel edges (n_fine + 1), vacuum A."""
        return self.config.wave_min * np.exp(np.arange(self.fine_wave.size + 1) * self.dln)

    @cached_property
    def _pixel_matrix(self):
        """Sparse (n_pix, n_fine) map: LSF convolution then the average over each PFS pixel.

        The LSF is Gaussian with constant R, so on the ln(lambda) fine grid it is one kernel."""
        from scipy import sparse

        inst, wave = self.instrument, self.fine_wave
        e_fine = self.fine_edges
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

    def _pixel_flux(self, f_fine: torch.Tensor, T) -> torch.Tensor:
        """LSF + pixel map: fine-grid flux (n_fine, R) -> PFS pixels, star-major (R, n_pix)."""
        return SparseMatmul.apply(f_fine, T["pix"], T["pix_t"]).T.contiguous()

    def _stage_tensors(self, dtype, device) -> dict:
        """The fixed stages' tensors: fine grid, LSF+pixel map and its transpose, HSC-i weights."""
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)
        m = self._pixel_matrix.tocoo()
        return {
            "wave": t(self.fine_wave),
            "pix": csr_tensor(m, dtype, device),
            "pix_t": csr_tensor(m.T.tocoo(), dtype, device),
            "filter": t(self._filter_weights),
        }

    def _normalised(self, f_fine: torch.Tensor, T) -> tuple[torch.Tensor, torch.Tensor]:
        """Fine-grid f_lambda (n_fine, B) -> normalised PFS flux (B, n_pix) and fmed0 (B,): the
        median f_lambda of the arm, erg s^-1 cm^-2 A^-1, for the star scaled to HSC-i AB 0."""
        f_pix = self._pixel_flux(f_fine, T)
        med = smoothed_median(f_pix, self.config.median_width)
        fnu = T["filter"] @ f_fine
        fmed0 = med / fnu * AB_ZERO_FNU
        return f_pix / med[:, None], fmed0


class AtmosphereBase(PfsStages, ABC):
    """Batched, differentiable forward model. ``flux(theta)`` is the public entry point.

    theta: tensor (..., 4) of (Teff K, log g dex, [M/H] dex, [alpha/M] dex). ``config`` is the
    version's frozen config dataclass (grid, broadening, turbulence and median knobs shared).
    """

    JACOBIAN = "autodiff of the dataset's simulator (float64)"
    NODE_STEP = 16  # fine pixels between Planck continuum nodes (linear between them: < 1e-5 in ln f)
    _COEFS = ("a_g", "c_g", "a_l", "c_l")  # the strong lines' pseudo-Voigt coefficients

    # ---- what a version supplies ---------------------------------------------------------------
    @abstractmethod
    def _model_tensors(self, T: dict, dtype, device) -> None:
        """Add the version's fixed tensors to ``T`` (built once per dtype and device)."""

    @abstractmethod
    def _star_laws(self, theta: torch.Tensor, T) -> dict[str, torch.Tensor]:
        """Everything per star that the line opacity needs (small tensors, (B, ...) each), the
        strong lines' pseudo-Voigt coefficients ``a_g, c_g, a_l, c_l`` (B, n_lines) among them."""

    @abstractmethod
    def _weak_columns(self, law, T) -> torch.Tensor:
        """The weak-line map's inputs (n_weak, B) from the laws."""

    @abstractmethod
    def _weak_jvp(self, law, dlaw, T) -> torch.Tensor:
        """The weak-line map's inputs and their tangents (n_weak, 5B): primal, then column
        (k + 1) B + b along parameter k, from the laws and their tangents (4, B, ...)."""

    @abstractmethod
    def _weak_ln(self, weak: torch.Tensor, T) -> torch.Tensor:
        """ln f_lambda contribution -tau_weak (n_fine, R) of the weak-line columns (n_weak, R)."""

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
    def _strong(self) -> dict:
        """Strong lines (linelist.STRONG_LINES, then Paschen): per-line data, and their windows
        padded per window size (a class) so profiles broadcast without gathers; each window column
        has a fine-grid index (where it is added) and a smooth taper."""
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
            classes.append((ids, off, window_taper(np.abs(off) / w)))
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

    def _tensors(self, dtype, device) -> dict:
        """The fixed tensors of the shared stages plus the version's, per (dtype, device)."""
        key = (dtype, str(device))
        if key not in self._cache:
            t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)
            st = self._strong
            T = {
                **self._stage_tensors(dtype, device),
                "s_classes": [
                    (torch.as_tensor(ids, device=device), t(off[..., None] ** 2), t(taper[..., None]))
                    for ids, off, taper in st["classes"]
                ],
                "s_fine": torch.as_tensor(st["fine_index"], device=device),
                **{k: t(v) for k, v in st.items() if k not in ("classes", "fine_index")},
            }
            self._model_tensors(T, dtype, device)
            self._cache[key] = T
        return self._cache[key]

    # ---- the forward model ---------------------------------------------------------------------
    def _log_continuum_nodes(self, teff: torch.Tensor) -> torch.Tensor:
        """ln Planck f_lambda(Teff) relative to 8000 A on the continuum nodes (B, k): node j at fine
        pixel NODE_STEP j, the last one at or beyond the red end."""
        n_blocks = -(-self.fine_wave.size // self.NODE_STEP)
        pos = torch.arange(n_blocks + 1, dtype=teff.dtype, device=teff.device) * self.NODE_STEP
        coarse = self.config.wave_min * torch.exp((pos + 0.5) * self.dln)
        x = HC_OVER_K / (coarse[None, :] * teff[:, None])
        x0 = HC_OVER_K / (8000.0 * teff[:, None])
        return -5 * torch.log(coarse / 8000.0) + torch.log(torch.expm1(x0)) - torch.log(torch.expm1(x))

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
        weak (n_weak, R) and profiles (n_cols, R); the continuum nodes lncont (k, R_c) enter
        the first R_c <= R columns (tangents along parameters other than Teff have none). Linear in
        its inputs, so the same call maps tangents. S (A) x area-normalised profile (1/A) is an
        optical depth."""
        ln = self._weak_ln(weak, T)
        ln.index_add_(0, T["s_fine"], profiles, alpha=-1.0)
        # linear interpolation between nodes NODE_STEP pixels apart: one broadcast, no gathers
        n, n_c, step = ln.shape[0], lncont.shape[1], self.NODE_STEP
        w = torch.arange(step, dtype=ln.dtype, device=ln.device)[None, :, None] / step
        cont = torch.lerp(lncont[:-1, None, :], lncont[1:, None, :], w).flatten(0, 1)[:n]
        ln[:, :n_c] += cont
        return ln

    def spectrum(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised PFS flux (B, n_pix) and fmed0 (B,): the median f_lambda of the arm, in
        erg s^-1 cm^-2 A^-1, for the same star scaled to HSC-i AB magnitude 0."""
        shape = theta.shape[:-1]
        theta = theta.reshape(-1, 4)
        T = self._tensors(theta.dtype, theta.device)
        flux, fmed0 = self._normalised(self.fine_flux(theta, T), T)
        return flux.reshape(*shape, -1), fmed0.reshape(shape)

    def fine_flux(self, theta: torch.Tensor, T=None) -> torch.Tensor:
        """f_lambda (n_fine, B) on the fine grid (:attr:`fine_wave`, vacuum A) for theta (B, 4),
        relative to the continuum at 8000 A: what a model grid written from this simulator holds."""
        T = T or self._tensors(theta.dtype, theta.device)
        law = self._star_laws(theta, T)
        lncont = self._log_continuum_nodes(theta[:, 0])
        return torch.exp(self._ln_fine(self._weak_columns(law, T), lncont.T, self._profiles(law, T), T))

    def flux(self, theta: torch.Tensor) -> torch.Tensor:
        """Median-normalised PFS flux (..., n_pix) for theta (..., 4); differentiable."""
        return self.spectrum(theta)[0]

    # ---- the Jacobian --------------------------------------------------------------------------
    def _law_jvps(self, theta: torch.Tensor, T) -> tuple[dict, dict, torch.Tensor, torch.Tensor]:
        """The star laws (B, L), their derivatives along each parameter (4, B, L), the continuum
        nodes (B, k) and their Teff derivative (B, k), by forward-mode autodiff. The laws take
        ONE dual pass: the stars are independent, so the batch is repeated four times with tangent
        e_k on block k (one pass of 4B stars costs less than four passes of B)."""
        import torch.autograd.forward_ad as fwad

        n_b = theta.shape[0]
        tangent = torch.eye(4, dtype=theta.dtype, device=theta.device).repeat_interleave(n_b, 0)
        with fwad.dual_level():
            out = self._star_laws(fwad.make_dual(theta.repeat(4, 1), tangent), T)
            pairs = {name: fwad.unpack_dual(v) for name, v in out.items()}
            cont = fwad.unpack_dual(
                self._log_continuum_nodes(fwad.make_dual(theta[:, 0], torch.ones_like(theta[:, 0])))
            )
        law = {name: p.primal[:n_b] for name, p in pairs.items()}
        return law, {name: p.tangent.view(4, n_b, -1) for name, p in pairs.items()}, cont.primal, cont.tangent

    def jacobian(self, theta: torch.Tensor, method: str = "laws") -> tuple[torch.Tensor, torch.Tensor]:
        """Flux (B, n_pix) and J = d flux / d theta (B, n_pix, 4) (units: per K, per dex, per dex,
        per dex). Use float64 for Fisher work.

        ``method="laws"`` (default): forward-mode autodiff through the per-star physical laws
        (small tensors), then the chain rule through the fixed fine-grid stages written out
        (profiles, the linear weak-line/continuum/LSF/pixel maps, exp, smoothed median), the primal
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
            self._weak_jvp(law, dlaw, T),
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
