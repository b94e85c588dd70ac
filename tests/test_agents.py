"""`specscale agents`: N W&B sweep agents as one submitit job array (no network: a fake agent
runs in the array's tasks; the real one only hands the sweep id to wandb.agent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from specscale.cli import main as cli_main
from specscale.core.config import ConfigError
from specscale.sweep.agents import AgentsConfig, executor_parameters, launch_agents, make_executor, run_agent

REPO = Path(__file__).resolve().parents[1]


def test_local_executor_runs_one_array_task_per_agent(tmp_path):
    def fake_agent(sweep_id, count, project, entity):  # cloudpickle ships a local function by value
        import os

        return {
            "args": [sweep_id, count, project, entity],
            "pid": os.getpid(),
            "job": os.environ.get("SUBMITIT_LOCAL_JOB_ID"),
        }

    cfg = AgentsConfig(
        executor="local", folder=str(tmp_path / "agents"), runs_per_agent=4, project="proj", entity="team", gpus=0
    )
    jobs = launch_agents("team/proj/abc123", 3, cfg, agent=fake_agent)
    results = [job.result() for job in jobs]
    assert [r["args"] for r in results] == [["team/proj/abc123", 4, "proj", "team"]] * 3
    assert len({r["pid"] for r in results}) == 3  # three separate processes
    assert sorted(r["job"] for r in results) == sorted(str(j.job_id) for j in jobs)
    # submitit kept one folder per task with its pickles and logs
    assert {str(j.job_id) for j in jobs} <= {p.name for p in (tmp_path / "agents").iterdir()}


SLURM_CFG = dict(partition="gpu", account="lab", timeout_min=90, gpus=1, cpus=12, mem_gb=48, parallelism=5)


def test_array_parameters_are_built_from_the_config_without_submitit():
    # our own parameter building: plain data, no cluster and no srun needed
    params = executor_parameters(AgentsConfig(executor="slurm", **SLURM_CFG))
    assert params == {
        "name": "specscale-wandb-agent",
        "timeout_min": 90,
        "cpus_per_task": 12,
        "mem_gb": 48,
        "slurm_array_parallelism": 5,
        "gpus_per_node": 1,
        "slurm_partition": "gpu",
        "slurm_account": "lab",
    }
    # no GPU, partition or account: those keys are left to submitit's and SLURM's defaults
    params = executor_parameters(AgentsConfig(executor="local", gpus=0))
    assert not {"gpus_per_node", "slurm_partition", "slurm_account"} & set(params)


def test_slurm_executor_gets_the_array_parameters(tmp_path, monkeypatch):
    # submitit's SLURM executor only checks that `srun` is on PATH when it is built: a stub one
    # lets this run on a machine without SLURM (tests/test_slurm_sweep.py submits to a real cluster)
    stub = tmp_path / "bin" / "srun"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cfg = AgentsConfig(executor="slurm", folder=str(tmp_path / "agents"), **SLURM_CFG)
    executor = make_executor(cfg)
    assert executor.cluster == "slurm"
    params = executor._executor.parameters  # what submitit turns into #SBATCH lines
    assert params["partition"] == "gpu" and params["account"] == "lab" and params["time"] == 90
    assert params["gpus_per_node"] == 1 and params["cpus_per_task"] == 12 and params["mem"] == "48GB"
    assert params["array_parallelism"] == 5 and params["job_name"] == "specscale-wandb-agent"


def test_real_agent_hands_the_sweep_to_wandb(monkeypatch):
    import wandb

    calls = []
    monkeypatch.setattr(wandb, "agent", lambda sweep_id, **kw: calls.append((sweep_id, kw)))
    assert "abc123" in run_agent("team/proj/abc123", 2, "proj", None)
    assert calls == [("team/proj/abc123", {"count": 2, "project": "proj", "entity": None})]


def test_config_section_and_flags(tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"sweep": {"agents": {"executor": "local", "cpus": 2, "parallelism": 3}}}))
    cfg = AgentsConfig.from_config(cfg_file, overrides={"cpus": 4, "partition": None})
    assert (cfg.executor, cfg.cpus, cfg.parallelism, cfg.partition) == ("local", 4, 3, None)
    cfg_file.write_text(yaml.safe_dump({"sweep": {"agents": {"cpu": 2}}}))
    with pytest.raises(ConfigError, match=r"sweep\.agents\.cpu"):
        AgentsConfig.from_config(cfg_file)
    with pytest.raises(ConfigError, match="executor='pbs'"):
        AgentsConfig.from_config(None, {"executor": "pbs"})
    # bad input fails before anything is submitted, naming it
    assert (
        cli_main(["agents", "--sweep", "abc", "--count", "0", "--executor", "local", "--folder", str(tmp_path / "x")])
        == 2
    )
    assert "--count must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert cli_main(["agents", "--sweep", "a b", "--count", "1", "--executor", "local"]) == 2
    assert "expected a W&B sweep id" in capsys.readouterr().err


def test_wandb_sweep_definition_runs_specscale_train_vit():
    sweep = yaml.safe_load((REPO / "config" / "wandb_sweep.yaml").read_text())
    command = sweep["command"]
    assert command[:4] == ["${env}", "specscale", "train", "vit"] and command[-1] == "${args}"
    assert sweep["metric"]["name"].startswith("val/")  # selection on validation, never on test
    from specscale.models.registry import resolve_model

    names = set(sweep["parameters"])
    fields = set(vars(resolve_model("vit", {}).params))
    assert names <= fields, names - fields
