"""End-to-end checks against a real SLURM cluster.

CI starts a one-node cluster (munge, MariaDB + slurmdbd, slurmctld, slurmd) with
``bash .ci/slurm-up.sh`` before the tests and stops it with ``bash .ci/slurm-down.sh``
afterwards; developers run the same scripts by hand. These tests prove that

* ``profiles/slurm`` (Snakemake 9 + snakemake-executor-plugin-slurm) submits each rule of
  a toy workflow as its own SLURM job and sees them finish (via ``sacct``), and
* ``submitit.AutoExecutor`` picks SLURM and returns a function's result.

They are skipped only when ``sbatch`` is not on PATH or ``sinfo`` fails (no cluster).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from factories import ACCOUNT, PARTITION, REPO, job_env, local_cluster_args, snakemake_cmd

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # jobs on the local SLURM cluster

SMOKE_SNAKEFILE = REPO / "tests" / "slurm_smoke" / "Snakefile"
SLURM_PROFILE = REPO / "profiles" / "slurm"


def run_toy_workflow(root: Path) -> dict:
    """The toy workflow through profiles/slurm on the local cluster, in ``root``."""
    workdir = root / "work"
    workdir.mkdir()
    slurm_logs = root / "slurm_logs"
    cmd = snakemake_cmd() + [
        "-s",
        str(SMOKE_SNAKEFILE),
        "--profile",
        str(SLURM_PROFILE),
        "--directory",
        str(workdir),
    ]
    # Poll fast. The plugin checks N s after a submission and adds 10 s to the next wait
    # whenever a check finds nothing finished; a trivial job here takes 5-8 s from sbatch
    # to done on 2 cores (Snakemake starts twice inside it), so N=10 sees each wave of
    # jobs on the first check (~30 s for the 2 waves) where N=1 costs ~12 s per job.
    cmd += local_cluster_args(slurm_logs, mem_mb=200, runtime=5, first_check_s=10)
    has_gpu_gres = (
        "gpu"
        in subprocess.run(
            ["sinfo", "-h", "-p", PARTITION, "-o", "%G"], capture_output=True, text=True, timeout=20
        ).stdout
    )
    if not has_gpu_gres:  # the rule `square` asks for gpu=1 like train_vit does
        cmd += ["--set-resources", "square:gpu=0", "square:cpus_per_gpu=0"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=root, env=job_env(), capture_output=True, text=True, timeout=600)
    return {
        "rc": proc.returncode,
        "out": proc.stdout + proc.stderr,
        "elapsed": time.monotonic() - t0,
        "workdir": workdir,
        "slurm_logs": slurm_logs,
        "has_gpu_gres": has_gpu_gres,
    }


@pytest.mark.started_early(run=run_toy_workflow)
def test_snakemake_slurm_profile_runs_toy_workflow(slurm_cluster, early_run: dict) -> None:
    run = early_run
    workdir, slurm_logs, has_gpu_gres, elapsed = (run[k] for k in ("workdir", "slurm_logs", "has_gpu_gres", "elapsed"))
    assert run["rc"] == 0, f"snakemake failed ({run['rc']}):\n{run['out'][-6000:]}"

    # outputs and rule logs
    assert (workdir / "numbers.txt").read_text().split() == ["1", "2", "3", "4"]
    assert (workdir / "squares.txt").read_text().split() == ["1", "4", "9", "16"]
    assert (workdir / "combined.txt").read_text().strip() == "sum=10 sumsq=30"
    job_ids_from_rule_logs = []
    for rule in ("generate", "square", "combine"):
        text = (workdir / "logs" / f"{rule}.log").read_text()
        m = re.search(r"job=(\S+)", text)
        assert m and m.group(1).isdigit(), f"rule {rule} did not run inside SLURM: {text!r}"
        job_ids_from_rule_logs.append(m.group(1))

    # one SLURM log per job: <slurm_logs>/rule_<rule>/<jobid>.log
    per_job_logs = sorted(slurm_logs.rglob("*.log"))
    rules_with_logs = {p.relative_to(slurm_logs).parts[0] for p in per_job_logs}
    assert rules_with_logs == {"rule_generate", "rule_square", "rule_combine"}, per_job_logs
    job_ids = sorted({p.stem for p in per_job_logs})
    assert len(job_ids) == 3 and all(j.isdigit() for j in job_ids), job_ids
    assert sorted(job_ids_from_rule_logs) == job_ids
    if has_gpu_gres:  # sbatch --gpus=1 reached SLURM and was granted
        assert "gpus=1" in (workdir / "logs" / "square.log").read_text()

    # and accounting saw them complete
    sacct = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State,Partition,Account"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sacct.returncode == 0, sacct.stderr
    rows = [line.split("|") for line in sacct.stdout.splitlines() if line.strip()]
    assert sorted(r[0] for r in rows) == job_ids, sacct.stdout
    assert all(r[1] == "COMPLETED" and r[2] == PARTITION and r[3] == ACCOUNT for r in rows), sacct.stdout
    print(f"snakemake via SLURM: 3 jobs in {elapsed:.1f} s")


def test_submitit_autoexecutor_uses_slurm(slurm_cluster, tmp_path: Path, monkeypatch) -> None:
    import submitit

    env = job_env()
    monkeypatch.setenv("PATH", env["PATH"])
    for key in [k for k in os.environ if k.startswith("SLURM_") and k != "SLURM_CONF"]:
        monkeypatch.delenv(key)

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit")
    assert executor.cluster == "slurm"
    executor.update_parameters(
        slurm_partition=PARTITION,
        slurm_account=ACCOUNT,
        timeout_min=5,
        cpus_per_task=1,
        mem_gb=1,
        name="specscale-submitit-smoke",
    )

    def add(a: int, b: int) -> int:  # local: cloudpickle ships it by value
        return a + b

    t0 = time.monotonic()
    job = executor.submit(add, 2, 3)
    assert str(job.job_id).isdigit()
    assert job.result() == 5
    print(f"submitit via SLURM: job {job.job_id} in {time.monotonic() - t0:.1f} s")
