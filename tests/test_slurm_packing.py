"""Packing on a real SLURM cluster (the one-node cluster `.ci/slurm-up.sh` starts): a small sweep
through profiles/slurm-packed completes with its train cells packed into group jobs, so it submits
fewer SLURM jobs than it has cells; the profile packs what it says (a pack per (model, noise, mag),
the ceiling and the Bayes reference of a cell together).

Skipped only when ``sbatch`` is absent or ``sinfo`` fails (no cluster). ``run_sweep`` is shared
with benchmarks/bench_scale.py (packed against unpacked, the cubes compared)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from factories import REPO, job_env, local_cluster_args, snakemake_cmd

from specscale.sweep.plan import Job, pack_resources

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # jobs on the local SLURM cluster

# the test's sweep: 8 LightGBM cells (4 sizes x 2 seeds, ~4 s each) at one (noise, mag): one pack
PACKED_TINY = {
    "datasets": {"tiny": {"n_train": 400, "n_val": 100, "n_test": 200, "seed": 3}},
    "grid": {
        "noise": [1.0],
        "mag": ["21.5"],
        "model": ["lightgbm"],
        "n_train": [100, 200, 300, 400],
        "seed": [0, 1],
        "ceiling": {"stars": 40},
        "bayes": {"stars": 40},
        "curves": {"mag": [21.0, 22.0], "stars": 20},
    },
    "models": {"lightgbm": {"max_trees": 20, "num_leaves": 7, "max_bin": 15, "early_stopping_rounds": 5}},
    "report": {"baseline": "lightgbm"},
    "wandb": {"mode": "disabled"},
}
# benchmarks/bench_scale.py's comparison: ridge and LightGBM x 2 sizes x 2 seeds (8 cells, 2 packs)
COMPARE_TINY = {
    **PACKED_TINY,
    "grid": {**PACKED_TINY["grid"], "model": ["ridge", "lightgbm"], "n_train": [200, 400]},
    "models": {"ridge": {"n_alphas": 9}, **PACKED_TINY["models"]},
    "report": {"baseline": "ridge"},
}


def n_cells(config: dict) -> int:
    grid = config["grid"]
    return len(grid["noise"]) * len(grid["mag"]) * len(grid["model"]) * len(grid["n_train"]) * len(grid["seed"])


def run_sweep(profile: str, root: Path, config: dict, cores: int = 2, timeout: int = 600, extra=()) -> dict:
    """The sweep ``config`` through ``profiles/<profile>`` on the local cluster, in ``root``.
    Returns rc, output, wall seconds, and the SLURM jobs it submitted: {job id: log folder
    (rule_<rule>, or group_<group>_<its rules> for a pack)} from the kept per-job logs (one log per sbatch)."""
    workdir, slurm_logs = root / "work", root / "slurm_logs"
    workdir.mkdir(parents=True)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = (
        snakemake_cmd()
        + [
            "-s",
            str(REPO / "Snakefile"),
            "--configfile",
            str(path),
            "--directory",
            str(workdir),
            "--profile",
            str(REPO / "profiles" / profile),
        ]
        + local_cluster_args(slurm_logs)
    )
    if profile == "slurm-packed":
        cmd += ["--cores", str(cores)]  # the local node's width (the profile's 16 suits a real node)
    cmd += list(extra)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=root, env=job_env(), capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - t0
    jobs = {log.stem: log.relative_to(slurm_logs).parts[0] for log in slurm_logs.rglob("*.log")}
    return {
        "rc": proc.returncode,
        "out": proc.stdout + proc.stderr,
        "elapsed": elapsed,
        "jobs": jobs,
        "results": workdir / "results",
    }


def sacct_rows(job_ids) -> dict[str, dict[str, str]]:
    """sacct's State, AllocCPUS, ReqMem and Timelimit of each job id."""
    fields = ["JobID", "State", "AllocCPUS", "ReqMem", "Timelimit"]
    proc = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", ",".join(sorted(job_ids)), "-o", ",".join(fields)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    rows = [dict(zip(fields, line.split("|"))) for line in proc.stdout.splitlines() if line.strip()]
    return {r["JobID"]: r for r in rows}


@pytest.mark.started_early(run=lambda root: run_sweep("slurm-packed", root, PACKED_TINY, timeout=900))
def test_packed_sweep_submits_fewer_jobs_than_cells(slurm_cluster, early_run):
    run = early_run
    assert run["rc"] == 0, f"snakemake failed ({run['rc']}):\n{run['out'][-8000:]}"
    results = run["results"]
    assert (results / "cube.nc").exists() and (results / "report.md").exists()
    cells = sorted(results.glob("cells/*/*/*/*/*/*/metrics.json"))
    assert len(cells) == n_cells(PACKED_TINY) == 8

    folders = sorted(run["jobs"].values())
    # one pack for the (model, noise, mag), one for the cell's ceiling and Bayes reference, and
    # simulate, ceiling_curves, information alone: 5 SLURM jobs for 8 cells
    assert folders == [
        "group_cpu_lightgbm_noise1_mag21.5_train",
        "group_refs_noise1_mag21.5_bayes_ceiling",
        "rule_ceiling_curves",
        "rule_information",
        "rule_simulate",
    ], folders
    assert len(run["jobs"]) == 5 < len(cells), run["jobs"]

    rows = sacct_rows(run["jobs"])
    assert set(rows) == set(run["jobs"]) and {r["State"] for r in rows.values()} == {"COMPLETED"}, rows
    # the pack of eight cells on a 2-core node, each on both cores (the profile's set-threads): the
    # plugin runs them one after another, and Snakemake asks for 2 cores, one cell's memory and the
    # sum of the 8 runtimes (specscale.sweep.plan.pack_resources computes the same)
    pack = next(j for j, f in run["jobs"].items() if f.startswith("group_cpu_"))
    one = Job("train", {}, 2, 0, 1000, 30, None)  # schema defaults: 1000 MB, 30 min
    cores, mem, runtime, _ = pack_resources([one] * 8, 2)
    assert (cores, mem, runtime) == (2, 1000, 240)
    assert (rows[pack]["AllocCPUS"], rows[pack]["ReqMem"]) == (str(cores), f"{mem}M"), rows[pack]
    assert rows[pack]["Timelimit"] == f"{runtime // 60:02d}:{runtime % 60:02d}:00", rows[pack]
    print(
        f"packed tiny sweep via SLURM: {len(run['jobs'])} SLURM jobs for {len(cells)} cells in {run['elapsed']:.1f} s"
    )
