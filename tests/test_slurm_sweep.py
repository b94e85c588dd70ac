"""The real workflow on a real SLURM cluster (the one-node cluster `.ci/slurm-up.sh` starts):
a small sweep through profiles/slurm runs to completion with every non-local rule as its own
SLURM job, and `specscale agents` submits a submitit job array there.

Skipped only when ``sbatch`` is absent or ``sinfo`` fails (no cluster)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from factories import ACCOUNT, PARTITION, REPO, job_env, local_cluster_args, snakemake_cmd
from test_workflow import TINY

from specscale.sweep.agents import AgentsConfig, launch_agents

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # jobs on the local SLURM cluster

REMOTE_RULES = {"simulate", "ceiling", "ceiling_curves", "information", "bayes", "train"}  # the others are localrules


def run_small_sweep(root: Path) -> dict:
    """The tiny sweep through profiles/slurm on the local cluster, in ``root``."""
    workdir = root / "work"
    workdir.mkdir()
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(TINY))
    slurm_logs = root / "slurm_logs"
    cmd = (
        snakemake_cmd()
        + [
            "-s",
            str(REPO / "Snakefile"),
            "--configfile",
            str(config),
            "--directory",
            str(workdir),
            "--profile",
            str(REPO / "profiles" / "slurm"),
        ]
        + local_cluster_args(slurm_logs)
    )  # poll often: jobs here take 5-30 s (Snakemake starts in each)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=root, env=job_env(), capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    return {
        "rc": proc.returncode,
        "out": out,
        "elapsed": time.monotonic() - t0,
        "workdir": workdir,
        "slurm_logs": slurm_logs,
    }


@pytest.mark.started_early(run=run_small_sweep)
def test_small_sweep_runs_through_the_slurm_profile(slurm_cluster, early_run):
    workdir, slurm_logs, elapsed = early_run["workdir"], early_run["slurm_logs"], early_run["elapsed"]
    assert early_run["rc"] == 0, f"snakemake failed ({early_run['rc']}):\n{early_run['out'][-8000:]}"

    results = workdir / "results"
    assert (results / "cube.nc").exists() and (results / "report.md").exists()
    assert (results / "plots" / "scaling.pdf").exists()
    # every non-local rule ran as its own SLURM job: one per-job log under rule_<name>/
    logs = sorted(slurm_logs.rglob("*.log"))
    per_rule: dict[str, set[str]] = {}
    for path in logs:
        per_rule.setdefault(path.relative_to(slurm_logs).parts[0].removeprefix("rule_"), set()).add(path.stem)
    assert set(per_rule) == REMOTE_RULES, per_rule
    assert len(per_rule["train"]) == 2 and all(j.isdigit() for ids in per_rule.values() for j in ids)
    job_ids = sorted(j for ids in per_rule.values() for j in ids)
    sacct = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,JobName,State"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    states = {row.split("|")[0]: row.split("|")[2] for row in sacct.stdout.splitlines() if row.strip()}
    assert set(states) == set(job_ids) and set(states.values()) == {"COMPLETED"}, sacct.stdout
    # each cell's metrics were written inside its SLURM job (the per-job log shows the train command)
    for log in (slurm_logs / "rule_train").rglob("*.log"):
        assert re.search(r"specscale train ridge .*--n-train (200|400)", log.read_text()), log.read_text()[-2000:]
    print(f"tiny sweep via SLURM: {len(job_ids)} SLURM jobs in {elapsed:.1f} s")


def test_agents_array_is_submitted_to_slurm(slurm_cluster, tmp_path, monkeypatch):
    for key, value in job_env().items():
        monkeypatch.setenv(key, value)

    def fake_agent(sweep_id, count, project, entity):  # local function: cloudpickle ships it by value
        import os

        return {
            "sweep": sweep_id,
            "count": count,
            "project": project,
            "entity": entity,
            "job": os.environ.get("SLURM_ARRAY_JOB_ID"),
            "task": os.environ.get("SLURM_ARRAY_TASK_ID"),
        }

    cfg = AgentsConfig(
        executor="slurm",
        folder=str(tmp_path / "agents"),
        partition=PARTITION,
        account=ACCOUNT,
        timeout_min=5,
        gpus=0,
        cpus=1,
        mem_gb=0.5,
        parallelism=2,
        runs_per_agent=3,
        project="specscale-test",
    )
    t0 = time.monotonic()
    jobs = launch_agents("ent/proj/sweep01", 2, cfg, agent=fake_agent)
    results = [job.result() for job in jobs]
    assert [r["task"] for r in results] == ["0", "1"]
    assert {r["job"] for r in results} == {jobs[0].job_id.split("_")[0]}  # one array job
    assert all(
        r["sweep"] == "ent/proj/sweep01" and r["count"] == 3 and r["project"] == "specscale-test" for r in results
    )
    print(f"agents array via SLURM: job {jobs[0].job_id.split('_')[0]} in {time.monotonic() - t0:.1f} s")
