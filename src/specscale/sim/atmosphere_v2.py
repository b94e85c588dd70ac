"""Simulator version 2: a synthetic atmosphere with per-line Saha-Boltzmann physics.

Same interface, grid, continuum, instrument stages and Jacobian machinery as version 1
(:mod:`specscale.sim.atmosphere`, still selectable: ``atmosphere: {version: 1}`` or no ``version``
key), but the line opacity comes from a small LTE photosphere evaluated per star, line by line.
Select it with ``atmosphere: {version: 2, ...}``. All steps are smooth in (Teff, log g, [M/H],
[alpha/M]) over the whole prior (no clamps, no table look-ups; iterations have a fixed count).

1. **One-layer photosphere** per star (:mod:`specscale.sim.photosphere`): electron and hydrogen
   pressures from hydrostatics and a Saha charge balance over 16 electron donors, ionisation
   fractions per species, molecular partial pressures (CO, CN, TiO, VO) in equilibrium.
2. **Per-line populations and strengths.** Each line (weak pseudo-lines and the 45 strong lines)
   has its own species, stage (I/II), lower excitation potential chi (eV, continuous) and
   reference strength. Line-to-continuum opacity (Gray eq. 16.x, ell/kappa):
       S ~ A_X 10^([M/H] + alpha [alpha/M]) f_stage(P_e, T) 10^(-theta chi) / (P_e theta^(5/2) 10^(0.754 theta)),
   f_I = P_e / (P_e + Phi), f_II = Phi / (P_e + Phi) (Saha), 10^(-theta chi) (Boltzmann, constant
   partition functions). So a neutral line of a mostly ionised species is gravity-blind, the same
   line where its species is mostly neutral (cool dwarfs) weakens as 1/P_e, ion lines strengthen
   in giants - the ionisation balance moves line by line with Teff, log g and [M/H]. Strengths are
   normalised per line at a reference star (4500 K, 2.5, 0, 0): log gf is implied by
   ``log_s_ref`` (drawn from N(>S) ~ S^-``s_slope`` between ``s_min`` and ``s_max`` A).
3. **Curve of growth.** Each weak line's optical depth on the fine grid is
   S c [ G_sigma(x) + gamma L(x) ], a Gaussian core (intrinsic + turbulent width, as in version 1)
   plus a damping wing L(x) = 1 / (pi (x^2 + x_c^2)) (the Voigt far wing gamma / (pi x^2)) within
   +- ``wing_half_A``, with c = 1 / (1 + gamma a_w) (a_w: the wing's area in its window) so the
   line's opacity area stays S: damping moves opacity from the core into the wings, as a Voigt
   profile does, rather than adding to it. f = exp(-tau) then saturates: equivalent widths grow
   linearly with S (and do not depend on gamma) for weak lines, logarithmically when the core
   saturates, as sqrt(S gamma) on the damping part (Gray ch. 16). Strong lines use pseudo-Voigt
   profiles (area S, as version 1's) with an intrinsic core of ``strong_core_kms`` (thermal plus
   microturbulent widths are 2-3 km/s; version 1's 8 km/s made the saturated cores so wide that
   the damping part of the curve of growth, and with it Mg I 8807's gravity response, never
   showed). Version 2's strong-line table differs from version 1's only for Mg I 8807
   (:data:`specscale.sim.lines._STRONG_V2`).
4. **Damping per line** (Unsold van der Waals, Gray eq. 11.x: gamma_6 ~ C_6^(2/5) T^(3/10) P_H):
   gamma = gamma_ref (P_H / P_H,ref) (T / T_ref)^0.3, gamma_ref larger for high-excitation lines;
   Paschen (linear Stark, Holtsmark) gamma ~ P_e^(2/3).
5. **Molecular lines** (pseudo lines red of the band heads) and the smooth band envelopes scale
   with p_mol / (P_H kappa) from the photosphere's molecular equilibrium: TiO and VO (normalised
   at 3761 K and 3652 K) switch on steeply in cool stars and grow with P (dwarfs), CN (free C ~
   K_CO / P_H once CO has formed) is stronger in giants.
6. Continuum, turbulence, LSF, pixel averaging, the smoothed median and the Jacobian's chain rule:
   shared with version 1 (:mod:`specscale.sim.atmosphere_base`).

Knobs (:class:`AtmosphereV2Config`): ``gravity_scale``, ``t_form``, ``t_mol``, ``ln_p0``,
``log_k0``, ``s_min``/``s_max``/``s_slope``, ``weak_lines_per_A``, ``wing_half_A``,
``strong_core_kms`` and version 1's grid, broadening and turbulence knobs. On the CPU the per-line
map runs through scipy's CSR kernel (:func:`specscale.sim.numerics.sparse_operator`), elsewhere
through torch's.
Not modelled: NLTE, a real line list, [C/M] (and the photosphere's own omissions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from specscale.core.config import check_fields
from specscale.core.vocab import LOGG
from specscale.sim.atmosphere_base import AtmosphereBase
from specscale.sim.instrument import C_KMS, Instrument, air_to_vacuum
from specscale.sim.linelist import BAND_HEADS
from specscale.sim.lines import MOLECULES, SPECIES, pseudo_lines_v2, strong_line_data
from specscale.sim.numerics import SparseMatmul, band_envelope, pseudo_voigt_terms, sparse_operator, window_taper
from specscale.sim.photosphere import LN10, photosphere, species_tensors

# Reference stars (Teff, log g, [M/H], [alpha/M]): line strengths are given at REF (atoms, CN,
# damping widths); TiO and VO at cool stars where their bands are of order one.
REF_STARS = ((4500.0, 2.5, 0.0, 0.0), (3761.0, 2.5, 0.0, 0.0), (3652.0, 2.5, 0.0, 0.0))
MOL_REF = {"CN": 0, "TiO": 1, "VO": 2}
ENVELOPE_CHI = 0.3  # eV, the band envelopes' mean rotational-vibrational energy


@dataclass(frozen=True)
class AtmosphereV2Config:
    """Knobs of simulator version 2 (see the module docstring)."""

    version: int = 2
    wave_min: float = 6400.0
    wave_max: float = 9000.0
    step_kms: float = 8.0
    broadening_kms: float = 8.0
    strong_core_kms: float = 4.0  # intrinsic Gaussian sigma of the strong lines' cores (km/s)
    xi_dwarf_kms: float = 2.0
    xi_giant_kms: float = 3.0  # calibrated (version 1: 12): a global, linear log g signal
    weak_lines_per_A: float = 1.5
    linelist_seed: int = 20261202
    gravity_scale: float = 0.44  # calibrated: the study's Fisher ceilings (README)
    t_form: float = 0.9  # line-forming temperature / Teff
    t_mol: float = 0.8  # molecule-forming temperature / Teff
    ln_p0: float = 6.77  # zero point of ln P_H (dyn cm^-2) in the hydrostatic law
    log_k0: float = 12.0  # zero point of log10 K_p (dyn cm^-2) of the dissociation constants
    s_min: float = 2e-3  # weak-line reference strengths (A)
    s_max: float = 1.0  # calibrated (version 1: 0.25): more saturated lines
    s_slope: float = 0.8
    ion_line_scale: float = 1.0  # multiplies the share of ion lines among the weak lines (lines.WEAK_MIX)
    damping_p_exp: float = 1.0  # gamma ~ P_H^damping_p_exp (Unsold: 1; > 1: wings form deeper in dwarfs)
    wing_half_A: float = 2.0  # half-width of the weak lines' damping-wing window (A)
    wing_min_s: float = 0.0  # A: weak lines with a smaller reference strength get no damping wing (0: all)
    median_width: float = 0.005

    def __post_init__(self):
        check_fields(self)
        if self.version != 2 or isinstance(self.version, bool):
            raise ValueError(f"AtmosphereV2Config is version 2, got version={self.version!r}")
        if not self.wave_min < 7000.0 or not self.wave_max > 8900.0:
            raise ValueError("atmosphere wave_min/wave_max must cover the PFS red arm (7100-8850 A)")
        for name in (
            "step_kms",
            "broadening_kms",
            "strong_core_kms",
            "weak_lines_per_A",
            "t_form",
            "t_mol",
            "s_min",
            "s_slope",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"atmosphere.{name} must be positive, got {getattr(self, name)!r}")
        if not self.s_min < self.s_max:
            raise ValueError("atmosphere.s_min must be below atmosphere.s_max")
        if not 0 <= self.ion_line_scale <= 5:
            raise ValueError(f"atmosphere.ion_line_scale must be in 0..5, got {self.ion_line_scale!r}")
        if not self.wing_min_s >= 0:
            raise ValueError(f"atmosphere.wing_min_s must be >= 0, got {self.wing_min_s!r}")
        if not 0.5 <= self.wing_half_A <= 20.0:
            raise ValueError(f"atmosphere.wing_half_A must be in 0.5..20 A, got {self.wing_half_A!r}")


class SyntheticAtmosphereV2(AtmosphereBase):
    """Simulator version 2 (module docstring); the shared stages are :class:`AtmosphereBase`'s."""

    def __init__(self, config: AtmosphereV2Config | None = None, instrument: Instrument | None = None):
        super().__init__(config or AtmosphereV2Config(), instrument)

    # ---- fixed data ---------------------------------------------------------------------------
    @cached_property
    def line_list(self) -> dict[str, np.ndarray]:
        c = self.config
        ll = pseudo_lines_v2(
            c.linelist_seed,
            c.weak_lines_per_A,
            c.wave_min - 20,
            c.wave_max + 20,
            c.s_min,
            c.s_max,
            c.s_slope,
            c.ion_line_scale,
        )
        ll["lam"] = air_to_vacuum(ll["wave"])
        return ll

    @cached_property
    def _line_matrix(self):
        """Sparse (n_fine, 3 L + 3): per line a narrow and a broad (turbulent) Gaussian core of unit
        area, a damping wing 1/(pi (x^2 + x_c^2)) (1/A), then the three molecular band envelopes."""
        from scipy import sparse

        wave, n_l = self.fine_wave, self.line_list["lam"].size
        rows, cols, vals = self._core_entries()
        for r, c, v in (self._wing_entries(), self._envelope_entries()):
            rows.append(r), cols.append(c + 2 * n_l), vals.append(v)
        m = sparse.coo_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(wave.size, 3 * n_l + len(MOLECULES)),
        )
        return m.tocsr()

    def _line_positions(self) -> np.ndarray:
        """Each line's centre as a fractional fine-grid index."""
        return np.log(self.line_list["lam"] / self.config.wave_min) / self.dln - 0.5

    def _core_entries(self) -> tuple[list, list, list]:
        """(rows, columns, values) of the narrow (columns 0..L-1) and broad (L..2L-1) Gaussian
        cores, each of unit area (values 1/A)."""
        c, wave = self.config, self.fine_wave
        pos, n_f = self._line_positions(), wave.size
        n_l = pos.size
        dlam = wave * self.dln
        rows, cols, vals = [], [], []
        line = np.arange(n_l)[:, None]
        for j, sig_kms in enumerate((c.broadening_kms, math.hypot(c.broadening_kms, self.xi_max_kms))):
            sig_px = sig_kms / c.step_kms
            reach = int(math.ceil(3.5 * sig_px))
            idx = np.floor(pos).astype(int)[:, None] + np.arange(-reach, reach + 2)[None, :]
            w = np.exp(-0.5 * ((idx - pos[:, None]) / sig_px) ** 2)
            w /= w.sum(axis=1, keepdims=True)
            ok = (idx >= 0) & (idx < n_f)
            rows.append(idx[ok]), cols.append(np.broadcast_to(j * n_l + line, idx.shape)[ok])
            vals.append((w / dlam[np.clip(idx, 0, n_f - 1)])[ok])
        return rows, cols, vals

    def _wing_entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, line index, values 1/A) of the tapered damping wings within +- wing_half_A."""
        c, wave, lam = self.config, self.fine_wave, self.line_list["lam"]
        pos, n_f = self._line_positions(), wave.size
        half = int(math.ceil(c.wing_half_A / (wave[0] * self.dln)))
        idx = np.round(pos).astype(int)[:, None] + np.arange(-half, half + 1)[None, :]
        ok = (idx >= 0) & (idx < n_f)
        x = wave[np.clip(idx, 0, n_f - 1)] - lam[:, None]
        xc = lam[:, None] * c.broadening_kms / C_KMS
        r = np.abs(x) / c.wing_half_A
        # wings only where they can matter: atomic lines with S_ref >= wing_min_s (a weaker line's
        # wing optical depth S gamma / (pi x^2) is < 1e-3 beyond 0.5 A)
        strong_enough = (self.line_list["mol"] < 0) & (10 ** self.line_list["log_s_ref"] >= c.wing_min_s)
        ok &= (r < 1) & strong_enough[:, None]
        line = np.broadcast_to(np.arange(lam.size)[:, None], idx.shape)
        return idx[ok], line[ok], (window_taper(r) / (np.pi * (x**2 + xc**2)))[ok]

    def _envelope_entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, L + molecule index, values) of the molecular band envelopes (unit strength)."""
        wave, n_l = self.fine_wave, self.line_list["lam"].size
        names = [m[0] for m in MOLECULES]
        rows, cols, vals = [], [], []
        for mol, head, amp, length in BAND_HEADS:
            env = band_envelope(wave, air_to_vacuum(head), amp, length)
            keep = np.flatnonzero(env > 1e-7)
            rows.append(keep), cols.append(np.full(keep.size, n_l + names.index(mol))), vals.append(env[keep])
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)

    def _model_tensors(self, T: dict, dtype, device) -> None:
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=float), dtype=dtype, device=device)
        ix = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long, device=device)
        m = self._line_matrix
        ll, st = self.line_list, strong_line_data()
        n_sp = len(SPECIES)
        n_l, n_pop = ll["mol"].size, 2 * n_sp
        # per-line log strength = feat @ w_M^T: features [ln A f_stage (2 n_sp), ln p_mol/P_H (3),
        # ln10 theta, ln10 theta_mol, ln continuum]; one row per weak line
        w_m = np.zeros((n_l, n_pop + len(MOLECULES) + 3))
        is_mol = ll["mol"] >= 0
        r = np.arange(n_l)
        w_m[r[~is_mol], (ll["stage"] * n_sp + ll["species"])[~is_mol]] = 1.0
        w_m[r[is_mol], n_pop + ll["mol"][is_mol]] = 1.0
        w_m[~is_mol, -3] = -ll["chi"][~is_mol]
        w_m[is_mol, -2] = -ll["chi"][is_mol]
        w_m[:, -1] = -1.0
        T.update(
            lines_m=sparse_operator(-m, dtype, device),  # negated: ln f = -tau
            lines_mt=sparse_operator(-m.T, dtype, device),
            **species_tensors(dtype, device),
            w_M=t(w_m),
            w_ln_gamma=t(LN10 * ll["log_gamma_ref"]),
            wing_area=t(m[:, 2 * n_l : 3 * n_l].T @ (self.fine_wave * self.dln)),  # A x (1/A) per line
            s_pop=ix(st["stage"] * n_sp + st["species"]),
            s_chi=t(st["chi"]),
            log_s=t(st["log_s"]),  # version 2's strong-line table (lines._STRONG_V2)
            log_gamma=t(st["log_gamma"]),
        )
        mol_ref = np.array([MOL_REF[m[0]] for m in MOLECULES])
        ref = self._log_features(torch.tensor(REF_STARS, dtype=dtype, device=device), T)
        line_ref = ix(np.where(is_mol, mol_ref[np.maximum(ll["mol"], 0)], 0))
        l_ref = (ref["feat"] @ T["w_M"].T)[line_ref, torch.arange(n_l, device=device)]
        T["w_const"] = t(LN10 * ll["log_s_ref"]) - l_ref
        T["env_L_ref"] = ref["env"][ix(mol_ref), torch.arange(len(MOLECULES), device=device)]
        T["s_L_ref"] = ref["strong"][0]
        T["ln_ph_ref"], T["ln_pe_ref"], T["ln_t_ref"] = ref["ln_ph"][0], ref["ln_pe"][0], ref["ln_t"][0]

    # ---- physics ------------------------------------------------------------------------------
    def photosphere(self, theta: torch.Tensor, T=None) -> dict[str, torch.Tensor]:
        """The one-layer LTE photosphere of each star (:func:`specscale.sim.photosphere.photosphere`)."""
        theta = theta.reshape(-1, 4)
        return photosphere(theta, self.config, T or self._tensors(theta.dtype, theta.device))

    def _log_features(self, theta: torch.Tensor, T) -> dict[str, torch.Tensor]:
        """Per star, small: the features whose linear map ``w_M`` gives each weak line's
        ln (line / continuum opacity) up to a per-line constant, ``feat`` (B, n_feat); the same for
        the band envelopes (B, 3) and the strong lines (B, n_strong); ln P_H, ln P_e, ln T (B,)."""
        p = self.photosphere(theta, T)
        cont = p["ln_pe"] + p["h"]  # ln H- opacity per H atom
        th, th_m = p["theta"][:, None], p["theta_mol"][:, None]
        pop = p["ln_a"].repeat(1, 2) + p["ln_f"]  # ln A_X f_stage, (B, 2 n_sp)
        feat = torch.cat([pop, p["ln_mol"], LN10 * th, LN10 * th_m, cont[:, None]], 1)
        env = p["ln_mol"] - LN10 * th_m * ENVELOPE_CHI - cont[:, None]
        strong = pop[:, T["s_pop"]] - LN10 * th * T["s_chi"] - cont[:, None]
        return {"feat": feat, "env": env, "strong": strong, "ln_ph": p["ln_ph"], "ln_pe": p["ln_pe"], "ln_t": p["ln_t"]}

    def _star_laws(self, theta: torch.Tensor, T) -> dict[str, torch.Tensor]:
        """Everything per star that the line opacity needs (all small): ``feat`` (B, n_feat),
        ``ln_g`` (B,: ln of the damping-width factor), ``u`` (B,: turbulence interpolation weight),
        ``env`` (B, 3: band-envelope strengths) and the strong lines' pseudo-Voigt coefficients."""
        lf = self._log_features(theta, T)
        d_t = lf["ln_t"] - T["ln_t_ref"]
        u = (self.turbulence_kms(theta[:, LOGG]) / self.xi_max_kms) ** 2
        a_g, c_g, a_l, c_l = self._strong_v2(theta, lf, T)
        return {
            "feat": lf["feat"],
            "ln_g": self.config.damping_p_exp * (lf["ln_ph"] - T["ln_ph_ref"]) + 0.3 * d_t,
            "u": u,
            "env": torch.exp(lf["env"] - T["env_L_ref"]),
            "a_g": a_g,
            "c_g": c_g,
            "a_l": a_l,
            "c_l": c_l,
        }

    @staticmethod
    def _strength_columns(sl, T):
        """Weak-line strengths S (L, B), damping widths gamma (L, B) and core shares
        c = 1 / (1 + gamma a_w) (L, B), column layout. The damping wing moves opacity out of the
        core rather than adding to it: core S c plus wing S gamma c L(x) keep the line's area S
        (a_w: the wing's area within its window), so a weak line's equivalent width does not
        depend on gamma (the linear part of the curve of growth), a saturated one's does."""
        s = torch.exp(T["w_const"][:, None] + T["w_M"] @ sl["feat"].T)
        gamma = torch.exp(T["w_ln_gamma"][:, None] + sl["ln_g"][None, :])
        return s, gamma, 1.0 / (1.0 + gamma * T["wing_area"][:, None])

    def _weak_columns(self, law, T) -> torch.Tensor:
        """Weak-line map inputs (3 L + 3, B): narrow and broad cores, wings, band envelopes."""
        s, gamma, core = self._strength_columns(law, T)
        u, sc = law["u"][None, :], s * core
        return torch.cat([(1 - u) * sc, u * sc, sc * gamma, law["env"].T], 0)

    def _weak_jvp(self, sl, d, T) -> torch.Tensor:
        """The weak-line columns and their tangents (3 L + 3, 5 B) by the chain rule from the
        per-star laws ``sl`` and their tangents ``d`` (4, B, ...), written in place by broadcasting
        (no repeated copies)."""
        n_b = sl["u"].shape[0]
        s, gamma, core = self._strength_columns(sl, T)
        n_l = s.shape[0]
        weak = torch.empty(3 * n_l + len(MOLECULES), 5, n_b, dtype=s.dtype, device=s.device)
        u, du, dg = sl["u"], d["u"].view(4, n_b), d["ln_g"].view(4, n_b)
        dls = (T["w_M"] @ d["feat"].reshape(4 * n_b, -1).T).view(n_l, 4, n_b)  # d ln S
        narrow, broad, wing = weak[:n_l], weak[n_l : 2 * n_l], weak[2 * n_l : 3 * n_l]
        sc = s.mul_(core)  # the core's share, S c; d ln(S c) = d ln S - (1 - c) d ln gamma
        torch.mul(sc, 1 - u, out=narrow[:, 0])
        torch.mul(sc, u, out=broad[:, 0])
        torch.mul(sc, gamma, out=wing[:, 0])
        c3 = core[:, None, :]
        # wing S gamma c: d ln = d ln S + c d ln gamma
        torch.mul(torch.addcmul(dls, c3, dg), wing[:, None, 0], out=wing[:, 1:])
        dsc = dls.sub_((1 - c3) * dg).mul_(sc[:, None, :])  # d (S c)
        b1 = broad[:, 1:]
        torch.mul(dsc, u, out=b1).addcmul_(sc[:, None, :], du)  # d(u S c) = u d(S c) + S c du
        torch.sub(dsc, b1, out=narrow[:, 1:])  # d((1 - u) S c) = d(S c) - d(u S c)
        weak[3 * n_l :, 0] = sl["env"].T
        weak[3 * n_l :, 1:] = d["env"].view(4, n_b, -1).permute(2, 0, 1)
        return weak.view(weak.shape[0], -1)

    def _strong_v2(self, theta, lt, T):
        """Pseudo-Voigt coefficients of the strong lines (as version 1's) from the per-line laws."""
        c = self.config
        hyd = T["hydrogen"]
        d_ph = (lt["ln_ph"] - T["ln_ph_ref"])[:, None]
        d_pe = (lt["ln_pe"] - T["ln_pe_ref"])[:, None]
        d_t = (lt["ln_t"] - T["ln_t_ref"])[:, None]
        s = torch.exp(LN10 * T["log_s"] + lt["strong"] - T["s_L_ref"])
        ln_gamma = LN10 * T["log_gamma"] + (1 - hyd) * (c.damping_p_exp * d_ph + 0.3 * d_t) + hyd * (2.0 / 3.0) * d_pe
        gamma = torch.exp(ln_gamma)
        sig_kms = torch.sqrt(c.strong_core_kms**2 + self.turbulence_kms(theta[:, LOGG]) ** 2)
        f_g = (2.3548200450309493 / C_KMS) * T["lam"] * sig_kms[:, None]
        return pseudo_voigt_terms(s, f_g, 2.0 * gamma)

    def _weak_ln(self, weak: torch.Tensor, T) -> torch.Tensor:
        return SparseMatmul.apply(weak.contiguous(), T["lines_m"], T["lines_mt"])  # the map is negated
