"""The log g information per wavelength chunk of a cell (:func:`chunk_information`): what each
chunk of pixels carries alone, and what the population ceiling loses without it (``specscale
fisher-chunks``)."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from specscale.ceiling.bounds import marginal_crlb, population_ceiling, prior_variance, sigma_unit
from specscale.ceiling.configs import FisherConfig
from specscale.ceiling.fisher import attributes, check_request
from specscale.ceiling.jacobians import jacobian_for
from specscale.core.config import ConfigError
from specscale.core.vocab import LOGG, MagRange
from specscale.data.sources import Source

CHUNK_DEFINITIONS = {
    "info_logg": "median over stars of the marginal log g information of the chunk alone, 1 / CRLB_marginal "
    "with I restricted to the chunk's pixels and Teff, [M/H], [alpha/M] unknown (dex^-2; 0 where the chunk cannot "
    "separate log g from them)",
    "info_logg_mean": "the same, mean over stars (dex^-2)",
    "info_logg_conditional": "median over stars of the chunk's I_gg, the log g information with the other parameters "
    "known (dex^-2); additive over chunks per star",
    "ceiling_pop_alone": "population ceiling 1 - mean(min(CRLB, var_prior)) / var_prior from the chunk alone (R^2)",
    "ceiling_pop_without": "population ceiling of the full spectrum without the chunk (R^2)",
    "loss_logg": "the population ceiling lost when the chunk is removed, ceiling_pop_full - ceiling_pop_without (R^2)",
    "info_logg_loss_fraction": "median over stars of 1 - I_marg(without the chunk) / I_marg(full): the fraction of the "
    "marginal log g information only the chunk carries (dimensionless)",
    "ceiling_pop_full": "population ceiling of the full spectrum on the same stars (R^2)",
    "info_logg_full": "median over stars of the full spectrum's marginal log g information 1 / CRLB_marginal (dex^-2)",
}
CHUNK_UNITS = {
    "info_logg": "dex^-2",
    "info_logg_mean": "dex^-2",
    "info_logg_conditional": "dex^-2",
    "ceiling_pop_alone": "1 (R^2)",
    "ceiling_pop_without": "1 (R^2)",
    "loss_logg": "1 (R^2)",
    "info_logg_loss_fraction": "1",
    "ceiling_pop_full": "1 (R^2)",
    "info_logg_full": "dex^-2",
    "wave_lo": "Angstrom (vacuum), the chunk's first pixel's lower edge",
    "wave_hi": "Angstrom (vacuum), the chunk's last pixel's upper edge",
    "wave_center": "Angstrom (vacuum)",
    "pixel_start": "pixel index (inclusive)",
    "pixel_stop": "pixel index (exclusive)",
}


def chunk_information(
    source: Source,
    noise: float,
    mag,
    n_stars: int | None = None,
    chunk: int = 64,
    config: FisherConfig | None = None,
    split: str = "test",
) -> xr.Dataset:
    """The log g information per wavelength chunk of ``chunk`` pixels (the last chunk may be
    shorter), on the first ``n_stars`` stars of a cell (noise level, magnitude cell): what each
    chunk carries alone, and what the population ceiling loses without it. Per star the chunk
    Fisher matrices I_c = J_c^T W_c J_c sum to the full I; without chunk c it is I - I_c. Variables
    on dim ``chunk`` (see CHUNK_DEFINITIONS; units in each variable's attrs), coordinates the
    chunk's pixel range and vacuum wavelengths."""
    config = config or FisherConfig()
    cell = MagRange.parse(mag)
    source.check_cell(cell)
    n = check_request(source, [noise], n_stars, split)
    if not noise > 0:
        raise ConfigError(
            f"fisher-chunks needs a noise level > 0 (the information of exact spectra is infinite), got {noise}"
        )
    n_pix = int(source.wave.size)
    if not isinstance(chunk, (int, np.integer)) or not 1 <= chunk <= n_pix:
        raise ConfigError(f"--chunk must be an integer between 1 and the {n_pix} pixels, got {chunk}")
    starts = np.arange(0, n_pix, int(chunk))
    stops = np.minimum(starts + int(chunk), n_pix)
    jac_of = jacobian_for(source, config, cell)
    info = np.empty((n, len(starts), 4, 4))
    for start in range(0, n, config.batch):
        rows = np.arange(start, min(n, start + config.batch))
        b = source.noiseless(split, rows, cell)
        jw = jac_of(split, rows, b.flux) / (noise * sigma_unit(b))[..., None]
        info[rows] = np.add.reduceat(jw[..., :, None] * jw[..., None, :], starts, axis=1)
    ds = xr.Dataset(_chunk_variables(info, prior_variance(source)), coords=_chunk_coords(source.wave, starts, stops))
    for name, unit in CHUNK_UNITS.items():
        ds[name].attrs["units"] = unit
        if name in CHUNK_DEFINITIONS:
            ds[name].attrs["long_name"] = CHUNK_DEFINITIONS[name]
    jac_method = getattr(jac_of, "method", "?")
    ds.attrs = attributes(
        source,
        config,
        jac_method,
        noise=float(noise),
        mag=cell.label(),
        n_stars=n,
        split=split,
        chunk_pixels=int(chunk),
    )
    ds.attrs["definitions"] = json.dumps(CHUNK_DEFINITIONS)
    ds.attrs["wavelength_frame"] = "vacuum"
    return ds


def _chunk_variables(info: np.ndarray, var_prior: float) -> dict:
    """The variables of CHUNK_DEFINITIONS from the per-star, per-chunk Fisher matrices info (n, n_chunk, 4, 4)."""
    n, n_c = info.shape[:2]
    full = info.sum(1)
    crlb_full = marginal_crlb(full)
    alone = marginal_crlb(info.reshape(-1, 4, 4)).reshape(n, n_c)
    without = marginal_crlb((full[:, None] - info).reshape(-1, 4, 4)).reshape(n, n_c)
    with np.errstate(divide="ignore", invalid="ignore"):
        i_alone = np.where(np.isfinite(alone), 1.0 / alone, 0.0)
        i_full = np.where(np.isfinite(crlb_full), 1.0 / crlb_full, 0.0)
        i_without = np.where(np.isfinite(without), 1.0 / without, 0.0)
        loss_fraction = np.where(i_full[:, None] > 0, 1.0 - i_without / i_full[:, None], np.nan)
    ceiling_full = float(population_ceiling(crlb_full, var_prior, axis=0))
    ceiling_without = population_ceiling(without, var_prior, axis=0)
    return {
        "info_logg": ("chunk", np.median(i_alone, 0)),
        "info_logg_mean": ("chunk", i_alone.mean(0)),
        "info_logg_conditional": ("chunk", np.median(info[:, :, LOGG, LOGG], 0)),
        "ceiling_pop_alone": ("chunk", population_ceiling(alone, var_prior, axis=0)),
        "ceiling_pop_without": ("chunk", ceiling_without),
        "loss_logg": ("chunk", ceiling_full - ceiling_without),
        "info_logg_loss_fraction": ("chunk", np.nanmedian(loss_fraction, 0)),
        "ceiling_pop_full": ((), ceiling_full),
        "info_logg_full": ((), float(np.median(i_full))),
    }


def _chunk_coords(wave, starts: np.ndarray, stops: np.ndarray) -> dict:
    """The chunks' pixel ranges and vacuum wavelengths (Angstrom) as coordinates on dim ``chunk``."""
    wave = np.asarray(wave, dtype=np.float64)
    # pixel edges: midpoints between centres, the outer ones half a pixel out
    edges = np.concatenate(
        [[1.5 * wave[0] - 0.5 * wave[1]], 0.5 * (wave[1:] + wave[:-1]), [1.5 * wave[-1] - 0.5 * wave[-2]]]
    )
    return {
        "chunk": np.arange(len(starts)),
        "pixel_start": ("chunk", starts),
        "pixel_stop": ("chunk", stops),
        "wave_lo": ("chunk", edges[starts]),
        "wave_hi": ("chunk", edges[stops]),
        "wave_center": ("chunk", 0.5 * (edges[starts] + edges[stops])),
    }
