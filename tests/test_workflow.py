"""The Snakemake workflow: a tiny sweep runs end to end, a second run does nothing, a deleted or
added cell re-runs only itself and what depends on it (collect, plots, report), a changed model
section re-runs only that model's cells, a malformed config fails at validation naming the key,
lint and snakefmt are clean, and the full protocol (config/logg1m.yaml) plans in seconds."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr
import yaml

pytestmark = pytest.mark.slow  # Snakemake runs a tiny sweep

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# one tiny dataset, ridge only, two sizes, one noise level, one magnitude cell
TINY = {
    "datasets": {"tiny": {"n_train": 400, "n_val": 100, "n_test": 200, "seed": 3}},
    "grid": {
        "noise": [1.0],
        "mag": ["21.5"],
        "model": ["ridge"],
        "n_train": [200, 400],
        "ceiling": {"stars": 40},
        "bayes": {"stars": 40},
        "curves": {"mag": [21.0, 22.0], "stars": 20},
    },
    "models": {"ridge": {"n_alphas": 9}},
    "wandb": {"mode": "disabled"},
}


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("WANDB_MODE", "disabled")
    return env


def snakemake(workdir: Path, *args, config: dict | None = None, timeout: int = 300, nice: int = 0):
    """Run Snakemake on the repo's Snakefile in ``workdir`` (config written there if given);
    ``nice`` > 0 runs it at that lower priority (the runs started early fill the core the suite's
    own tests leave idle instead of slowing them)."""
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]
    if config is not None:
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(path)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, env=_env())


def dry_run(workdir: Path, config: dict) -> str:
    """Output of ``snakemake -n`` (stdout and stderr)."""
    proc = snakemake(workdir, "-n", config=config)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def planned(out: str) -> dict[str, int]:
    """Job counts of a dry run's "Job stats" table ({} when there is nothing to do)."""
    m = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal", out, re.S)
    return {} if m is None else {k: int(v) for k, v in re.findall(r"^(\S+)\s+(\d+)$", m.group(1), re.M)}


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """The tiny sweep, run once for the module."""
    workdir = tmp_path_factory.mktemp("sweep")
    proc = snakemake(workdir, "--cores", "2", config=TINY)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return workdir


def test_tiny_sweep_leaves_cube_plots_and_report(tiny_sweep):
    results = tiny_sweep / "results"
    cube = xr.open_dataset(results / "cube.nc", engine="h5netcdf")
    with cube:
        assert (
            cube.sizes["noise"],
            cube.sizes["mag"],
            cube.sizes["model"],
            cube.sizes["n_train"],
            cube.sizes["seed"],
        ) == (1, 1, 1, 2, 1)
        assert bool(cube.done.all())
        r2 = cube.r2.values.ravel()
        assert ((r2 > 0) & (r2 < 1)).all()
        assert 0 < cube.ceiling_pop.item() <= 1 and "curve_ceiling_pop" in cube
        # the Bayes reference of the cell: no learned model beats it beyond its error
        assert cube.bayes_n_stars.item() == 40 and 0 < cube.bayes_r2_err.item() < 0.2
        assert float(cube.r2.max()) <= cube.bayes_r2.item() + 2 * cube.bayes_r2_err.item()
        assert cube.bayes_r2_snr_bin.dims == ("noise", "mag", "snr_bin") and cube.bayes_rmse.attrs["units"] == "dex"
        assert yaml.safe_load(cube.attrs["config"])["grid"]["n_train"] == [200, 400]
    for name in ("scaling", "ceiling_curves", "gap", "snr_bins"):
        for ext in ("png", "pdf"):
            assert (results / "plots" / f"{name}.{ext}").stat().st_size > 1000
    report = (results / "report.md").read_text()
    assert "| 1 | 21.5 | ridge |" in report and "plots/scaling.png" in report
    # every rule left its log and benchmark
    assert (results / "cells/tiny/noise1/mag21.5/ridge/n400/s0/benchmark.tsv").exists()
    assert (results / "benchmarks/bayes/tiny/noise1_mag21.5.tsv").exists()
    assert "batched, window full" in (results / "logs/bayes/tiny/noise1_mag21.5.log").read_text()
    assert "collected 2 cells" in (results / "logs/collect.log").read_text()
    proc = subprocess.run(
        [str(BIN / "specscale"), "cube", str(results / "cube.nc")], capture_output=True, text=True, env=_env()
    )
    assert proc.returncode == 0 and "ridge" in proc.stdout


def test_snakemake_html_report_carries_the_figures(tiny_sweep):
    proc = snakemake(tiny_sweep, "--report", "report.html", config=TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (tiny_sweep / "report.html").read_text()
    for caption in ("Seed mean (line) and seed range (band)", "minus the best learned model", "S/N bin at each model"):
        assert caption in html  # specscale.report.figures.FIGURES, attached to the plots' outputs
    (tiny_sweep / "report.html").unlink()


def test_second_run_does_nothing(tiny_sweep):
    assert "Nothing to be done" in dry_run(tiny_sweep, TINY)
    summary = snakemake(tiny_sweep, "--summary", config=TINY)
    rows = [line.split("\t") for line in summary.stdout.splitlines() if line.startswith("results/")]
    assert len(rows) >= 10 and {r[-1] for r in rows} == {"no update"}, summary.stdout


def test_deleting_one_metrics_reruns_only_that_cell(tiny_sweep):
    metrics = tiny_sweep / "results/cells/tiny/noise1/mag21.5/ridge/n200/s0/metrics.json"
    aside = metrics.with_suffix(".aside")
    metrics.rename(aside)
    try:
        out = dry_run(tiny_sweep, TINY)
    finally:
        aside.rename(metrics)
    assert planned(out) == {"train": 1, "collect": 1, "plots": 1, "report": 1, "all": 1}, out
    assert "wildcards: dataset=tiny, noise=1, mag=21.5, model=ridge, n_train=200, seed=0" in out


def test_adding_one_cell_reruns_only_it_collect_and_plots(tiny_sweep):
    more = copy.deepcopy(TINY)
    more["grid"]["seed"] = [0, 1]
    more["exclude"] = [{"seed": 1, "n_train": 400}]  # the only new cell: n_train 200, seed 1
    out = dry_run(tiny_sweep, more)
    # and the sweep's config file, which collect reads
    assert planned(out) == {"config_file": 1, "train": 1, "collect": 1, "plots": 1, "report": 1, "all": 1}, out
    assert "n_train=200, seed=1" in out


def test_changed_model_section_reruns_that_models_cells_only(tiny_sweep):
    changed = copy.deepcopy(TINY)
    changed["models"]["ridge"]["n_alphas"] = 11
    out = dry_run(tiny_sweep, changed)
    # the model's config file and the sweep's (collect reads it) are regenerated
    assert planned(out) == {"config_file": 2, "train": 2, "collect": 1, "plots": 1, "report": 1, "all": 1}, out
    assert "output: results/configs/model/ridge.yaml" in out
    # the ceiling's settings re-run the ceilings, never the training
    changed = copy.deepcopy(TINY)
    changed["fisher"] = {"batch": 64}
    out = dry_run(tiny_sweep, changed)
    assert planned(out) == {
        "config_file": 2,  # fisher.yaml and the sweep's
        "ceiling": 1,
        "ceiling_curves": 1,
        "information": 1,
        "collect": 1,
        "plots": 1,
        "report": 1,
        "all": 1,
    }, out


def _broken(edit) -> dict:
    config = copy.deepcopy(TINY)
    edit(config)
    return config


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c["grid"]["model"].append("vitt"), r"grid\.model\[1\]: unknown model 'vitt'"),
        (
            lambda c: c["grid"].update(noise=[-0.5]),
            r"-0\.5 is less than or equal to the minimum of 0(.|\n)*'grid'\]\['noise'\]\[0\]",
        ),
        (
            lambda c: c["grid"]["n_train"].append(500),
            r"grid\.n_train\[2\]: 500 exceeds the 400 training stars of datasets\.tiny",
        ),
        (lambda c: c["grid"].update(noize=c["grid"].pop("noise")), r"'noize' was unexpected(.|\n)*\['grid'\]"),
        (
            lambda c: c["models"]["ridge"].update(alpha_mni=1),
            r"models\.ridge: unknown config key\(s\) \['models\.ridge\.alpha_mni'\]",
        ),
        (lambda c: c.update(exclude=[{"noise": 2.0}]), r"exclude\[0\]: \{'noise': 2\.0\} matches no cell"),
    ],
    ids=[
        "unknown-model",
        "negative-noise",
        "n_train-above-dataset",
        "typo-in-key",
        "typo-in-model-params",
        "exclusion-matching-nothing",
    ],
)
def test_malformed_config_fails_at_validation_naming_the_key(tmp_path, edit, key):
    proc = snakemake(tmp_path, "-n", config=_broken(edit), timeout=120)
    assert proc.returncode != 0
    assert re.search(key, proc.stdout + proc.stderr), proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()  # nothing ran, nothing was written


def test_lint_and_snakefmt_are_clean():
    lint = subprocess.run(
        [str(BIN / "snakemake"), "--lint"], cwd=REPO, capture_output=True, text=True, env=_env(), timeout=120
    )
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    fmt = subprocess.run(
        [str(BIN / "snakefmt"), "--check", "Snakefile", "workflow"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_default_and_full_protocol_plan_in_seconds(tmp_path):
    default = subprocess.run(
        [
            str(BIN / "snakemake"),
            "-n",
            "--directory",
            str(tmp_path),
            "-s",
            str(REPO / "Snakefile"),
            "--configfile",
            str(REPO / "config/config.yaml"),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    grid = yaml.safe_load((REPO / "config/config.yaml").read_text())["grid"]
    jobs = planned(default.stdout)
    n_cells = len(grid["noise"]) * len(grid["mag"])
    assert jobs["ceiling"] == n_cells and jobs["simulate"] == 1 and jobs["collect"] == 1
    axes = [
        [len(grid["per_model"].get(m, {}).get(a, grid[a])) for a in ("noise", "mag", "n_train", "seed")]
        for m in grid["model"]
    ]
    excluded = 4  # config.yaml's one exclusion: ridge at n_train 2000, noise 0.5 and 2, both mag cells
    assert jobs["train"] + jobs["train_vit"] == sum(a * b * c * d for a, b, c, d in axes) - excluded
    full = subprocess.run(
        [
            str(BIN / "snakemake"),
            "-n",
            "--quiet",
            "rules",
            "--directory",
            str(tmp_path),
            "-s",
            str(REPO / "Snakefile"),
            "--configfile",
            str(REPO / "config/logg1m.yaml"),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert full.returncode == 0, full.stderr[-3000:]
    jobs = planned(full.stdout)
    assert sum(jobs.values()) >= 1000 and jobs["train_vit"] > 0, jobs  # planning time: benchmarks/bench_workflow.py
    assert jobs["pretrain"] == 2, jobs  # the question tree's msm and denoise runs (issue 20)
