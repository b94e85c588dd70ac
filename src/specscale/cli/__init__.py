"""``specscale`` command line. Each stage's module registers its own subcommands, so the CLI is a
table of contents: data (simulate, snr), models (train), ceiling (fisher, fisher-curves),
sweep (cube, plot, report, agents, install-profile), plan (a sweep's cost before it is submitted)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from specscale.core.config import ConfigError

# modules with a ``register(subparsers)`` function, in the order they appear in --help
COMMAND_MODULES = (
    "specscale.cli.data",
    "specscale.cli.train",
    "specscale.cli.ceiling",
    "specscale.cli.sweep",
    "specscale.cli.plan",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specscale", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    # `specscale train` also takes hyper-parameter overrides --NAME=VALUE (what a W&B sweep
    # agent's ${args} expands to); every other command rejects unknown arguments as usual
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        # bad input: one clear line naming the problem, no traceback
        print(f"specscale {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
