"""Habits enforced, not only drawn: import-linter's layers contract in pyproject.toml passes on
the package and fails on a copy of it with one upward import; ruff lint and format are clean."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """Run the contract of ``root``/pyproject.toml against the package under ``root``/src."""
    env = {"PYTHONPATH": str(root / "src"), "PATH": str(LINT_IMPORTS.parent), "HOME": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_imports_only_downward():
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 kept, 0 broken" in run.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    # the simulator reaching up into the report: the kind of shortcut the layers forbid
    victim = tmp_path / "src/specscale/sim/instrument.py"
    victim.write_text(victim.read_text() + "\nfrom specscale.report.plots import FIGURES  # noqa: E402,F401\n")
    run = lint_imports(tmp_path)
    assert run.returncode != 0
    assert "BROKEN" in run.stdout
    assert "specscale.sim.instrument -> specscale.report.plots" in run.stdout


def test_ruff_lint_and_format_are_clean():
    ruff = Path(sys.executable).with_name("ruff")
    paths = ["src", "tests", "benchmarks", "docs"]
    for args in (["check", "--no-cache", *paths], ["format", "--check", "--no-cache", *paths]):
        run = subprocess.run([str(ruff), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"ruff {args[0]}:\n{run.stdout}{run.stderr}"
