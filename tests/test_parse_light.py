"""Parsing the workflow stays light: the grid module and every specscale module that
workflow/rules/common.smk imports load without torch and without xarray (every SLURM job
re-parses the Snakefile; the heavy modules are imported inside the functions that need them)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "xarray")


def common_smk_imports() -> list[str]:
    """The import statements of the package in common.smk, as written there."""
    text = (REPO / "workflow/rules/common.smk").read_text()
    return re.findall(r"^(?:from specscale\S* import .+|import specscale\S*)$", text, flags=re.M)


def test_the_workflow_imports_neither_torch_nor_xarray():
    imports = ["import specscale.sweep.grid", *common_smk_imports()]
    assert any("sweep.grid" in line for line in imports[1:])  # the test follows what common.smk does
    code = "\n".join([*imports, "import sys", f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"imported at parse time: {proc.stdout.strip()}"
