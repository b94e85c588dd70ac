"""CLI of the sweep: ``specscale sweep-config``, ``collect``, ``cube``, ``plot``, ``report``, ``agents``,
``install-profile``.

Heavy imports (matplotlib, submitit, wandb) happen inside the commands, so ``specscale --help``
and the other stages stay fast."""

from __future__ import annotations

import json
import time
from pathlib import Path

from specscale.cli.options import non_negative_int, positive_float, positive_int
from specscale.core.config import ConfigError


def register(sub) -> None:
    _register_cube_commands(sub)
    _register_agent_commands(sub)


def _register_cube_commands(sub) -> None:
    """sweep-config, collect, cube, plot, report: the commands of the workflow's rules."""
    p = sub.add_parser("sweep-config", help="write one per-stage config file of the workflow (its config_file rule)")
    p.add_argument(
        "--sections",
        required=True,
        help="the file's config sections as a JSON mapping (specscale.sweep.grid.Sweep.config_sections)",
    )
    p.add_argument("--out", required=True, help="output .yaml file")
    p.set_defaults(func=cmd_sweep_config)

    p = sub.add_parser(
        "collect", help="collect the sweep's metrics.json and ceiling files into the scaling cube (the collect rule)"
    )
    p.add_argument(
        "--config",
        required=True,
        help="the sweep config (YAML; the workflow's generated results/configs/sweep.yaml): it gives the cells",
    )
    p.add_argument(
        "--metrics",
        required=True,
        help="path template of a cell's metrics.json, with {dataset} {noise} {mag} {model} {n_train} {seed}",
    )
    p.add_argument(
        "--ceilings", required=True, help="path template of a cell's ceiling file, with {dataset} {noise} {mag}"
    )
    p.add_argument("--curves", required=True, help="the ceiling curves file (specscale fisher-curves)")
    p.add_argument(
        "--bayes", help="path template of a cell's Bayes reference file (specscale bayes), with {dataset} {noise} {mag}"
    )
    p.add_argument(
        "--window-ceilings",
        help="path template of a window's ceiling file (specscale fisher --window): {dataset} {window} {noise} {mag}",
    )
    p.add_argument(
        "--window-bayes",
        help="path template of a window's Bayes reference file (specscale bayes --window), same fields",
    )
    p.add_argument("--out", required=True, help="output cube .nc file")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("cube", help="print a scaling cube (results/cube.nc) as a table")
    p.add_argument("cube", help="cube netCDF written by the workflow's collect rule")
    p.add_argument(
        "--metrics",
        default="r2,mae,rmse,r2_top20,train_s",
        help="comma-separated cube variables to show (seed means; default %(default)s)",
    )
    p.set_defaults(func=cmd_cube)

    p = sub.add_parser("plot", help="draw the sweep's figures (PNG and PDF) from the cube alone")
    p.add_argument("cube")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--formats", default="png,pdf", help="comma-separated (default %(default)s)")
    p.add_argument(
        "--information",
        help="netCDF of log g information per wavelength chunk for the information figure "
        "(specscale.report.information.information_data; absent: a placeholder panel)",
    )
    p.add_argument(
        "--captions",
        help="also write each figure's caption (specscale.report.figures.FIGURES) as CAPTIONS/<name>.rst, "
        "the caption files of the Snakemake HTML report",
    )
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("report", help="write the markdown report (headline numbers per cell + plots)")
    p.add_argument("cube")
    p.add_argument("--plots", required=True, help="folder with the figures of `specscale plot`")
    p.add_argument("--out", required=True, help="output .md file")
    p.set_defaults(func=cmd_report)


def _register_agent_commands(sub) -> None:
    """agents, install-profile: running the sweep through W&B agents or a Snakemake profile."""
    p = sub.add_parser("agents", help="launch N wandb sweep agents as one SLURM job array (submitit)")
    p.add_argument("--sweep", required=True, help="wandb sweep id (ENTITY/PROJECT/ID or ID)")
    p.add_argument("--count", type=positive_int, required=True, help="number of agents (array tasks)")
    p.add_argument("--runs-per-agent", type=positive_int, help="runs each agent tries (default: until the sweep ends)")
    p.add_argument(
        "--executor",
        choices=("slurm", "local", "debug", "auto"),
        help="submitit executor (default: sweep.agents.executor, else slurm)",
    )
    p.add_argument("--config", help="YAML config whose sweep.agents section gives the defaults below")
    p.add_argument("--folder", help="submitit log/pickle folder")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--timeout-min", type=positive_int)
    p.add_argument("--gpus", type=non_negative_int, help="GPUs per agent")
    p.add_argument("--cpus", type=positive_int, help="CPUs per agent")
    p.add_argument("--mem-gb", type=positive_float)
    p.add_argument("--parallelism", type=positive_int, help="array tasks running at once")
    p.add_argument("--project")
    p.add_argument("--entity")
    p.add_argument("--wait", action="store_true", help="wait for the agents and print their results")
    p.set_defaults(func=cmd_agents)

    p = sub.add_parser(
        "install-profile",
        help="copy profiles/slurm and profiles/local to ~/.config/snakemake (so --profile slurm works)",
    )
    p.add_argument("--dest", help="target folder (default: Snakemake's user profile folder)")
    p.add_argument("--source", help="folder holding the profiles (default: the checkout's profiles/)")
    p.add_argument("--force", action="store_true", help="overwrite existing profiles")
    p.add_argument("names", nargs="*", default=["slurm", "local"], help="profiles to install (default: slurm local)")
    p.set_defaults(func=cmd_install_profile)


# the first line of every generated config file
GENERATED = "# generated by the workflow from the sweep config (config_file job): do not edit\n"


def _json_mapping(text: str, option: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{option}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{option}: must be a JSON mapping, got {type(value).__name__}")
    return value


def cmd_sweep_config(args) -> int:
    import yaml

    from specscale.core.files import write_text

    sections = _json_mapping(args.sections, "--sections")
    write_text(GENERATED + yaml.safe_dump(sections, sort_keys=False), args.out)
    print(f"wrote {args.out}: sections {list(sections)}")
    return 0


def cmd_collect(args) -> int:
    from specscale.cli.plan import load_config
    from specscale.sweep.cube import write_cube
    from specscale.sweep.grid import Sweep

    t0 = time.perf_counter()
    sweep = Sweep.from_config(load_config(args.config))
    ds = sweep.collect(
        args.metrics,
        args.ceilings,
        args.curves,
        bayes=args.bayes,
        window_ceilings=args.window_ceilings,
        window_bayes=args.window_bayes,
    )
    write_cube(ds, args.out)
    print(
        f"collected {len(sweep.cells)} cells and {len(sweep.ceiling_cells)} ceilings"
        + (f" (and the references of {len(sweep.window_cells)} window cells)" if sweep.window_cells else "")
        + f" into {args.out} "
        f"in {time.perf_counter() - t0:.2f} s"
    )
    return 0


def cmd_cube(args) -> int:
    from specscale.report.tables import format_table
    from specscale.sweep.cube import open_cube

    ds = open_cube(args.cube)
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    unknown = [m for m in metrics if m not in ds.data_vars]
    if unknown:
        raise ValueError(f"--metrics: {unknown} not in the cube; variables: {sorted(ds.data_vars)}")
    print(format_table(ds, metrics))
    return 0


def cmd_plot(args) -> int:
    from specscale.report.figures import write_captions
    from specscale.report.plots import plot_all
    from specscale.sweep.cube import open_cube

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    for path in plot_all(open_cube(args.cube), args.out, formats, information=args.information):
        print(path)
    for path in write_captions(args.captions) if args.captions else ():
        print(path)
    return 0


def cmd_report(args) -> int:
    from specscale.report.markdown import write_report
    from specscale.sweep.cube import open_cube

    out = write_report(open_cube(args.cube), args.out, plots=args.plots, cube_path=args.cube)
    print(f"wrote {out}")
    return 0


def cmd_agents(args) -> int:
    from specscale.sweep.agents import AgentsConfig, launch_agents

    cfg = AgentsConfig.from_config(
        args.config,
        overrides={
            "executor": args.executor,
            "folder": args.folder,
            "partition": args.partition,
            "account": args.account,
            "timeout_min": args.timeout_min,
            "gpus": args.gpus,
            "cpus": args.cpus,
            "mem_gb": args.mem_gb,
            "parallelism": args.parallelism,
            "project": args.project,
            "entity": args.entity,
            "runs_per_agent": args.runs_per_agent,
        },
    )
    jobs = launch_agents(args.sweep, args.count, cfg)
    print(
        f"submitted {len(jobs)} agent(s) for sweep {args.sweep} via {cfg.executor}: "
        + " ".join(str(j.job_id) for j in jobs)
    )
    if args.wait:
        for job in jobs:
            print(f"{job.job_id}: {job.result()}")
    return 0


def cmd_install_profile(args) -> int:
    from specscale.sweep.profiles import install_profiles

    for path in install_profiles(args.names, dest=args.dest, source=args.source, force=args.force):
        print(f"installed {path}")
    dest = Path(args.dest) if args.dest else None
    print(
        "now `snakemake --profile slurm` works from any folder"
        if dest is None
        else f"use it with `snakemake --profile {dest / args.names[0]}`"
    )
    return 0
