"""CLI of the synthesis stage: ``specscale synth labels|chunk|train`` (real LTE synthesis with
pysme on atmosnet models, and the emulator fitted to it; docs/synthesis.md). pysme and atmosnet
(the ``synth`` extra) are imported only by ``chunk``."""

from __future__ import annotations

import json
import logging

from specscale.cli.options import non_negative_int

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("synth", help="real LTE synthesis (pysme + atmosnet) and its emulator: labels, chunk, train")
    ss = p.add_subparsers(dest="synth_command", required=True)

    q = ss.add_parser("labels", help="write the training and held-out label draws (Sobol) to an .npz")
    q.add_argument("--config", required=True, help="YAML with a 'synthesis' section (config/synthesis.yaml)")
    q.add_argument("--out", required=True, help="output .npz (keys train, test: (n, 4) labels)")
    q.set_defaults(func=cmd_labels)

    q = ss.add_parser("chunk", help="synthesise one chunk of stars to an .npz (skipped when it exists)")
    q.add_argument("--config", required=True)
    q.add_argument("--labels", required=True, help="the labels .npz of 'synth labels'")
    q.add_argument("--set", required=True, choices=("train", "test"), dest="which")
    q.add_argument("--index", required=True, type=non_negative_int, help="chunk index (0-based)")
    q.add_argument("--out", required=True)
    q.add_argument("--repair", action="store_true", help="redo only the failed stars of an existing chunk")
    q.set_defaults(func=cmd_chunk)

    q = ss.add_parser("train", help="fit the emulator to the chunks and write its .npz")
    q.add_argument("--config", required=True)
    q.add_argument("--train", nargs="+", required=True, help="training chunk files")
    q.add_argument("--test", nargs="+", required=True, help="held-out chunk files")
    q.add_argument("--out", required=True, help="emulator .npz (e.g. src/specscale/sim/tables/emulator_lowT.npz)")
    q.add_argument("--report", help="also write the fit summary and held-out residuals as JSON here")
    q.set_defaults(func=cmd_train)


def cmd_labels(args) -> int:
    import numpy as np

    from specscale.core.files import atomic_write
    from specscale.synth.config import load_synthesis_config
    from specscale.synth.labels import draw_labels

    config = load_synthesis_config(args.config)
    out = {which: draw_labels(config, which) for which in ("train", "test")}
    with atomic_write(args.out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **out)
    print(f"wrote {args.out}: train {len(out['train'])}, test {len(out['test'])} labels")
    return 0


def cmd_chunk(args) -> int:
    import numpy as np

    from specscale.synth.chunks import write_chunk
    from specscale.synth.config import load_synthesis_config
    from specscale.synth.labels import chunk_labels

    config = load_synthesis_config(args.config)
    config.linelist_path()  # fail now, naming synthesis.linelist (and the extra lists), not per star
    config.extra_linelist_paths()
    with np.load(args.labels, allow_pickle=False) as data:
        labels = data[args.which]
    rows = chunk_labels(labels, config.chunk_size, args.index)
    done = write_chunk(config, rows, args.out, repair=args.repair)
    print(f"{args.out}: {'written' if done else 'exists, skipped'} ({len(rows)} stars)")
    return 0


def cmd_train(args) -> int:
    from specscale.synth.config import load_synthesis_config
    from specscale.synth.emulator_file import build_emulator

    config = load_synthesis_config(args.config)
    summary = build_emulator(config, args.train, args.test, args.out)
    text = json.dumps(summary, indent=2, sort_keys=True)
    if args.report:
        from specscale.core.files import write_text

        write_text(text + "\n", args.report)
    print(text)
    return 0
