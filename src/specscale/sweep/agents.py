"""W&B sweep agents as one SLURM job array (``specscale agents``).

A W&B sweep (config/wandb_sweep.yaml, created with ``wandb sweep``) hands hyper-parameters to
agents; each agent runs the sweep's program (``specscale train vit ...``) once per run it pulls.
``launch_agents`` submits N agents as one array job through submitit (``executor.map_array``):
one array task per agent, at most ``parallelism`` running at once. The "local" and "debug"
submitit executors run the same array on this machine (tests, laptops).

W&B sweeps need a reachable W&B server (the agents ask it for every run). On air-gapped nodes use
the Snakemake grid instead: its ViT runs are tracked offline and uploaded later with
``wandb sync``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from specscale.core.config import ConfigError, from_dict, load_config, section
from specscale.core.files import unsafe_path
from specscale.sweep.sections import WORKFLOW_SECTIONS

EXECUTORS = ("slurm", "local", "debug", "auto")


@dataclass(frozen=True)
class AgentsConfig:
    """Where and how the agents run: config section ``sweep.agents``; CLI flags override it."""

    executor: str = "slurm"  # slurm | local | debug | auto (submitit picks SLURM when there is one)
    folder: str = "results/agents"  # submitit's pickles and per-task logs (one subfolder per job)
    partition: str | None = None
    account: str | None = None
    timeout_min: int = 720
    gpus: int = 1  # per agent
    cpus: int = 8  # per agent
    mem_gb: float = 32.0
    parallelism: int = 8  # array tasks running at once
    runs_per_agent: int | None = None  # None: each agent pulls runs until the sweep is done
    project: str | None = None
    entity: str | None = None

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor={self.executor!r} is not one of {list(EXECUTORS)}")
        if why := unsafe_path(self.folder):
            raise ValueError(f"folder={why}")
        for name in ("timeout_min", "cpus", "parallelism"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be a positive integer")
        if not isinstance(self.gpus, int) or self.gpus < 0:
            raise ValueError(f"gpus={self.gpus!r} must be an integer >= 0")
        if not self.mem_gb > 0:
            raise ValueError(f"mem_gb={self.mem_gb!r} must be positive")
        if self.runs_per_agent is not None and (not isinstance(self.runs_per_agent, int) or self.runs_per_agent < 1):
            raise ValueError(f"runs_per_agent={self.runs_per_agent!r} must be a positive integer or null")

    @classmethod
    def from_config(cls, path=None, overrides: dict | None = None) -> AgentsConfig:
        """``sweep.agents`` of the YAML config at ``path`` (if any), then ``overrides`` (None
        values ignored). Unknown keys fail naming them."""
        values = dict(section(load_config(path, also=WORKFLOW_SECTIONS), "sweep", "agents")) if path else {}
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return from_dict(cls, values, "sweep.agents")


def run_agent(sweep_id: str, count: int | None, project: str | None, entity: str | None) -> str:
    """One agent, the body of one array task: pull runs of the sweep and run its program for each
    (``wandb.agent`` without a function runs the sweep's ``command``)."""
    import wandb

    wandb.agent(sweep_id, count=count, project=project, entity=entity)
    return f"agent of sweep {sweep_id} finished"


def executor_parameters(cfg: AgentsConfig) -> dict:
    """The parameters of the agents' array, as ``submitit.AutoExecutor.update_parameters`` takes
    them (generic names for every executor, ``slurm_*`` for SLURM only): plain data, built without
    submitit or a cluster."""
    params = {
        "name": "specscale-wandb-agent",
        "timeout_min": cfg.timeout_min,
        "cpus_per_task": cfg.cpus,
        "mem_gb": cfg.mem_gb,
        "slurm_array_parallelism": cfg.parallelism,
    }
    if cfg.gpus:
        params["gpus_per_node"] = cfg.gpus
    if cfg.partition:
        params["slurm_partition"] = cfg.partition
    if cfg.account:
        params["slurm_account"] = cfg.account
    return params


def make_executor(cfg: AgentsConfig):
    """A submitit executor for the agents' array (:func:`executor_parameters`). submitit's SLURM
    executor needs ``srun`` on PATH to be built."""
    import submitit

    folder = Path(cfg.folder) / "%j"
    cluster = None if cfg.executor == "auto" else cfg.executor
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(**executor_parameters(cfg))
    return executor


def launch_agents(
    sweep_id: str, count: int, cfg: AgentsConfig | None = None, agent: Callable[..., object] = run_agent
) -> list:
    """Submit ``count`` agents of W&B sweep ``sweep_id`` as one job array; returns submitit jobs.

    ``agent(sweep_id, runs_per_agent, project, entity)`` is what each array task calls
    (:func:`run_agent`; tests inject a fake)."""
    cfg = cfg or AgentsConfig()
    sweep_id = str(sweep_id).strip()
    if not sweep_id or any(c.isspace() for c in sweep_id) or sweep_id.count("/") > 2:
        raise ConfigError(f"--sweep {sweep_id!r}: expected a W&B sweep id, ID or ENTITY/PROJECT/ID")
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"--count must be a positive integer, got {count!r}")
    executor = make_executor(cfg)
    n = range(count)
    return executor.map_array(
        agent, [sweep_id for _ in n], [cfg.runs_per_agent for _ in n], [cfg.project for _ in n], [cfg.entity for _ in n]
    )
