"""CLI of the information ceiling: ``specscale fisher``, ``specscale fisher-curves``, ``specscale fisher-chunks``,
``specscale bayes``."""

from __future__ import annotations

import json

import numpy as np

from specscale.cli.options import non_negative_float, non_negative_int, positive_float, positive_int
from specscale.core.config import ConfigError, from_dict, load_config, section
from specscale.sweep.sections import WORKFLOW_SECTIONS

# why a stopped fisher or bayes run keeps nothing: a cell is minutes of work on one node, and a
# checkpoint of its per-star state would cost more code than the rerun costs time
PREEMPTION = (
    "SIGTERM/SIGUSR1 (a SLURM preemption) ends it with exit 75 and writes nothing; the same command, "
    "rerun (requeued), computes the cell again from the start."
)


def register(sub) -> None:
    # long on purpose: one argparse declaration per option of the four reference commands, read as
    # their --help is; splitting it would only scatter the table
    common = dict(data="dataset (.h5 from `specscale simulate`, or a study manifest .yaml)")

    p = sub.add_parser(
        "fisher",
        help="Fisher/CRLB ceiling of one cell (noise, magnitude) on the test stars -> .nc",
        description="Per-star Cramer-Rao bounds on log g (Teff, [M/H], [alpha/M] as nuisance; also "
        "with them known, and 3D with [alpha/M] known) and the cell's ceilings, on the same "
        "test stars and observing conditions a model cell uses. " + PREEMPTION,
    )
    p.add_argument("--data", required=True, help=common["data"])
    p.add_argument(
        "--noise", type=non_negative_float, required=True, help="noise level (1 = the observation model's noise)"
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--mag", help="HSC-i AB magnitude cell: 21.5 or 20.5-22.5")
    which.add_argument(
        "--snr",
        type=positive_float,
        help="instead of --mag: the fixed magnitude whose median per-spectrum S/N "
        "(first --stars test stars, this noise level) is this",
    )
    _shared(p)
    _window(p)
    p.set_defaults(func=cmd_fisher)

    p = sub.add_parser(
        "fisher-curves", help="ceilings on a noise x fixed-magnitude grid (Jacobian computed once) -> .nc"
    )
    p.add_argument("--data", required=True, help=common["data"])
    p.add_argument("--noise", required=True, help="noise levels: '1' or '0.5,1,2' or 'start:stop:step' (inclusive)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--mag", help="fixed HSC-i AB magnitudes: '18:23.5:0.25' (inclusive) or '18,20,21.5'")
    which.add_argument(
        "--snr",
        help="instead of --mag: median per-spectrum S/N targets (one noise level only), "
        "each matched by a fixed magnitude, e.g. '87,24,7.1,4.6,3,1.9'",
    )
    _shared(p)
    p.set_defaults(func=cmd_fisher_curves)

    p = sub.add_parser(
        "fisher-chunks",
        help="log g information per wavelength chunk (alone, and the ceiling lost without it) of one cell -> .nc",
        description="Per chunk of --chunk pixels: the marginal log g information of the chunk alone, its "
        "conditional information, the population ceiling from the chunk alone and the population ceiling lost "
        "when the chunk is removed (variables and units: the file's attributes).",
    )
    p.add_argument("--data", required=True, help=common["data"])
    p.add_argument("--noise", type=positive_float, required=True, help="noise level (> 0)")
    p.add_argument("--mag", required=True, help="HSC-i AB magnitude cell: 21.5 or 20.5-22.5")
    p.add_argument("--chunk", type=positive_int, default=64, help="pixels per chunk (default 64)")
    _shared(p)
    p.set_defaults(func=cmd_fisher_chunks)

    p = sub.add_parser(
        "bayes",
        help="posterior-mean (MMSE) log g reference of a cell by importance sampling -> .nc",
        description="The posterior-mean (MMSE) log g of the first --stars test stars of a cell and its R^2. "
        + PREEMPTION,
    )
    p.add_argument("--data", required=True, help=common["data"])
    p.add_argument("--noise", type=non_negative_float, required=True, help="noise level")
    p.add_argument("--mag", required=True, help="HSC-i AB magnitude cell")
    p.add_argument("--stars", type=positive_int, default=200, help="first K test stars (default 200)")
    p.add_argument("--out", required=True, help="output .nc (written atomically)")
    p.add_argument(
        "--method",
        default="auto",
        choices=("auto", "batched", "bank"),
        help="auto (default): batched where the dataset has its simulator, else bank (noiseless training spectra "
        "weighted by the likelihood)",
    )
    p.add_argument(
        "--samples",
        type=positive_int,
        default=1024,
        help="importance draws per star, at most (batched: adaptive) (default 1024)",
    )
    _window(p)
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the prior bank and of the draws")
    p.add_argument("--config", help="YAML config: the fisher section (the ceiling beside the reference)")
    p.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")
    p.set_defaults(func=cmd_bayes)


def _window(p) -> None:
    p.add_argument(
        "--window",
        help="only these pixels carry information: a window name (ca_triplet, na_8190, mg_8807; 'full': every pixel) "
        "or a JSON list of names and [lo, hi] vacuum-Angstrom ranges, e.g. '[\"ca_triplet\", [8790, 8830]]'",
    )


def parse_window(text):
    """--window NAME_OR_JSON -> a window spec (None: the full spectrum)."""
    if text is None:
        return None
    text = text.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"--window {text!r}: not JSON ({exc})") from None
    return text


def _shared(p) -> None:
    p.add_argument("--stars", type=positive_int, help="first K test stars (default: all)")
    p.add_argument("--out", required=True, help="output .nc (written atomically)")
    p.add_argument("--config", help="YAML config: the fisher section (batch, device, check_atol, neighbours)")
    p.add_argument(
        "--observation",
        help="YAML file whose observation: section replaces the dataset's observing "
        "setup (e.g. the study's 4 x 900 s, seeing 1\"); synthetic datasets only",
    )
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")


def parse_list(text: str, what: str) -> list[float]:
    """'a,b,c' or 'start:stop:step' (stop included) -> floats."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            return [round(v, 10) for v in np.arange(start, stop + step / 2, step)]
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--{what} {text!r}: expected 'a,b,c' or 'start:stop:step' with step > 0") from None


def _setup(args):
    import torch

    from specscale.ceiling.configs import FisherConfig
    from specscale.data.sources import open_source
    from specscale.sim.observe import ObservingConfig

    torch.set_num_threads(args.threads)
    config = load_config(args.config, also=WORKFLOW_SECTIONS)
    fisher = from_dict(FisherConfig, section(config, "fisher"), "fisher")
    obs = None
    if getattr(args, "observation", None):
        observation = section(load_config(args.observation, also=WORKFLOW_SECTIONS), "observation")
        obs = from_dict(ObservingConfig, observation, "observation")
    return open_source(args.data, observation=obs) if obs else open_source(args.data), fisher, config


def cmd_fisher(args) -> int:
    from specscale.ceiling.fisher import cell_ceiling, magnitude_for_snr
    from specscale.core.files import write_netcdf

    source, fisher, _ = _setup(args)
    mag = args.mag
    if args.snr is not None:
        mag = str(magnitude_for_snr(source, args.snr, args.noise, args.stars))
    ds = cell_ceiling(source, args.noise, mag, args.stars, fisher, window=parse_window(args.window))
    if args.snr is not None:
        ds.attrs["snr_target"] = float(args.snr)
    write_netcdf(ds, args.out)
    print(
        f"{args.data} noise={args.noise:g} mag={ds.attrs['mag']} stars={ds.attrs['n_stars']} "
        f"window {ds.attrs['window']} (median S/N {float(ds.snr_median):.2f}): "
        f"ceiling_pop {float(ds.ceiling_pop):.4f}  "
        f"ceiling_median {float(ds.ceiling_median):.4f}  (3D: {float(ds.ceiling_pop_3d):.4f} / "
        f"{float(ds.ceiling_median_3d):.4f}) -> {args.out}"
    )
    return 0


def cmd_fisher_curves(args) -> int:
    from specscale.ceiling.fisher import fisher_curves, magnitude_for_snr
    from specscale.core.files import write_netcdf

    source, fisher, _ = _setup(args)
    noises = parse_list(args.noise, "noise")
    if args.snr is not None:
        targets = parse_list(args.snr, "snr")
        if len(noises) != 1:
            raise ConfigError("fisher-curves --snr matches magnitudes at one noise level; give a single --noise")
        mags = [magnitude_for_snr(source, s, noises[0], args.stars) for s in targets]
    else:
        mags = parse_list(args.mag, "mag")
    ds = fisher_curves(source, noises, mags, args.stars, fisher)
    if args.snr is not None:
        ds = ds.assign_coords(snr_target=("mag", np.array(targets)))
    write_netcdf(ds, args.out)
    print(
        f"{args.data}: {len(noises)} noise levels x {len(mags)} magnitudes, {ds.attrs['n_stars']} stars -> {args.out}"
    )
    for i, nl in enumerate(noises):
        for j, m in enumerate(mags):
            print(
                f"  noise {nl:g}  mag {m:6.3f}  median S/N {float(ds.snr_median[i, j]):7.2f}  "
                f"ceiling_pop {float(ds.ceiling_pop[i, j]):.4f}  ceiling_median {float(ds.ceiling_median[i, j]):.4f}  "
                f"(3D {float(ds.ceiling_pop_3d[i, j]):.4f} / {float(ds.ceiling_median_3d[i, j]):.4f})"
            )
    return 0


def cmd_fisher_chunks(args) -> int:
    from specscale.ceiling.chunks import chunk_information
    from specscale.core.files import write_netcdf

    source, fisher, _ = _setup(args)
    ds = chunk_information(source, args.noise, args.mag, args.stars, args.chunk, fisher)
    write_netcdf(ds, args.out)
    lost = ds.loss_logg.values
    top = np.argsort(lost)[::-1][:3]
    print(
        f"{args.data} noise={args.noise:g} mag={ds.attrs['mag']} stars={ds.attrs['n_stars']}: "
        f"{ds.sizes['chunk']} chunks of {args.chunk} px, ceiling_pop {float(ds.ceiling_pop_full):.4f}; "
        "largest losses without a chunk: "
        + ", ".join(f"{float(ds.wave_center[i]):.0f} A ({lost[i]:.4f})" for i in top)
        + f" -> {args.out}"
    )
    return 0


def cmd_bayes(args) -> int:
    import torch

    from specscale.ceiling.bayes import bayes_reference
    from specscale.ceiling.configs import BayesConfig, FisherConfig
    from specscale.core.files import write_netcdf
    from specscale.data.sources import open_source

    torch.set_num_threads(args.threads)
    config = load_config(args.config, also=WORKFLOW_SECTIONS)
    fisher = from_dict(FisherConfig, section(config, "fisher"), "fisher")
    try:
        bayes = BayesConfig(method=args.method, n_samples=args.samples, seed=args.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    source = open_source(args.data)
    window = parse_window(args.window)
    ds = bayes_reference(source, args.noise, args.mag, args.stars, bayes, fisher, device=args.device, window=window)
    write_netcdf(ds, args.out)
    mle = f"R2 MLE {float(ds.r2_mle):.4f}, " if "r2_mle" in ds else ""
    print(
        f"{args.data} noise={args.noise:g} mag={args.mag} stars={args.stars} ({ds.attrs['method']}, window "
        f"{ds.attrs['window']}): R2 Bayes {float(ds.r2_reference):.4f} +- {float(ds.r2_bayes_err):.4f} "
        f"(MC {float(ds.r2_bayes_mc_se):.4f}, stars {float(ds.r2_bayes_sampling_se):.4f}; raw "
        f"{float(ds.r2_bayes):.4f}), {mle}ceiling_pop {float(ds.ceiling_pop):.4f}, median ESS "
        f"{float(ds.ess_median):.0f}, {float(ds.n_sims_mean):.0f} simulations per star, {float(ds.seconds):.1f} s "
        f"-> {args.out}"
    )
    return 0
