"""A ViT cell preempted on the real SLURM cluster (``bash .ci/slurm-up.sh``): ``scancel --signal=TERM
--full`` signals every process of the running job (trainer, DataLoader workers and the batch shell),
as a preemption or ``--signal`` does. The cell checkpoints and exits 75, its batch script requeues
the job on that exit code (``--requeue``), and the requeued job resumes and finishes with exactly
the predictions of an uninterrupted run."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from factories import ACCOUNT, PARTITION, job_env
from test_preemption import PREEMPT, STOPPED, run_to_end, same_run, train_cmd

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # jobs on the local SLURM cluster

# the batch script of a preemptible cell: requeue on exit 75 (checkpointed), else exit as the cell did
JOB = """#!/bin/bash
trap 'echo "batch shell: SIGTERM"' TERM  # the shell outlives the signal and sees the cell's exit code
echo "start restart=${{SLURM_RESTART_COUNT:-0}}"
{cmd}
rc=$?
echo "specscale train exit $rc"
if [ $rc -eq 75 ]; then scontrol requeue "$SLURM_JOB_ID"; fi
exit $rc
"""


def slurm(*args: str) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=30, env=job_env())
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "SUSPENDED")


def job_state(job: str) -> str:
    """The controller's state of ``job`` (finished jobs too, for MinJobAge); '' once it forgot it."""
    proc = subprocess.run(
        ["squeue", "-h", "-j", job, "--states=all", "-o", "%T"], capture_output=True, text=True, timeout=30
    )
    return proc.stdout.strip() if proc.returncode == 0 else ""


def accounting(job: str, want: list[str], wait_s: float = 30.0) -> list[str]:
    """The states sacct records for each run of ``job`` (slurmdbd may lag the controller)."""
    deadline = time.monotonic() + wait_s
    while True:
        states = slurm("sacct", "-n", "-P", "-X", "-D", "-j", job, "-o", "State").split()
        if states == want or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def test_preempted_vit_job_is_requeued_and_resumes_exactly(slurm_cluster, tiny_dataset, tmp_path: Path) -> None:
    config = tmp_path / "preempt.yaml"
    config.write_text(yaml.safe_dump(PREEMPT))
    ref = tmp_path / "uninterrupted"
    run_to_end(train_cmd(tiny_dataset, ref, config))

    out = tmp_path / "preempted"
    script = tmp_path / "cell.sh"
    script.write_text(JOB.format(cmd=shlex.join(train_cmd(tiny_dataset, out, config))))
    log = tmp_path / "job.log"
    job = slurm(
        "sbatch",
        "--parsable",
        "--requeue",
        "--open-mode=append",  # a requeued job appends to its log
        f"--partition={PARTITION}",
        f"--account={ACCOUNT}",
        "--job-name=specscale-preempt",
        "--cpus-per-task=1",
        "--mem=2000",
        "--time=10",
        f"--output={log}",
        str(script),
    ).split(";")[0]
    try:
        ckpt = out / "work" / "checkpoint.pt"
        deadline = time.monotonic() + 180
        while not ckpt.exists():  # epoch 0 done: the job is training
            assert job_state(job) in ACTIVE, f"job {job} ended before training:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no checkpoint after 180 s; job {job}: {job_state(job)}"
            time.sleep(0.1)
        time.sleep(0.2)
        slurm("scancel", "--signal=TERM", "--full", job)

        # The script requeues the job: pending, with a BeginTime SLURM puts 2 minutes away. Start it
        # sooner, but not within the second of the requeue: the node refuses a job whose credential
        # was revoked in the same second ("Job credential revoked").
        nudged = False
        deadline = time.monotonic() + 240
        while (state := job_state(job)) in ACTIVE:
            if state == "PENDING" and not nudged:
                slurm("scontrol", "update", f"JobId={job}", "StartTime=now+3")
                nudged = True
            text = log.read_text() if log.exists() else ""
            assert time.monotonic() < deadline, f"job {job} not done after 240 s ({state}):\n{text[-4000:]}"
            time.sleep(0.5)
    finally:
        if job_state(job) in ACTIVE:
            subprocess.run(["scancel", job], timeout=30)

    text = log.read_text()
    assert state == "COMPLETED", f"job {job} ended {state}:\n{text[-4000:]}"
    runs = re.findall(r"start restart=(\d+)", text)
    exits = re.findall(r"specscale train exit (\d+)", text)
    assert runs == ["0", "1"] and exits == ["75", "0"], text[-4000:]
    assert "Traceback" not in text and "killed by signal" not in text, text[-4000:]
    stopped = STOPPED.search(text)
    assert stopped, text[-4000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["model_info"]["resumed_from_step"] == int(stopped.group(1)) > 0
    same_run(out, ref)
    assert accounting(job, ["REQUEUED", "COMPLETED"]) == ["REQUEUED", "COMPLETED"]
