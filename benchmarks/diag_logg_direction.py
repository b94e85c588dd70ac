"""How much the direction of d flux / d log g changes over the prior, for simulator versions 1
and 2: the mean cosine between the noise-weighted gradients J_logg / sigma of stars in different
(Teff, [M/H]) bins, beside the mean cosine within a bin. A value near 1 means one global linear
projection captures the log g signal everywhere (easy for Ridge); lower means the features that
carry log g change over the prior.

    python benchmarks/diag_logg_direction.py [--stars 600] [--mag 21.5] [--versions 1,2,emulated]

Writes a section of benchmarks/RESULTS-simulator.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import write_section

from specscale.core.vocab import LOGG, MagRange
from specscale.data.simulate import simulate, simulation_configs
from specscale.data.simulator import simulator_of
from specscale.data.sources import open_source

RESULTS = Path(__file__).with_name("RESULTS-simulator.md")
TEFF_EDGES = (3750, 4250, 4750, 5250, 6000)
MH_EDGES = (-2.5, -1.4, -0.3, 0.75)


def directions(version: int | str, n: int, mag: str, seed: int):
    with tempfile.TemporaryDirectory() as tmp:
        sim, obs, atm = simulation_configs(
            {"atmosphere": {"version": version}}, n_train=1, n_val=1, n_test=n, seed=seed, device="cpu"
        )
        simulate(Path(tmp) / "d.h5", sim, obs, atm, progress=False)
        src = open_source(Path(tmp) / "d.h5")
        b = src.noiseless("test", np.arange(n), MagRange.parse(mag))
        sigma = np.sqrt(b.var_a * b.flux + b.var_b)
        model = simulator_of(src)
        labels = torch.as_tensor(b.labels, dtype=torch.float64)
        J = np.concatenate([model.jacobian(labels[i : i + 64])[1][:, :, LOGG].numpy() for i in range(0, n, 64)])
    g = J / sigma
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    tb = np.digitize(b.labels[:, 0], TEFF_EDGES[1:-1])
    mb = np.digitize(b.labels[:, 2], MH_EDGES[1:-1])
    return g, tb, mb


def summary(g, tb, mb):
    cos = g @ g.T
    off = ~np.eye(len(g), dtype=bool)
    same = (tb[:, None] == tb[None, :]) & (mb[:, None] == mb[None, :]) & off
    diff_t = tb[:, None] != tb[None, :]
    diff_m = (tb[:, None] == tb[None, :]) & (mb[:, None] != mb[None, :])
    per_t = [float(cos[np.ix_(tb == i, tb == j)].mean()) for i in range(len(TEFF_EDGES) - 1) for j in range(i + 1, 4)]
    return {
        "same bin": float(cos[same].mean()),
        "other Teff bin": float(cos[diff_t].mean()),
        "same Teff, other [M/H] bin": float(cos[diff_m].mean()),
        "all pairs": float(cos[off].mean()),
        "coolest vs warmest bin": per_t[2],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stars", type=int, default=600)
    ap.add_argument("--mag", default="21.5")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--versions", default="1,2", help="simulator versions, comma-separated (1, 2, emulated)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    versions = [int(v) if v.isdigit() else v for v in args.versions.split(",")]
    res = {v: summary(*directions(v, args.stars, args.mag, args.seed)) for v in versions}
    name = lambda v: f"version {v}" if isinstance(v, int) else v
    lines = [
        f"Mean cosine between noise-weighted d flux / d log g (J_logg / sigma, HSC-i {args.mag}, 12 x 900 s) "
        f"of {args.stars} lowT test stars, by Teff bins {TEFF_EDGES} K x [M/H] bins {MH_EDGES}:",
        "",
        "| pairs | " + " | ".join(name(v) for v in versions) + " |",
        "|---|" + "---|" * len(versions),
    ]
    lines += [f"| {k} | " + " | ".join(f"{res[v][k]:.3f}" for v in versions) + " |" for k in res[versions[0]]]
    print("\n".join(lines))
    write_section("logg-direction", "\n".join(lines), RESULTS)


if __name__ == "__main__":
    main()
