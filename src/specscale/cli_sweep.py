"""CLI of the sweep: ``specscale cube``, ``plot``, ``report``, ``agents``, ``install-profile``.

Heavy imports (matplotlib, submitit, wandb) happen inside the commands, so ``specscale --help``
and the other stages stay fast."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("cube", help="print a scaling cube (results/cube.nc) as a table")
    p.add_argument("cube", help="cube netCDF written by the workflow's collect rule")
    p.add_argument("--metrics", default="r2,mae,rmse,r2_top20,train_s",
                   help="comma-separated cube variables to show (seed means; default %(default)s)")
    p.set_defaults(func=cmd_cube)

    p = sub.add_parser("plot", help="draw the sweep's figures (PNG and PDF) from the cube alone")
    p.add_argument("cube")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--formats", default="png,pdf", help="comma-separated (default %(default)s)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("report", help="write the markdown report (headline numbers per cell + plots)")
    p.add_argument("cube")
    p.add_argument("--plots", required=True, help="folder with the figures of `specscale plot`")
    p.add_argument("--out", required=True, help="output .md file")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("agents", help="launch N wandb sweep agents as one SLURM job array (submitit)")
    p.add_argument("--sweep", required=True, help="wandb sweep id (ENTITY/PROJECT/ID or ID)")
    p.add_argument("--count", type=int, required=True, help="number of agents (array tasks)")
    p.add_argument("--runs-per-agent", type=int, help="runs each agent tries (default: until the sweep ends)")
    p.add_argument("--executor", choices=("slurm", "local", "debug", "auto"),
                   help="submitit executor (default: sweep.agents.executor, else slurm)")
    p.add_argument("--config", help="YAML config whose sweep.agents section gives the defaults below")
    p.add_argument("--folder", help="submitit log/pickle folder")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--timeout-min", type=int)
    p.add_argument("--gpus", type=int, help="GPUs per agent")
    p.add_argument("--cpus", type=int, help="CPUs per agent")
    p.add_argument("--mem-gb", type=float)
    p.add_argument("--parallelism", type=int, help="array tasks running at once")
    p.add_argument("--project")
    p.add_argument("--entity")
    p.add_argument("--wait", action="store_true", help="wait for the agents and print their results")
    p.set_defaults(func=cmd_agents)

    p = sub.add_parser("install-profile",
                       help="copy profiles/slurm and profiles/local to ~/.config/snakemake (so --profile slurm works)")
    p.add_argument("--dest", help="target folder (default: Snakemake's user profile folder)")
    p.add_argument("--source", help="folder holding the profiles (default: the checkout's profiles/)")
    p.add_argument("--force", action="store_true", help="overwrite existing profiles")
    p.add_argument("names", nargs="*", default=["slurm", "local"], help="profiles to install (default: slurm local)")
    p.set_defaults(func=cmd_install_profile)


def cmd_cube(args) -> int:
    from .cube import format_table, open_cube

    ds = open_cube(args.cube)
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    unknown = [m for m in metrics if m not in ds.data_vars]
    if unknown:
        raise ValueError(f"--metrics: {unknown} not in the cube; variables: {sorted(ds.data_vars)}")
    print(format_table(ds, metrics))
    return 0


def cmd_plot(args) -> int:
    from .cube import open_cube
    from .plots import plot_all

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    for path in plot_all(open_cube(args.cube), args.out, formats):
        print(path)
    return 0


def cmd_report(args) -> int:
    from .cube import open_cube
    from .report import write_report

    out = write_report(open_cube(args.cube), args.out, plots=args.plots, cube_path=args.cube)
    print(f"wrote {out}")
    return 0


def cmd_agents(args) -> int:
    from .agents import AgentsConfig, launch_agents

    cfg = AgentsConfig.from_config(args.config, overrides={
        "executor": args.executor, "folder": args.folder, "partition": args.partition, "account": args.account,
        "timeout_min": args.timeout_min, "gpus": args.gpus, "cpus": args.cpus, "mem_gb": args.mem_gb,
        "parallelism": args.parallelism, "project": args.project, "entity": args.entity,
        "runs_per_agent": args.runs_per_agent,
    })
    jobs = launch_agents(args.sweep, args.count, cfg)
    print(f"submitted {len(jobs)} agent(s) for sweep {args.sweep} via {cfg.executor}: "
          + " ".join(str(j.job_id) for j in jobs))
    if args.wait:
        for job in jobs:
            print(f"{job.job_id}: {job.result()}")
    return 0


def install_profiles(names, dest=None, source=None, force: bool = False) -> list[Path]:
    """Copy the project's Snakemake profiles (profiles/<name>) to ``dest`` (default Snakemake's
    user profile folder, ~/.config/snakemake on Linux), where ``--profile <name>`` finds them."""
    import shutil

    from platformdirs import user_config_dir

    if source is None:  # the checkout this package runs from, else the working directory
        candidates = [Path(__file__).resolve().parents[2] / "profiles", Path.cwd() / "profiles"]
        source = next((c for c in candidates if c.is_dir()), None)
        if source is None:
            raise FileNotFoundError(f"no profiles/ folder in {[str(c.parent) for c in candidates]}; pass --source")
    source = Path(source)
    dest = Path(dest) if dest else Path(user_config_dir("snakemake", "snakemake"))
    todo = []
    for name in names:
        src = source / name
        if not (src / "config.yaml").is_file():
            raise FileNotFoundError(f"{src}/config.yaml not found (known: "
                                    f"{sorted(p.name for p in source.iterdir() if p.is_dir())})")
        target = dest / name
        if target.exists() and not force:
            raise ValueError(f"{target} exists; pass --force to overwrite it")
        todo.append((src, target))
    for src, target in todo:
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(src, target)
    return [target for _, target in todo]


def cmd_install_profile(args) -> int:
    for path in install_profiles(args.names, dest=args.dest, source=args.source, force=args.force):
        print(f"installed {path}")
    dest = Path(args.dest) if args.dest else None
    print("now `snakemake --profile slurm` works from any folder" if dest is None
          else f"use it with `snakemake --profile {dest / args.names[0]}`")
    return 0
