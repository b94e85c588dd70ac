"""Cluster scale (issue 11), two parts, each rewriting its own section of benchmarks/RESULTS-scale.md.

``packing``: a small sweep (tests/test_slurm_packing.py COMPARE_TINY: ridge and LightGBM x 2 sizes
x 2 seeds) through profiles/slurm (one SLURM job per job) and profiles/slurm-packed on the local
SLURM cluster (.ci/slurm-up.sh): sbatch submissions and wall time of each, and the two cubes
compared number by number (timing variables excluded).

``data``: the 1M protocol's data path on this machine: `specscale simulate` of the study's
dataset (1M + 1k + 10k by default; --n-train to cut it down), Ridge at N through its streaming pass,
LightGBM at 200k through its Sequence path (a few trees: the data path, not the model, is measured),
the ViT loader streaming one full epoch of batches from the file; wall time and peak RSS of each
(/usr/bin/time -v; the loader's worker processes counted separately). The dataset is deleted at
the end unless --keep.

    .venv/bin/python benchmarks/bench_scale.py packing [--root /tmp/scale_pack]
    .venv/bin/python benchmarks/bench_scale.py data [--dir /tmp/scale1m] [--n-train 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _common import write_section

RESULTS = Path(__file__).with_name("RESULTS-scale.md")
BIN = Path(sys.executable).parent
TIMING_VARS = {"train_s", "predict_s", "peak_mem_mb", "cell_record"}  # differ run to run by nature
MAG = "20.5-22.5"


def machine_note() -> str:
    load = os.getloadavg()
    return (
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} UTC on `{platform.node()}` ({os.cpu_count()} cores, "
        f"SHARED with two other engineers' work: load average {load[0]:.1f} at the end; wall times are "
        "upper bounds)"
    )


# ---------------------------------------------------------------- packing
def compare_cubes(a: Path, b: Path) -> tuple[int, list[str]]:
    """(number of variables compared, those that differ) of two cubes, timing variables excluded."""
    import numpy as np
    import xarray as xr

    with xr.open_dataset(a, engine="h5netcdf") as x, xr.open_dataset(b, engine="h5netcdf") as y:
        names = sorted(set(x.data_vars) | set(y.data_vars))
        differ = []
        compared = 0
        for name in names:
            if name in TIMING_VARS:
                continue
            compared += 1
            if name not in x or name not in y:
                differ.append(name)
                continue
            u, v = x[name].values, y[name].values
            same = (
                np.array_equal(u, v, equal_nan=True) if u.dtype.kind in "fc" else np.array_equal(u, v)
            ) and u.shape == v.shape
            if not same:
                differ.append(name)
        return compared, differ


def bench_packing(args) -> None:
    from test_slurm_packing import COMPARE_TINY, n_cells, run_sweep

    root = Path(args.root)
    runs = {}
    for profile in ("slurm", "slurm-packed"):
        where = root / (profile + ("-1thread" if args.same_threads and profile != "slurm" else ""))
        if profile == "slurm" and args.same_threads and (where / "work" / "results" / "cube.nc").exists():
            jobs = {
                log.stem: log.relative_to(where / "slurm_logs").parts[0]
                for log in (where / "slurm_logs").rglob("*.log")
            }
            runs[profile] = {"rc": 0, "jobs": jobs, "elapsed": float("nan"), "results": where / "work" / "results"}
            continue  # the unpacked run of a previous call
        if where.exists():
            shutil.rmtree(where)
        # --same-threads: every packed cell on 1 thread as in the unpacked run (packs of 1-core layers)
        extra = ["--set-threads", "train=1", "ceiling=1", "bayes=1"] if args.same_threads and profile != "slurm" else []
        run = run_sweep(profile, where, COMPARE_TINY, cores=1 if extra else 2, timeout=1800, extra=extra)
        if run["rc"] != 0:
            raise SystemExit(f"{profile}: snakemake failed ({run['rc']}):\n{run['out'][-6000:]}")
        runs[profile] = run
        print(f"{profile}: {len(run['jobs'])} SLURM jobs, {run['elapsed']:.1f} s", flush=True)
    compared, differ = compare_cubes(*(runs[p]["results"] / "cube.nc" for p in runs))
    cells = n_cells(COMPARE_TINY)
    rows = []
    for profile, run in runs.items():
        folders = sorted(run["jobs"].values())
        train = sum(1 for f in folders if "train" in f)
        wall = "kept run" if run["elapsed"] != run["elapsed"] else f"{run['elapsed']:.0f} s"  # nan: not re-run
        rows.append(
            f"| `profiles/{profile}` | {len(run['jobs'])} | {train} | {wall} | "
            + ", ".join(sorted(set(folders)))
            + " |"
        )
    text = "\n".join(
        [
            "## Packing on the local SLURM cluster (benchmarks/bench_scale.py packing"
            + (" --same-threads: every packed cell on 1 thread, as unpacked)" if args.same_threads else ")"),
            "",
            machine_note() + "; the cluster is one node of 2 CPUs, so both runs are bound by it and by the "
            "polling (3 s, then +10 s per check that sees nothing finish).",
            "",
            f"Sweep: tests/test_slurm_packing.py `COMPARE_TINY`: {cells} train cells (ridge, LightGBM x n_train "
            "200, 400 x seeds 0, 1 at noise 1, mag 21.5) + ceiling, Bayes, curves, information, simulate; "
            + (
                "packed with `--cores 1 --set-threads train=1 ceiling=1 bayes=1` (1-core packs), against the "
                "kept unpacked run."
                if args.same_threads
                else "`--cores 2` for the packed profile (the node's width)."
            ),
            "",
            "| profile | sbatch submissions | of them for the train cells | wall time | SLURM job log folders |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"Cubes: {compared} variables compared number by number (timing variables {sorted(TIMING_VARS)} "
            f"excluded): {'**identical**' if not differ else 'DIFFER in ' + ', '.join(differ)}.",
        ]
    )
    print(text)
    write_section("packing_same_threads" if args.same_threads else "packing", text, RESULTS)


# ---------------------------------------------------------------- the 1M data path
def timed(cmd: list[str], log: Path) -> dict:
    """Wall seconds and peak RSS (GB) of ``cmd`` under /usr/bin/time -v; its output in ``log``."""
    t0 = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=fh, stderr=subprocess.STDOUT, text=True)
    wall = time.monotonic() - t0
    text = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-4000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return {"wall": wall, "rss_gb": rss_kb / 1e6, "log": text}


LOADER = """
import json, os, resource, sys, time
from specscale.data.loader import train_loader
from specscale.data.sources import open_source
from specscale.models.vit.params import ViTParams
p = ViTParams()
src = open_source(sys.argv[1]); n = int(sys.argv[2]); workers = int(sys.argv[3])
loader, sampler = train_loader(src, n, sys.argv[4], batch=p.batch, slab=p.slab, seed=0, workers=workers)
sampler.set_epoch(0)
t0 = time.perf_counter(); seen = batches = 0
for b in loader:
    seen += b["flux"].shape[0]; batches += 1
dt = time.perf_counter() - t0
print(json.dumps({"spectra": seen, "batches": batches, "seconds": dt, "batch": p.batch, "slab": p.slab,
    "self_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    "worker_rss_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6}), flush=True)
os._exit(0)  # the loader's worker process is not joined at interpreter exit (it would hang there)
"""


def bench_data(args) -> None:
    import yaml

    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "logg1m.h5"
    config = work / "config.yaml"
    # the study's dataset: config/logg1m.yaml's simulation section; its models at the sizes below
    study = yaml.safe_load((ROOT / "config" / "logg1m.yaml").read_text())
    lgbm = {"max_trees": args.lgbm_trees, "early_stopping_rounds": args.lgbm_trees, "log_every": 0}
    config.write_text(yaml.safe_dump({"simulation": study["simulation"], "models": {"ridge": {}, "lightgbm": lgbm}}))
    spec = BIN / "specscale"
    out = {}
    try:
        if not data.exists():
            n = args.n_train + 1000 + 10000
            print(f"simulate {n:,} spectra ...", flush=True)
            out["simulate"] = timed(
                [
                    str(spec),
                    "simulate",
                    "--out",
                    str(data),
                    "--config",
                    str(config),
                    "--n-train",
                    str(args.n_train),
                    "--n-val",
                    "1000",
                    "--n-test",
                    "10000",
                    "--device",
                    "cpu",
                    "--no-progress",
                ],
                work / "simulate.log",
            )
        size_gb = data.stat().st_size / 1e9
        print(f"dataset {size_gb:.1f} GB; ridge at {args.n_train:,} ...", flush=True)
        common = [
            "--noise",
            "1",
            "--mag",
            MAG,
            "--seed",
            "0",
            "--config",
            str(config),
            "--threads",
            str(args.threads),
            "--device",
            "cpu",
            "--force",
        ]
        out["ridge"] = timed(
            [
                str(spec),
                "train",
                "ridge",
                "--data",
                str(data),
                "--n-train",
                str(args.n_train),
                *common,
                "--out",
                str(work / "ridge"),
            ],
            work / "ridge.log",
        )
        n_lgbm = min(args.lgbm_n, args.n_train)
        print(f"lightgbm at {n_lgbm:,} ...", flush=True)
        out["lightgbm"] = timed(
            [
                str(spec),
                "train",
                "lightgbm",
                "--data",
                str(data),
                "--n-train",
                str(n_lgbm),
                *common,
                "--out",
                str(work / "lightgbm"),
            ],
            work / "lightgbm.log",
        )
        print("ViT loader, one epoch ...", flush=True)
        out["loader"] = timed(
            [sys.executable, "-c", LOADER, str(data), str(args.n_train), str(args.workers), MAG], work / "loader.log"
        )
        loader = json.loads(next(line for line in out["loader"]["log"].splitlines() if line.startswith("{")))
        metrics = {m: json.loads((work / m / "metrics.json").read_text()) for m in ("ridge", "lightgbm")}
    finally:
        if not args.keep and data.exists():
            data.unlink()
            print(f"deleted {data}")

    def r2(m):
        return metrics[m]["metrics"]["r2"]

    sim = out.get("simulate")
    rows = []
    if sim:
        rate = (args.n_train + 11000) / sim["wall"]
        rows.append(
            f"| `specscale simulate` {args.n_train:,} + 1k + 10k | {sim['wall'] / 60:.1f} min ({rate:,.0f} spectra/s) "
            f"| {sim['rss_gb']:.2f} GB | file {size_gb:.1f} GB |"
        )
    rows.append(
        f"| Ridge at {args.n_train:,} (streamed X^T X, {args.threads} threads) | {out['ridge']['wall'] / 60:.1f} min "
        f"| {out['ridge']['rss_gb']:.2f} GB | test R^2 {r2('ridge'):.3f} |"
    )
    rows.append(
        f"| LightGBM at {n_lgbm:,} (Sequence path, {args.lgbm_trees} trees, study's leaves/bins) "
        f"| {out['lightgbm']['wall'] / 60:.1f} min | {out['lightgbm']['rss_gb']:.2f} GB | test R^2 {r2('lightgbm'):.3f} |"
    )
    rows.append(
        f"| ViT loader, one epoch: {loader['spectra']:,} spectra in {loader['batches']:,} batches of {loader['batch']} "
        f"({args.workers} worker) | {loader['seconds'] / 60:.1f} min ({loader['spectra'] / loader['seconds']:,.0f} spectra/s) "
        f"| {loader['self_rss_gb']:.2f} GB main + {loader['worker_rss_gb']:.2f} GB worker | |"
    )
    text = "\n".join(
        [
            "## The 1M protocol's data path on this machine (benchmarks/bench_scale.py data)",
            "",
            machine_note() + f"; {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1e9:.0f} GB RAM. "
            "Peak RSS: /usr/bin/time -v of each command (the loader's worker processes: getrusage of its children).",
            "",
            f"Dataset: config/logg1m.yaml's simulation section, {args.n_train:,} training + 1,000 validation + "
            f"10,000 test spectra, noise drawn on read at noise 1, mag {MAG}; deleted after the run.",
            "",
            "| step | wall time | peak RSS | note |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    print(text)
    write_section("data", text, RESULTS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    p = sub.add_parser("packing")
    p.add_argument("--root", default="/tmp/scale_pack")
    p.add_argument(
        "--same-threads",
        action="store_true",
        help="packed run with every cell on 1 thread (--set-threads ...=1 --cores 1), against the kept unpacked run",
    )
    p = sub.add_parser("data")
    p.add_argument("--dir", default="/tmp/scale1m")
    p.add_argument("--n-train", type=int, default=1_000_000)
    p.add_argument("--lgbm-n", type=int, default=200_000)
    p.add_argument("--lgbm-trees", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the dataset")
    args = ap.parse_args()
    if not RESULTS.exists():
        RESULTS.write_text("# Cluster scale: packing on SLURM and the 1M data path\n\n")
    {"packing": bench_packing, "data": bench_data}[args.part](args)


if __name__ == "__main__":
    main()
