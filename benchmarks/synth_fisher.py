"""Does what the hydrogen and molecular lists add change how degenerate log g is? Per star, the
Jacobian of the noiseless median-normalised PFS flux in (Teff, log g, [M/H]) by central finite
differences of real SME synthesis (docs/synthesis.md), with the atomic list alone and with every
list, and the emulator's (atomic) by autodiff at the same stars; with a uniform per-pixel noise,
the marginal / conditional log g information ratio (3D: [alpha/M] known; the quantity behind
`info_ratio_marginal_conditional_3d`, whose median over the prior is 0.69 in the study's BOSZ
spectra) and the RMS of d flux / d log g. Needs the `synth` extra and the line lists:

    .venv-synth/bin/python benchmarks/synth_fisher.py --config config/synthesis_full.yaml [--jobs 2]

Writes the ``fisher-sme`` section of benchmarks/RESULTS-simulator.md.
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

STARS = [(3800.0, 1.5), (3800.0, 4.5), (4400.0, 2.5)]  # [M/H] 0, [alpha/M] 0: where the molecules are
STEPS = np.array([75.0, 0.15, 0.075])  # central-difference half steps: K, dex, dex


def flux_at(task):
    config, theta = task
    return synthesize_star(config, np.asarray(theta))[0]


def info_ratio(jac: np.ndarray) -> tuple[float, float]:
    """(marginal / conditional log g information, RMS d flux / d log g) for a Jacobian (n_pix, 3)
    in (Teff, log g, [M/H]) with unit noise per pixel."""
    fisher = jac.T @ jac
    return float(1.0 / np.linalg.inv(fisher)[1, 1] / fisher[1, 1]), float(np.sqrt(np.mean(jac[:, 1] ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    full = load_synthesis_config(args.config)
    lists = {"atomic": dataclasses.replace(full, hydrogen_linelist="", molecular_linelists=()), "all lists": full}
    tasks = []
    for cfg in lists.values():
        for teff, logg in STARS:
            for k in range(3):
                for sign in (1.0, -1.0):
                    theta = np.array([teff, logg, 0.0, 0.0])
                    theta[k] += sign * STEPS[k]
                    tasks.append((cfg, theta))
    with ProcessPoolExecutor(args.jobs) as pool:
        fluxes = np.array(list(pool.map(flux_at, tasks)))
    jacs = fluxes.reshape(len(lists), len(STARS), 3, 2, -1)
    jacs = ((jacs[:, :, :, 0] - jacs[:, :, :, 1]) / (2 * STEPS[None, None, :, None])).transpose(0, 1, 3, 2)
    emulator = EmulatedAtmosphere()
    theta = torch.tensor([[t, g, 0.0, 0.0] for t, g in STARS], dtype=torch.float64)
    _, jac_emu = emulator.jacobian(theta)  # (n, n_pix, 4)
    out = [
        "Marginal / conditional log g information (3D, uniform noise) and RMS d flux / d log g (per dex) "
        "of real SME synthesis, atomic list alone and every list, central differences (`benchmarks/"
        "synth_fisher.py`; [M/H] 0, [alpha/M] 0); the shipped (atomic) emulator by autodiff:",
        "",
        "| Teff K | log g | ratio: emulator | SME atomic | SME all lists | RMS dF/dlogg: emulator | SME atomic | SME all lists |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, (teff, logg) in enumerate(STARS):
        emu = info_ratio(jac_emu[i, :, :3].numpy())
        atomic, every = info_ratio(jacs[0, i]), info_ratio(jacs[1, i])
        out.append(
            f"| {teff:.0f} | {logg:.1f} | {emu[0]:.3f} | {atomic[0]:.3f} | {every[0]:.3f} | "
            f"{emu[1]:.4f} | {atomic[1]:.4f} | {every[1]:.4f} |"
        )
    text = "\n".join(out)
    print(text)
    write_section("fisher-sme", text, Path(__file__).with_name("RESULTS-simulator.md"))


if __name__ == "__main__":
    main()
