"""Provenance stamped on every number: code version, config hash, dataset id, device."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

from specscale import __version__
from specscale.core.config import config_hash


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit (and '-dirty') when run from a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "src"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return f"{__version__}+g{rev}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def provenance(
    *, config=None, dataset_id: str | None = None, seed: int | None = None, device: str | None = None
) -> dict:
    """A provenance record: code version, config hash, dataset id, seed, device, host."""
    return {
        "code_version": code_version(),
        "config_hash": config_hash(config) if config is not None else None,
        "dataset_id": dataset_id,
        "seed": seed,
        "device": device,
        "python": platform.python_version(),
    }
