"""Gravity trends of the strong lines in the real-synthesis emulator (docs/synthesis.md): line
depth (1 - mean normalised flux within +-0.8 A of the vacuum centre) of Ca II 8498/8542/8662,
Na I 8183/8195, Mg I 8807, K I 7699 and Fe I 8689 at log g 1..5, for a few Teff at [M/H] 0,
[alpha/M] 0, from the emulator npz; with --chunks also the synthesised stars nearest to each
point. Prints a Markdown table.

    .venv/bin/python benchmarks/synth_lines.py src/specscale/sim/tables/emulator_lowT.npz
"""

from __future__ import annotations

import argparse

import numpy as np

from specscale.sim.instrument import air_to_vacuum
from specscale.synth.train import emulate_numpy

LINES_AIR = {
    "Ca II 8498": 8498.02,
    "Ca II 8542": 8542.09,
    "Ca II 8662": 8662.14,
    "Na I 8183": 8183.26,
    "Na I 8195": 8194.82,
    "Mg I 8807": 8806.76,
    "K I 7699": 7698.96,
    "Fe I 8689": 8688.62,
}


def depths(wave: np.ndarray, flux: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for name, air in LINES_AIR.items():
        centre = float(air_to_vacuum(air))
        sel = np.abs(wave - centre) < 0.8
        out[name] = 1.0 - flux[..., sel].mean(-1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("emulator")
    ap.add_argument("--teff", type=float, nargs="+", default=[4000.0, 4750.0, 5500.0])
    ap.add_argument("--mh", type=float, default=0.0)
    args = ap.parse_args()
    with np.load(args.emulator, allow_pickle=False) as data:
        params = {k: data[k] for k in data.files}
    loggs = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    print(f"line depth at [M/H] {args.mh:g}, [alpha/M] 0, log g {' / '.join(f'{g:g}' for g in loggs)}\n")
    print("| Teff | " + " | ".join(LINES_AIR) + " |")
    print("|---|" + "---|" * len(LINES_AIR))
    for teff in args.teff:
        theta = np.column_stack([np.full(5, teff), loggs, np.full(5, args.mh), np.zeros(5)])
        out = emulate_numpy(params, theta)
        d = depths(params["wave"], out[:, :-1])
        cells = [" / ".join(f"{v:.2f}" for v in d[name]) for name in LINES_AIR]
        print(f"| {teff:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
