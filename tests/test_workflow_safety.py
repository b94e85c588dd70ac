"""The workflow and shell text: a ``results.dir`` carrying shell syntax is refused before any job
runs (nothing injected runs, nothing is written), every path a rule's shell command gets is
quoted (a dataset file at a path full of shell syntax stays one word), and the profiles rerun
the incomplete outputs a killed run leaves."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from test_workflow import TINY, snakemake

pytestmark = pytest.mark.slow  # Snakemake runs and dry runs

REPO = Path(__file__).resolve().parents[1]
INJECTION = "inj||echo INJECTED>inj_proof.txt||x"


def _tiny(**extra) -> dict:
    return {**yaml.safe_load(yaml.safe_dump(TINY)), **extra}


@pytest.mark.parametrize("value", [INJECTION, "res space", "../outside"], ids=["injection", "space", "parent"])
def test_results_dir_with_shell_syntax_is_refused_and_nothing_runs(tmp_path, value):
    # a real (not dry) run of the first jobs, printing their shell commands: refused at parse time
    proc = snakemake(tmp_path, "--cores", "1", "-p", "--until", "config_file", config=_tiny(results={"dir": value}))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert re.search(r"does not match(.|\n)*\['results'\]\['dir'\]", out), out  # the schema names the key
    assert "Shell command" not in out
    assert not list(tmp_path.rglob("inj_proof.txt")) and not list(tmp_path.parent.rglob("inj_proof.txt"))
    assert {p.name for p in tmp_path.iterdir()} <= {"config.yaml", ".snakemake"}  # no results folder of any name


def test_every_path_in_a_shell_command_is_one_quoted_word(tmp_path, tiny_dataset):
    # a dataset file at a path full of shell syntax: each command the dry run prints has it as one word
    nasty = tmp_path / f"my data;{INJECTION};$(touch pwned)'q" / "tiny.h5"
    nasty.parent.mkdir()
    shutil.copy(tiny_dataset, nasty)
    config = _tiny(datasets={"study": {"source": "file", "path": str(nasty)}})
    config["grid"].update(n_train=[200], mag=["21"], ceiling={"stars": 40}, curves={"mag": [21.0], "stars": 20})
    proc = snakemake(tmp_path, "-n", "-p", config=config)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    commands = re.findall(r"^Shell command: (.*)$", out, re.M)
    used = [c for c in commands if "inj_proof" in c]
    assert {c.split()[1] for c in used} >= {"fisher", "fisher-curves", "train", "sweep-config"}, commands
    for command in used:
        words = shlex.split(command)
        (word,) = [w for w in words if "inj_proof" in w]
        if words[1] == "sweep-config":  # the path inside the sweep config it writes for collect
            assert json.loads(word)["datasets"]["study"]["path"] == str(nasty), command
        else:
            assert word == str(nasty), command
    assert not list(tmp_path.rglob("inj_proof.txt")) and not list(tmp_path.rglob("pwned"))


def _shell_texts(path: Path) -> list[tuple[str, str]]:
    """(rule, shell text) of each rule of a rule file: the string literals after ``shell:``."""
    out, rule, lines = [], None, path.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(?:use )?rule (\w+)", line)
        if m:
            rule = m.group(1)
        if line.strip() == "shell:":
            parts = []
            for follow in lines[i + 1 :]:
                m = re.match(r'\s+"(.*)"$', follow)
                if not m:
                    break
                parts.append(m.group(1))
            out.append((rule, "".join(parts)))
    return out


# placeholders that cannot carry shell syntax: wildcards held to a regex by wildcard_constraints
# (common.smk), threads, and params built from numbers or already passed through shlex.quote
UNQUOTED_OK = {
    "wildcards.model",
    "wildcards.noise",
    "wildcards.mag",
    "wildcards.n_train",
    "wildcards.seed",
    "threads",
    "params.stars",  # --stars N, an integer of the schema (ceiling: the whole option)
    "params.samples",  # bayes: grid.bayes.samples, an integer of the schema
    "params.ceiling",  # common.smk ceiling_option: shlex.quote'd
    "params.cell",  # common.smk pretrain_options: each value shlex.quote'd
    "params.window",  # common.smk window_option: "--window " + shlex.quote'd name or JSON (or empty)
    "params.noise",  # ceiling_curves: canonical numbers joined by ","
    "params.mag",
}


def test_every_shell_placeholder_is_quoted_or_cannot_carry_shell_syntax():
    texts = [
        (f.name, rule, text) for f in sorted((REPO / "workflow/rules").glob("*.smk")) for rule, text in _shell_texts(f)
    ]
    assert {rule for _, rule, _ in texts} >= {"config_file", "simulate", "ceiling", "train", "collect", "plots"}
    for name, rule, text in texts:
        for field in re.findall(r"\{([^{}]+)\}", text):
            assert field.endswith(":q") or field in UNQUOTED_OK, f"{name} rule {rule}: {{{field}}} is not quoted"
    # the wildcards that go unquoted are held to shell-safe characters
    common = (REPO / "workflow/rules/common.smk").read_text()
    block = common.split("wildcard_constraints:", 1)[1].split("\n\n", 1)[0]
    constraints = dict(re.findall(r"^\s+(\w+)=r\"(.*)\",$", block, re.M))
    for name in ("model", "noise", "mag", "n_train", "seed"):
        for c in " ;|&$`'\"<>()\\\n*?!#~{}":
            for text in (f"a{c}a", f"1{c}1", f"1{c}", f"1.5-2{c}"):
                assert not re.fullmatch(constraints[name], text), (name, constraints[name], text)


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_profiles_rerun_incomplete_outputs(profile):
    # after a SIGKILL Snakemake marks the outputs of the jobs it was running incomplete: rerun them
    config = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
    assert config["rerun-incomplete"] is True
