"""Simulation throughput (spectra/s per core at 4096 px) against a plain h5py write of the same
float32 bytes in the same run, and peak memory for two dataset sizes (it must not grow with N).

    .venv/bin/python benchmarks/bench_simulate.py [--n 16384] [--out benchmarks/RESULTS-data.md]

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


def _simulate(n: int, path: Path) -> float:
    import torch

    from specscale.data.simulate import SimulationConfig, simulate

    torch.set_num_threads(1)
    cfg = SimulationConfig(n_train=n, n_val=64, n_test=64, device="cpu")
    t0 = time.perf_counter()
    simulate(path, cfg, progress=False)
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


def _child(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        secs = _simulate(n, Path(tmp) / "d.h5")
    import resource

    print(
        json.dumps({"n": n, "seconds": secs, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS-data.md")))
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args.child)

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
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
