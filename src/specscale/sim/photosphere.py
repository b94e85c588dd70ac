"""The one-layer LTE photosphere of simulator version 2 (:mod:`specscale.sim.atmosphere_v2`):
electron and hydrogen pressures, ionisation fractions and molecular partial pressures per star.
Every step is smooth in (Teff K, log g dex, [M/H] dex, [alpha/M] dex) over the whole prior (no
clamps, no table look-ups; the iterations have a fixed count).

1. **Pressures** at the line-forming temperature T = ``t_form`` Teff (theta = 5040 / T).
   Electron pressure P_e and hydrogen pressure P_H follow from
   - hydrostatic equilibrium with an H- continuum, P_g ~ g / kappa, and the H- opacity per H atom
     kappa ~ P_e theta^(5/2) 10^(0.754 theta) (Gray ch. 8-9: the H- bound-free Saha factor), so
     ln P_H = ``ln_p0`` + ln g_eff - ln P_e - h(theta), P_H = P_g / 1.1 (helium);
   - charge conservation with 16 electron donors (H, C, N, O, Na, Mg, Al, Si, K, Ca, Ti, V, Cr, Mn,
     Fe, Ni), each ionised according to the Saha equation (Gray eq. 1.20-1.23),
         N_II / N_I = Phi_j(T) / P_e,  Phi_j = 0.6665 (u_II/u_I) T^(5/2) 10^(-theta chi_ion,j),
     P_e = P_H sum_j A_j Phi_j / (P_e + Phi_j),
   solved for ln P_e by 8 Newton steps from a smooth guess (the derivative is in [2, 3], so the
   iterate converges fast and stays smooth). In the weakly ionised limit this is Gray's
   P_g ~ g^(2/3) Z^(-1/3), P_e ~ g^(1/3) Z^(1/3); metal-poor warm stars get their electrons from
   hydrogen, so there P_e no longer follows Z, and the gravity response changes over the prior.
   ``gravity_scale`` multiplies log g - 2.5 inside g_eff.
2. **Molecules in equilibrium** at T_mol = ``t_mol`` Teff, dissociation constants
   K_AB = 10^(``log_k0``) theta^(-3/2) 10^(-theta D0) (Gray's form; D0: CO 11.09, CN 7.76,
   TiO 6.87, VO 6.44 eV): CO first (a quadratic, solved in a cancellation-free form) fixes free C
   and O; CN = C_free N / K_CN, TiO = Ti_I O_free / K_TiO, VO = V_I O_free / K_VO, each saturating
   as its metal runs out (x / (1 + x)). ([alpha/M] does not enter the molecular O, which keeps C/O
   at its solar 0.55: the C/O -> 1 carbon-star branch is outside the model.)

Not modelled: depth dependence (one layer), H2, second ionisation, T-dependent partition functions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from specscale.sim.atmosphere_base import LOGG_REF
from specscale.sim.lines import CO_D0, MOLECULES, SPECIES, SPECIES_INDEX

LN10 = math.log(10.0)
NEWTON_STEPS = 8  # of the charge balance; fixed, so the pressures stay smooth in the parameters


def species_tensors(dtype, device) -> dict[str, torch.Tensor]:
    """Per species (lines.SPECIES order): ``sp_log_a`` (log number abundance / H), ``sp_chi``
    (ionisation energy, eV), ``sp_ln_u`` (ln 0.6665 u_II / u_I), ``sp_alpha``, ``sp_metal`` (0 for H)."""
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=float), dtype=dtype, device=device)
    return {
        "sp_log_a": t([s.log_eps - 12.0 for s in SPECIES]),
        "sp_chi": t([s.chi_ion for s in SPECIES]),
        "sp_ln_u": t([math.log(0.6665 * s.u_ratio) for s in SPECIES]),
        "sp_alpha": t([s.alpha for s in SPECIES]),
        "sp_metal": t([s.name != "H" for s in SPECIES]),
    }


def photosphere(theta: torch.Tensor, c, T) -> dict[str, torch.Tensor]:
    """The photosphere of each star of theta (B, 4) under version 2's config ``c``, with the
    species tensors of ``T`` (:func:`species_tensors`): ``ln_pe``, ``ln_ph`` (ln dyn cm^-2),
    ``theta`` (5040 / T), ``ln_t``, ``h`` (ln of the H- opacity per H atom and P_e),
    ``ln_a`` (B, n_species, ln number abundance / H), ``ln_phi`` (ln Saha Phi),
    ``ln_f`` (B, 2 n_species: ln fraction in stage I, then stage II), ``ln_mol`` (B, 3:
    ln p_mol / P_H of CN, TiO, VO) and ``theta_mol``."""
    teff, logg, mh, am = theta.unbind(-1)
    temp = c.t_form * teff
    th = 5040.0 / temp
    ln_t = torch.log(temp)
    ln_a = LN10 * (T["sp_log_a"] + mh[:, None] * T["sp_metal"] + am[:, None] * T["sp_alpha"])
    ln_phi = T["sp_ln_u"] + 2.5 * ln_t[:, None] - LN10 * th[:, None] * T["sp_chi"]
    h = 2.5 * torch.log(th) + 0.754 * LN10 * th
    ln_g = LN10 * (LOGG_REF + c.gravity_scale * (logg - LOGG_REF))
    k = c.ln_p0 + ln_g - h - math.log(1.1)  # ln P_H = k - ln P_e
    y = _ln_electron_pressure(k, ln_a, ln_phi)
    ln_ph = k - y
    ln_f = torch.cat([-F.softplus(ln_phi - y[:, None]), -F.softplus(y[:, None] - ln_phi)], -1)
    th_m = 5040.0 / (c.t_mol * teff)
    return {
        "ln_pe": y,
        "ln_ph": ln_ph,
        "theta": th,
        "ln_t": ln_t,
        "h": h,
        "ln_a": ln_a,
        "ln_phi": ln_phi,
        "ln_f": ln_f,
        "ln_mol": _ln_molecules(th_m, ln_ph, ln_a, ln_f, am, c, T),
        "theta_mol": th_m,
    }


def _ln_electron_pressure(k, ln_a, ln_phi) -> torch.Tensor:
    """ln P_e (B,) solving the charge balance F(y) = 2y - k - ln sum_j A_j Phi_j / (e^y + Phi_j) = 0
    (y = ln P_e, k = ln P_H + y from hydrostatics) by Newton steps from a smooth guess."""
    y_weak = (k + torch.logsumexp(ln_a + ln_phi, -1)) / 3.0
    y_full = (k + torch.logsumexp(ln_a, -1)) / 2.0
    y = -torch.logaddexp(-y_weak, -y_full)
    for _ in range(NEWTON_STEPS):
        lg = ln_a + ln_phi - torch.logaddexp(y[:, None], ln_phi)
        ln_s = torch.logsumexp(lg, -1)
        w = torch.exp(lg - ln_s[:, None])
        dfdy = 2.0 + (w * torch.sigmoid(y[:, None] - ln_phi)).sum(-1)
        y = y - (2.0 * y - k - ln_s) / dfdy
    return y


def _ln_molecules(th_m, ln_ph, ln_a, ln_f, am, c, T) -> torch.Tensor:
    """ln p_mol / P_H (B, 3) of CN, TiO, VO in equilibrium at theta_mol ``th_m``, CO first."""
    ln_k = lambda d0: LN10 * (c.log_k0 - 1.5 * torch.log10(th_m) - th_m * d0) - ln_ph
    i_c, i_n, i_o = SPECIES_INDEX["C"], SPECIES_INDEX["N"], SPECIES_INDEX["O"]
    a_c = torch.exp(ln_a[:, i_c])
    a_o = torch.exp(ln_a[:, i_o] - LN10 * am * T["sp_alpha"][i_o])  # no alpha: C/O stays solar
    d = a_o - a_c
    ln_kco = ln_k(CO_D0)
    kco = torch.exp(ln_kco)
    # free carbon c: c (c + d) = k_CO (A_C - c), the root without cancellation
    root = d + kco + torch.sqrt((d + kco) ** 2 + 4 * kco * a_c)
    ln_cfree = math.log(2.0) + ln_kco + torch.log(a_c) - torch.log(root)
    ln_ofree = torch.log(torch.exp(ln_cfree) + d)
    mol = []
    for name, d0 in MOLECULES:
        if name == "CN":
            ln_r = ln_a[:, i_n] - ln_k(d0)
            mol.append(ln_cfree - F.softplus(-ln_r))
        else:
            i_m = SPECIES_INDEX["Ti" if name == "TiO" else "V"]
            ln_q = ln_ofree - ln_k(d0)
            mol.append(ln_a[:, i_m] + ln_f[:, i_m] - F.softplus(-ln_q))
    return torch.stack(mol, -1)
