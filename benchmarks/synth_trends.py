"""What the hydrogen and molecular line lists add to real LTE synthesis (docs/synthesis.md):
SME on atmosnet models, the same stars with the atomic list alone and with the atomic, hydrogen
(Paschen, H alpha) and molecular (CN, TiO) lists, measured as benchmarks/diag_trends.py measures
every source (equivalent widths, band depths, on the noiseless median-normalised PFS flux), giant
(log g 1.5) against dwarf (log g 4.5) at [M/H] 0, [alpha/M] 0; plus CPU seconds per star.
Needs the `synth` extra and the line lists (config/synthesis.yaml says where they come from):

    .venv-synth/bin/python benchmarks/synth_trends.py --config config/synthesis_full.yaml [--jobs 2]

Writes the ``trends-sme`` section of benchmarks/RESULTS-simulator.md and, with ``--figure``, a
figure of the three stars where the added lists matter most (docs/synthesis_lists.png).
"""

from __future__ import annotations

import argparse
import dataclasses
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _common import write_section
from diag_trends import BANDS, LINES, band_depth, line_ew

from specscale.sim.instrument import Instrument
from specscale.synth.config import load_synthesis_config
from specscale.synth.synthesize import synthesize_star

TEFFS = (3800.0, 4200.0, 4600.0, 5200.0, 6000.0)
LOGGS = (1.5, 4.5)
EXTRA_LINES = {"Pa 12 8750": ((8750.47,), 3.0)}  # Pa 11 (8865 A vacuum) lies beyond the arm's 8850 A
EXTRA_BANDS = {"TiO 7589": ((7589.0, 7610.0), (7550.0, 7580.0))}


def one_star(task):
    config, teff, logg = task
    flux, ln_fmed0, seconds = synthesize_star(config, np.array([teff, logg, 0.0, 0.0]))
    return flux, seconds


def measures(wave, flux) -> list[str]:
    lines, bands = LINES | EXTRA_LINES, BANDS | EXTRA_BANDS
    return [f"{line_ew(wave, flux, *lines[k]):.2f}" for k in lines] + [
        f"{band_depth(wave, flux, *bands[k]):.3f}" for k in bands
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--figure", help="write the figure here (PNG)")
    args = ap.parse_args()
    full = load_synthesis_config(args.config)
    atomic = dataclasses.replace(full, hydrogen_linelist="", molecular_linelists=())
    lists = {"atomic": atomic, "all lists": full}
    tasks = [(cfg, teff, logg) for cfg in lists.values() for teff in TEFFS for logg in LOGGS]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one_star, tasks))
    wave = Instrument().wave
    names = list(LINES | EXTRA_LINES) + list(BANDS | EXTRA_BANDS)
    out = [
        "Real LTE synthesis (SME on atmosnet) of the same stars with the atomic list alone and with "
        "the hydrogen and molecular lists added (`benchmarks/synth_trends.py`; [M/H] 0, [alpha/M] 0, "
        "noiseless median-normalised PFS flux; EW in A, band depth; giant log g 1.5 / dwarf 4.5):",
        "",
        "| lists | Teff K | " + " | ".join(names) + " | CPU s per star |",
        "|" + "---|" * (len(names) + 3),
    ]
    k = 0
    for label in lists:
        for teff in TEFFS:
            (giant, s_g), (dwarf, s_d) = results[k], results[k + 1]
            k += 2
            cells = [f"{g} / {d}" for g, d in zip(measures(wave, giant), measures(wave, dwarf))]
            out.append(f"| {label} | {teff:.0f} | " + " | ".join(cells) + f" | {s_g:.0f} / {s_d:.0f} |")
    text = "\n".join(out)
    print(text)
    write_section("trends-sme", text, Path(__file__).with_name("RESULTS-simulator.md"))
    if args.figure:
        n = len(TEFFS) * len(LOGGS)
        keys = [(teff, logg) for teff in TEFFS for logg in LOGGS]  # the tasks' order, per list
        spectra = {key: (results[i][0], results[n + i][0]) for i, key in enumerate(keys)}
        figure(wave, spectra, args.figure)


def figure(wave, spectra, out) -> None:
    """Atomic list alone against all lists for a 3800 K giant and dwarf and a 6000 K dwarf."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stars = [(3800.0, 1.5, "3800 K, log g 1.5: TiO, CN"), (3800.0, 4.5, "3800 K, log g 4.5: TiO"),
             (6000.0, 4.5, "6000 K, log g 4.5: Paschen lines")]  # fmt: skip
    fig, axes = plt.subplots(len(stars), 1, figsize=(11, 7.5), sharex=True)
    for ax, (teff, logg, title) in zip(axes, stars):
        atomic, full = spectra[teff, logg]
        ax.plot(wave, atomic, lw=0.5, color="0.55", label="atomic list (the shipped emulator's)")
        ax.plot(wave, full, lw=0.5, color="C3", label="+ hydrogen, CN, TiO")
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel("normalised flux")
    for lam, name in [(7589, "TiO"), (7874, "CN"), (8432, "TiO"), (8542, "Ca II"), (8750, "Pa 12")]:
        axes[0].annotate(name, (lam, 1.08), fontsize=7, ha="center")
    axes[0].legend(fontsize=7, loc="lower left")
    axes[-1].set_xlabel("vacuum wavelength (A)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main()
