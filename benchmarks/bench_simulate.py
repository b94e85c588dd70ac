"""Simulation throughput (spectra/s per core at 4096 px) against a plain h5py write of the same
float32 bytes in the same run, and peak memory for two dataset sizes (it must not grow with N).

    .venv/bin/python benchmarks/bench_simulate.py [--n 16384] [--out benchmarks/RESULTS-data.md]
    .venv/bin/python benchmarks/bench_simulate.py --versions [--n 2048] [--rounds 3]

    .venv/bin/python benchmarks/bench_simulate.py --emulated [--n 4096] [--rounds 3]

``--versions``: simulator version 2 against version 1 in the same run (interleaved rounds, best
of each): noiseless spectra per second (float32, the simulate batches of 128) and Jacobian
(float64, ``.jacobian()``, batches of 128) stars per second, and their ratios; written as a
section of benchmarks/RESULTS-simulator.md and of RESULTS-data.md. ``--emulated``: the emulated
source against version 2 the same way, plus ``simulate`` end to end (written file, content hash)
on the emulated source, in a fresh process; section ``simulator-emulated``.

Runs single-threaded (torch and BLAS pinned to one core) so the number is per core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = "1"

import h5py
import numpy as np


def _simulate(n: int, path: Path, version=None) -> float:
    import torch

    from specscale.data.simulate import SimulationConfig, simulate
    from specscale.sim.versions import atmosphere_config

    torch.set_num_threads(1)
    cfg = SimulationConfig(n_train=n, n_val=64, n_test=64, device="cpu")
    atm = atmosphere_config({"version": version} if version else {}, default_version=2)
    t0 = time.perf_counter()
    simulate(path, cfg, atm=atm, progress=False)
    return time.perf_counter() - t0


def _plain_write(n: int, path: Path) -> float:
    """h5py write of n x 4096 float32 in the simulator's chunking (data made before timing)."""
    block = np.random.default_rng(0).random((4096, 4096), dtype=np.float32)
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        d = f.create_dataset("flux", (n, 4096), "f4", chunks=(256, 4096))
        for start in range(0, n, 4096):
            stop = min(n, start + 4096)
            d[start:stop] = block[: stop - start]
    return time.perf_counter() - t0


def _child(n: int, version=None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        secs = _simulate(n, Path(tmp) / "d.h5", version)
    import resource

    print(
        json.dumps({"n": n, "seconds": secs, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    )


def _rates(models: dict, n: int, rounds: int) -> dict:
    """Seconds per noiseless spectrum and per Jacobian star of each model, best of interleaved rounds."""
    import torch

    rng = np.random.default_rng(0)
    lo, hi = np.array([3750.0, 1.0, -2.5, -0.25]), np.array([6000.0, 5.0, 0.75, 0.5])
    theta = torch.as_tensor(lo + rng.random((n, 4)) * (hi - lo))
    best = {(v, k): float("inf") for v in models for k in ("spec", "jac")}
    for m in models.values():  # warm-up: templates, sparse maps, reference stars
        m.spectrum(theta[:128].float()), m.jacobian(theta[:8])
    for _ in range(rounds):
        for v, m in models.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                for i in range(0, n, 128):
                    m.spectrum(theta[i : i + 128].float())
            t1 = time.perf_counter()
            for i in range(0, n // 4, 128):
                m.jacobian(theta[i : i + 128])
            t2 = time.perf_counter()
            best[v, "spec"] = min(best[v, "spec"], (t1 - t0) / n)
            best[v, "jac"] = min(best[v, "jac"], (t2 - t1) / (n // 4))
    return best


def _versions(n: int, rounds: int, cfg_v2: dict) -> None:
    """Version 2 against version 1, same process, interleaved rounds (best of each)."""
    import torch
    from _common import write_section

    from specscale.sim.versions import atmosphere_config, make_atmosphere

    torch.set_num_threads(1)
    models = {1: make_atmosphere(atmosphere_config({})), 2: make_atmosphere(atmosphere_config(cfg_v2))}
    best = _rates(models, n, rounds)
    load = os.getloadavg()[0]
    lines = [
        f"Simulator version 2 ({cfg_v2}) against version 1, same run ({time.strftime('%Y-%m-%d %H:%M')}, "
        f"`{os.uname().nodename}`, one thread, load average {load:.1f} at the end; best of {rounds} interleaved "
        f"rounds; {n} spectra, {n // 4} Jacobians, lowT prior):",
        "",
        "| quantity | version 1 | version 2 | time ratio v2 / v1 |",
        "|---|---|---|---|",
        f"| noiseless spectra/s (float32, batches of 128) | {1 / best[1, 'spec']:,.0f} | {1 / best[2, 'spec']:,.0f} "
        f"| {best[2, 'spec'] / best[1, 'spec']:.2f} |",
        f"| Jacobian stars/s (float64, 4 parameters) | {1 / best[1, 'jac']:,.0f} | {1 / best[2, 'jac']:,.0f} "
        f"| {best[2, 'jac'] / best[1, 'jac']:.2f} |",
        "",
        "Target: version 2 within 1.5x of version 1 (the issue). The shared machine's other jobs add noise.",
    ]
    text = "\n".join(lines)
    print(text)
    here = Path(__file__).parent
    write_section("simulator-versions", text, here / "RESULTS-simulator.md")
    write_section("simulator-versions", text, here / "RESULTS-data.md")


def _emulated(n: int, rounds: int, cfg_v2: dict) -> None:
    """The emulated source against version 2 (same process, interleaved), then simulate end to end."""
    import torch
    from _common import write_section

    from specscale.sim.versions import atmosphere_config, make_atmosphere

    torch.set_num_threads(1)
    models = {
        "v2": make_atmosphere(atmosphere_config(cfg_v2)),
        "emulated": make_atmosphere(atmosphere_config({"version": "emulated"})),
    }
    best = _rates(models, n, rounds)
    runs = []
    for size in (4 * n, 16 * n):  # fresh processes; the difference removes the start-up
        cmd = [sys.executable, __file__, "--child", str(size), "--child-version", "emulated"]
        runs.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]))
    steady = (runs[1]["n"] - runs[0]["n"]) / (runs[1]["seconds"] - runs[0]["seconds"])
    ratio = lambda k: best["emulated", k] / best["v2", k]
    lines = [
        f"The emulated source against version 2 ({cfg_v2}), same run ({time.strftime('%Y-%m-%d %H:%M')}, "
        f"`{os.uname().nodename}`, one thread, load average {os.getloadavg()[0]:.1f} at the end; best of {rounds} "
        f"interleaved rounds; {n} spectra, {n // 4} Jacobians, lowT prior):",
        "",
        "| quantity | version 2 | emulated | time ratio emulated / v2 |",
        "|---|---|---|---|",
        f"| noiseless spectra/s (float32, batches of 128) | {1 / best['v2', 'spec']:,.0f} | "
        f"{1 / best['emulated', 'spec']:,.0f} | {ratio('spec'):.2f} |",
        f"| Jacobian stars/s (float64, 4 parameters) | {1 / best['v2', 'jac']:,.0f} | "
        f"{1 / best['emulated', 'jac']:,.0f} | {ratio('jac'):.2f} |",
        f"| `simulate` end to end, emulated, steady state (N={runs[1]['n']} minus N={runs[0]['n']}), spectra/s "
        f"| | {steady:,.0f} | |",
        f"| peak RSS of those two runs | | {runs[0]['peak_rss_mb']:.0f} / {runs[1]['peak_rss_mb']:.0f} MB | |",
        "",
        "Target: simulate >= 1,500 spectra/s per core (the issue). The shared machine's other jobs add noise.",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("simulator-emulated", text, Path(__file__).with_name("RESULTS-simulator.md"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS-data.md")))
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-version", help=argparse.SUPPRESS)
    ap.add_argument("--emulated", action="store_true", help="the emulated source against version 2")
    ap.add_argument("--versions", action="store_true", help="version 2 against version 1 (see the docstring)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--config", help="YAML whose atmosphere: section is version 2's (default: config/config.yaml's)")
    args = ap.parse_args()
    if args.child:
        return _child(args.child, args.child_version)
    if args.versions or args.emulated:
        import yaml

        cfg_path = Path(args.config) if args.config else Path(__file__).parents[1] / "config" / "config.yaml"
        atm = dict((yaml.safe_load(cfg_path.read_text()) or {}).get("atmosphere") or {})
        atm["version"] = 2
        if args.emulated:
            return _emulated(min(args.n, 4096) if args.n == 16384 else args.n, args.rounds, atm)
        return _versions(min(args.n, 4096) if args.n == 16384 else args.n, args.rounds, atm)

    # throughput, in fresh processes (no warm caches shared), and peak RSS at N and 4N
    runs = []
    for n in (args.n, 4 * args.n):
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    with tempfile.TemporaryDirectory() as tmp:
        n_total = args.n + 128
        write_s = _plain_write(n_total, Path(tmp) / "w.h5")
    sim = runs[0]
    rate = (sim["n"] + 128) / sim["seconds"]
    # the difference of the two runs removes the fixed start-up (imports, filter curve, templates)
    steady = (runs[1]["n"] - runs[0]["n"]) / (runs[1]["seconds"] - runs[0]["seconds"])
    write_rate = n_total / write_s
    lines = [
        "# Simulation throughput (specscale simulate, CPU, one core)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on `{os.uname().nodename}` ({os.cpu_count()} cores visible), "
        "torch and BLAS pinned to one thread, 4096 pixels, noiseless flux + labels + per-star data + content hash.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| simulate, spectra/s per core (N={sim['n']}) | {rate:,.0f} |",
        f"| simulate, steady state (N={runs[1]['n']} minus N={runs[0]['n']}), spectra/s per core | {steady:,.0f} |",
        f"| plain h5py write of the same float32 bytes, spectra/s | {write_rate:,.0f} |",
        f"| ratio simulate / plain write (time) | {write_rate / rate:.1f}x |",
        f"| peak RSS at N={runs[0]['n']} | {runs[0]['peak_rss_mb']:.0f} MB |",
        f"| peak RSS at N={runs[1]['n']} | {runs[1]['peak_rss_mb']:.0f} MB |",
        f"| 1M spectra on this machine (2 cores, steady state, extrapolated) | {1e6 / (2 * steady) / 60:.1f} min |",
        "",
        "Target: >= 2,000 spectra/s per core with peak memory flat in N. The first row includes each",
        "process's fixed start-up (imports, the HSC-i filter curve, line templates: ~2 s); the steady-state",
        "row is the difference of the two runs, which removes it. Machine idle apart from this script.",
    ]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    old = out.read_text() if out.exists() else ""
    keep = old[old.index("<!-- simulator-versions:start -->") :] if "<!-- simulator-versions:start -->" in old else ""
    out.write_text(text + ("\n" + keep if keep else ""))  # keep the --versions section
    print(text)


if __name__ == "__main__":
    main()
