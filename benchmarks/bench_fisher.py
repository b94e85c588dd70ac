"""Benchmark of the ceiling stage on this machine: the Fisher ceiling of 10,000 test stars x 4
parameters (target: under 60 s on a CPU), fisher-curves' cost per extra magnitude, oracle-fit
spectra per second and Bayes seconds per star. Writes benchmarks/RESULTS-ceiling.md.

    python benchmarks/bench_fisher.py [--data FILE.h5] [--stars 10000] [--threads 1,2]

Without --data it simulates a dataset with ``--stars`` test stars into a temporary directory
(about 1500 spectra/s on one core). Timings depend on the machine's load: the load average at
the start is recorded beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import write_section

from specscale.ceiling.bayes import bayes_reference
from specscale.ceiling.configs import BayesConfig, FisherConfig
from specscale.ceiling.fisher import cell_ceiling, fisher_curves
from specscale.core.provenance import code_version
from specscale.core.vocab import Cell
from specscale.data.simulate import SimulationConfig, simulate
from specscale.data.sources import open_source
from specscale.models.oracle import OracleModel, OracleParams
from specscale.sim.atmosphere import SyntheticAtmosphere


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def time_fisher(source, args, fcfg) -> list:
    """The Fisher ceiling of one cell, every test star (after a warm-up: simulator caches, CUDA)."""
    rows = []
    cell_ceiling(source, 1.0, "20.5-22.5", min(args.batch, args.stars), fcfg)
    for nt in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(nt)
        dt, ds = timed(lambda: cell_ceiling(source, 1.0, "20.5-22.5", args.stars, fcfg))
        per10k = "" if args.stars == 10_000 else f"; {dt * 1e4 / args.stars:.0f} s per 10,000 (linear)"
        rows.append(
            (
                f"Fisher ceiling, {args.stars:,} stars x 4 parameters (cell 20.5-22.5, noise 1)",
                nt,
                f"{dt:.1f} s ({args.stars / dt:.0f} stars/s{per10k})",
            )
        )
        print(rows[-1], f"ceiling_pop {float(ds.ceiling_pop):.4f}")
    return rows


def time_jacobian(source, args, sync) -> list:
    """The Jacobian alone, against the whole-simulator forward-mode baseline on the same stars."""
    torch.set_num_threads(1)
    n_j = min(512, args.stars)
    theta = torch.as_tensor(source.labels("test", np.arange(n_j)), dtype=torch.float64, device=args.device)
    model = SyntheticAtmosphere()

    def all_jacobians(method):
        for i in range(0, n_j, args.batch):
            model.jacobian(theta[i : i + args.batch], method=method)
        sync()

    times = {}
    for method in ("forward_ad", "laws"):
        model.jacobian(theta[:8], method=method)  # warm-up
        times[method], _ = timed(lambda: all_jacobians(method))
    return [
        (
            f"simulator Jacobian, {n_j} stars: laws (default) vs whole-simulator forward-mode AD",
            1,
            f"{n_j / times['laws']:.0f} vs {n_j / times['forward_ad']:.0f} stars/s "
            f"({times['forward_ad'] / times['laws']:.1f}x)",
        )
    ]


def time_curves(source, args, fcfg) -> list:
    """fisher-curves: J once, then each magnitude costs only sigma and 4x4 matrices."""
    torch.set_num_threads(1)
    n_c = min(args.curve_stars, args.stars)
    mags = list(np.arange(18.0, 23.51, 0.25))
    t1, _ = timed(lambda: fisher_curves(source, [1.0], mags[:1], n_c, fcfg))
    tn, _ = timed(lambda: fisher_curves(source, [0.5, 1, 2, 3, 5, 10], mags, n_c, fcfg))
    per_mag = (tn - t1) / (len(mags) - 1)
    return [
        (
            f"fisher-curves, {n_c:,} stars x {len(mags)} magnitudes x 6 noise levels",
            1,
            f"{tn:.1f} s (one magnitude {t1:.1f} s; each further magnitude {per_mag:.2f} s = "
            f"{per_mag / n_c * 1e4:.1f} s per 10k stars)",
        )
    ]


def time_oracle(source, args, sync) -> list:
    """The oracle fit (default parameters: 3 starts from a 2048-draw bank, LM in float64)."""
    rows = []
    for mag in ("21.5", "19"):
        model = OracleModel(OracleParams(batch=args.oracle_batch), seed=0, device=args.device)
        t_fit, _ = timed(lambda: model.fit(source, Cell(1.0, mag, "oracle", 16, 0), None))
        obs = source.observed("test", np.arange(args.oracle_spectra), mag, 1.0)
        model.fit_spectra(obs.flux[:2], obs.sigma[:2])  # warm-up (CUDA kernels, caches)
        sync()
        dt, fit = timed(lambda: model.fit_spectra(obs.flux, obs.sigma))
        rows.append(
            (
                f"oracle fit, {args.oracle_spectra} spectra at mag {mag} (median S/N {np.median(obs.snr):.0f}), "
                f"3 starts",
                1,
                f"{args.oracle_spectra / dt:.2f} spectra/s (mean {fit.n_iter.mean():.1f} LM "
                f"iterations per start; start bank {t_fit:.1f} s once)",
            )
        )
        print(rows[-1])
    return rows


def time_bayes(source, args, fcfg) -> list:
    """The Bayes reference (batched importance sampling, at most 1024 draws per star, prior bank included)."""
    cfg = BayesConfig(method="batched")
    dt, ds = timed(lambda: bayes_reference(source, 1.0, "21.5", args.bayes_stars, cfg, fcfg, device=args.device))
    return [
        (
            f"Bayes posterior mean (batched), {args.bayes_stars} stars at mag 21.5, at most 1024 draws",
            1,
            f"{dt / args.bayes_stars:.2f} s per star (median ESS {float(ds.ess_median):.0f})",
        )
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="dataset with >= --stars test stars (default: simulate one)")
    ap.add_argument("--stars", type=int, default=10_000)
    ap.add_argument("--threads", default="1,2", help="torch thread counts to time the Fisher cell with")
    ap.add_argument("--curve-stars", type=int, default=2_000)
    ap.add_argument("--oracle-spectra", type=int, default=48)
    ap.add_argument("--bayes-stars", type=int, default=8)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batch", type=int, default=128, help="fisher.batch (stars per Jacobian batch)")
    ap.add_argument("--oracle-batch", type=int, default=64, help="oracle.batch (spectra per LM batch)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS-ceiling.md")))
    args = ap.parse_args()

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "bench.h5"
            torch.set_num_threads(1)
            config = SimulationConfig(n_train=16, n_val=16, n_test=args.stars, seed=1, device=args.device)
            t_sim, _ = timed(lambda: simulate(data, config, progress=False))
            print(f"simulated {args.stars} test stars in {t_sim:.1f} s")
        source = open_source(data)
        fcfg = FisherConfig(batch=args.batch, device=args.device)
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        rows = time_fisher(source, args, fcfg)
        for part in (time_jacobian(source, args, sync), time_curves(source, args, fcfg)):
            rows += part
            print(part[-1])
        rows += time_oracle(source, args, sync)
        rows += time_bayes(source, args, fcfg)
        print(rows[-1])

    lines = [
        "| what | torch threads | result |",
        "|---|---|---|",
        *[f"| {w} | {t} | {r} |" for w, t, r in rows],
        "",
        "The Fisher cost is mostly the simulator's Jacobian (float64; forward-mode AD through the per-star",
        "laws, the chain rule through the fine-grid stages); the Fisher matrices, bounds and summaries add",
        "the rest. On a GPU, raise `fisher.batch`.",
        "",
    ]
    header = (
        f"Written by `benchmarks/bench_fisher.py` ({code_version()}, torch {torch.__version__}) on "
        f"{cpu_name()}, {os.cpu_count()} logical CPUs, device {device_name(args.device)}, load average {load:.1f} at "
        "the start (a shared machine: timings under load are upper bounds)."
    )
    # its own section only: bench_bayes.py writes the Bayes sections of the same file
    write_section(f"fisher-{args.device}", "\n".join([header, "", *lines]), Path(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
