"""Every command reads YAML through one loader (``specscale.core.config.read_yaml``): a file that is
not YAML is ``FILE:LINE:COL: ...``, a schema error names the key path; every numeric option is
checked by the same argparse types (``specscale.cli.options``). Each ends with exit 2 and one line,
before any work. Also: hypotheses that can never be evaluated, a ceiling that is not netCDF and a
corrupt metrics.json are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from specscale.cli import main
from specscale.core.config import ConfigError, read_yaml
from specscale.core.vocab import Cell
from specscale.sweep.hypotheses import check_hypotheses

CHECKOUT = Path(__file__).resolve().parents[1]
SWEEP_CONFIG = CHECKOUT / "config" / "config.yaml"


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if not ln.startswith(("INFO ", "WARNING ", "DEBUG "))]
    assert len(lines) == 1 and lines[0].startswith(f"specscale {command}: error: "), err
    return lines[0]


def argv_of(command: str, config: Path, tmp_path: Path) -> list[str]:
    """A command line of ``command`` reading ``config`` (other arguments valid or never reached)."""
    data = str(tmp_path / "never-read.h5")
    return {
        "plan": ["plan", "--config", str(config)],
        "train": ["train", "ridge", "--data", data, "--noise", "1", "--mag", "21.5", "--n-train", "5", "--seed", "1"]
        + ["--out", str(tmp_path / "cell"), "--config", str(config)],
        "bayes": ["bayes", "--data", data, "--noise", "1", "--mag", "21.5", "--out", str(tmp_path / "b.nc")]
        + ["--config", str(config)],
        "fisher": ["fisher", "--data", data, "--noise", "1", "--mag", "21.5", "--out", str(tmp_path / "f.nc")]
        + ["--config", str(config)],
        "simulate": ["simulate", "--out", str(tmp_path / "d.h5"), "--config", str(config)],
    }[command]


COMMANDS = ("plan", "train", "bayes", "fisher", "simulate")
BROKEN = {  # text, (line, column) of the problem
    "unclosed list": ("grid:\n  noise: [1, 2\n  mag: [21.5]\n", (3, 6)),
    "tab indent": ("models:\n\tridge: {}\n", (2, 1)),
    "mapping in a scalar": ("wandb:\n  mode: disabled: yes\n", (2, 17)),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_yaml_is_file_line_column(tmp_path, capsys, command, case):
    text, (line, col) = BROKEN[case]
    config = tmp_path / "broken.yaml"
    config.write_text(text)
    assert main(argv_of(command, config, tmp_path)) == 2
    err = one_error_line(capsys, command)
    assert f"{config}:{line}:{col}: not valid YAML: " in err
    assert not (tmp_path / "cell").exists() and not list(tmp_path.glob("*.nc")) and not list(tmp_path.glob("*.h5*"))


def sweep_config(tmp_path: Path, edit) -> Path:
    config = yaml.safe_load(SWEEP_CONFIG.read_text())
    edit(config)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _rename(section: dict, old: str, new: str) -> None:
    section[new] = section.pop(old)


PLAN_SCHEMA = {
    "top-level typo": (lambda c: _rename(c, "grid", "gird"), "unknown config key gird (did you mean grid?)"),
    "nested typo": (
        lambda c: _rename(c["grid"], "noise", "nosie"),
        "unknown config key grid.nosie (did you mean grid.noise?)",
    ),
    "bad value": (lambda c: c["grid"]["noise"].__setitem__(0, -1), "grid.noise[0]: -1 is less than or equal to"),
    "wrong type": (lambda c: c["grid"].__setitem__("seed", "three"), "grid.seed: 'three' is not of type 'array'"),
    "empty file": (lambda c: c.clear(), "(top level): 'datasets' is a required property"),
}


@pytest.mark.parametrize("case", list(PLAN_SCHEMA))
def test_plan_schema_errors_name_the_key_path(tmp_path, capsys, case):
    edit, expect = PLAN_SCHEMA[case]
    config = sweep_config(tmp_path, edit)
    assert main(["plan", "--config", str(config), "--profile", "none"]) == 2
    err = one_error_line(capsys, "plan")
    assert f"{config}: {expect}" in err


PACKAGE_SCHEMA = [
    ("train", {"modles": {}}, "unknown top-level config key(s) ['modles'] (did you mean models?)"),
    ("train", {"models": {"ridge": {"alpah": 1}}}, "models.ridge.alpah"),
    ("bayes", {"fisher": {"btach": 4}}, "fisher.btach"),
    ("fisher", {"fisher": {"device": 3, "chek_atol": 1}}, "fisher.chek_atol"),
    ("simulate", {"simulation": {"n_trian": 5}}, "simulation.n_trian"),
    ("simulate", {"observaton": {}}, "unknown top-level config key(s) ['observaton'] (did you mean observation?)"),
    ("simulate", ["a", "list"], "top level must be a mapping, got list"),
]


@pytest.mark.parametrize("command, content, key", PACKAGE_SCHEMA)
def test_package_schema_errors_name_the_key(tmp_path, capsys, command, content, key):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(content))
    assert main(argv_of(command, config, tmp_path)) == 2
    assert key in one_error_line(capsys, command)


def test_read_yaml_names_a_missing_file_and_reads_an_empty_one(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        read_yaml(tmp_path / "none.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "empty.yaml") is None
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read"):
        read_yaml(tmp_path / "bin.yaml")


# ---------------------------------------------------------------- numeric options

TRAIN = ["ridge", "--data", "x.h5", "--mag", "21.5", "--out", "o"]
CELL = ["--data", "x.h5", "--noise", "1", "--mag", "21.5"]
BAD_OPTIONS = [
    ("simulate", ["--out", "x.h5"], "--seed", "-1", "must be an integer >= 0"),
    ("simulate", ["--out", "x.h5"], "--n-train", "0", "must be an integer >= 1"),
    ("simulate", ["--out", "x.h5"], "--n-val", "2.5", "must be an integer"),
    ("simulate", ["--out", "x.h5"], "--n-test", "-3", "must be an integer >= 1"),
    ("snr", ["x.h5", "--mag", "21.5"], "--noise", "nan", "must be a finite number"),
    ("snr", ["x.h5", "--mag", "21.5"], "--n", "0", "must be an integer >= 1"),
    (
        "train",
        ["ridge", "--data", "x.h5", "--mag", "21.5", "--n-train", "5", "--seed", "1", "--out", "o"],
        "--noise",
        "inf",
        "must be a finite number",
    ),
    (
        "train",
        ["ridge", "--data", "x.h5", "--noise", "1", "--mag", "21.5", "--seed", "1", "--out", "o"],
        "--n-train",
        "0",
        "must be an integer >= 1",
    ),
    (
        "train",
        ["ridge", "--data", "x.h5", "--noise", "1", "--mag", "21.5", "--n-train", "5", "--out", "o"],
        "--seed",
        "-1",
        "must be an integer >= 0",
    ),
    (
        "train",
        ["ridge", "--data", "x.h5", "--noise", "1", "--mag", "21.5", "--n-train", "5", "--seed", "1", "--out", "o"],
        "--threads",
        "0",
        "must be an integer >= 1",
    ),
    ("fisher", ["--data", "x.h5", "--mag", "21.5", "--out", "f.nc"], "--noise", "-1", "must be a finite number >= 0"),
    ("fisher", ["--data", "x.h5", "--noise", "1", "--out", "f.nc"], "--snr", "0", "must be a finite number > 0"),
    (
        "fisher",
        [*CELL, "--out", "f.nc"],
        "--stars",
        "0",
        "must be an integer >= 1",
    ),
    (
        "fisher",
        [*CELL, "--out", "f.nc"],
        "--threads",
        "-2",
        "must be an integer >= 1",
    ),
    (
        "fisher-curves",
        ["--data", "x.h5", "--noise", "1", "--mag", "21", "--out", "c.nc"],
        "--stars",
        "0",
        "must be an integer >= 1",
    ),
    (
        "fisher-chunks",
        ["--data", "x.h5", "--mag", "21.5", "--out", "c.nc"],
        "--noise",
        "0",
        "must be a finite number > 0",
    ),
    (
        "fisher-chunks",
        [*CELL, "--out", "c.nc"],
        "--chunk",
        "0",
        "must be an integer >= 1",
    ),
    (
        "bayes",
        [*CELL, "--out", "b.nc"],
        "--seed",
        "-1",
        "must be an integer >= 0",
    ),
    (
        "bayes",
        [*CELL, "--out", "b.nc"],
        "--samples",
        "0",
        "must be an integer >= 1",
    ),
    (
        "bayes",
        [*CELL, "--out", "b.nc"],
        "--stars",
        "-5",
        "must be an integer >= 1",
    ),
    (
        "bayes",
        [*CELL, "--out", "b.nc"],
        "--threads",
        "0",
        "must be an integer >= 1",
    ),
    ("bayes", ["--data", "x.h5", "--mag", "21.5", "--out", "b.nc"], "--noise", "nan", "must be a finite number"),
    ("plan", ["--config", "c.yaml"], "--pack-cores", "0", "must be an integer >= 1"),
    ("agents", ["--sweep", "s"], "--count", "0", "must be an integer >= 1"),
    ("agents", ["--sweep", "s", "--count", "1"], "--gpus", "-1", "must be an integer >= 0"),
    ("agents", ["--sweep", "s", "--count", "1"], "--mem-gb", "nan", "must be a finite number"),
]


@pytest.mark.parametrize("command, argv, option, value, message", BAD_OPTIONS)
def test_every_numeric_option_is_checked_the_same_way(
    tmp_path, capsys, monkeypatch, command, argv, option, value, message
):
    monkeypatch.chdir(tmp_path)
    assert main([command, *argv, option, value]) == 2
    err = one_error_line(capsys, command)
    assert f"specscale {command}: error: {option} {message}" in err and value in err
    assert list(tmp_path.iterdir()) == []  # nothing was started or written


# ---------------------------------------------------------------- hypotheses, ceilings, metrics

HYP = {"question": "q", "base": "ridge", "variant": "lightgbm", "metric": "mae", "op": "<=", "threshold": -0.05}


def cells(model: str, *noises: float, n_train: int = 100) -> list[Cell]:
    return [Cell(noise=n, mag="21.5", model=model, n_train=n_train, seed=s) for n in noises for s in (0, 1)]


@pytest.mark.parametrize(
    "grid",
    [
        cells("ridge", 1.0) + cells("lightgbm", 2.0),  # base excluded where the variant runs
        cells("ridge", 1.0) + cells("lightgbm", 1.0, n_train=200),  # other n_train only
        cells("ridge", 1.0, 2.0),  # the variant has no cell at all
    ],
)
def test_hypothesis_without_a_common_cell_is_refused_naming_it(grid):
    config = {"grid": {"model": ["ridge", "lightgbm"]}, "hypotheses": [HYP | {"name": "never"}]}
    with pytest.raises(
        ConfigError, match=r"hypotheses\[0\]\.variant: hypothesis 'never': 'lightgbm' and its base 'ridge' share no"
    ):
        check_hypotheses(config, grid)


def test_hypothesis_with_one_common_cell_is_accepted():
    config = {"grid": {"model": ["ridge", "lightgbm"]}, "hypotheses": [HYP]}
    (h,) = check_hypotheses(config, cells("ridge", 1.0, 2.0) + cells("lightgbm", 2.0, 4.0))
    assert (h.base, h.variant) == ("ridge", "lightgbm")
    assert len(check_hypotheses(config)) == 1  # without the cells: the keys only


def test_ceiling_that_is_not_netcdf_is_one_line(tiny_dataset, tmp_path, capsys):
    bad = tmp_path / "ceiling.nc"
    bad.write_text("this is not netCDF\n")
    argv = ["train", "ridge", "--data", str(tiny_dataset), "--noise", "1", "--mag", "21.5", "--n-train", "50"]
    assert main([*argv, "--seed", "1", "--out", str(tmp_path / "cell"), "--ceiling", str(bad)]) == 2
    err = one_error_line(capsys, "train")
    assert f"ceiling file {bad} is not a readable netCDF/xarray file" in err and "Consider" not in err
    assert not (tmp_path / "cell").exists()


@pytest.mark.parametrize("text", ['{"schema": "specscale.metrics/1", "cell": {', "", "[1, 2]"])
def test_corrupt_metrics_json_is_named_by_collect(tmp_path, text):
    from specscale.sweep.cube_records import CubeError, read_metrics

    path = tmp_path / "metrics.json"
    path.write_text(text)
    with pytest.raises(CubeError, match=str(path)):
        read_metrics(path)
