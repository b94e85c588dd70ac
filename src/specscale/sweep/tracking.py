"""Weights & Biases tracking of ViT runs, offline unless asked otherwise.

Runs are grouped by their (noise, magnitude) cell, ``group="noise{X}_mag{CELL}"``, and named
after the model, training size and seed, ``"{model}_n{N}_s{S}"``, so a project's dashboard shows
one scaling sweep per group. No account, key or network is ever needed: the mode is the config's
``wandb.mode``, else ``$WANDB_MODE``, else "offline" (runs land in ``<dir>/wandb/`` and can be
uploaded later with ``wandb sync``); "disabled" does nothing at all. The run id is kept in the
cell's work directory, so a resumed job continues its run instead of starting another; under a W&B
sweep agent ($WANDB_SWEEP_ID set) the agent's $WANDB_RUN_ID is the run.

Config section ``wandb: {mode, project, entity, dir}``.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from specscale.core.config import check_fields
from specscale.core.files import unsafe_path

MODES = ("offline", "online", "disabled")


# A folder the sweep's config may name (results.dir, wandb.dir, sweep.agents.folder): "/"-separated
# components of letters, digits, "_", "." and "-", the first character of the path a letter, digit or
# "_", no empty and no ".." component. Such a path is one word in any shell command and cannot climb
# out of the folder it starts in. The same pattern is in workflow/schemas/config.schema.yaml.
@dataclass(frozen=True)
class WandbConfig:
    mode: str | None = None  # offline | online | disabled; None: $WANDB_MODE, else offline
    project: str = "specscale"
    entity: str | None = None
    dir: str | None = None  # None: $WANDB_DIR, else the run's --out directory

    def __post_init__(self):
        check_fields(self)
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is not one of {list(MODES)}")
        if self.dir is not None and (why := unsafe_path(self.dir)):
            raise ValueError(f"dir={why}")

    def effective_mode(self) -> str:
        mode = self.mode or os.environ.get("WANDB_MODE") or "offline"
        if mode == "dryrun":  # wandb's old name for offline
            mode = "offline"
        if mode not in MODES:
            raise ValueError(f"WANDB_MODE={mode!r} is not one of {list(MODES)}")
        return mode


def run_group(noise: float, mag_label: str) -> str:
    return f"noise{noise:g}_mag{mag_label}"


def run_name(model: str, n_train: int, seed: int) -> str:
    return f"{model}_n{n_train}_s{seed}"


class Tracker:
    """One W&B run (or nothing, when disabled): ``log`` metrics at a step, ``summary`` final values."""

    def __init__(self, cfg: WandbConfig, *, config: dict, group: str, name: str, out_dir: Path, workdir: Path):
        self.mode = cfg.effective_mode()
        self.run = None
        if self.mode == "disabled":
            return
        import wandb

        root = Path(cfg.dir or os.environ.get("WANDB_DIR") or out_dir)
        root.mkdir(parents=True, exist_ok=True)
        workdir.mkdir(parents=True, exist_ok=True)
        id_file = workdir / "wandb_run_id"
        if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):
            run_id = os.environ["WANDB_RUN_ID"]  # a sweep agent's run: its id ties the run to the sweep
        else:
            run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
        id_file.write_text(run_id)
        self.run = wandb.init(
            mode=self.mode,
            project=cfg.project,
            entity=cfg.entity,
            dir=str(root),
            group=group,
            name=name,
            job_type="train",
            config=config,
            id=run_id,
            resume="allow",
            reinit="create_new",
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )

    @property
    def run_dir(self) -> Path | None:
        return Path(self.run.dir).parent if self.run is not None else None

    def log(self, values: dict, step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
