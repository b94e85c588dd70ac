"""CLI of the data layer: ``specscale simulate`` and ``specscale snr``."""

from __future__ import annotations

import json

from specscale.cli.options import non_negative_float, non_negative_int, positive_int
from specscale.core.config import load_config
from specscale.data.simulate import simulate, simulation_configs
from specscale.sweep.sections import WORKFLOW_SECTIONS


def register(sub) -> None:
    p = sub.add_parser("simulate", help="simulate a train/val/test dataset to HDF5 (noiseless; noise is drawn on read)")
    p.add_argument(
        "--out", required=True, help="output .h5 file (written atomically; a second writer of it fails at once)"
    )
    p.add_argument("--config", help="YAML config (sections simulation, observation, atmosphere)")
    p.add_argument("--n-train", type=positive_int)
    p.add_argument("--n-val", type=positive_int)
    p.add_argument("--n-test", type=positive_int)
    p.add_argument("--seed", type=non_negative_int)
    p.add_argument("--prior", help="label prior (default lowT)")
    p.add_argument("--device", help="torch device (default auto: CUDA when available)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("snr", help="per-spectrum S/N summary of a dataset cell (the calibration numbers)")
    p.add_argument("data", help="dataset (.h5 or study manifest .yaml)")
    p.add_argument("--mag", required=True, help="magnitude cell, e.g. 21.5 or 20.5-22.5 (HSC-i AB)")
    p.add_argument("--noise", type=non_negative_float, default=1.0, help="noise level (default 1)")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=positive_int, help="first N stars only")
    p.add_argument("--etc", action="store_true", help="also print the ETC fixture check (flat AB 18, 8x900 s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_snr)


def cmd_simulate(args) -> int:
    config = load_config(args.config, also=WORKFLOW_SECTIONS)
    sim, obs, atm = simulation_configs(
        config,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        seed=args.seed,
        prior=args.prior,
        device=args.device,
    )
    h = simulate(args.out, sim, obs, atm, progress=not args.no_progress)
    print(f"wrote {args.out}: train {sim.n_train}, val {sim.n_val}, test {sim.n_test}, content hash {h}")
    return 0


def cmd_snr(args) -> int:
    from specscale.data.sources import open_source
    from specscale.sim.snr import STUDY_TEST_SET, etc_fixture_snr, snr_summary

    source = open_source(args.data)
    source.check_cell(args.mag)
    if args.n is not None and args.n > source.n(args.split):
        raise ValueError(f"--n {args.n} is more than the {source.n(args.split)} stars of split {args.split!r}")
    s = snr_summary(source, args.mag, args.noise, args.split, args.n)
    out = {"dataset": source.describe(), **s}
    if args.etc:
        out["etc_fixture"] = etc_fixture_snr(getattr(source, "observation", None))
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    q = s["snr_spectrum"]
    print(f"{args.data}  split={args.split}  n={s['n']}  mag={args.mag}  noise={args.noise:g}")
    print(
        f"per-spectrum S/N (||flux||/||sigma||): median {q['median']:.2f}  mean {q['mean']:.2f}  "
        f"1-99%: {q['p1']:.2f}-{q['p99']:.2f}  5-95%: {q['p5']:.2f}-{q['p95']:.2f}"
    )
    print(f"median per-pixel S/N: {s['snr_pixel_median']['median']:.2f}")
    if args.mag == STUDY_TEST_SET["mag"] and args.noise == 1.0:
        ref = STUDY_TEST_SET
        print(
            f"study test set reference: median {ref['median']} (+-15%), 1-99% ~{ref['p1']}-{ref['p99']}; "
            f"ratio {q['median'] / ref['median']:.3f}"
        )
    if args.etc:
        e = out["etc_fixture"]
        print(
            f'ETC fixture (flat AB 18, 8x900 s, zenith 45, seeing 0.8", field 0.675 deg): median per-pixel S/N '
            f"{e['median']:.1f} (5-95%: {e['p5']:.1f}-{e['p95']:.1f}); ETC {e['etc']['median']} "
            f"({e['etc']['p5']}-{e['etc']['p95']}); ratio {e['median_ratio']:.3f}"
        )
    return 0
