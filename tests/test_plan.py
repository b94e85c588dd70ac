"""specscale.sweep.plan and `specscale plan`: the jobs of a sweep (the same count as Snakemake's
dry run), their resources (the rules' formulas), the estimates (the measured costs they come from,
against the default sweep's measured job times), the packs of profiles/slurm-packed (the same
resources as Snakemake's own group computation, the same count as its dry run)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import yaml
from factories import REPO
from test_workflow import planned, snakemake

from specscale.cli import main
from specscale.cli.plan import load_config
from specscale.sweep.costs import Cost
from specscale.sweep.grid import Sweep
from specscale.sweep.plan import (
    Job,
    Packing,
    estimate,
    format_plan,
    pack_resources,
    plan,
    rule_costs,
    submissions,
    sweep_jobs,
)

PACKED = yaml.safe_load((REPO / "profiles" / "slurm-packed" / "config.yaml").read_text())


@pytest.fixture(scope="module")
def default_sweep() -> Sweep:
    return Sweep.from_config(load_config(str(REPO / "config" / "config.yaml")))


@pytest.fixture(scope="module")
def full_sweep() -> Sweep:
    return Sweep.from_config(load_config(str(REPO / "config" / "logg1m.yaml")))


def job(threads=1, mem_mb=1000, runtime=10, rule="train", **wildcards) -> Job:
    return Job(rule, wildcards, threads, 0, mem_mb, runtime, None)


# ---------------------------------------------------------------- packs
def snakemake_group_resources(jobs, cores):
    """Snakemake's own computation for a group of independent jobs (one toposort level)."""
    from snakemake.resources import GroupResources

    fake = [
        SimpleNamespace(resources={"_cores": j.threads, "mem_mb": j.mem_mb, "runtime": j.runtime_min}, pipe_group=None)
        for j in jobs
    ]
    constraints = {"_cores": cores, "mem_mb": None, "runtime": None}
    res = GroupResources.basic_layered(
        [fake],
        constraints={k: SimpleNamespace(value=v) for k, v in constraints.items()},
        run_local=False,
    )
    return res["_cores"], res["mem_mb"], res["runtime"]


@pytest.mark.parametrize("cores", [None, 2, 16, 64])
def test_pack_resources_are_snakemakes(cores):
    jobs = [
        job(threads=t, mem_mb=m, runtime=r)
        for t, m, r in [
            (1, 1400, 18),
            (1, 1100, 12),
            (8, 6000, 130),
            (8, 6000, 31),
            (16, 18000, 1060),
            (16, 8100, 70),
            (2, 2000, 40),
            (1, 500, 5),
        ]
    ]
    jobs = [j for j in jobs if cores is None or j.threads <= cores]
    assert pack_resources(jobs, cores)[:3] == snakemake_group_resources(jobs, cores)


def test_pack_layers_sum_within_and_max_across():
    # four 1-thread 30-min cells on 2 cores: two layers of two
    assert pack_resources([job(runtime=30, mem_mb=1000)] * 4, 2) == (2, 2000, 60, 0)
    # without cores: one layer asking for every cell's cores and memory at once (the pitfall)
    assert pack_resources([job(threads=16, mem_mb=8000, runtime=60)] * 21, None) == (336, 168000, 60, 0)
    with pytest.raises(ValueError, match="more than cores=8"):
        pack_resources([job(threads=16)], 8)


def test_profile_packing_groups_by_model_noise_mag():
    packing = Packing.from_profile(PACKED, cores=4)
    assert packing.cores == 4 and packing.groups["train"] == "cpu_{model}_noise{noise}_mag{mag}"
    assert packing.job_threads(job()) == 4  # set-threads: every packed job on all the pack's cores
    jobs = [
        job(model=m, noise=n, mag="21.5", n_train=k)
        for m in ("ridge", "lightgbm")
        for n in ("1", "2")
        for k in (1, 2, 3)
    ]
    jobs += [job(rule="simulate", dataset="d"), job(rule="collect")]
    subs = submissions(jobs, packing)
    packs = sorted(s.group for s in subs if s.group)
    assert packs == sorted(f"cpu_{m}_noise{n}_mag21.5" for m in ("ridge", "lightgbm") for n in ("1", "2"))
    # the plugin runs a pack's jobs one after another: one job per layer, runtime summed
    assert all((len(s.jobs), s.threads, s.mem_mb, s.runtime_min) == (3, 4, 1000, 30) for s in subs if s.group)
    assert [s.jobs[0].rule for s in subs if not s.group] == ["simulate"]  # collect is a local rule
    assert len(submissions(jobs)) == 13  # unpacked: every job but the local one


# ---------------------------------------------------------------- the jobs, against Snakemake
def _dry_run(tmp_path, *args) -> str:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    proc = snakemake(tmp_path, "-n", *args, config=config)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_jobs_are_the_dry_runs_and_packs_its_groups(default_sweep, tmp_path):
    out = _dry_run(tmp_path, "--profile", str(REPO / "profiles" / "slurm-packed"), "--cores", "2")
    counts = planned(out)
    counts.pop("all")
    jobs = sweep_jobs(default_sweep)
    assert {r.label.split()[0]: 0 for r in rule_costs(jobs)}.keys() == counts.keys()
    ours: dict[str, int] = {}
    for j in jobs:
        ours[j.rule] = ours.get(j.rule, 0) + 1
    assert ours == counts
    # the packs: Snakemake prints one "Group job" per pack; the other remote jobs stay single
    groups = re.findall(r"Group job (\S+) ", out)
    packed = submissions(jobs, Packing.from_profile(PACKED, cores=2))
    assert sorted(s.group for s in packed if s.group) == sorted(groups)
    grouped_rules = {"train", "ceiling", "bayes"}
    singles = sum(
        n
        for r, n in counts.items()
        if r not in grouped_rules and r not in ("config_file", "collect", "plots", "report")
    )
    assert len(packed) == len(groups) + singles


def test_requested_resources_follow_the_rules(full_sweep):
    jobs = {(j.rule, j.wildcards.get("model"), j.wildcards.get("n_train")): j for j in sweep_jobs(full_sweep)}
    ridge = jobs["train", "ridge", 1_000_000]
    assert (ridge.threads, ridge.mem_mb, ridge.runtime_min, ridge.gpus) == (8, 6000, 110, 0)
    gbm = jobs["train", "lightgbm", 1_000_000]
    assert (gbm.threads, gbm.mem_mb, gbm.runtime_min) == (16, 18000, 210)
    vit = jobs["train_vit", "vit", 50_000]
    assert (vit.gpus, vit.runtime_min) == (1, 165) and vit.gpu_est
    assert jobs["train_vit", "vit-ca", 100_000].gpus == 1  # a variant: its base's resources


def test_estimates_need_a_measurement_at_the_jobs_settings(default_sweep, full_sweep):
    cell = {"model": "lightgbm", "n_train": 20_000, "noise": "1", "mag": "21.5", "seed": 0, "dataset": "x"}
    # the study's LightGBM (logg1m: models.lightgbm {}) is estimated from the 20k measurement
    seconds, gpu = estimate(full_sweep, "train", cell)
    assert seconds == pytest.approx(5 + 36.4 * 20) and not gpu
    # the default's coarse LightGBM from its own
    assert estimate(default_sweep, "train", cell)[0] == pytest.approx(5 + 2.2 * 20)
    # a table without a matching measurement: no estimate, the request is used
    only = {"train:lightgbm": [Cost(1.0, 1.0, "n_train", when={"num_leaves": 7})]}
    assert estimate(full_sweep, "train", cell, costs=only) == (None, False)
    rows = rule_costs(sweep_jobs(full_sweep, costs=only))
    row = next(r for r in rows if r.label == "train lightgbm")
    assert row.basis == "request" and row.core_h_est == pytest.approx(row.core_h_request)


# the default sweep's measured job seconds per rule (benchmarks/RESULTS-workflow.md, 2026-12-02)
MEASURED_DEFAULT = {
    "bayes": 376,
    "ceiling": 58,
    "train lightgbm": 262,
    "train ridge": 185,
    "train_vit vit-tiny": 198,
    "train oracle": 55,
}


def test_estimate_of_the_default_sweep_is_near_its_measured_times(default_sweep):
    jobs = sweep_jobs(default_sweep)
    for label, measured in MEASURED_DEFAULT.items():
        est = sum(j.est_s for j in jobs if j.label == label)
        assert 0.6 * measured < est < 1.5 * measured, (label, est, measured)


def test_full_protocol_plan_and_packs(full_sweep):
    packing = Packing.from_profile(PACKED)
    result = plan(full_sweep, packing)
    cells = [j for j in result["jobs"] if j.rule in ("train", "train_vit")]
    packed, unpacked = result["packed"], result["unpacked"]
    assert len(unpacked) == sum(1 for j in result["jobs"] if not j.local)
    cpu = [s for s in packed if not s.gpus]
    assert len(cpu) <= 150 < len(cells)  # the CPU cells pack into < 150 SLURM jobs
    gpu_jobs = [j for j in result["jobs"] if j.rule in ("train_vit", "pretrain")]
    assert sum(1 for s in packed if s.gpus) == len(gpu_jobs)  # ViT cells and pre-training: one each
    assert all(s.threads <= 16 for s in packed)
    text = format_plan(result, packing, name="logg1m")
    assert "longest pack: cpu_lightgbm" in text and re.search(r"^total\s+1,7\d\d ", text, re.M)


def test_cli_prints_the_plan(capsys):
    assert main(["plan", "--config", str(REPO / "config" / "config.yaml"), "--pack-cores", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^total\s+73\s", out, re.M), out
    assert "SLURM jobs, one per job (profiles/slurm): 60" in out and "packed (cores 2)" in out
    assert main(["plan", "--config", str(REPO / "config" / "nope.yaml")]) == 2
