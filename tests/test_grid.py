"""The sweep's grid (specscale.sweep.grid), tested directly, without Snakemake: the cells of the
default config, per-model axes, exclusions, canonical values, ceiling cells, the cube's axes,
the generated configs, the cube it collects, and malformed configs failing with the key named.

Configs are validated against the workflow's schema first (snakemake.utils.validate, which fills
the defaults), as the workflow does before it builds its Sweep."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from factories import metrics_record, write_bayes, write_ceiling, write_curves
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from specscale.cli import main as cli_main
from specscale.core.config import ConfigError
from specscale.core.vocab import Cell
from specscale.sweep.agents import AgentsConfig
from specscale.sweep.checks import canonical
from specscale.sweep.cube import open_cube
from specscale.sweep.cube_records import CubeError
from specscale.sweep.grid import Sweep, window_id
from specscale.sweep.tracking import WandbConfig

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
DEFAULT = yaml.safe_load((REPO / "config/config.yaml").read_text())
# the layout of the workflow's paths (workflow/rules/common.smk), under a test folder
METRICS = "cells/{dataset}/noise{noise}/mag{mag}/{model}/n{n_train}/s{seed}/metrics.json"
CEILING = "ceiling/{dataset}/noise{noise}_mag{mag}.nc"
BAYES = "bayes/{dataset}/noise{noise}_mag{mag}.nc"
CEILING_WINDOW = "ceiling/{dataset}/window_{window}/noise{noise}_mag{mag}.nc"
BAYES_WINDOW = "bayes/{dataset}/window_{window}/noise{noise}_mag{mag}.nc"


def resolved(config: dict, edit=None) -> dict:
    """A copy of ``config`` (changed by ``edit``), validated against the schema, defaults filled."""
    config = copy.deepcopy(config)
    if edit is not None:
        edit(config)
    validate(config, str(SCHEMA))
    return config


@pytest.fixture(scope="module")
def default() -> Sweep:
    return Sweep.from_config(resolved(DEFAULT))


# ---------------------------------------------------------------- the default sweep
def test_default_config_cells_follow_the_per_model_axes(default):
    grid = DEFAULT["grid"]
    product = {
        m: np.prod([len(grid["per_model"].get(m, {}).get(a, grid[a])) for a in ("noise", "mag", "n_train", "seed")])
        for m in grid["model"]
    }
    assert product == {
        "ridge": 12,
        "lightgbm": 18,
        "vit-tiny": 1,
        "oracle": 2,
        "ridge-ca": 4,
        "lightgbm-ca": 6,
        "lightgbm-err": 2,
    }
    # the one exclusion drops ridge's n_train 2000 at noise 0.5 and 2 (both magnitude cells)
    expected = {**product, "ridge": 12 - 4}
    assert len(default.cells) == 41  # the dry run's 40 train + 1 train_vit jobs
    assert {m: sum(c.model == m for c in default.cells) for m in grid["model"]} == expected
    assert default.dataset == "lowT"
    assert (default.dataset_info.n_train, default.dataset_info.n_test) == (8000, 2000)
    # per_model: the ViT at the study's cell only (noise 1, 20.5-22.5, 8000); one oracle size
    vit = [c for c in default.cells if c.model == "vit-tiny"]
    assert [(c.noise, c.mag.label(), c.n_train) for c in vit] == [(1.0, "20.5-22.5", 8000)]
    ridge = [c for c in default.cells if c.model == "ridge"]
    assert {c.n_train for c in ridge if c.noise == 1} == {2000, 8000}
    assert {c.n_train for c in ridge if c.noise != 1} == {8000}
    assert {c.n_train for c in default.cells if c.model == "oracle"} == {8000}
    assert {c.n_train for c in default.cells if c.model == "lightgbm"} == {1000, 4000, 8000}
    # cells model by model in grid order; their path form is canonical
    assert default.cells[0] == Cell(noise=0.5, mag="21.5", model="ridge", n_train=8000, seed=0)
    assert default.cells[0].wildcards() == {"model": "ridge", "noise": "0.5", "mag": "21.5", "n_train": 8000, "seed": 0}
    assert default.dataset == "lowT"
    assert list(dict.fromkeys(c.model for c in default.cells)) == grid["model"]
    assert default.vit_models == ("vit-tiny",)
    assert default.cpu_models == ("ridge", "lightgbm", "oracle", "ridge-ca", "lightgbm-ca", "lightgbm-err")


def test_default_ceiling_cells_cube_axes_and_curves(default):
    assert default.ceiling_cells == [
        ("0.5", "20.5-22.5"),
        ("0.5", "21.5"),
        ("1", "20.5-22.5"),
        ("1", "21.5"),
        ("2", "20.5-22.5"),
        ("2", "21.5"),
    ]
    assert default.cube_axes == {
        "noise": [0.5, 1.0, 2.0],
        "mag": ["20.5-22.5", "21.5"],
        "model": ["ridge", "lightgbm", "vit-tiny", "oracle", "ridge-ca", "lightgbm-ca", "lightgbm-err"],
        "n_train": [1000, 2000, 4000, 8000],
        "seed": [0],
    }
    assert default.curve_noise == ["0.5", "1", "2"]
    assert default.curve_mag == ["19", "19.5", "20", "20.5", "21", "21.5", "22", "22.5", "23"]


def test_generated_config_sections(default):
    data = default.config_sections("data/lowT")
    assert list(data) == ["simulation", "observation", "atmosphere"]
    assert data["simulation"] == {
        "prior": "lowT",
        "mag_range": [20.5, 22.5],
        "n_train": 8000,
        "n_val": 1000,
        "n_test": 2000,
        "seed": 42,
    }
    assert default.simulation_sections("lowT") == data
    assert default.config_sections("fisher") == {"fisher": {"batch": 128}}
    assert default.config_sections("model/ridge") == {"models": {"ridge": {}}}
    vit = default.config_sections("model/vit-tiny")  # a tracked model also gets the W&B settings
    assert vit == {
        "models": {"vit-tiny": {"max_epochs": 12, "patience": 12}},
        "wandb": {"mode": "offline", "project": "specscale"},
    }


@pytest.mark.parametrize(
    "axis, value, expected",
    [
        ("noise", 1.0, "1"),
        ("noise", 0.5, "0.5"),
        ("noise", 2, "2"),
        ("mag", 21.5, "21.5"),
        ("mag", "21.50", "21.5"),
        ("mag", "20.5-22.5", "20.5-22.5"),
        ("mag", "20.5:22.5", "20.5-22.5"),
        ("n_train", 8000.0, 8000),
        ("seed", "3", 3),
        ("model", "ridge", "ridge"),
    ],
)
def test_canonical_axis_values(axis, value, expected):
    assert canonical(axis, value) == expected


# ---------------------------------------------------------------- per_model and exclusions
def small(**grid) -> dict:
    """A small synthetic sweep (the dataset needs no file: its checks read the config only)."""
    config = {
        "datasets": {"d": {"n_train": 1000, "n_val": 100, "n_test": 300, "seed": 1}},
        "grid": {
            "noise": [0.5, 1.0],
            "mag": ["21.5", 22],
            "model": ["ridge", "lightgbm"],
            "n_train": [200, 400],
            "seed": [0, 1],
            "curves": {"mag": [21.0, 22.0], "stars": 100},
            **grid,
        },
        "wandb": {"mode": "disabled"},
    }
    return config


def test_per_model_replaces_an_axis_for_one_model_only():
    sweep = Sweep.from_config(resolved(small(per_model={"lightgbm": {"n_train": [1000], "seed": [0], "mag": [21]}})))
    ridge = [c for c in sweep.cells if c.model == "ridge"]
    gbm = [c for c in sweep.cells if c.model == "lightgbm"]
    assert len(ridge) == 2 * 2 * 2 * 2 and len(gbm) == 2 * 1 * 1 * 1
    assert {(c.mag.label(), c.n_train, c.seed) for c in gbm} == {("21", 1000, 0)}
    # the cube spans every value some model takes; the ceilings every (noise, mag) some model runs at
    assert sweep.cube_axes["mag"] == ["21", "21.5", "22"] and sweep.cube_axes["n_train"] == [200, 400, 1000]
    assert sweep.ceiling_cells == [(n, m) for n in ("0.5", "1") for m in ("21", "21.5", "22")]


def test_exclusions_remove_matching_cells_in_canonical_form():
    # values match in canonical form (mag 22 = "22.0", noise 1 = 1.0); a list matches any of its values
    exclude = [{"model": "lightgbm", "mag": "22.0"}, {"noise": 1, "seed": [1], "n_train": 400}]
    sweep = Sweep.from_config(resolved(small(), lambda c: c.update(exclude=exclude)))
    cells = {tuple(c.wildcards().values()) for c in sweep.cells}
    assert len(cells) == 32 - 8 - 4 + 1  # the two rules share one cell (lightgbm, 1, 22, 400, 1)
    assert not any(m == "lightgbm" and mag == "22" for m, _, mag, _, _ in cells)
    assert ("ridge", "1", "22", 400, 1) not in cells and ("ridge", "1", "22", 400, 0) in cells
    assert ("ridge", "0.5", "22", 400, 1) in cells
    # a model whose cells are all excluded leaves the cube's model axis
    # (the report's baseline must have cells: report.baseline names the model left)
    edit = lambda c: c.update(exclude=[{"model": "ridge"}], report={"baseline": "lightgbm"})
    sweep = Sweep.from_config(resolved(small(), edit))
    assert sweep.cube_axes["model"] == ["lightgbm"] and sweep.cpu_models == ("ridge", "lightgbm")


def test_a_file_dataset_is_checked_against_its_file(tiny_dataset):
    config = small(n_train=[300], mag=["21"], ceiling={"stars": 100}, curves={"mag": [21.0], "stars": 50})
    config["datasets"] = {"study": {"source": "file", "path": str(tiny_dataset)}}
    sweep = Sweep.from_config(resolved(config))
    assert sweep.dataset == "study" and (sweep.dataset_info.n_train, sweep.dataset_info.n_test) == (300, 100)
    with pytest.raises(ConfigError, match=r"config error at grid\.n_train\[0\]: 400 exceeds the 300 training stars"):
        Sweep.from_config(resolved(config, lambda c: c["grid"].update(n_train=[400])))
    with pytest.raises(ConfigError, match=r"config error at grid\.mag\[0\]: '27': magnitude cell .* outside the data"):
        Sweep.from_config(resolved(config, lambda c: c["grid"].update(mag=["27"])))
    with pytest.raises(ConfigError, match=r"config error at grid\.ceiling\.stars: 200 exceeds the 100 test stars"):
        Sweep.from_config(resolved(config, lambda c: c["grid"]["ceiling"].update(stars=200)))


# ---------------------------------------------------------------- malformed configs
def _append(path, value):
    def edit(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = [*node.get(path[-1], []), value]

    return edit


def _set(path, value):
    def edit(config):
        node = config
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value

    return edit


def _file_dataset(path):
    return _set(("datasets", "lowT"), {"source": "file", "path": path})


MALFORMED = {
    "unknown-model": (_append(("grid", "model"), "vitt"), r"grid\.model\[7\]: unknown model 'vitt'; known: \["),
    "per-model-not-in-grid": (
        _set(("grid", "per_model", "vit"), {"n_train": [8000]}),
        r"grid\.per_model\.vit: not in grid\.model \['ridge', 'lightgbm', 'vit-tiny', 'oracle', 'ridge-ca', "
        r"'lightgbm-ca', 'lightgbm-err'\]",
    ),
    "unknown-baseline": (_set(("report", "baseline"), "ridg"), r"report\.baseline: unknown model 'ridg'"),
    "unknown-reference": (_append(("report", "references"), "orcale"), r"report\.references\[1\]: unknown model"),
    "unknown-models-section": (_set(("models", "lasso"), {}), r"models\.lasso: unknown model 'lasso'"),
    "typo-in-model-params": (
        _set(("models", "ridge"), {"alpha_mni": 1}),
        r"models\.ridge: unknown config key\(s\) \['models\.ridge\.alpha_mni'\]",
    ),
    "n_train-above-dataset": (
        _set(("grid", "per_model", "ridge", "n_train"), [9000]),
        r"grid\.per_model\.ridge\.n_train\[0\]: 9000 exceeds the 8000 training stars of datasets\.lowT \(its n_train\)",
    ),
    "mag-outside-limits": (
        _append(("grid", "mag"), "26.5"),
        r"grid\.mag\[2\]: '26\.5': outside simulation\.mag_limits 14-26",
    ),
    "curve-mag-outside-limits": (_append(("grid", "curves", "mag"), 13.5), r"grid\.curves\.mag\[9\]: 13\.5: outside"),
    "ceiling-stars-above-test": (
        _set(("grid", "ceiling", "stars"), 5000),
        r"grid\.ceiling\.stars: 5000 exceeds the 2000 test stars of datasets\.lowT",
    ),
    "bad-simulation": (
        _set(("simulation", "mag_range"), [10.0, 12.0]),
        r"datasets\.lowT / simulation: .*mag_range must lie inside simulation\.mag_limits",
    ),
    "unknown-dataset": (_set(("grid", "dataset"), "highT"), r"grid\.dataset: 'highT' is not in datasets \['lowT'\]"),
    "several-datasets": (
        lambda c: (c["grid"].pop("dataset"), c["datasets"].update(other={"n_train": 10})),
        r"grid\.dataset: several datasets \['lowT', 'other'\]: name the one to sweep",
    ),
    "missing-file-dataset": (_file_dataset("no/such.h5"), r"datasets\.lowT\.path: file not found: no/such\.h5"),
    "typo-in-fisher": (_set(("fisher", "bach"), 64), r"at fisher: unknown config key\(s\) \['fisher\.bach'\]"),
    "bad-wandb": (_set(("wandb", "nope"), 1), r"at wandb: unknown config key\(s\) \['wandb\.nope'\]"),
    "exclusion-matching-nothing": (
        _set(("exclude",), [{"model": "ridge"}, {"noise": 4.0}]),
        r"exclude\[1\]: \{'noise': 4\.0\} matches no cell of the grid",
    ),
    "everything-excluded": (
        _set(("exclude",), [{"noise": [0.5, 1.0, 2.0]}]),
        r"config error at exclude: every cell of the grid is excluded",
    ),
}


@pytest.mark.parametrize("edit, message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_config_fails_naming_the_key(edit, message):
    with pytest.raises(ConfigError) as err:
        Sweep.from_config(resolved(DEFAULT, edit))
    assert str(err.value).startswith("config error at ")
    assert re.search(message, str(err.value)), str(err.value)


def test_an_unreadable_file_dataset_names_its_path(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not HDF5")
    with pytest.raises(ConfigError, match=rf"config error at datasets\.lowT\.path: {re.escape(str(bad))}"):
        Sweep.from_config(resolved(DEFAULT, _file_dataset(str(bad))))


# ---------------------------------------------------------------- refused at the door (issue 14)
NAN, INF = float("nan"), float("inf")
REFUSED = {
    # one value spelled twice would make two cells (and two paths) of one
    "mag-spelled-twice": (
        _set(("grid", "mag"), ["21.5", 21.5]),
        r"grid\.mag\[1\]: 21\.5 duplicates grid\.mag\[0\] '21\.5' \(both are 21\.5\)",
    ),
    "mag-trailing-zero": (
        _set(("grid", "mag"), ["21.5", "20.5-22.5", "21.50"]),
        r"grid\.mag\[2\]: '21\.50' duplicates grid\.mag\[0\] '21\.5' \(both are 21\.5\)",
    ),
    "mag-range-spelled-twice": (
        _set(("grid", "mag"), ["20.5-22.5", "20.50-22.5"]),
        r"grid\.mag\[1\]: '20\.50-22\.5' duplicates grid\.mag\[0\] '20\.5-22\.5' \(both are 20\.5-22\.5\)",
    ),
    "noise-equal-in-path-form": (
        _set(("grid", "noise"), [0.5, 1.0, 0.5000001]),
        r"grid\.noise\[2\]: 0\.5000001 duplicates grid\.noise\[0\] 0\.5 \(both are 0\.5\)",
    ),
    "per-model-noise-int-and-float": (
        _set(("grid", "per_model", "vit-tiny", "noise"), [1, 1.0]),
        r"grid\.per_model\.vit-tiny\.noise\[1\]: 1\.0 duplicates grid\.per_model\.vit-tiny\.noise\[0\] 1 "
        r"\(both are 1\)",
    ),
    "per-model-n_train": (
        _set(("grid", "per_model", "ridge", "n_train"), [2000, 4000, 2000]),
        r"grid\.per_model\.ridge\.n_train\[2\]: 2000 duplicates grid\.per_model\.ridge\.n_train\[0\] 2000",
    ),
    "per-model-seed": (
        _set(("grid", "per_model", "oracle", "seed"), [0, 0]),
        r"grid\.per_model\.oracle\.seed\[1\]: 0 duplicates grid\.per_model\.oracle\.seed\[0\] 0",
    ),
    "curves-mag": (
        _set(("grid", "curves", "mag"), [21.0, 21]),
        r"grid\.curves\.mag\[1\]: 21 duplicates grid\.curves\.mag\[0\] 21\.0 \(both are 21\)",
    ),
    # NaN and infinity pass the schema's bounds (NaN > 0 and NaN <= 0 are both false)
    "noise-nan": (_set(("grid", "noise"), [NAN]), r"grid\.noise\[0\]: nan is not a finite number > 0"),
    "noise-inf": (_set(("grid", "noise"), [0.5, INF]), r"grid\.noise\[1\]: inf is not a finite number > 0"),
    "per-model-noise-nan": (
        _set(("grid", "per_model", "vit-tiny", "noise"), [NAN]),
        r"grid\.per_model\.vit-tiny\.noise\[0\]: nan is not a finite number > 0",
    ),
    "curves-noise-nan": (
        _set(("grid", "curves", "noise"), [1.0, NAN]),
        r"grid\.curves\.noise\[1\]: nan is not a finite number > 0",
    ),
    "curves-mag-inf": (_set(("grid", "curves", "mag"), [INF]), r"grid\.curves\.mag\[0\]: inf is not a finite"),
    "mag-nan": (_set(("grid", "mag"), ["21.5", NAN]), r"grid\.mag\[1\]: nan is not a finite number > 0"),
    "exclude-noise-nan": (_set(("exclude",), [{"noise": NAN}]), r"exclude\[0\]\.noise: nan is not a finite"),
    "exclude-noise-list-inf": (
        _set(("exclude",), [{"noise": [0.5, INF]}]),
        r"exclude\[0\]\.noise\[1\]: inf is not a finite",
    ),
    # the report compares with models that must have cells, else its columns are dashes
    "baseline-not-in-grid": (
        _set(("report", "baseline"), "vit"),
        r"report\.baseline: 'vit' has no cells in the grid \(models with cells: "
        r"\['ridge', 'lightgbm', 'vit-tiny', 'oracle', 'ridge-ca', 'lightgbm-ca', 'lightgbm-err'\]\)",
    ),
    "baseline-all-excluded": (
        _set(("exclude",), [{"model": "ridge"}]),
        r"report\.baseline: 'ridge' has no cells in the grid "
        r"\(models with cells: \['lightgbm', 'vit-tiny', 'oracle', 'ridge-ca', 'lightgbm-ca', 'lightgbm-err'\]\)",
    ),
    "reference-not-in-grid": (
        _set(("report", "references"), ["oracle", "vit"]),
        r"report\.references\[1\]: 'vit' has no cells in the grid",
    ),
}


@pytest.mark.parametrize("edit, message", REFUSED.values(), ids=REFUSED.keys())
def test_duplicated_nonfinite_and_absent_values_are_refused_naming_the_key(edit, message):
    with pytest.raises(ConfigError) as err:
        Sweep.from_config(resolved(DEFAULT, edit))
    assert str(err.value).startswith("config error at ")
    assert re.search(message, str(err.value)), str(err.value)


def test_nonpositive_numbers_are_refused_by_the_schema():
    for edit in (_set(("grid", "mag"), [-21.5]), _set(("grid", "curves", "mag"), [0]), _set(("grid", "noise"), [0])):
        with pytest.raises(WorkflowError, match=r"less than or equal to the minimum of 0"):
            resolved(DEFAULT, edit)


def test_report_references_default_to_the_oracle_when_the_grid_runs_it():
    # no report.references: the oracle when the grid has it, nothing asked of a grid without it
    assert Sweep.from_config(resolved(DEFAULT, lambda c: c["report"].pop("references"))).cube_attrs()[
        "reference_models"
    ] == ["oracle"]
    sweep = Sweep.from_config(resolved(small()))
    assert "references" not in sweep.config["report"] and sweep.cube_attrs()["reference_models"] == ["oracle"]
    with pytest.raises(ConfigError, match=r"report\.references\[0\]: 'oracle' has no cells in the grid"):
        Sweep.from_config(resolved(small(), _set(("report", "references"), ["oracle"])))


UNSAFE_PATHS = {
    "injection": "inj||echo INJECTED>inj_proof.txt||x",
    "space": "res space",
    "semicolon": "res;touch x",
    "substitution": "res$(id)",
    "quote": "res'x",
    "newline": "res\nx",
    "parent": "../results",
    "parent-inside": "runs/../../results",
    "parent-last": "runs/..",
    "leading-dash": "-rf",
    "hidden-first": ".results",
    "empty-component": "runs//a",
    "trailing-slash": "results/",
    "empty": "",
}
SAFE_PATHS = ["results", "runs/2024-06_a.b/res-1", "_out", "runs/.hidden", "a/..b"]
PATH_KEYS = {
    "results.dir": ("results", "dir"),
    "wandb.dir": ("wandb", "dir"),
    "sweep.agents.folder": ("sweep", "agents", "folder"),
}


@pytest.mark.parametrize("key", PATH_KEYS)
@pytest.mark.parametrize("value", UNSAFE_PATHS.values(), ids=UNSAFE_PATHS.keys())
def test_unsafe_paths_are_refused_by_the_schema_and_the_grid_naming_the_key(key, value):
    edit = _set(PATH_KEYS[key], value)
    with pytest.raises(WorkflowError, match=r"does not match"):
        resolved(DEFAULT, edit)
    config = resolved(DEFAULT)
    edit(config)  # past the schema: the grid's own check
    with pytest.raises(
        ConfigError, match=rf"^config error at {re.escape(key)}: {re.escape(repr(value))} is not a safe"
    ):
        Sweep.from_config(config)


def test_safe_paths_are_accepted_and_absolute_ones_only_outside_results():
    for value in SAFE_PATHS:
        config = resolved(DEFAULT, lambda c, value=value: [_set(p, value)(c) for p in PATH_KEYS.values()])
        assert Sweep.from_config(config).config["results"]["dir"] == value
        assert WandbConfig(dir=value).dir == AgentsConfig(folder=value).folder == value
    # an absolute path: the W&B and submitit folders (often on a scratch file system), not results.dir
    config = resolved(DEFAULT, lambda c: [_set(p, "/scratch/u_1/wandb")(c) for p in list(PATH_KEYS.values())[1:]])
    Sweep.from_config(config)
    with pytest.raises(WorkflowError, match=r"does not match"):
        resolved(DEFAULT, _set(("results", "dir"), "/scratch/results"))
    config["results"]["dir"] = "/scratch/results"
    with pytest.raises(ConfigError, match=r"config error at results\.dir: '/scratch/results' is not a safe relative"):
        Sweep.from_config(config)
    # the dataclasses check on their own (the train CLI's config, `specscale agents --folder`)
    with pytest.raises(ValueError, match=r"dir='a b' is not a safe path"):
        WandbConfig(dir="a b")
    with pytest.raises(ValueError, match=r"folder='\.\./x' is not a safe path"):
        AgentsConfig(folder="../x")


# ---------------------------------------------------------------- the CLIs of the rules
def _fake_results(root: Path, sweep: Sweep) -> None:
    """metrics.json of every cell, the ceilings and the curves, at the workflow's paths."""
    for c in sweep.cells:
        record = metrics_record(c)
        path = root / METRICS.format(dataset=sweep.dataset, **c.wildcards())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    for noise, mag in sweep.ceiling_cells:
        write_ceiling(root / CEILING.format(dataset=sweep.dataset, noise=noise, mag=mag), float(noise), mag)
    write_curves(root / "ceiling/curves.nc", [float(n) for n in sweep.curve_noise], [21.0, 22.0])


def _sweep_config_file(root: Path, config: dict) -> str:
    """The generated config file ``specscale collect`` reads (results/configs/sweep.yaml), written
    by the config_file rule's command from :meth:`Sweep.config_sections`; a config the grid
    rejects is written as it is."""
    out = root / "configs" / "sweep.yaml"
    try:
        sections = Sweep.from_config(config).config_sections("sweep")
    except ConfigError:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(config))
        return str(out)
    assert cli_main(["sweep-config", "--sections", json.dumps(sections), "--out", str(out)]) == 0
    return str(out)


def test_collect_builds_the_cube_of_the_sweep(tmp_path, capsys):
    config = resolved(small(per_model={"lightgbm": {"n_train": [400], "seed": [0]}}))
    sweep = Sweep.from_config(config)
    _fake_results(tmp_path, sweep)
    ds = sweep.collect(str(tmp_path / METRICS), str(tmp_path / CEILING), tmp_path / "ceiling/curves.nc")
    assert {d: ds.sizes[d] for d in ("noise", "mag", "model", "n_train", "seed")} == {
        "noise": 2,
        "mag": 2,
        "model": 2,
        "n_train": 2,
        "seed": 2,
    }
    assert int(ds.done.sum()) == len(sweep.cells) == 16 + 4
    assert not bool(ds.done.sel(model="lightgbm", n_train=200).any())
    assert ds.ceiling_pop.dims == ("noise", "mag") and "curve_ceiling_pop" in ds
    assert json.loads(ds.attrs["config"]) == json.loads(json.dumps(config))
    assert ds.attrs["dataset"] == "d" and ds.attrs["baseline_model"] == "ridge"
    assert json.loads(ds.attrs["reference_models"]) == ["oracle"]

    # `specscale collect`, the collect rule's command: the same cube, written atomically
    out = tmp_path / "cube.nc"
    argv = ["collect", "--config", _sweep_config_file(tmp_path, config), "--metrics", str(tmp_path / METRICS)]
    argv += ["--ceilings", str(tmp_path / CEILING), "--curves", str(tmp_path / "ceiling/curves.nc"), "--out", str(out)]
    assert cli_main(argv) == 0
    assert "collected 20 cells and 4 ceilings into" in capsys.readouterr().out
    cube = open_cube(out)
    assert int(cube.done.sum()) == 20 and cube.attrs["config_hash"] == ds.attrs["config_hash"]
    assert cube.attrs["config"] == ds.attrs["config"]  # the config file gives back the config
    assert not list(tmp_path.glob("*.tmp-*"))
    # a missing cell: one line naming the file, no cube
    Path(tmp_path / METRICS.format(dataset=sweep.dataset, **sweep.cells[0].wildcards())).unlink()
    out.unlink()
    assert cli_main(argv) == 2
    assert "metrics file not found" in capsys.readouterr().err and not out.exists()
    # a config the sweep rejects: the key named
    argv[2] = _sweep_config_file(tmp_path / "rejected", resolved(config, lambda c: c.update(exclude=[{"seed": 5}])))
    assert cli_main(argv) == 2
    assert "config error at exclude[0]" in capsys.readouterr().err


def test_sweep_config_writes_a_generated_config(tmp_path, default, capsys):
    out = tmp_path / "configs/model/vit-tiny.yaml"
    sections = default.config_sections("model/vit-tiny")
    assert cli_main(["sweep-config", "--sections", json.dumps(sections), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# generated by the workflow from the sweep config (config_file job): do not edit\n")
    assert yaml.safe_load(text) == sections
    assert f"wrote {out}: sections ['models', 'wandb']" in capsys.readouterr().out
    assert cli_main(["sweep-config", "--sections", "[1, 2]", "--out", str(out)]) == 2
    assert "--sections" in capsys.readouterr().err


def test_collect_refuses_a_ceiling_of_another_cell_or_dataset_naming_both(tmp_path):
    sweep = Sweep.from_config(resolved(small()))
    _fake_results(tmp_path, sweep)
    template = str(tmp_path / CEILING)

    def collect_with(noise, mag, **attrs):
        path = tmp_path / CEILING.format(dataset=sweep.dataset, noise="0.5", mag="21.5")
        write_ceiling(path, noise, mag)
        if attrs:
            import xarray as xr

            with xr.open_dataset(path, engine="h5netcdf") as ds:
                ds = ds.load()
            ds.attrs.update(attrs)
            ds.to_netcdf(path, engine="h5netcdf")
        return sweep.collect(str(tmp_path / METRICS), template, tmp_path / "ceiling/curves.nc")

    assert int(collect_with(0.5, "21.5").done.sum()) == len(sweep.cells)  # the matching file is taken
    with pytest.raises(
        CubeError, match=r"noise0\.5_mag21\.5\.nc: ceiling of noise 2, folded into the cell of noise 0\.5"
    ):
        collect_with(2.0, "21.5")
    with pytest.raises(
        CubeError, match=r"noise0\.5_mag21\.5\.nc: ceiling of magnitude cell 22, folded into the cell of mag"
    ):
        collect_with(0.5, "22")
    with pytest.raises(CubeError, match=r"noise0\.5_mag21\.5\.nc: ceiling of dataset d2, the cells' is \['d1'\]"):
        collect_with(0.5, "21.5", dataset_id="d2")
    # the curves file too: computed on another dataset than the cells'
    collect_with(0.5, "21.5")
    curves = tmp_path / "ceiling/curves.nc"
    import xarray as xr

    with xr.open_dataset(curves, engine="h5netcdf") as ds:
        ds = ds.load()
    ds.attrs["dataset_id"] = "d2"
    ds.to_netcdf(curves, engine="h5netcdf")
    with pytest.raises(CubeError, match=r"curves\.nc: ceiling curves of dataset d2, the cells' is \['d1'\]"):
        sweep.collect(str(tmp_path / METRICS), template, curves)


# ---------------------------------------------------------------- a window's own references
def test_window_ids_name_the_window():
    assert window_id(None) == window_id("full") == "full"
    assert window_id("ca_triplet") == "ca_triplet"
    assert window_id(("ca_triplet", (8790.0, 8830.5))) == "ca_triplet+8790-8830.5"


def test_the_default_window_variants_get_references_where_they_run(default):
    assert default.windows == {"ca_triplet": "ca_triplet"}
    assert default.model_windows["ridge-ca"] == default.model_windows["lightgbm-ca"] == "ca_triplet"
    assert default.model_windows["ridge"] == default.model_windows["lightgbm-err"] == "full"
    # one reference per window and cell, however many variants share the window
    assert default.window_cells == [("ca_triplet", "1", "20.5-22.5"), ("ca_triplet", "1", "21.5")]
    assert default.window_argument("ca_triplet") == "ca_triplet"


def _window_sweep() -> Sweep:
    variants = {
        "ridge-ca": {"base": "ridge", "features": {"window": "ca_triplet"}},
        "ridge-mix": {"base": "ridge", "features": {"window": ["na_8190", [8790, 8830]]}},
    }
    per_model = {"ridge-ca": {"noise": [1.0]}, "ridge-mix": {"noise": [1.0], "mag": ["21.5"]}}
    config = small(model=["ridge", "ridge-ca", "ridge-mix"], per_model=per_model)
    config["variants"] = variants
    return Sweep.from_config(resolved(config))


def _fake_window_references(root: Path, sweep: Sweep, loss: float = 0.1) -> None:
    """Full-spectrum Bayes files and the windows' ceilings and Bayes files at the workflow's paths."""
    for noise, mag in sweep.ceiling_cells:
        write_bayes(root / BAYES.format(dataset=sweep.dataset, noise=noise, mag=mag), float(noise), mag, 0.8)
    for w, noise, mag in sweep.window_cells:
        label = json.dumps(sweep.windows[w]) if not isinstance(sweep.windows[w], str) else f'"{sweep.windows[w]}"'
        at = dict(dataset=sweep.dataset, window=w, noise=noise, mag=mag)
        write_ceiling(root / CEILING_WINDOW.format(**at), float(noise), mag, window=label, loss=loss)
        write_bayes(root / BAYES_WINDOW.format(**at), float(noise), mag, 0.8 - loss, window=label)


def test_collect_folds_each_windows_references_on_a_window_dim(tmp_path, capsys):
    sweep = _window_sweep()
    assert sweep.window_cells == [
        ("ca_triplet", "1", "21.5"),
        ("ca_triplet", "1", "22"),
        ("na_8190+8790-8830", "1", "21.5"),
    ]
    assert sweep.window_argument("na_8190+8790-8830") == '["na_8190", [8790, 8830]]'
    _fake_results(tmp_path, sweep)
    _fake_window_references(tmp_path, sweep)
    templates = dict(
        bayes=str(tmp_path / BAYES),
        window_ceilings=str(tmp_path / CEILING_WINDOW),
        window_bayes=str(tmp_path / BAYES_WINDOW),
    )
    ds = sweep.collect(str(tmp_path / METRICS), str(tmp_path / CEILING), tmp_path / "ceiling/curves.nc", **templates)
    assert list(ds.window.values) == ["ca_triplet", "na_8190+8790-8830"]
    assert list(ds.model_window.values) == ["full", "ca_triplet", "na_8190+8790-8830"]
    assert ds.window_ceiling_pop.dims == ("window", "noise", "mag")
    assert ds.window_bayes_r2_snr_bin.dims == ("window", "noise", "mag", "snr_bin")
    ca = ds.window_ceiling_pop.sel(window="ca_triplet")
    np.testing.assert_allclose(ca.sel(noise=1.0).values, ds.ceiling_pop.sel(noise=1.0).values - 0.1)
    assert np.isnan(ca.sel(noise=0.5).values).all()  # no window variant runs there
    mix = ds.window_bayes_r2.sel(window="na_8190+8790-8830", noise=1.0)
    assert float(mix.sel(mag="21.5")) == pytest.approx(0.7) and np.isnan(float(mix.sel(mag="22")))
    assert "ca_triplet/ceiling" in json.loads(ds.attrs["window_provenance"])
    # the same through `specscale collect`, and the cube file keeps them
    out = tmp_path / "cube.nc"
    argv = ["collect", "--config", _sweep_config_file(tmp_path, sweep.config), "--metrics", str(tmp_path / METRICS)]
    argv += ["--ceilings", str(tmp_path / CEILING), "--curves", str(tmp_path / "ceiling/curves.nc")]
    argv += ["--bayes", templates["bayes"], "--window-ceilings", templates["window_ceilings"]]
    argv += ["--window-bayes", templates["window_bayes"], "--out", str(out)]
    assert cli_main(argv) == 0
    assert "(and the references of 3 window cells)" in capsys.readouterr().out
    cube = open_cube(out)
    assert list(cube.model_window.values) == list(ds.model_window.values)
    np.testing.assert_array_equal(cube.window_ceiling_pop.values, ds.window_ceiling_pop.values)


def test_collect_refuses_a_window_reference_of_another_window(tmp_path, capsys):
    sweep = _window_sweep()
    _fake_results(tmp_path, sweep)
    _fake_window_references(tmp_path, sweep)
    templates = dict(
        bayes=str(tmp_path / BAYES),
        window_ceilings=str(tmp_path / CEILING_WINDOW),
        window_bayes=str(tmp_path / BAYES_WINDOW),
    )
    # a window's ceiling where the full spectrum's belongs
    full = tmp_path / CEILING.format(dataset="d", noise="1", mag="22")
    write_ceiling(full, 1.0, "22", window='"ca_triplet"')
    with pytest.raises(CubeError, match=r"noise1_mag22.nc: ceiling of window \"ca_triplet\", folded as window full"):
        sweep.collect(str(tmp_path / METRICS), str(tmp_path / CEILING), tmp_path / "ceiling/curves.nc", **templates)
    write_ceiling(full, 1.0, "22")
    stale = tmp_path / CEILING_WINDOW.format(dataset="d", window="ca_triplet", noise="1", mag="22")
    write_ceiling(stale, 1.0, "22")  # a full-spectrum ceiling where the window's belongs
    with pytest.raises(CubeError, match=r"noise1_mag22.nc: ceiling of window full, folded as window \"ca_triplet\""):
        sweep.collect(
            str(tmp_path / METRICS),
            str(tmp_path / CEILING),
            tmp_path / "ceiling/curves.nc",
            bayes=str(tmp_path / BAYES),
            window_ceilings=str(tmp_path / CEILING_WINDOW),
            window_bayes=str(tmp_path / BAYES_WINDOW),
        )
