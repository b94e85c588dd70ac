"""CLI of the pre-training stage: ``specscale pretrain NAME --data F.h5 --config C.yaml --out DIR``
trains the encoder of the config's run ``pretrain.NAME`` (``specscale.sweep.pretraining``) without
labels and writes ``DIR/encoder.pt``; a rerun resumes from ``DIR/checkpoint.pt``."""

from __future__ import annotations

import shutil

from specscale.cli.options import non_negative_float, non_negative_int, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pre-train a ViT encoder without labels and write DIR/encoder.pt",
        description="Pre-train the encoder of the config's run pretrain.NAME (masked-spectrum modelling and/or "
        "denoising) on the dataset's training spectra; the fine-tuned variants start from DIR/encoder.pt "
        "(written atomically). Exit 2 on bad input (before training), 75 when stopped by SIGTERM/SIGUSR1 "
        "after a checkpoint (rerun the same command to resume).",
    )
    p.add_argument("name", help="a run of the config's pretrain section")
    p.add_argument("--data", required=True, help="dataset (.h5 from `specscale simulate`, or a study manifest .yaml)")
    p.add_argument("--config", required=True, help="YAML config with pretrain.NAME and the model it names")
    p.add_argument("--out", required=True, help="output directory (encoder.pt, checkpoint.pt, W&B run)")
    p.add_argument("--noise", type=non_negative_float, help="noise level (default pretrain.NAME.noise)")
    p.add_argument("--mag", help="HSC-i AB magnitude cell: 21.5 or 20.5-22.5 (default pretrain.NAME.mag)")
    p.add_argument("--seed", type=non_negative_int, help="seed of noise, masks, weights (default pretrain.NAME.seed)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    p.add_argument(
        "--threads", type=positive_int, help="CPU threads, >= 1 (default: SLURM_CPUS_PER_TASK, else the CPU affinity)"
    )
    p.add_argument("--force", action="store_true", help="start over: drop DIR's checkpoint and encoder")
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args) -> int:
    from pathlib import Path

    from specscale.core.config import ConfigError, from_dict, load_config, section
    from specscale.core.hardware import cpu_count, resolve_device
    from specscale.core.vocab import MagRange
    from specscale.data.sources import open_source
    from specscale.models.vit.params import ENCODER_NAME
    from specscale.models.vit.pretrain import pretrain
    from specscale.sweep.pretraining import resolve_run
    from specscale.sweep.sections import WORKFLOW_SECTIONS
    from specscale.sweep.tracking import Tracker, WandbConfig

    config = load_config(args.config, also=WORKFLOW_SECTIONS)
    run = resolve_run(config, args.name)  # unknown run / key / value: ConfigError naming it
    wandb_cfg = from_dict(WandbConfig, section(config, "wandb"), "wandb")
    wandb_cfg.effective_mode()
    noise = run.noise if args.noise is None else args.noise
    mag = MagRange.parse(run.mag if args.mag is None else args.mag).label()
    seed = run.seed if args.seed is None else args.seed
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    source = open_source(args.data)
    source.check_cell(mag)
    n_spectra = run.n_spectra or source.n("train")
    if n_spectra > source.n("train"):
        raise ConfigError(
            f"pretrain.{args.name}.n_spectra={n_spectra} exceeds the {source.n('train')} training spectra "
            f"of {args.data}"
        )
    if args.force:
        for name in ("checkpoint.pt", ENCODER_NAME):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "wandb", ignore_errors=True)
    device = resolve_device(args.device)
    threads = args.threads or cpu_count()
    out.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(
        wandb_cfg,
        config={
            "pretrain": args.name,
            "base": run.base,
            "n_spectra": n_spectra,
            "noise": noise,
            "mag": mag,
            "seed": seed,
            "data": str(args.data),
            "device": device,
            "params": vars(run.params),
        },
        group=f"pretrain_{args.name}",
        name=f"{args.name}_noise{noise:g}_mag{mag}_s{seed}",
        out_dir=out,
        workdir=out,
    )
    try:
        info = pretrain(
            source,
            run.params,
            n_spectra=n_spectra,
            noise=noise,
            mag=mag,
            seed=seed,
            workdir=out,
            device=device,
            n_threads=threads,
            tracker=tracker,
        )
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
    if not (out / ENCODER_NAME).is_file():
        raise ConfigError(
            f"--out {out}: the checkpoint records a finished run but {ENCODER_NAME} is gone; rerun with --force"
        )
    print(
        f"pretrain {args.name} ({'+'.join(run.params.tasks)}, base {run.base}) on {n_spectra} spectra at noise "
        f"{noise:g}, mag {mag}, seed {seed}: best validation loss {info.get('best_val_loss', float('nan')):.4g}"
        f" -> {out / ENCODER_NAME}"
    )
    print(reconstruction_line(info))
    return 0


def reconstruction_line(info: dict) -> str:
    """The best epoch's reconstruction on the validation spectra against the pixels' noise: per
    task, the RMS error to the noiseless flux, the RMS noise of those pixels (both in units of the
    normalised flux) and chi (below 1: closer to the truth than the pixel's own noisy value; the
    flat continuum's chi beside it)."""
    best = next((r for r in info.get("history", []) if r.get("epoch") == info.get("best_epoch")), {})
    parts = [
        f"{task} ({where}): RMSE {best[f'val_{task}_rmse']:.4f} vs noise RMS {best[f'val_{task}_sigma']:.4f}, "
        f"chi {best[f'val_{task}_chi']:.3f} (flat continuum {best[f'val_{task}_chi_flat']:.3f})"
        for task, where in (("msm", "hidden pixels"), ("denoise", "visible pixels"))
        if task in info.get("tasks", ()) and f"val_{task}_rmse" in best
    ]
    return f"best epoch {info.get('best_epoch')}: " + ("; ".join(parts) or "no reconstruction scores")
