"""The resources of the workflow's jobs (``resources.<stage>`` of the sweep config), read by both
``workflow/rules/common.smk`` (what Snakemake asks SLURM for) and ``specscale plan`` (what a
sweep costs): threads, GPUs, and memory and runtime that grow with the training size and the
attempt number. The config is schema-validated, so every key has its default."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def job_spec(sweep, stage: str, model: str | None = None) -> Mapping[str, Any]:
    """Resources of a stage of ``sweep`` (a :class:`~specscale.sweep.grid.Sweep`); for ``train``
    those of the model: ``resources.train.<model>``, for a variant without its own entry its
    base's, else ``resources.train.default``."""
    res = sweep.config["resources"]
    if stage == "train":
        for name in (model, sweep.spec(model).base):
            if name in res["train"]:
                return res["train"][name]
        return res["train"]["default"]
    return res[stage]


def scaled(spec: Mapping[str, Any], key: str, n_train: int, attempt: int = 1) -> int:
    """A resource that grows with the training size and the attempt (mem_mb MB, runtime min):
    ``ceil((base + per_1k * n_train / 1000) * attempt)``."""
    return math.ceil((spec[key] + spec.get(f"{key}_per_1k", 0) * n_train / 1000) * attempt)


def threads(spec: Mapping[str, Any]) -> int:
    """CPU threads of a job."""
    return int(spec["threads"])


def gpus(spec: Mapping[str, Any]) -> int:
    """GPUs of a job (the tracked models' rule train_vit asks for them)."""
    return int(spec.get("gpu", 0))


def cpus_per_gpu(spec: Mapping[str, Any]) -> int:
    """CPU cores per GPU of a GPU job: ``cpus_per_gpu``, default its threads."""
    return int(spec.get("cpus_per_gpu", spec["threads"]))
