"""CLI of the cost estimate: ``specscale plan --config FILE`` prints, per rule and in total, the
jobs a sweep runs, the core- and GPU-hours SLURM reserves for them and those they are estimated to
use, and how many SLURM jobs ``profiles/slurm`` and ``profiles/slurm-packed`` submit
(``specscale.sweep.plan``)."""

from __future__ import annotations

from pathlib import Path

from specscale.cli.options import positive_int
from specscale.core.config import ConfigError, read_yaml, validate_schema

CHECKOUT = Path(__file__).resolve().parents[3]
SCHEMA = CHECKOUT / "workflow" / "schemas" / "config.schema.yaml"
PACKED_PROFILE = CHECKOUT / "profiles" / "slurm-packed"


def register(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="what a sweep costs before it is submitted: jobs, core-hours and GPU-hours per rule, SLURM jobs",
    )
    p.add_argument("--config", required=True, help="the sweep config (as given to snakemake --configfile)")
    p.add_argument(
        "--profile",
        default=str(PACKED_PROFILE),
        help="a Snakemake profile folder whose groups/group-components/cores give the packed count "
        "(default: the checkout's profiles/slurm-packed; 'none': no packing)",
    )
    p.add_argument("--pack-cores", type=positive_int, help="override the profile's `cores` (width of one packed job)")
    p.set_defaults(func=cmd_plan)


def load_config(path: str) -> dict:
    """A sweep config, validated against the workflow's schema with its defaults filled (as the
    workflow sees it)."""
    from snakemake.utils import validate

    config = read_yaml(path) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(config).__name__}")
    validate_schema(config, SCHEMA, path)  # names the key path of the first error
    try:
        validate(config, str(SCHEMA))  # fills the defaults
    except Exception as exc:  # snakemake's WorkflowError wraps the jsonschema message
        raise ConfigError(f"{path}: {str(exc).splitlines()[0]}") from None
    return config


def cmd_plan(args) -> int:
    from specscale.sweep.grid import Sweep
    from specscale.sweep.plan import format_plan, plan, profile_packing

    sweep = Sweep.from_config(load_config(args.config))
    profile = None
    if args.profile and args.profile != "none":
        profile = read_yaml(Path(args.profile) / "config.yaml", "profile config") or {}
    packing = profile_packing(profile, args.pack_cores)
    result = plan(sweep, packing)
    print(format_plan(result, packing, name=args.config))
    return 0
