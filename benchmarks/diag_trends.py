"""Gravity trends of the lines the study's log g rests on, per simulator: equivalent widths of Ca II
8542 / 8662, the Na I 8183/8195 doublet and Mg I 8807, and the depth of the TiO 8432 band and of
CN 7874, for giants (log g 1.5) against dwarfs (log g 4.5) across Teff, at [M/H] 0 and -1,
[alpha/M] 0, on the noiseless median-normalised PFS spectra.

    python benchmarks/diag_trends.py [--versions 2,emulated]

EW (A) = sum over the line window of (1 - flux / pseudo-continuum) x pixel width; the pseudo-
continuum is the 95th percentile of the flux within 25 A of the line. A band's depth is
1 - mean flux in the band / mean flux in its continuum window. Writes the ``trends`` section of
benchmarks/RESULTS-simulator.md. Real K stars (Cenarro et al. 2002; Schiavon et al. 1997): Ca II
stronger in giants, Na I and Mg I 8807 stronger in dwarfs, CN stronger in giants and weakening from
K to G, TiO only below ~4000 K.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import write_section

from specscale.sim.instrument import air_to_vacuum
from specscale.sim.versions import atmosphere_config, make_atmosphere

LINES = {  # name: (centres in air A, half window A)
    "Ca II 8542": ((8542.09,), 10.0),
    "Ca II 8662": ((8662.14,), 10.0),
    "Na I 8183+8195": ((8183.26, 8194.82), 3.0),
    "Mg I 8807": ((8806.76,), 2.0),
}
BANDS = {"TiO 8432": ((8432.0, 8445.0), (8400.0, 8415.0)), "CN 7874": ((7874.0, 7890.0), (7855.0, 7870.0))}
GRID = [(teff, mh) for mh in (0.0, -1.0) for teff in (3800.0, 4000.0, 4500.0, 5200.0, 6000.0)]


def line_ew(wave, flux, centres, half) -> float:
    pix = np.gradient(wave)
    ew = 0.0
    for lam in air_to_vacuum(np.array(centres)):
        near = np.abs(wave - lam) < 25.0
        cont = np.percentile(flux[near], 95)
        sel = np.abs(wave - lam) < half
        ew += float(np.sum((1 - flux[sel] / cont) * pix[sel]))
    return ew


def band_depth(wave, flux, band, side) -> float:
    vac = lambda a: air_to_vacuum(np.array(a))
    b, s = vac(band), vac(side)
    return 1 - flux[(wave > b[0]) & (wave < b[1])].mean() / flux[(wave > s[0]) & (wave < s[1])].mean()


def trends(version) -> list[str]:
    model = make_atmosphere(atmosphere_config({"version": version}))
    wave = model.instrument.wave
    rows = []
    for teff, mh in GRID:
        theta = torch.tensor([[teff, 1.5, mh, 0.0], [teff, 4.5, mh, 0.0]], dtype=torch.float64)
        with torch.no_grad():
            giant, dwarf = model.flux(theta).numpy()
        cells = [f"{line_ew(wave, giant, *LINES[k]):.2f} / {line_ew(wave, dwarf, *LINES[k]):.2f}" for k in LINES]
        cells += [f"{band_depth(wave, giant, *BANDS[k]):.3f} / {band_depth(wave, dwarf, *BANDS[k]):.3f}" for k in BANDS]
        rows.append(f"| {version} | {teff:.0f} | {mh:+.1f} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", default="2,emulated")
    versions = [int(v) if v.isdigit() else v for v in ap.parse_args().versions.split(",")]
    head = (
        "| version | Teff K | [M/H] | "
        + " | ".join(f"EW {k} (A)" for k in LINES)
        + " | "
        + " | ".join(f"depth {k}" for k in BANDS)
        + " |"
    )
    lines = [
        "Gravity trends, giant (log g 1.5) / dwarf (log g 4.5), [alpha/M] 0, noiseless median-normalised "
        "PFS flux (`benchmarks/diag_trends.py`; real K stars: Ca II larger in giants, Na I and Mg I 8807 "
        "larger in dwarfs, CN larger in giants):",
        "",
        head,
        "|" + "---|" * (3 + len(LINES) + len(BANDS)),
    ]
    for v in versions:
        lines += trends(v)
    text = "\n".join(lines)
    print(text)
    write_section("trends", text, Path(__file__).with_name("RESULTS-simulator.md"))


if __name__ == "__main__":
    main()
