"""How fast the workflow plans and collects, and (optionally) where a finished sweep spent its time.

1. Planning: ``snakemake -n`` on the full protocol (config/logg1m.yaml, >= 1,000 jobs) in an
   empty folder, median of 3 runs. Target < 20 s.
2. Collecting: 1,000+ fabricated metrics.json files (real ``specscale.models.metrics.evaluate``
   records, the workflow's layout) plus a ceiling per (noise, mag) into the cube and written as
   netCDF, median of 3 runs. Target < 10 s.
3. ``--sweep-dir DIR``: a finished sweep's wall time (from Snakemake's log) and the summed job
   time per rule (from the rules' benchmark files).

    .venv/bin/python benchmarks/bench_workflow.py [--sweep-dir DIR] [--out benchmarks/RESULTS-workflow.md]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))

from factories import fake_sweep
from test_workflow import planned

from specscale.sweep.cube import collect, write_cube


def bench_planning(runs: int = 3) -> dict:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    times, jobs = [], {}
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            proc = subprocess.run(
                [
                    str(BIN / "snakemake"),
                    "-n",
                    "--quiet",
                    "rules",
                    "-s",
                    str(REPO / "Snakefile"),
                    "--directory",
                    tmp,
                    "--configfile",
                    str(REPO / "config/logg1m.yaml"),
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
            )
            times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        jobs = planned(proc.stdout)
    return {"seconds": statistics.median(times), "all": times, "jobs": jobs}


def bench_collect(runs: int = 3) -> dict:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        sweep = fake_sweep(
            Path(tmp),
            noises=(0.1, 0.2, 0.5, 1.0, 2.0),
            mags=("20", "21", "21.5", "22", "22.5"),
            sizes=(10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000),
            seeds=(0, 1, 2),
        )
        for _ in range(runs):
            t0 = time.perf_counter()
            ds = collect(sweep["cells"], ceilings=sweep["ceilings"], curves=sweep["curves"])
            write_cube(ds, Path(tmp) / "cube.nc")
            times.append(time.perf_counter() - t0)
        size_mb = (Path(tmp) / "cube.nc").stat().st_size / 2**20
    return {
        "seconds": statistics.median(times),
        "all": times,
        "cells": len(sweep["cells"]),
        "ceilings": len(sweep["ceilings"]),
        "size_mb": size_mb,
    }


def sweep_summary(workdir: Path) -> dict:
    """Wall time of the last Snakemake run in ``workdir`` and job seconds summed per rule."""
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    wall = None
    if logs:
        m = re.search(r"Elapsed time: (\d+):(\d+):(\d+)", logs[-1].read_text())
        if m:
            wall = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))
    per_rule: dict[str, list[float]] = {}
    results = workdir / "results"
    for tsv in results.rglob("*.tsv"):
        rel = tsv.relative_to(results).parts
        if rel[0] == "cells":  # cells/{dataset}/noise/mag/{model}/n/s/benchmark.tsv
            rule = f"train {rel[4]}"
        else:  # benchmarks/{rule}/... or benchmarks/{rule}.tsv
            rule = Path(rel[1]).stem if len(rel) == 2 else rel[1]
        with tsv.open() as fh:
            row = list(csv.DictReader(fh, delimiter="\t"))[-1]
        per_rule.setdefault(rule, []).append(float(row["s"]))
    return {"wall": wall, "per_rule": {k: (len(v), sum(v), max(v)) for k, v in sorted(per_rule.items())}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep-dir", type=Path, help="working folder of a finished sweep to summarise")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS-workflow.md")
    args = ap.parse_args()

    plan = bench_planning()
    coll = bench_collect()
    load = os.getloadavg()
    lines = [
        "# Workflow: planning, collecting, the default sweep",
        "",
        f"Measured {datetime.now():%Y-%m-%d %H:%M} on `{platform.node()}` ({os.cpu_count()} cores visible; "
        f"load average {load[0]:.1f} when done: other work shared the machine). "
        "Regenerate with `.venv/bin/python benchmarks/bench_workflow.py [--sweep-dir DIR]`.",
        "",
        "| quantity | value | target |",
        "|---|---|---|",
        f"| `snakemake -n --configfile config/logg1m.yaml`: jobs planned | {sum(plan['jobs'].values()):,} "
        f"({plan['jobs'].get('train', 0):,} train, {plan['jobs'].get('train_vit', 0)} train_vit, "
        f"{plan['jobs'].get('ceiling', 0)} ceiling) | >= 1,000 |",
        f"| planning time, median of 3 (s) | {plan['seconds']:.1f} ({', '.join(f'{t:.1f}' for t in plan['all'])}) "
        "| < 20 |",
        f"| collect {coll['cells']:,} cells + {coll['ceilings']} ceilings + curves into the cube and write it, "
        f"median of 3 (s) | {coll['seconds']:.2f} ({', '.join(f'{t:.2f}' for t in coll['all'])}) | < 10 |",
        f"| cube file size (MB) | {coll['size_mb']:.1f} | |",
    ]
    if args.sweep_dir:
        s = sweep_summary(args.sweep_dir)
        lines += [
            "",
            f"## A finished sweep: `{args.sweep_dir}`",
            "",
            f"Wall time {s['wall'] // 60} min {s['wall'] % 60} s (Snakemake's Elapsed time, `--cores 2`)."
            if s["wall"] is not None
            else "Wall time: no Snakemake log found.",
            "",
            "| rule | jobs | job seconds, sum | longest job (s) |",
            "|---|---|---|---|",
            *(f"| {rule} | {n} | {total:.0f} | {longest:.0f} |" for rule, (n, total, longest) in s["per_rule"].items()),
        ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
