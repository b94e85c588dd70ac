"""The machine a job runs on: the CPUs it may use and the torch device it asked for."""

from __future__ import annotations

import os


def cpu_count() -> int:
    """CPUs this job may use: SLURM_CPUS_PER_TASK, else the process's affinity mask."""
    env = os.environ.get("SLURM_CPUS_PER_TASK")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"SLURM_CPUS_PER_TASK={env!r} is not an integer") from None
    return len(os.sched_getaffinity(0))


def resolve_device(name: str, key: str = "device") -> str:
    """A torch device name from a config or command-line string: "auto" is CUDA when available,
    else the CPU; "cuda[:N]" must be available. ``key`` (the option or config key) names the value
    in errors. torch is imported only here, when asked."""
    if name == "cpu":
        return "cpu"
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{key} {name}: CUDA is not available on this machine")
    if not name.startswith("cuda"):
        raise ValueError(f"{key} {name!r}: expected auto, cpu or cuda[:N]")
    return name
