"""``specscale`` command line. Each stage's module registers its own subcommands, so the CLI is a
table of contents: data (simulate, snr), models (train, pretrain), ceiling (fisher, fisher-curves),
sweep (cube, plot, report, agents, install-profile), plan (a sweep's cost before it is submitted)."""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

from specscale.core.config import ConfigError
from specscale.core.preemption import EXIT_PREEMPTED, Preempted, stop_signals

# modules with a ``register(subparsers)`` function, in the order they appear in --help
COMMAND_MODULES = (
    "specscale.cli.data",
    "specscale.cli.train",
    "specscale.cli.pretrain",
    "specscale.cli.ceiling",
    "specscale.cli.sweep",
    "specscale.cli.plan",
    "specscale.cli.synth",
)


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, ``specscale CMD: error: --OPTION must be ..., got V
    (see specscale CMD --help)``, exit 2."""

    def error(self, message: str):
        message = re.sub(r"^argument ([^:]+): ", r"\1 ", message)  # "--seed must be ...", as the commands say it
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="specscale", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    # first thing: a SIGTERM/SIGUSR1 from here on (imports, setup, work, writing) exits 75
    with stop_signals():
        try:
            return run(argv)
        except Preempted as exc:
            print(f"specscale: interrupted: {exc}", file=sys.stderr)
            return EXIT_PREEMPTED


def run(argv) -> int:
    parser = build_parser()
    # `specscale train` also takes hyper-parameter overrides --NAME=VALUE (what a W&B sweep
    # agent's ${args} expands to); every other command rejects unknown arguments as usual
    try:  # usage errors and --help end here with argparse's exit status, returned like any other
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "accepts_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    args.overrides = extra
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except Preempted as exc:
        print(f"specscale {args.command}: interrupted: {exc}", file=sys.stderr)
        return EXIT_PREEMPTED
    except (ConfigError, ValueError, OSError) as exc:
        # bad input, or a place that cannot be read or written (a full disk: WriteFailed names the
        # path and the errno): one line naming the problem, no traceback
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"specscale {args.command}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
