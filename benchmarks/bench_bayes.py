"""Benchmark of the Bayes reference (specscale.ceiling.bayes, .sampler, .bank) on one CPU core: the batched
estimator against the one-star-at-a-time baseline (_per_star.py) in the same run, both checked against a long run, the
bank estimator against the exact one at high, nominal and low S/N, and the default sweep's cells.
Writes its sections of benchmarks/RESULTS-ceiling.md (between <!-- bayes-*:start/end --> markers).

    python benchmarks/bench_bayes.py [--data FILE.h5] [--parts speed,accuracy,bank,sweep]

Without --data it simulates the default sweep's dataset (lowT, seed 42: 8000 training stars, the
bank of the bank estimator, and 2000 test stars) into a temporary directory. Timings: wall clock
and process CPU time (one torch thread: the CPU time is the one-core cost; on a loaded machine
the wall clock is longer); the load average at the start is recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import write_section
from _per_star import PerStarConfig, posterior_moments

from specscale.ceiling.bank import bank_posterior
from specscale.ceiling.bayes import bayes_reference, r2_mc_error
from specscale.ceiling.configs import BayesConfig
from specscale.ceiling.sampler import posterior_batched
from specscale.core.provenance import code_version
from specscale.core.vocab import LOGG, Cell
from specscale.data.simulate import SimulationConfig, simulate
from specscale.data.simulator import prior_box, simulator_of
from specscale.data.sources import open_source
from specscale.models.oracle import OracleModel, OracleParams

RESULTS = Path(__file__).with_name("RESULTS-ceiling.md")
CELL = (1.0, "20.5-22.5")


def clocks(fn):
    """(wall s, CPU s, result) of fn()."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def batched(source, noise, mag, n, config: BayesConfig):
    """posterior_batched on the first n test stars (bank simulated inside, as bayes_reference does)."""
    obs = source.observed("test", np.arange(n), mag, noise)
    model = simulator_of(source)
    post = posterior_batched(model, obs.flux, obs.sigma, prior_box(source), obs.rows, config)
    return obs, post


def per_star(source, noise, mag, n, n_samples: int, seed: int = 0):
    """The one-star-at-a-time baseline (_per_star.py): the oracle's 3-start fit, then posterior_moments."""
    ora = OracleModel(OracleParams(), seed=0)
    ora.fit(source, Cell(noise, mag, "oracle", 1, 0), None)
    obs = source.observed("test", np.arange(n), mag, noise)
    fit = ora.fit_spectra(obs.flux, obs.sigma)
    box = prior_box(source)
    mz = np.clip((fit.theta_starts - box[:, 0]) / (box[:, 1] - box[:, 0]), 0, 1)
    cfg = PerStarConfig(n_samples=n_samples, seed=seed)
    return obs, posterior_moments(ora.model, obs.flux, obs.sigma, box, mz, fit.chi2_starts, obs.rows, cfg)


def against(y, est, ref) -> dict:
    """Error of an estimate of the posterior means against a reference run on the same stars."""
    d = est["mean"] - ref["mean"]
    z = d / np.hypot(est["mc_se"], ref["mc_se"])
    r_est, r_ref = r2_mc_error(y, est["mean"], est["mc_se"]), r2_mc_error(y, ref["mean"], ref["mc_se"])
    return {
        "d_r2": r_est["r2"] - r_ref["r2"],
        "d_r2_debiased": r_est["r2_debiased"] - r_ref["r2_debiased"],
        "r2_mc_se": r_est["r2_mc_se"],
        "rms_dex": float(np.sqrt(np.mean(d**2))),
        "rms_z": float(np.sqrt(np.mean(z**2))),
        "max_z": float(np.abs(z).max()),
    }


def header(args, load) -> str:
    return (
        f"Written by `benchmarks/bench_bayes.py` ({code_version()}, torch {torch.__version__}), "
        f"{os.cpu_count()} logical CPUs, one torch thread, load average {load:.1f} at the start "
        f"(a shared machine: wall-clock timings under load are upper bounds; CPU time is the one-core "
        f"cost). `{' '.join(args.argv)}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})."
    )


def part_speed(source, args, log):
    """Batched vs the per-star baseline on the same cell: time per star and the projection to 1,000 stars."""
    noise, mag = CELL
    cfg = BayesConfig(method="batched", seed=args.seed)
    batched(source, noise, mag, 8, cfg)  # warm-up: the simulator's float64/float32 tables
    wall, cpu, (obs, post) = clocks(lambda: batched(source, noise, mag, args.stars, cfg))
    ow, oc, (_, old) = clocks(lambda: per_star(source, noise, mag, args.old_stars, 1024, args.seed))
    y = obs.labels[:, LOGG]
    r = r2_mc_error(y, post["mean"], post["mc_se"])
    ro = r2_mc_error(y[: args.old_stars], old["mean"], old["mc_se"])
    parts = post["cpu_seconds"]
    log["speed"] = {"new": {"wall": wall, "cpu": cpu, **r}, "old": {"wall": ow, "cpu": oc, **ro}, "cpu_parts": parts}
    np.savez(args.cache / "speed.npz", **{k: v for k, v in post.items() if k != "cpu_seconds"}, y=y)
    n, m = args.stars, args.old_stars
    lines = [
        f"### Speed: {n:,} stars at noise {noise:g}, mag {mag} (median S/N {np.median(obs.snr):.1f})",
        "",
        "| estimator | stars | wall s | CPU s | CPU s per 1,000 stars | stars/s (CPU) | simulations/star | median ESS "
        "| R^2 (debiased) | R^2 MC se |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| batched (default) | {n} | {wall:.1f} | {cpu:.1f} | {cpu / n * 1000:.1f} | {n / cpu:.1f} | "
        f"{post['n_sims'].mean():.0f} | {np.median(post['ess']):.0f} | {r['r2_debiased']:.4f} | {r['r2_mc_se']:.4f} |",
        f"| per_star (baseline, 1024 samples, oracle 3 starts) | {m} | {ow:.1f} | {oc:.1f} | {oc / m * 1000:.1f} | "
        f"{m / oc:.2f} | 1024 | {np.median(old['ess']):.0f} | {ro['r2_debiased']:.4f} (its {m} stars) | "
        f"{ro['r2_mc_se']:.4f} |",
        "",
        f"- Speed-up (CPU time per star): {(oc / m) / (cpu / n):.1f}x. The batched run's CPU split: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items())
        + " (bank: the prior bank's simulations; modes: bank scoring, LM fits and Laplace Jacobians; "
        "simulate: the importance draws).",
    ]
    return "\n".join(lines)


def part_accuracy(source, args, log):
    """The batched and per-star estimators against a long run on the same stars."""
    noise, mag = CELL
    n = args.long_stars
    cfg = BayesConfig(method="batched", seed=args.seed)
    long_cfg = BayesConfig(method="batched", seed=args.seed + 7, mc_target=0.02, n_samples=16384)
    _, _, (obs, new) = clocks(lambda: batched(source, noise, mag, n, cfg))
    lw, lc, (_, long) = clocks(lambda: batched(source, noise, mag, n, long_cfg))
    m = min(args.old_stars, n)
    _, _, (_, old) = clocks(lambda: per_star(source, noise, mag, m, 1024, args.seed + 1))
    k = min(args.check_stars, n)
    cw, cc, (_, check) = clocks(lambda: per_star(source, noise, mag, k, 16384, args.seed + 2))
    y = obs.labels[:, LOGG]
    cut = lambda p, j: {key: np.asarray(v)[:j] for key, v in p.items() if key != "cpu_seconds"}
    rows = [
        ("batched (default)", n, np.mean(new["n_sims"]), against(y, new, long)),
        ("per_star (baseline, 1024 samples)", m, 1024, against(y[:m], old, cut(long, m))),
        (
            "long run itself vs per_star with 16,384 samples",
            k,
            np.mean(long["n_sims"][:k]),
            against(y[:k], cut(long, k), check),
        ),
    ]
    log["accuracy"] = {name: {"stars": s, **v} for name, s, _, v in rows}
    lines = [
        f"### Accuracy against a long run ({n} stars, noise {noise:g}, mag {mag})",
        "",
        f"Long run: the batched estimator with mc_target 0.02 and up to 16,384 draws per star (another seed; "
        f"{np.mean(long['n_sims']):.0f} simulations per star, {lc:.0f} s CPU); on its first {k} stars it is "
        f"itself checked against the per-star baseline with 16,384 samples per star ({cc:.0f} s CPU).",
        "",
        "| estimate | stars | simulations/star | R^2 - long R^2 | (debiased) | its R^2 MC se | rms diff (dex) "
        "| rms z | max abs z |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s, sims, v in rows:
        lines.append(
            f"| {name} | {s} | {sims:.0f} | {v['d_r2']:+.4f} | {v['d_r2_debiased']:+.4f} | {v['r2_mc_se']:.4f} | "
            f"{v['rms_dex']:.4f} | {v['rms_z']:.2f} | {v['max_z']:.1f} |"
        )
    lines += [
        "",
        "z = (estimate - long) / hypot(their MC standard errors), per star: rms z ~ 1 means the reported MC "
        "errors are honest.",
    ]
    return "\n".join(lines)


def part_bank(source, args, log):
    """Bank (training spectra as prior draws) vs the exact batched reference at high/nominal/low S/N."""
    n = args.bank_stars
    cfg = BayesConfig(method="batched", seed=args.seed, mc_target=0.05)
    lines = [
        f"### Bank reference vs exact ({source.n('train'):,} noiseless training spectra as the bank, {n} stars)",
        "",
        "| cell | median S/N | exact R^2 | bank R^2 (weights: observed error) | bank R^2 (true sigma) | rms diff "
        "(dex) | median bank ESS | rms z (jackknife se) | bank CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    log["bank"] = {}
    for noise, mag in ((0.5, "19"), (1.0, "20.5-22.5"), (2.0, "20.5-22.5")):
        obs, exact = batched(source, noise, mag, n, cfg)
        y = obs.labels[:, LOGG]
        _, bc, bank_e = clocks(lambda: bank_posterior(source, obs.flux, obs.error, mag))
        bank_s = bank_posterior(source, obs.flux, obs.sigma, mag)
        re = r2_mc_error(y, exact["mean"], exact["mc_se"])
        rb, rs = (r2_mc_error(y, b["mean"], b["mc_se"]) for b in (bank_e, bank_s))
        v = against(y, bank_s, exact)
        log["bank"][f"noise{noise:g}_mag{mag}"] = {"exact": re, "bank_error": rb, "bank_sigma": rs, **v}
        lines.append(
            f"| noise {noise:g}, mag {mag} | {np.median(obs.snr):.1f} | {re['r2']:.4f} | {rb['r2']:.4f} | "
            f"{rs['r2']:.4f} | {v['rms_dex']:.3f} | {np.median(bank_s['ess']):.1f} | {v['rms_z']:.1f} | {bc:.1f} |"
        )
        if (noise, mag) == CELL:
            nominal = (obs, exact, re)
    obs, exact, re = nominal
    y = obs.labels[:, LOGG]
    sizes = [s for s in (1000, 2000, 4000, 8000, 16000, 32000) if s <= source.n("train")]
    conv = []
    for size in sizes:
        b = bank_posterior(source, obs.flux, obs.sigma, CELL[1], n_bank=size)
        conv.append(f"{size:,}: {r2_mc_error(y, b['mean'], b['mc_se'])['r2']:.4f}")
    log["bank"]["convergence"] = conv
    lines += [
        "",
        "rms diff and rms z: the bank with the true sigma (the exact reference's likelihood) against the exact "
        "posterior means; rms z >> 1 where the bank's jackknife error misses its resolution error.",
        "",
        f"Convergence with the bank size at noise {CELL[0]:g}, mag {CELL[1]} (bank R^2, true sigma; exact "
        f"{re['r2']:.4f}): " + ", ".join(conv) + ".",
    ]
    return "\n".join(lines)


def part_sweep(source, args, log):
    """The default sweep's Bayes cells (grid.bayes.stars stars each), as the workflow's bayes rule runs them."""
    n = args.sweep_stars
    lines = [
        f"### The default sweep's cells ({n} stars each, `specscale bayes` defaults)",
        "",
        "| noise | mag | median S/N | R^2 (debiased) | MC se | sampling se | total error | simulations/star "
        "| wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    log["sweep"] = {}
    for noise in (0.5, 1.0, 2.0):
        for mag in ("21.5", "20.5-22.5"):
            w, c, ds = clocks(lambda: bayes_reference(source, noise, mag, n, BayesConfig(seed=args.seed)))
            log["sweep"][f"noise{noise:g}_mag{mag}"] = {k: float(ds[k]) for k in ds.data_vars if ds[k].ndim == 0}
            lines.append(
                f"| {noise:g} | {mag} | {float(ds.snr_median):.1f} | {float(ds.r2_bayes_debiased):.4f} | "
                f"{float(ds.r2_bayes_mc_se):.4f} | {float(ds.r2_bayes_sampling_se):.4f} | "
                f"{float(ds.r2_bayes_err):.4f} | {float(ds.n_sims_mean):.0f} | {w:.0f} | {c:.0f} |"
            )
    return "\n".join(lines)


PARTS = {"speed": part_speed, "accuracy": part_accuracy, "bank": part_bank, "sweep": part_sweep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="dataset (default: simulate the default sweep's lowT)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {list(PARTS)}")
    ap.add_argument("--stars", type=int, default=1000, help="stars of the speed run")
    ap.add_argument("--old-stars", type=int, default=64, help="stars of the per-star baseline (0.3-0.5 s each)")
    ap.add_argument("--long-stars", type=int, default=200, help="stars of the long run")
    ap.add_argument("--check-stars", type=int, default=16, help="stars of the per_star 16,384-sample check")
    ap.add_argument("--bank-stars", type=int, default=200)
    ap.add_argument("--sweep-stars", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--tag", default="", help="suffix of the section names (e.g. -32k for a run on a bigger bank)")
    args = ap.parse_args()
    args.argv = ["python benchmarks/bench_bayes.py", *sys.argv[1:]]
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        args.cache = Path(tmp)
        data = args.data
        if data is None:
            data = Path(tmp) / "lowT.h5"
            simulate(data, SimulationConfig(n_train=8000, n_val=16, n_test=2000, seed=42), progress=False)
        source = open_source(data)
        log = {}
        for name in args.parts.split(","):
            text = PARTS[name](source, args, log)
            write_section(f"bayes-{name}{args.tag}", header(args, load) + "\n\n" + text, Path(args.out))
            print(text, flush=True)
        print(json.dumps(log, default=lambda v: v if not isinstance(v, float) or math.isfinite(v) else None)[:2000])


if __name__ == "__main__":
    main()
