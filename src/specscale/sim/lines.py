"""Line data of simulator version 2 (:mod:`specscale.sim.atmosphere_v2`): species, per-line
atomic data of the strong lines, and a seeded pseudo list of weak atomic and molecular lines, each
with its own species, ionisation stage, lower excitation potential, reference strength and
damping width.

Wavelengths are AIR Angstrom (the atmosphere converts them to vacuum). Abundances are solar
(Asplund et al. 2009, log eps, H = 12); ionisation energies and dissociation energies are the
textbook values (Gray, "The Observation and Analysis of Stellar Photospheres", 3rd ed., App. D);
u1/u0 are representative partition-function ratios (held constant in T).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specscale.sim.linelist import BAND_HEADS, PASCHEN, PASCHEN_LOG_GAMMA_REF, PASCHEN_LOG_S_REF, STRONG_LINES


@dataclass(frozen=True)
class Species:
    name: str
    log_eps: float  # solar abundance, log eps (H = 12)
    chi_ion: float  # first ionisation energy, eV
    u_ratio: float  # partition-function ratio u_II / u_I
    alpha: bool  # scales with [alpha/M]


SPECIES = (
    Species("H", 12.00, 13.598, 0.5, False),
    Species("C", 8.43, 11.260, 0.67, False),
    Species("N", 7.83, 14.534, 0.5, False),
    Species("O", 8.69, 13.618, 0.44, True),
    Species("Na", 6.24, 5.139, 0.5, False),
    Species("Mg", 7.60, 7.646, 2.0, True),
    Species("Al", 6.45, 5.986, 0.17, False),
    Species("Si", 7.51, 8.152, 0.6, True),
    Species("K", 5.03, 4.341, 0.5, False),
    Species("Ca", 6.34, 6.113, 2.0, True),
    Species("Ti", 4.95, 6.828, 1.7, True),
    Species("V", 3.93, 6.746, 0.8, False),
    Species("Cr", 5.64, 6.767, 0.8, False),
    Species("Mn", 5.43, 7.434, 1.1, False),
    Species("Fe", 7.50, 7.902, 1.3, False),
    Species("Ni", 6.22, 7.640, 0.35, False),
)
SPECIES_INDEX = {s.name: i for i, s in enumerate(SPECIES)}

# Molecules: (name, dissociation energy D0 eV). Their constituents are fixed in sim.photosphere.
MOLECULES = (("CN", 7.76), ("TiO", 6.87), ("VO", 6.44))
CO_D0 = 11.09

# Lower excitation potentials (eV) and ionisation stage of the explicit strong lines of
# linelist.STRONG_LINES (same order), from the NIST atomic spectra database (rounded).
_STRONG_CHI = {
    ("Ca II", 8498.02): 1.69,
    ("Ca II", 8542.09): 1.70,
    ("Ca II", 8662.14): 1.69,
    ("Na I", 8183.26): 2.10,
    ("Na I", 8194.82): 2.10,
    ("K I", 7664.90): 0.00,
    ("K I", 7698.96): 0.00,
    ("Mg I", 8806.76): 4.35,
    ("Mg II", 7877.13): 10.0,
    ("Mg II", 7896.37): 10.0,
    ("Si I", 7405.77): 5.61,
    ("Si I", 7423.50): 5.62,
    ("Si I", 8728.01): 6.18,
    ("Si I", 8742.45): 5.87,
    ("Si I", 8752.01): 5.87,
    ("Fe I", 7511.02): 4.18,
    ("Fe I", 8327.06): 2.20,
    ("Fe I", 8387.77): 2.18,
    ("Fe I", 8514.07): 2.20,
    ("Fe I", 8582.26): 2.99,
    ("Fe I", 8611.80): 2.85,
    ("Fe I", 8621.60): 2.95,
    ("Fe I", 8688.62): 2.18,
    ("Fe I", 8824.22): 2.20,
    ("Ca I", 7148.15): 2.71,
    ("Ca I", 7326.15): 2.93,
    ("Ti I", 8426.50): 0.83,
    ("Ti I", 8434.90): 0.85,
    ("O I", 7771.94): 9.15,
    ("O I", 7774.17): 9.15,
    ("O I", 7775.39): 9.15,
    ("O I", 8446.36): 9.52,
    ("C I", 7111.47): 8.64,
    ("C I", 7113.18): 8.65,
    ("C I", 7115.17): 8.64,
    ("C I", 7116.99): 8.65,
}


# Version 2's own (log10 strength A, log10 Lorentz HWHM A) at the reference star where version 1's
# table does not fit its narrower strong-line cores: Mg I 8807 sits on the damping part of the curve
# of growth (solar EW ~0.55 A, K dwarfs ~0.9 A; its van der Waals wings make it stronger in dwarfs).
_STRONG_V2 = {("Mg I", 8806.76): (0.5, -1.5)}


def strong_line_data() -> dict[str, np.ndarray]:
    """Per strong line (STRONG_LINES then Paschen P20..P12): species index, stage (0 neutral,
    1 singly ionised), lower excitation potential (eV), and version 2's reference strength
    ``log_s`` (log10 A) and Lorentz HWHM ``log_gamma`` (log10 A)."""
    sp, stage, chi, log_s, log_gamma = [], [], [], [], []
    for name, lam, _, _, ls, _, lg, _ in STRONG_LINES:
        elem, ion = name.split()
        sp.append(SPECIES_INDEX[elem])
        stage.append(0 if ion == "I" else 1)
        chi.append(_STRONG_CHI[(name, lam)])
        ls, lg = _STRONG_V2.get((name, lam), (ls, lg))
        log_s.append(ls), log_gamma.append(lg)
    for _ in PASCHEN:
        sp.append(SPECIES_INDEX["H"]), stage.append(0), chi.append(12.09)  # n = 3
        log_s.append(PASCHEN_LOG_S_REF), log_gamma.append(PASCHEN_LOG_GAMMA_REF)
    return {
        "species": np.array(sp),
        "stage": np.array(stage),
        "chi": np.array(chi, dtype=float),
        "log_s": np.array(log_s, dtype=float),
        "log_gamma": np.array(log_gamma, dtype=float),
    }


# Weak-line mix: (species or molecule, share of the lines, share of them from the ion).
WEAK_MIX = (
    ("Fe", 0.36, 0.10),
    ("Ti", 0.07, 0.15),
    ("Ni", 0.06, 0.0),
    ("Cr", 0.05, 0.10),
    ("Si", 0.05, 0.05),
    ("Ca", 0.04, 0.05),
    ("V", 0.03, 0.0),
    ("Mn", 0.02, 0.0),
    ("Mg", 0.02, 0.0),
    ("Al", 0.01, 0.0),
    ("Na", 0.01, 0.0),
    ("CN", 0.18, 0.0),
    ("TiO", 0.08, 0.0),
    ("VO", 0.02, 0.0),
)


def pseudo_lines_v2(
    seed: int,
    lines_per_A: float,
    wave_min: float,
    wave_max: float,
    s_min: float,
    s_max: float,
    slope: float,
    ion_scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """A seeded pseudo list of weak lines over [wave_min, wave_max] (air A), sorted by wavelength.

    Each line: ``wave`` (air A), ``mol`` (-1 for atoms, else the index in MOLECULES), ``species``
    (index in SPECIES; the molecule's metal for molecules), ``stage`` (0/1), ``chi`` (lower
    excitation potential, eV: continuous, uniform in 0-5.5 eV for neutrals, 1-7 eV for ions,
    0-1 eV rotational-vibrational energy for molecules), ``log_s_ref`` (log10 line opacity area in
    A at the reference star: a truncated power law N(>S) ~ S^-slope between s_min and s_max),
    ``log_gamma_ref`` (log10 Lorentz HWHM in A at the reference star; Unsold-like, larger for
    high-excitation lines). Only uniform draws through explicit inverse CDFs (stable across numpy
    versions); molecular lines crowd the red side of their band heads. ``ion_scale`` multiplies
    each species' share of ion lines (WEAK_MIX).
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    n = int(round(lines_per_A * (wave_max - wave_min)))
    shares = np.array([m[1] for m in WEAK_MIX])
    cdf = np.cumsum(shares / shares.sum())
    kind = np.minimum(np.searchsorted(cdf, rng.random(n)), len(WEAK_MIX) - 1)
    wave = wave_min + (wave_max - wave_min) * rng.random(n)
    u_head, u_len, u_ion, u_chi, u_s, u_gam = rng.random((6, n))
    mol_names = [m[0] for m in MOLECULES]
    metal_of = {"CN": "C", "TiO": "Ti", "VO": "V"}
    species = np.zeros(n, dtype=int)
    stage = np.zeros(n, dtype=int)
    mol = np.full(n, -1, dtype=int)
    chi = np.zeros(n)
    for ki, (name, _, ion_share) in enumerate(WEAK_MIX):
        sel = np.flatnonzero(kind == ki)
        if name in mol_names:
            mol[sel] = mol_names.index(name)
            species[sel] = SPECIES_INDEX[metal_of[name]]
            chi[sel] = 1.0 * u_chi[sel]
            heads = [(h, length) for (m, h, _, length) in BAND_HEADS if m == name]
            k = np.minimum((u_head[sel] * len(heads)).astype(int), len(heads) - 1)
            h = np.array([heads[i][0] for i in k])
            length = np.array([heads[i][1] for i in k])
            wave[sel] = np.minimum(h - length * np.log1p(-0.95 * u_len[sel]), wave_max)
        else:
            species[sel] = SPECIES_INDEX[name]
            ion = u_ion[sel] < ion_share * ion_scale
            stage[sel] = ion.astype(int)
            chi[sel] = np.where(ion, 1.0 + 6.0 * u_chi[sel], 5.5 * u_chi[sel])
    a, b = s_min**-slope, s_max**-slope
    log_s = np.log10((a - u_s * (a - b)) ** (-1.0 / slope))
    log_gamma = np.where(mol >= 0, -2.6 + 0.3 * u_gam, -2.3 + 0.1 * chi + 0.5 * u_gam)
    order = np.argsort(wave, kind="stable")
    out = {"wave": wave, "mol": mol, "species": species, "stage": stage, "chi": chi}
    out.update(log_s_ref=log_s, log_gamma_ref=log_gamma)
    return {k: v[order] for k, v in out.items()}
