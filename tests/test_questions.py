"""config/questions.yaml, the study's ViT questions on a laptop: it validates, runs on the default
sweep's dataset at the study's cell only into its own results folder, pre-trains on every training
spectrum, and each hypothesis has a common cell (the pre-training ones at two labelled sizes); its
jobs, as the workflow plans them, include the two pre-training runs before their fine-tunes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from test_workflow import planned, snakemake

from specscale.cli.plan import load_config
from specscale.sweep.grid import Sweep
from specscale.sweep.plan import sweep_jobs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def questions() -> tuple[dict, Sweep]:
    config = load_config(str(REPO / "config" / "questions.yaml"))
    return config, Sweep.from_config(config)


def test_questions_run_the_default_dataset_at_the_study_cell_into_their_own_folder(questions):
    config, sweep = questions
    default = load_config(str(REPO / "config" / "config.yaml"))
    assert config["datasets"] == default["datasets"] and config["atmosphere"] == default["atmosphere"]
    assert config["results"]["dir"] != default["results"]["dir"]
    assert {(c.noise, c.mag.label()) for c in sweep.cells} == {(1.0, "20.5-22.5")}
    assert sweep.ceiling_cells == [("1", "20.5-22.5")]  # the cell's Fisher ceiling and Bayes reference
    runs = {name: sweep.pretrains[name] for name in sweep.pretrain_runs}
    assert sorted(runs) == ["denoise", "msm"]
    assert all(r.n_spectra == 0 and r.noise == 1.0 and r.mag == "20.5-22.5" for r in runs.values())  # 0: all


def test_each_hypothesis_has_a_common_cell(questions):
    config, sweep = questions
    sizes = {}
    for h in config["hypotheses"]:
        where = [{c.n_train for c in sweep.cells if c.model == m} for m in (h["base"], h["variant"])]
        sizes[h["name"]] = where[0] & where[1]
        assert sizes[h["name"]], h["name"]
    assert sizes["vit_msm_pretraining"] == sizes["vit_denoise_pretraining"] == {1000, 4000}  # label efficiency
    assert "msm_probe_vs_random" in sizes and "vit_multitask_bias_cond" in sizes


def test_plan_and_dry_run_schedule_pretraining_before_the_fine_tunes(questions, tmp_path):
    _, sweep = questions
    jobs = Counter(j.rule for j in sweep_jobs(sweep))
    assert (
        jobs["pretrain"] == 2
        and jobs["simulate"] == 1
        and jobs["train_vit"] == len([c for c in sweep.cells if c.model.startswith("vit")])
    )
    proc = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config" / "questions.yaml"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dry = planned(proc.stdout + proc.stderr)
    assert dry["pretrain"] == 2 and dry["train_vit"] == jobs["train_vit"] and dry["bayes"] == 1, dry
    assert "results/questions/report.md" in proc.stdout + proc.stderr
