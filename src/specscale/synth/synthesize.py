"""One star: labels -> SME LTE synthesis on an atmosnet model -> f_lambda on the simulator's fine
grid -> the normalised PFS MR spectrum and fmed0 (what the emulated source reproduces).

SME (pysme) works in air: the synthesised range is the fine grid's vacuum range converted to
air with a margin; its output wavelengths are converted back to vacuum with
:func:`specscale.sim.instrument.air_to_vacuum` and the linear interpolant of its samples is
integrated exactly over each fine pixel (flux-conserving:
:func:`specscale.sim.numerics.mean_over_bins`, which bins model grids too). The fixed PFS
stages (LSF, pixels, HSC-i, smoothed median) are :class:`specscale.sim.atmosphere_base.PfsStages`.

Units: f_lambda as SME returns it (surface flux, erg s^-1 cm^-2 A^-1; only ratios matter);
fmed0 in erg s^-1 cm^-2 A^-1 for the star scaled to HSC-i AB 0.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable

import numpy as np

from specscale.sim.atmosphere_base import PfsStages
from specscale.sim.instrument import air_to_vacuum, vacuum_to_air
from specscale.sim.numerics import mean_over_bins
from specscale.synth.config import SynthesisConfig

log = logging.getLogger(__name__)

AIR_MARGIN = 3.0  # A added to each end of the synthesised air range (air-vacuum shift is ~2-2.5 A)


@functools.cache
def stages(config: SynthesisConfig) -> PfsStages:
    """The fixed PFS stages on the config's fine grid (cached per config)."""
    return PfsStages(config)


def pfs_outputs(config: SynthesisConfig, f_fine: np.ndarray) -> tuple[np.ndarray, float]:
    """Fine-grid f_lambda (n_fine,) -> (normalised PFS flux (4096,), fmed0 erg s^-1 cm^-2 A^-1)."""
    import torch

    st = stages(config)
    T = st._cache.get("synth")
    if T is None:
        T = st._cache["synth"] = st._stage_tensors(torch.float64, "cpu")
    flux, fmed0 = st._normalised(torch.as_tensor(f_fine, dtype=torch.float64)[:, None], T)
    return flux[0].numpy(), float(fmed0[0])


# ---- SME ---------------------------------------------------------------------------------------
def line_sets(config: SynthesisConfig, wave_min_air: float, wave_max_air: float) -> list:
    """[(TurboLines, reference, file)]: the atomic list ("GES", or "MOOG atoms"), then the hydrogen ("H") and
    molecular (their file names) lists when the config names them, each cut to
    [wave_min_air, wave_max_air] A."""
    from specscale.synth.linelist import read_turbospectrum
    from specscale.synth.molecules import read_moog_molecules
    from specscale.synth.moog_atoms import read_moog_atoms

    hydrogen, molecular = config.extra_linelist_paths()
    atomic = config.linelist_path()
    if config.linelist_format == "moog":
        sets = [(read_moog_atoms(atomic, wave_min_air, wave_max_air), "MOOG atoms", atomic)]
    else:
        sets = [(read_turbospectrum(atomic, wave_min_air, wave_max_air), "GES", atomic)]
    if config.atomic_damping == "sme":
        zeros = np.zeros(len(sets[0][0]))
        sets[0] = (dataclasses.replace(sets[0][0], gamrad=zeros, gamqst=zeros, gamvw=zeros), *sets[0][1:])
    if hydrogen is not None:
        sets.append((read_turbospectrum(hydrogen, wave_min_air, wave_max_air), "H", hydrogen))
    for path in molecular:
        lines = read_moog_molecules(
            path, wave_min_air, wave_max_air, config.molecule_teff_ref, config.molecule_prune_dex
        )
        sets.append((lines, path.name, path))
    for lines, ref, _ in sets:
        log.info("lines %s: %d in %.0f-%.0f A (air)", ref, len(lines), wave_min_air, wave_max_air)
    return sets


@functools.cache
def _linelist(config: SynthesisConfig, wave_min_air: float, wave_max_air: float):
    from specscale.synth.linelist import to_pysme

    return to_pysme([(lines, ref) for lines, ref, _ in line_sets(config, wave_min_air, wave_max_air)])


def star_abund(config: SynthesisConfig, mh: float, am: float):
    """pysme ``Abund``: the solar pattern ``config.abundances`` with [M/H] on every metal and
    [alpha/M] added to ``config.alpha_elements``."""
    from pysme.abund import Abund, elements

    solar = Abund(monh=0.0, pattern=config.abundances)
    pattern = np.asarray(solar.get_pattern("H=12", raw=True), dtype=float).copy()
    for el in config.alpha_elements:
        pattern[elements.index(el)] += am
    return Abund(monh=mh, pattern=pattern, type="H=12")


def air_ranges(config: SynthesisConfig) -> list[tuple[float, float, bool]]:
    """The air ranges synthesised, (lo, hi, full_accuracy): one range in ``full`` mode; in
    ``split`` mode the arm at full accuracy and the two wings at the wing accuracy."""
    lo, hi = (float(x) for x in vacuum_to_air(np.array([config.wave_min, config.wave_max])))
    if config.synth_range == "full":
        return [(lo - AIR_MARGIN, hi + AIR_MARGIN, True)]
    a_lo, a_hi = (float(x) for x in vacuum_to_air(np.array([config.arm_min, config.arm_max])))
    return [(lo - AIR_MARGIN, a_lo, False), (a_lo, a_hi, True), (a_hi, hi + AIR_MARGIN, False)]


def sme_fine_flux(config: SynthesisConfig, theta: np.ndarray) -> np.ndarray:
    """SME synthesis of the star ``theta`` = (Teff K, log g dex, [M/H] dex, [alpha/M] dex):
    f_lambda (n_fine,) on the fine grid (vacuum). No network access: the atmosphere is embedded,
    no NLTE grids are requested."""
    from pysme.sme import SME_Structure
    from pysme.synthesize import synthesize_spectrum

    from specscale.synth.atmosphere import sme_atmosphere

    teff, logg, mh, am = (float(x) for x in theta)
    ranges = air_ranges(config)
    linelist = _linelist(config, ranges[0][0] - 1.0, ranges[-1][1] + 1.0)
    abund = star_abund(config, mh, am)
    vmic = config.vmic(logg)
    waves, fluxes = [], []
    for lo, hi, full in ranges:
        sme = SME_Structure()
        sme.teff, sme.logg, sme.monh = teff, logg, mh
        sme.vmic, sme.vmac, sme.vsini = vmic, config.vmac, 0.0
        sme.abund = abund
        sme.atmo = sme_atmosphere(teff, logg, mh, am, abund, vmic)
        sme.linelist = linelist
        sme.wran = [[lo, hi]]
        sme.normalize_by_continuum = False
        sme.accrt = config.accrt if full else config.wing_accrt
        sme.accwi = config.accwi if full else config.wing_accwi
        sme = synthesize_spectrum(sme)
        waves.append(np.asarray(sme.wave[0], dtype=np.float64))
        fluxes.append(np.asarray(sme.synth[0], dtype=np.float64))
    wave = air_to_vacuum(np.concatenate(waves))
    flux = np.concatenate(fluxes)
    wave, keep = np.unique(wave, return_index=True)  # sorted; shared segment ends once
    edges = stages(config).fine_edges
    if wave[0] > edges[0] or wave[-1] < edges[-1]:
        raise ValueError(
            f"synthesis covers {wave[0]:.2f}-{wave[-1]:.2f} A, the fine grid {edges[0]:.2f}-{edges[-1]:.2f} A"
        )
    return mean_over_bins(wave, flux[keep], edges)


FineFlux = Callable[[SynthesisConfig, np.ndarray], np.ndarray]


def synthesize_star(config: SynthesisConfig, theta: np.ndarray, fine_flux: FineFlux = sme_fine_flux):
    """(normalised PFS flux (4096,) float64, ln fmed0, CPU seconds) of one star; ``fine_flux``
    is the synthesiser (SME by default; tests inject an analytic one)."""
    start = time.process_time()
    f_fine = fine_flux(config, np.asarray(theta, dtype=np.float64))
    if not np.all(np.isfinite(f_fine)) or np.any(f_fine <= 0):
        raise ValueError(f"synthesis of {np.round(theta, 3).tolist()} gave non-positive or non-finite flux")
    flux, fmed0 = pfs_outputs(config, f_fine)
    return flux, float(np.log(fmed0)), time.process_time() - start
