"""CLI of the models: ``specscale train MODEL --data F.h5 --noise X --mag CELL --n-train N --seed S --out DIR``."""

from __future__ import annotations

import json
import os
import sys

from specscale.cli.options import non_negative_float, non_negative_int, positive_int
from specscale.core.config import not_finite
from specscale.models.registry import model_names

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped by a signal after checkpointing; rerun to resume


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train one sweep cell and write DIR/metrics.json + DIR/predictions.h5",
        description="Train MODEL on the first N training stars at one (noise, magnitude cell, seed), select on "
        "validation, predict the test split. Exit 2 on bad input (before training), 75 when stopped "
        "by SIGTERM/SIGUSR1 after a checkpoint (rerun the same command to resume).",
    )
    p.add_argument("model", help=f"one of: {', '.join(model_names())}")
    p.add_argument("--data", required=True, help="dataset (.h5 from `specscale simulate`, or a study manifest .yaml)")
    p.add_argument(
        "--noise", type=non_negative_float, required=True, help="noise level (1 = the observation model's noise)"
    )
    p.add_argument("--mag", required=True, help="HSC-i AB magnitude cell: 21.5 or 20.5-22.5")
    p.add_argument("--n-train", type=positive_int, required=True, help="train on the first N training stars")
    p.add_argument("--seed", type=non_negative_int, required=True, help="seed of the training noise and the model")
    p.add_argument(
        "--out", required=True, help="output directory of this cell (locked: a second writer of it fails at once)"
    )
    p.add_argument("--config", help="YAML config (models.<name> hyper-parameters, wandb)")
    p.add_argument(
        "--ceiling", help="Fisher ceiling of this cell (.nc with ceiling_pop, ceiling_median), logged beside R^2"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    p.add_argument(
        "--threads", type=positive_int, help="CPU threads, >= 1 (default: SLURM_CPUS_PER_TASK, else the CPU affinity)"
    )
    p.add_argument("--force", action="store_true", help="retrain even if DIR/metrics.json exists (drops checkpoints)")
    p.epilog = (
        "Further arguments --NAME=VALUE override models.MODEL.NAME (a W&B sweep agent's ${args}); '{run_id}' "
        "in --out becomes $WANDB_RUN_ID, so each sweep run gets its own directory."
    )
    p.set_defaults(func=cmd_train, accepts_overrides=True)


def cmd_train(args) -> int:
    from specscale.core.vocab import Cell
    from specscale.models.vit import TrainingInterrupted
    from specscale.sweep.cell import CellRequest, run_cell

    req = CellRequest(
        cell=Cell(noise=args.noise, mag=args.mag, model=args.model, n_train=args.n_train, seed=args.seed),
        data=args.data,
        out=sweep_out_dir(args.out),
        config=args.config,
        ceiling=args.ceiling,
        device=args.device,
        threads=args.threads,
        force=args.force,
        overrides=parse_overrides(args.overrides),
    )
    try:
        result = run_cell(req)
    except TrainingInterrupted as exc:
        print(f"specscale train: interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    m = result["metrics"]
    t = result["timing"]
    print(
        f"{args.model} n={args.n_train} seed={args.seed} noise={args.noise:g} mag={result['cell']['mag']}: "
        f"test R2 {m['r2']:.4f}  MAE {m['mae']:.4f} dex  (train {t['train_s']:.1f} s, predict {t['predict_s']:.1f} s)"
        f" -> {req.out}/metrics.json"
    )
    return 0


def parse_overrides(args: list[str]) -> dict:
    """``["--lr=3e-4", "--depth=6"]`` -> {"lr": 0.0003, "depth": 6}: the form a W&B sweep agent's
    ${args} takes. Values are read as JSON where they parse (numbers, true/false, lists), else kept
    as strings; anything not of the form --NAME=VALUE is an error naming it."""
    out = {}
    for a in args:
        name, eq, value = a[2:].partition("=") if a.startswith("--") else ("", "", "")
        if not eq or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"unrecognized argument {a!r}: hyper-parameter overrides take the form --NAME=VALUE")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if not_finite(parsed):  # JSON's NaN / Infinity
            raise ValueError(f"{a}: hyper-parameters must be finite numbers (NaN and infinity are not allowed)")
        out[name.replace("-", "_")] = parsed
    return out


def sweep_out_dir(out: str) -> str:
    """``--out`` with '{run_id}' replaced by the W&B sweep agent's $WANDB_RUN_ID."""
    if "{run_id}" not in out:
        return out
    run_id = os.environ.get("WANDB_RUN_ID")
    if not run_id:
        raise ValueError(
            f"--out {out} contains {{run_id}} but WANDB_RUN_ID is not set (only a W&B sweep agent sets it)"
        )
    return out.replace("{run_id}", run_id)
