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

import json
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from .models import check_fields

MODES = ("offline", "online", "disabled")


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
            mode=self.mode, project=cfg.project, entity=cfg.entity, dir=str(root), group=group, name=name,
            job_type="train", config=config, id=run_id, resume="allow", reinit="create_new",
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


def read_offline_run(run_dir, wait_s: float = 30.0) -> dict:
    """Config, history rows and summary of a finished offline run directory (``.../offline-run-*``),
    read from its ``run-*.wandb`` record log (LevelDB-style log of protobuf records): what a sync
    would upload. Returns {"id", "group", "name", "project", "config", "history", "summary"}.

    W&B's service process may still be flushing the log when ``run.finish()`` has returned, so this
    re-reads for up to ``wait_s`` seconds until the run's final (exit) record is there."""
    import time

    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    deadline = time.monotonic() + wait_s
    while True:
        records = []
        try:
            for rec in _records(files[0].read_bytes()):
                r = pb.Record()
                r.ParseFromString(rec)
                records.append(r)
        except Exception:  # noqa: BLE001 - a record cut off mid-write: read again
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{files[0]}: run log has no exit record after {wait_s:g} s (run not finished?)")
        time.sleep(0.2)
    out = {"config": {}, "history": [], "summary": {}}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(id=r.run.run_id, group=r.run.run_group, name=r.run.display_name, project=r.run.project)
            out["config"].update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            for u in r.summary.update:
                key = u.key or "/".join(u.nested_key)
                out["summary"][key] = json.loads(u.value_json)
    out["config"].pop("_wandb", None)
    return out


def _records(buf: bytes, block: int = 32768, header: int = 7):
    """Payloads of a W&B/LevelDB log: a 7-byte file header, then 32 KiB blocks of records
    (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)."""
    if buf[:4] != b":W&B":
        raise ValueError("not a W&B run log")
    i, data = header, b""
    while i + header <= len(buf):
        if block - i % block < header:  # block trailer padding
            i += block - i % block
            continue
        _, n, kind = struct.unpack("<IHB", buf[i : i + header])
        i += header
        data += buf[i : i + n]
        i += n
        if kind in (1, 4):
            yield data
            data = b""
        elif kind == 0 and n == 0:  # zero padding at the end of a block
            continue
