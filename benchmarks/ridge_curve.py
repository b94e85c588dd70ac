"""The Ridge learning curve of log g on a simulator version, under the sweep's protocol, in one
command: noise 1, HSC-i 20.5-22.5 (per-star), 12 x 900 s, noise drawn on read
(:mod:`specscale.data.sources`), standardised flux, alpha chosen on the validation split
(exactly ``specscale train ridge``'s streaming ridge), R^2 on the test split.

    python benchmarks/ridge_curve.py --version 2 [--sizes 10000,50000,100000] [--n-test 2000]
        [--config FILE.yaml] [--data FILE.h5] [--keep FILE.h5]

Training sizes are prefixes of one training split, accumulated in one pass (the sufficient
statistics are copied at each size). The study's BOSZ numbers (test sets of 500): 0.381 / 0.380 /
0.442 / 0.475 / 0.50 at 10k / 20k / 50k / 100k / 1M. Writes a section of
benchmarks/RESULTS-simulator.md.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from _common import write_section

from specscale.core.vocab import LOGG, MagRange
from specscale.data.simulate import simulate, simulation_configs
from specscale.data.sources import open_source
from specscale.models.ridge import RidgeAccumulator, RidgeParams, select_alpha

RESULTS = Path(__file__).with_name("RESULTS-simulator.md")
STUDY = {10_000: 0.381, 20_000: 0.380, 50_000: 0.442, 100_000: 0.475, 1_000_000: 0.50}


def r2(y, p):
    return 1.0 - float(np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))


def curve(source, sizes, noise=1.0, mag="20.5-22.5", seed=0, params=None):
    params = params or RidgeParams()
    cell = MagRange.parse(mag)
    acc = RidgeAccumulator(source.wave.size)
    alphas, out, done = params.alphas(), [], 0
    for n in sorted(sizes):
        for start in range(done, n, params.batch):
            obs = source.observed("train", np.arange(start, min(n, start + params.batch)), cell, noise, seed)
            acc.add(obs.flux, obs.labels[:, LOGG])
        done = n
        path = copy.deepcopy(acc).solve()
        val = ((o.flux, o.labels[:, LOGG]) for o in source.iter_observed("val", cell, noise, None, batch=params.batch))
        best, _ = select_alpha(path, val, alphas)
        coef, icpt = path.coef(float(alphas[best]))
        y, p = [], []
        for o in source.iter_observed("test", cell, noise, None, batch=params.batch):
            y.append(o.labels[:, LOGG]), p.append(np.asarray(o.flux, np.float64) @ coef + icpt)
        out.append((n, float(alphas[best]), r2(np.concatenate(y), np.concatenate(p))))
        print(f"n_train {n}: alpha {alphas[best]:.3g}, test R^2 {out[-1][2]:.4f}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", type=int, default=2, help="atmosphere.version (1 or 2)")
    ap.add_argument("--config", help="YAML with an atmosphere: section (its version wins over --version)")
    ap.add_argument("--sizes", default="10000,50000")
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--data", help="an existing dataset (skips simulation)")
    ap.add_argument("--keep", help="write the simulated dataset here instead of a temporary file")
    ap.add_argument("--label", default=None, help="section name in RESULTS-simulator.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sizes = [int(s) for s in args.sizes.split(",")]
    cfg = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    cfg.setdefault("atmosphere", {}).setdefault("version", args.version)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.data or args.keep or str(Path(tmp) / "curve.h5")
        if not args.data:
            sim, obs, atm = simulation_configs(
                cfg, n_train=max(sizes), n_val=args.n_val, n_test=args.n_test, seed=args.seed, device="cpu"
            )
            simulate(path, sim, obs, atm, progress=False)
        source = open_source(path)
        version = source.attrs.get("simulator_version", "?")
        rows = curve(source, sizes)
    lines = [
        f"Ridge learning curve, simulator {version} (atmosphere {cfg['atmosphere']}), noise 1, HSC-i 20.5-22.5, "
        f"12 x 900 s, {args.n_test} test / {args.n_val} val stars, seed {args.seed}; {time.perf_counter() - t0:.0f} s",
        "",
        "| n_train | alpha | test R^2 | study (BOSZ) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n:,} | {a:.3g} | {r:.3f} | {STUDY.get(n, float('nan')):.3f} |" for n, a, r in rows]
    write_section(args.label or f"ridge-curve-v{cfg['atmosphere']['version']}", "\n".join(lines), RESULTS)


if __name__ == "__main__":
    main()
