"""What a sweep costs before it is submitted (``specscale plan``): per rule, the number of jobs, the
core-hours and GPU-hours SLURM reserves for them (threads x the requested runtime, the workflow's
own resources) and the core-hours and GPU-hours they are estimated to use (measured per-job costs,
:data:`specscale.sweep.costs.MEASURED`, scaled with the work of each job), and how many SLURM jobs a profile submits:
one per job for ``profiles/slurm``, packs of jobs for ``profiles/slurm-packed`` (its ``groups:``,
``group-components:`` and ``cores:``), with the resources Snakemake asks for each pack.

Built on :class:`specscale.sweep.grid.Sweep` (the cells, the ceiling cells, the window cells, the
resolved model specs): the jobs listed are those the workflow runs for a fresh results folder, with
the resources the workflow asks for at attempt 1 (:mod:`specscale.sweep.resources`).

The estimates assume a job's threads are used in parallel (core-hours = measured core-seconds);
where no measurement exists at the job's settings the estimate is its request (flagged
``request`` in :attr:`RuleCost.basis`), an upper bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from specscale.sweep import resources
from specscale.sweep.costs import MEASURED, job_units
from specscale.sweep.grid import Sweep

# rules the workflow runs on the submitting machine (workflow/rules/*.smk `localrules`)
LOCAL_RULES = ("config_file", "collect", "plots", "report")


# ---------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    """One job of the workflow: its rule, wildcards, resources (attempt 1) and estimated cost
    (``est_s``: wall seconds on its threads; None: no measurement at its settings)."""

    rule: str
    wildcards: Mapping[str, Any]
    threads: int
    gpus: int
    mem_mb: int
    runtime_min: int
    est_s: float | None
    gpu_est: bool = False

    @property
    def label(self) -> str:
        """The row of the job in the plan: its rule, with the model for a training job."""
        model = self.wildcards.get("name" if self.rule == "pretrain" else "model")
        return f"{self.rule} {model}" if model else self.rule

    @property
    def local(self) -> bool:
        return self.rule in LOCAL_RULES


def _matches(params, when: Mapping[str, Any]) -> bool:
    return all(getattr(params, k, None) == v for k, v in when.items())


def estimate(sweep: Sweep, rule: str, wildcards: Mapping[str, Any], costs=None) -> tuple[float | None, bool]:
    """Estimated (core- or GPU-) seconds of one job, and whether they are GPU-seconds; None when
    :data:`specscale.sweep.costs.MEASURED` (or ``costs``) has no measurement at the job's settings."""
    costs = MEASURED if costs is None else costs
    params = None
    key = rule.removesuffix("_window")
    if rule in ("train", "train_vit"):
        spec = sweep.spec(wildcards["model"])
        params, key = spec.params, f"train:{spec.base}"
    elif rule == "pretrain":
        run = sweep.pretrains[wildcards["name"]]
        params, key = run.params, f"pretrain:{sweep.spec(run.base).base}"
    units = job_units(sweep, params)
    for cost in costs.get(key, []):
        if params is not None and not _matches(params, cost.when):
            continue
        return cost.core_s + cost.core_s_per_unit * units[cost.unit](wildcards), cost.gpu
    return None, False


def sweep_jobs(sweep: Sweep, costs=None) -> list[Job]:
    """Every job the workflow runs for ``sweep`` on a fresh results folder, in rule order."""
    out: list[Job] = []

    def add(rule: str, stage: str | None, wildcards: dict, model: str | None = None, threads=None) -> None:
        spec = resources.job_spec(sweep, stage, model) if stage else {"mem_mb": 200, "runtime": 2}
        n = int(wildcards.get("n_train", wildcards.get("n_spectra", 0)))
        gpus = resources.gpus(spec) if rule in ("train_vit", "pretrain") else 0
        nthreads = resources.threads(spec) if threads is None else int(threads)
        seconds, gpu = estimate(sweep, rule, wildcards, costs)
        wall = None
        if seconds is not None:  # core-seconds run on the job's threads (GPU-seconds as they are)
            wall = seconds if gpu else seconds / max(1, nthreads)
        out.append(
            Job(
                rule=rule,
                wildcards=wildcards,
                threads=nthreads,
                gpus=gpus,
                mem_mb=resources.scaled(spec, "mem_mb", n),
                runtime_min=resources.scaled(spec, "runtime", n),
                est_s=wall,
                gpu_est=gpu,
            )
        )

    ds = sweep.dataset
    runs = sweep.pretrain_runs
    n_configs = 1 + len(sweep.cube_axes["model"]) + 2 + len(runs)  # data/, model/<each>, fisher, sweep, pretrain/
    for i in range(n_configs):
        add("config_file", None, {"name": i}, threads=1)
    if sweep.config["datasets"][ds]["source"] == "synthetic":
        add("simulate", "simulate", {"dataset": ds})
    for noise, mag in sweep.ceiling_cells:
        add("ceiling", "ceiling", {"dataset": ds, "noise": noise, "mag": mag})
    for noise, mag in sweep.ceiling_cells:
        add("bayes", "bayes", {"dataset": ds, "noise": noise, "mag": mag})
    add("ceiling_curves", "curves", {"dataset": ds})
    add("information", "curves", {"dataset": ds})
    for window, noise, mag in sweep.window_cells:
        add("ceiling_window", "ceiling", {"dataset": ds, "window": window, "noise": noise, "mag": mag})
        add("bayes_window", "bayes", {"dataset": ds, "window": window, "noise": noise, "mag": mag})
    for name in runs:
        n_spectra = sweep.pretrains[name].n_spectra or sweep.dataset_info.n_train
        add("pretrain", "pretrain", {"dataset": ds, "name": name, "n_spectra": n_spectra})
    vit = set(sweep.vit_models)
    for cell in sweep.cells:
        wildcards = {"dataset": ds, **cell.wildcards()}
        add("train_vit" if cell.model in vit else "train", "train", wildcards, model=cell.model)
    for rule, stage in (("collect", "collect"), ("plots", "plots"), ("report", "plots")):
        add(rule, stage, {}, threads=1)
    return out


# ---------------------------------------------------------------- packing (Snakemake groups)
def _mapping(value) -> dict[str, str]:
    """A profile's ``groups`` / ``group-components``: a list of "KEY=VALUE" or a mapping."""
    if not value:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    return dict(str(item).split("=", 1) for item in value)


@dataclass(frozen=True)
class Packing:
    """The packing keys of a Snakemake profile: rule -> group template (``{wildcard}`` filled per
    job), group template -> how many unconnected jobs one pack may hold, ``cores`` (which also caps
    every job's threads) and ``set-threads`` (rule -> threads, before that cap)."""

    groups: Mapping[str, str] = field(default_factory=dict)
    components: Mapping[str, int] = field(default_factory=dict)
    cores: int | None = None
    threads: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_profile(cls, profile: Mapping[str, Any], cores: int | None = None) -> Packing:
        return cls(
            groups=_mapping(profile.get("groups")),
            components={k: int(v) for k, v in _mapping(profile.get("group-components")).items()},
            cores=cores if cores is not None else profile.get("cores"),
            threads={k: int(v) for k, v in _mapping(profile.get("set-threads")).items()},
        )

    def job_threads(self, job: Job) -> int:
        """The threads Snakemake gives ``job`` under this profile: set-threads, capped by cores."""
        threads = self.threads.get(job.rule, job.threads)
        return min(threads, self.cores) if self.cores else threads


@dataclass(frozen=True)
class Submission:
    """One SLURM job: a single job, or a pack (``group`` set) with Snakemake's resources for it."""

    jobs: tuple[Job, ...]
    group: str | None
    threads: int
    gpus: int
    mem_mb: int
    runtime_min: int


def pack_resources(jobs: Iterable[Job], cores: int | None) -> tuple[int, int, int, int]:
    """(cores, mem_mb, runtime, gpus) Snakemake requests for a group of independent jobs
    (``snakemake.resources.GroupResources.basic_layered`` for one toposort level): jobs sorted by
    width (threads / cores), then by runtime, both descending, go first-fit into layers whose summed
    threads fit in ``cores`` (None: one layer); threads, mem_mb and gpus are summed within a layer
    and maxed across layers, runtime is maxed within a layer and summed across layers."""
    jobs = sorted(jobs, key=lambda j: (j.threads / cores) if cores else 0, reverse=True)
    jobs = sorted(jobs, key=lambda j: j.runtime_min, reverse=True)
    layers: list[list[Job]] = []
    for job in jobs:
        if cores and job.threads > cores:
            raise ValueError(f"a {job.label} job needs {job.threads} threads, more than cores={cores}")
        for layer in layers:
            if not cores or sum(j.threads for j in layer) + job.threads <= cores:
                layer.append(job)
                break
        else:
            layers.append([job])
    return (
        max(sum(j.threads for j in layer) for layer in layers),
        max(sum(j.mem_mb for j in layer) for layer in layers),
        sum(max(j.runtime_min for j in layer) for layer in layers),
        max(sum(j.gpus for j in layer) for layer in layers),
    )


def submissions(jobs: Iterable[Job], packing: Packing | None = None) -> list[Submission]:
    """The SLURM jobs a profile submits for ``jobs`` (local rules excluded): each job alone, or,
    for a rule named in ``packing.groups``, packs of up to ``packing.components[template]`` jobs
    with the same group id (the template with the job's wildcards), in job order."""
    packing = packing or Packing()
    out: list[Submission] = []
    packs: dict[str, list[Job]] = {}
    for job in jobs:
        if job.local:
            continue
        threads = packing.job_threads(job)
        if threads != job.threads:
            job = Job(**{**job.__dict__, "threads": threads})
        template = packing.groups.get(job.rule)
        if template is None:
            out.append(Submission((job,), None, job.threads, job.gpus, job.mem_mb, job.runtime_min))
            continue
        gid = re.sub(r"\{(\w+)\}", lambda m, w=job.wildcards: str(w[m.group(1)]), template)
        packs.setdefault(f"{template}\0{gid}", []).append(job)
    for key, members in packs.items():
        template, gid = key.split("\0")
        size = max(1, packing.components.get(template, 1))
        for i in range(0, len(members), size):
            chunk = tuple(members[i : i + size])
            threads, mem, runtime, gpus = pack_resources(chunk, packing.cores)
            out.append(Submission(chunk, gid, threads, gpus, mem, runtime))
    return out


# ---------------------------------------------------------------- the plan
@dataclass(frozen=True)
class RuleCost:
    """One row of the plan: a rule (a training rule per model)."""

    label: str
    jobs: int
    local: bool
    core_h_request: float
    gpu_h_request: float
    core_h_est: float
    gpu_h_est: float
    basis: str  # "measured" | "request" (no measurement at these settings) | "mixed"


def rule_costs(jobs: Iterable[Job]) -> list[RuleCost]:
    """Per rule (per model for training): job count, reserved and estimated core/GPU-hours."""
    rows: dict[str, list[Job]] = {}
    for job in jobs:
        rows.setdefault(job.label, []).append(job)
    out = []
    for label, members in rows.items():
        core_req = sum(j.threads * j.runtime_min for j in members) / 60
        gpu_req = sum(j.gpus * j.runtime_min for j in members) / 60
        core_est = gpu_est = 0.0
        bases = set()
        for j in members:
            wall = j.est_s if j.est_s is not None else j.runtime_min * 60
            bases.add("measured" if j.est_s is not None else "request")
            core_est += j.threads * wall / 3600
            gpu_est += j.gpus * wall / 3600
        basis = bases.pop() if len(bases) == 1 else "mixed"
        out.append(RuleCost(label, len(members), members[0].local, core_req, gpu_req, core_est, gpu_est, basis))
    return out


def plan(sweep: Sweep, packing: Packing | None = None, costs=None) -> dict[str, Any]:
    """The plan of ``sweep``: its jobs, the per-rule rows, and the SLURM submissions unpacked and
    (with ``packing``) packed."""
    jobs = sweep_jobs(sweep, costs)
    out = {"jobs": jobs, "rows": rule_costs(jobs), "unpacked": submissions(jobs)}
    if packing is not None:
        out["packed"] = submissions(jobs, packing)
    return out


def _hours(x: float) -> str:
    return "-" if x == 0 else f"{x:,.1f}" if x >= 10 else f"{x:,.2f}"


def _duration(minutes: float) -> str:
    return f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"


def format_plan(result: Mapping[str, Any], packing: Packing | None = None, name: str = "") -> str:
    """The plan as text: a table of rules and totals, then the SLURM job counts."""
    rows: list[RuleCost] = result["rows"]
    head = ("rule", "jobs", "core-h req", "GPU-h req", "core-h est", "GPU-h est", "estimate")
    lines = [f"{head[0]:<22}{head[1]:>7}{head[2]:>12}{head[3]:>11}{head[4]:>12}{head[5]:>11}  {head[6]}"]
    for r in rows:
        label = r.label + (" (local)" if r.local else "")
        lines.append(
            f"{label:<22}{r.jobs:>7,}{_hours(r.core_h_request):>12}{_hours(r.gpu_h_request):>11}"
            f"{_hours(r.core_h_est):>12}{_hours(r.gpu_h_est):>11}  {r.basis}"
        )
    total = [sum(getattr(r, k) for r in rows) for k in ("core_h_request", "gpu_h_request", "core_h_est", "gpu_h_est")]
    n = sum(r.jobs for r in rows)
    lines.append(f"{'total':<22}{n:>7,}" + "".join(f"{_hours(t):>{w}}" for t, w in zip(total, (12, 11, 12, 11))))
    cells = sum(1 for j in result["jobs"] if j.rule in ("train", "train_vit"))
    lines.append(
        f"{name}{': ' if name else ''}{cells:,} cells; req = threads (GPUs) x requested runtime, what SLURM "
        "reserves; est = measured per-job costs (specscale.sweep.costs.MEASURED), the request where none"
    )
    unpacked = result["unpacked"]
    lines.append(f"SLURM jobs, one per job (profiles/slurm): {len(unpacked):,}")
    if "packed" in result:
        packed = result["packed"]
        packs = [s for s in packed if s.group is not None]
        gpu = sum(1 for s in packed if s.gpus)
        longest = max(packs, key=lambda s: s.runtime_min, default=None)
        text = (
            f"SLURM jobs, packed (cores {packing.cores if packing else '-'}): {len(packed):,} "
            f"({len(packs):,} packs of {sum(len(s.jobs) for s in packs):,} jobs, {len(packed) - len(packs) - gpu:,} "
            f"other CPU jobs, {gpu:,} GPU jobs)"
        )
        lines.append(text)
        if longest is not None:
            over = sum(1 for s in packs if s.runtime_min > 24 * 60)
            lines.append(
                f"  longest pack: {longest.group} ({len(longest.jobs)} jobs): {longest.threads} cores, "
                f"{longest.mem_mb / 1000:,.1f} GB, {_duration(longest.runtime_min)}; packs over 24 h: {over}"
            )
    return "\n".join(lines)


def profile_packing(profile: Mapping[str, Any] | None, cores: int | None = None) -> Packing | None:
    """The :class:`Packing` of a profile's config (None when it packs nothing)."""
    if not profile:
        return None
    packing = Packing.from_profile(profile, cores)
    return packing if packing.groups else None


__all__ = [
    "LOCAL_RULES",
    "Job",
    "Packing",
    "RuleCost",
    "Submission",
    "estimate",
    "format_plan",
    "pack_resources",
    "plan",
    "profile_packing",
    "rule_costs",
    "submissions",
    "sweep_jobs",
]
