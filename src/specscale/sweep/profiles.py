"""The project's Snakemake profiles (``profiles/slurm``, ``profiles/local``) installed where
``snakemake --profile NAME`` finds them (``specscale install-profile``)."""

from __future__ import annotations

import shutil
from pathlib import Path

# the checkout this package runs from (src/specscale/sweep/profiles.py -> the checkout root)
CHECKOUT = Path(__file__).resolve().parents[3]


def install_profiles(names, dest=None, source=None, force: bool = False) -> list[Path]:
    """Copy the project's Snakemake profiles (profiles/<name>) to ``dest`` (default Snakemake's
    user profile folder, ~/.config/snakemake on Linux), where ``--profile <name>`` finds them.
    ``source`` defaults to the checkout's profiles/, else the working directory's. Nothing is
    copied when a profile is missing, or exists at ``dest`` and ``force`` is false."""
    from platformdirs import user_config_dir

    if source is None:  # the checkout this package runs from, else the working directory
        candidates = [CHECKOUT / "profiles", Path.cwd() / "profiles"]
        source = next((c for c in candidates if c.is_dir()), None)
        if source is None:
            raise FileNotFoundError(f"no profiles/ folder in {[str(c.parent) for c in candidates]}; pass --source")
    source = Path(source)
    dest = Path(dest) if dest else Path(user_config_dir("snakemake", "snakemake"))
    todo = []
    for name in names:
        src = source / name
        if not (src / "config.yaml").is_file():
            raise FileNotFoundError(
                f"{src}/config.yaml not found (known: {sorted(p.name for p in source.iterdir() if p.is_dir())})"
            )
        target = dest / name
        if target.exists() and not force:
            raise ValueError(f"{target} exists; pass --force to overwrite it")
        todo.append((src, target))
    for src, target in todo:
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(src, target)
    return [target for _, target in todo]
