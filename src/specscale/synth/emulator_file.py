"""From synthesised chunks to the emulator file: fit (:mod:`specscale.synth.train`), measure the
held-out residuals, and write the ``.npz`` with its provenance (codes and versions, line list
and its sha256, atmosphere source, abundances, microturbulence law, label draws, fine grid,
synthesis range, held-out accuracy, fit summary, date)."""

from __future__ import annotations

import datetime
import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from specscale.synth.chunks import read_chunks
from specscale.synth.config import SynthesisConfig
from specscale.synth.train import fit, residual_stats, targets, write_emulator

log = logging.getLogger(__name__)


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def line_lists(config: SynthesisConfig) -> dict:
    """What the synthesis read: per list its file, sha256, lines in the synthesised range (and
    for molecules the pruning and the isotopologue coverage)."""
    from specscale.synth.linelist import file_sha256
    from specscale.synth.synthesize import air_ranges, line_sets

    path = Path(config.linelist)
    if not path.is_file():
        return {"atomic": {"file": path.name}}
    ranges = air_ranges(config)
    out = {}
    for lines, ref, file in line_sets(config, ranges[0][0] - 1.0, ranges[-1][1] + 1.0):
        entry = {"file": file.name, "sha256": file_sha256(file), "n_lines_synthesised_range": len(lines)}
        if ref in ("GES", "MOOG atoms"):
            entry["damping"] = "the list's" if config.atomic_damping == "list" else "SME's estimates for every line"
        if ref == "GES":
            entry["format"] = "Turbospectrum (Gaia-ESO, Heiter et al. 2021), air wavelengths"
            entry["n_unsold_factor_dropped"] = lines.n_unsold_factor
        elif ref == "MOOG atoms":
            entry["format"] = "MOOG atomic (linemake), air wavelengths; no damping constants: SME's estimates"
        elif ref == "H":
            entry["format"] = "Turbospectrum Hlinedata (hydrogen), air wavelengths; SME's own profiles"
        else:
            entry["format"] = "MOOG (linemake), air wavelengths"
            entry["pruned"] = (
                f"kept: log gf + log10 fraction - 5040/{config.molecule_teff_ref:g} x excitation within "
                f"{config.molecule_prune_dex:g} dex of the molecule's strongest line"
            )
            entry["isotopologue_coverage"] = lines.isotopologue_coverage
        out[ref] = entry
    return out


def provenance(config: SynthesisConfig, train: dict, fit_summary: dict, accuracy: dict) -> dict:
    """The JSON-able provenance of an emulator fitted with ``config`` to the stars ``train``."""
    sec = train["seconds"]
    return {
        "what": "emulator of pysme LTE synthesis on atmosnet models, PFS MR red arm, lowT prior (docs/synthesis.md)",
        "line_lists": line_lists(config),
        "codes": {
            "pysme-astro": _version("pysme-astro"),
            "atmosnet": _version("atmosnet"),
            "specscale": _version("specscale"),
            "torch": _version("torch"),
            "numpy": np.__version__,
        },
        "atmosphere": "atmosnet 1.0.1 C3K/ATLAS12 nets, 80 layers, output as 10**ln(x); "
        "[M/H]->FE_H, [alpha/M]->ALPHA_FE",
        "radiative_transfer": f"SME LTE, plane-parallel, accrt {config.accrt:g}, accwi {config.accwi:g}, vsini 0, "
        f"vmac {config.vmac:g} km/s, f_lambda (normalize_by_continuum False)",
        "abundances": f"{config.abundances} scaled by [M/H]; {', '.join(config.alpha_elements)} + [alpha/M]",
        "vmic_law": f"{config.vmic_dwarf:g} km/s at log g 5 to {config.vmic_giant:g} km/s at log g 1, linear in log g",
        "labels": {
            "order": ["teff", "logg", "mh", "am"],
            "prior": config.prior,
            "box": config.box,
            "method": "scipy.stats.qmc.Sobol scrambled",
            "seed_train": config.seed_train,
            "seed_test": config.seed_test,
            "n_train_drawn": config.n_train,
            "n_test_drawn": config.n_test,
            "n_train_used": int(len(train["labels"])),
        },
        "fine_grid": {
            "wave_min": config.wave_min,
            "wave_max": config.wave_max,
            "step_kms": config.step_kms,
            "median_width": config.median_width,
            "medium": "vacuum (SME air converted, Morton 2000)",
        },
        "synthesis_range": config.synth_range,
        "cpu_seconds_per_star": {
            "median": float(np.median(sec)),
            "p90": float(np.percentile(sec, 90)),
            "max": float(sec.max()),
        },
        "held_out_accuracy": accuracy,
        "training": fit_summary,
        "outputs": "0..4095: median-normalised flux on Instrument().wave; "
        "4096: ln fmed0 (erg s^-1 cm^-2 A^-1, HSC-i AB 0)",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def build_emulator(config: SynthesisConfig, train_chunks, test_chunks, out: str | Path) -> dict:
    """Fit to the training chunks, measure on the held-out chunks, write ``out``; the summary."""
    from specscale.sim.instrument import Instrument

    train = read_chunks(train_chunks)
    test = read_chunks(test_chunks)
    log.info("fitting %d training stars (%d held out)", len(train["labels"]), len(test["labels"]))
    params, summary = fit(config, train["labels"], targets(train))
    accuracy = residual_stats(params, test["labels"], targets(test))
    prov = provenance(config, train, summary, accuracy)
    write_emulator(params, Instrument().wave, prov, out)
    return {"out": str(out), "training": summary, "held_out_accuracy": accuracy,
            "cpu_seconds_per_star": prov["cpu_seconds_per_star"]}  # fmt: skip
