"""Line data for the synthetic atmosphere: explicit strong lines, molecular band heads and a
seeded pseudo list of weak lines.

Strengths are line opacity areas ``S`` (Angstrom: the equivalent width the line would have if it
were optically thin) at the reference star Teff 4500 K, log g 2.5, [M/H] 0, [alpha/M] 0, scaled
for other stars by the rules in :mod:`specscale.sim.atmosphere`. Wavelengths here are AIR Angstrom
(as the physics notes list them); the atmosphere converts them to vacuum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Species classes decide how a line reacts to gravity and metallicity:
#   "neutral"   neutral minority species (Fe I, Na I, Mg I ...): line/continuum ~ independent of g
#   "majority"  majority species seen in their dominant stage (Ca II, O I, C I): ~ 1/P_e ~ g^(-1/3)
#   "hydrogen"  Paschen lines: Boltzmann-driven, Stark-broadened (~ P_e)
# columns: species, air wavelength (A), class, alpha element, log10 S_ref (A),
#          d log10 S / d theta (theta = 5040/Teff), log10 Lorentz HWHM at reference (A), window half-width (A)
STRONG_LINES = [
    ("Ca II", 8498.02, "majority", True, 0.60, 0.8, -1.9, 40.0),
    ("Ca II", 8542.09, "majority", True, 1.45, 0.8, -1.9, 40.0),
    ("Ca II", 8662.14, "majority", True, 1.20, 0.8, -1.9, 40.0),
    ("Na I", 8183.26, "neutral", False, 0.30, 1.2, -1.85, 30.0),
    ("Na I", 8194.82, "neutral", False, 0.55, 1.2, -1.85, 30.0),
    ("K I", 7664.90, "neutral", False, 0.60, 2.0, -1.85, 25.0),
    ("K I", 7698.96, "neutral", False, 0.30, 2.0, -1.85, 25.0),
    ("Mg I", 8806.76, "neutral", True, 0.05, -0.2, -1.65, 25.0),
    ("Mg II", 7877.13, "majority", True, -5.50, -9.0, -1.30, 8.0),
    ("Mg II", 7896.37, "majority", True, -5.20, -9.0, -1.30, 8.0),
    ("Si I", 7405.77, "neutral", True, -1.20, -0.8, -1.40, 8.0),
    ("Si I", 7423.50, "neutral", True, -1.05, -0.8, -1.40, 8.0),
    ("Si I", 8728.01, "neutral", True, -1.35, -0.8, -1.40, 8.0),
    ("Si I", 8742.45, "neutral", True, -1.30, -0.8, -1.40, 8.0),
    ("Si I", 8752.01, "neutral", True, -1.10, -0.8, -1.40, 8.0),
    ("Fe I", 7511.02, "neutral", False, -0.95, -0.1, -1.40, 8.0),
    ("Fe I", 8327.06, "neutral", False, -0.75, 0.9, -1.40, 10.0),
    ("Fe I", 8387.77, "neutral", False, -0.70, 0.9, -1.40, 10.0),
    ("Fe I", 8514.07, "neutral", False, -0.85, 0.9, -1.40, 8.0),
    ("Fe I", 8582.26, "neutral", False, -1.05, 0.5, -1.40, 8.0),
    ("Fe I", 8611.80, "neutral", False, -1.10, 0.6, -1.40, 8.0),
    ("Fe I", 8621.60, "neutral", False, -1.10, 0.5, -1.40, 8.0),
    ("Fe I", 8688.62, "neutral", False, -0.65, 0.9, -1.40, 10.0),
    ("Fe I", 8824.22, "neutral", False, -0.75, 0.9, -1.40, 8.0),
    ("Ca I", 7148.15, "neutral", True, -0.95, 0.6, -1.40, 8.0),
    ("Ca I", 7326.15, "neutral", True, -1.05, 0.5, -1.40, 8.0),
    ("Ti I", 8426.50, "neutral", True, -1.40, 1.6, -1.50, 6.0),
    ("Ti I", 8434.90, "neutral", True, -1.30, 1.6, -1.50, 6.0),
    ("O I", 7771.94, "majority", True, -1.60, -3.5, -1.60, 6.0),
    ("O I", 7774.17, "majority", True, -1.75, -3.5, -1.60, 6.0),
    ("O I", 7775.39, "majority", True, -1.95, -3.5, -1.60, 6.0),
    ("O I", 8446.36, "majority", True, -1.80, -3.5, -1.60, 6.0),
    ("C I", 7111.47, "majority", False, -2.20, -3.0, -1.60, 6.0),
    ("C I", 7113.18, "majority", False, -2.10, -3.0, -1.60, 6.0),
    ("C I", 7115.17, "majority", False, -1.90, -3.0, -1.60, 6.0),
    ("C I", 7116.99, "majority", False, -2.10, -3.0, -1.60, 6.0),
]
# Paschen P20..P12: strengths follow the n=3 Boltzmann factor (12.09 eV), visible above ~5500 K.
PASCHEN = [8392.40, 8413.32, 8437.96, 8467.25, 8502.48, 8545.38, 8598.39, 8665.02, 8750.47]
PASCHEN_LOG_S_REF = -3.9  # at the reference star; +3.4 dex at 6000 K
PASCHEN_LOG_GAMMA_REF = -0.6

# Molecular band heads (air A): (molecule, head, tau amplitude at unit group strength, e-fold length A).
# All three systems here degrade to the red: absorption starts at the head and fades redward.
BAND_HEADS = [
    ("TiO", 7054.0, 1.00, 70.0),
    ("TiO", 7088.0, 0.70, 60.0),
    ("TiO", 7126.0, 0.80, 80.0),
    ("TiO", 7589.0, 0.45, 60.0),
    ("TiO", 7628.0, 0.35, 50.0),
    ("TiO", 7666.0, 0.50, 90.0),
    ("TiO", 8432.0, 0.25, 40.0),
    ("TiO", 8442.0, 0.30, 40.0),
    ("TiO", 8452.0, 0.20, 50.0),
    ("VO", 7334.0, 0.30, 60.0),
    ("VO", 7393.0, 0.25, 60.0),
    ("VO", 7851.0, 0.35, 50.0),
    ("VO", 7896.0, 0.30, 50.0),
    ("VO", 7940.0, 0.25, 50.0),
    ("VO", 8521.0, 0.20, 60.0),
    ("VO", 8624.0, 0.20, 60.0),
    ("CN", 7088.0, 0.05, 120.0),
    ("CN", 7259.0, 0.05, 120.0),
    ("CN", 7437.0, 0.05, 140.0),
    ("CN", 7876.0, 0.06, 150.0),
    ("CN", 8125.0, 0.06, 150.0),
]


@dataclass(frozen=True)
class WeakGroup:
    """A family of weak lines sharing one strength law (see ``atmosphere.group_log_strength``)."""

    name: str
    kind: str  # "neutral", "majority", "molecule"
    chi: float  # representative lower excitation potential, eV (atoms)
    alpha: bool
    share: float  # fraction of the pseudo lines


WEAK_GROUPS = (
    WeakGroup("FeI_chi0.9", "neutral", 0.9, False, 0.10),
    WeakGroup("FeI_chi2.3", "neutral", 2.3, False, 0.18),
    WeakGroup("FeI_chi3.6", "neutral", 3.6, False, 0.17),
    WeakGroup("FeI_chi4.9", "neutral", 4.9, False, 0.10),
    WeakGroup("alpha_chi0.9", "neutral", 0.9, True, 0.06),
    WeakGroup("alpha_chi2.3", "neutral", 2.3, True, 0.05),
    WeakGroup("alpha_chi3.6", "neutral", 3.6, True, 0.04),
    WeakGroup("alpha_chi4.9", "neutral", 4.9, True, 0.05),
    WeakGroup("ion_chi3.0", "majority", 3.0, False, 0.04),
    WeakGroup("ion_chi5.5", "majority", 5.5, False, 0.03),
    WeakGroup("CN", "molecule", 0.0, False, 0.12),
    WeakGroup("TiO", "molecule", 0.0, True, 0.05),
    WeakGroup("VO", "molecule", 0.0, False, 0.01),
)


def pseudo_lines(seed: int, lines_per_A: float, wave_min: float, wave_max: float):
    """A seeded pseudo list of weak lines over [wave_min, wave_max] (air A).

    Returns (wave_air A, group index, strength S_ref A). Only uniform draws are used, through
    explicit inverse CDFs, so the list is stable across numpy versions. Molecular lines crowd the
    red side of their band heads; strengths follow N(>S) ~ S^-0.8 between 2 mA and 0.25 A.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    n = int(round(lines_per_A * (wave_max - wave_min)))
    shares = np.array([g.share for g in WEAK_GROUPS])
    cdf = np.cumsum(shares / shares.sum())
    group = np.minimum(np.searchsorted(cdf, rng.random(n)), len(WEAK_GROUPS) - 1)
    wave = wave_min + (wave_max - wave_min) * rng.random(n)
    u_head, u_len = rng.random(n), rng.random(n)
    for gi, g in enumerate(WEAK_GROUPS):
        if g.kind != "molecule":
            continue
        heads = [(h, length) for (mol, h, _, length) in BAND_HEADS if mol == g.name]
        sel = np.flatnonzero(group == gi)
        k = np.minimum((u_head[sel] * len(heads)).astype(int), len(heads) - 1)
        h = np.array([heads[i][0] for i in k])
        length = np.array([heads[i][1] for i in k])
        wave[sel] = np.minimum(h - length * np.log1p(-0.95 * u_len[sel]), wave_max)
    s_min, s_max, slope = 2e-3, 0.25, 0.8
    u = rng.random(n)
    # truncated power law N(>S) ~ S^-slope, by inverse CDF
    a, b = s_min**-slope, s_max**-slope
    strength = (a - u * (a - b)) ** (-1.0 / slope)
    order = np.argsort(wave, kind="stable")
    return wave[order], group[order], strength[order]
