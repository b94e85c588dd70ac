"""The information ceiling: Fisher matrices, Cramer-Rao bounds on log g and the ceiling of a cell.

For a star with parameters theta = (Teff K, log g dex, [M/H] dex, [alpha/M] dex) observed with
independent Gaussian pixel noise of 1-sigma s_p (the cell's TRUE error at its noise level and
magnitude), the Fisher information is

    I = J^T diag(1 / s^2) J,      J = d flux / d theta   (n_pix x 4, flux median-normalised).

The log g bound with the other parameters unknown is the Schur complement (marginal) entry of
I^-1: CRLB = 1 / (I_gg - I_gn I_nn^-1 I_ng); with them known it is 1 / I_gg (conditional).
"3d" means [alpha/M] known (the study's Teff, log g, [M/H] Fisher grid), "4d" all four unknown.

Per star: sigma_min = sqrt(CRLB_4d), r2_max = 1 - min(CRLB, Var_prior) / Var_prior (the CRLB
bounds UNBIASED estimators; a regressor that shrinks to the prior mean does no worse than the
prior variance, hence the cap). Per cell: the population ceiling 1 - mean(min(CRLB, Var_prior)) /
Var_prior (the headline: it is what an R^2 over the test stars can at best be for unbiased
estimators) and the study's definition, the median over stars of r2_max, beside it; both also on
the top-20% S/N stars and in the S/N bins of :mod:`specscale.models.metrics`.

J comes from the simulator by autodiff in float64 (synthetic datasets, checked
against the stored noiseless flux), or, for files without a simulator (the study's PFS files), by
local-linear finite differences against the nearest noiseless training spectra (see
:class:`NeighbourJacobian`). J does not depend on noise level or magnitude, only sigma does:
:func:`fisher_curves` computes J once per star and reuses it over a whole magnitude x noise grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from specscale.core.config import ConfigError, to_jsonable
from specscale.core.hardware import resolve_device
from specscale.core.provenance import provenance
from specscale.core.vocab import ALPHA, LABELS, LOGG, SNR_BIN_LABELS, SNR_EDGES, MagRange
from specscale.data.simulator import check_resimulated, prior_box, simulator_of
from specscale.data.sources import DataError, Source
from specscale.models.metrics import top_snr_mask
from specscale.sim.windows import window_label, window_mask, window_ranges

PERCENTILES = (5, 25, 50, 75, 95)


@dataclass(frozen=True)
class FisherConfig:
    """The ``fisher:`` config section."""

    batch: int = 128  # stars per Jacobian batch (fits in cache on a CPU; raise it on a GPU)
    device: str = "cpu"  # torch device for the Jacobian ("auto": CUDA when available)
    check_atol: float = 1e-4  # max |re-simulated - stored| noiseless flux (float32 round-off is ~2e-6)
    neighbours: int = 24  # files without a simulator: training spectra per local-linear Jacobian

    def __post_init__(self):
        if not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"fisher.batch must be a positive integer, got {self.batch!r}")
        if not self.check_atol > 0:
            raise ValueError("fisher.check_atol must be positive")
        if not isinstance(self.neighbours, int) or self.neighbours < 6:
            raise ValueError("fisher.neighbours must be an integer >= 6 (4 parameters + margin)")


DEFINITIONS = {
    "crlb_marginal": "per-star Cramer-Rao bound on log g (dex^2), Teff, [M/H], [alpha/M] unknown "
    "(Schur complement of I)",
    "crlb_marginal_3d": "as crlb_marginal with [alpha/M] known (the study's 3-parameter Fisher grid)",
    "crlb_conditional": "per-star bound on log g (dex^2) with the other three parameters known: 1 / I_gg",
    "sigma_min": "sqrt(crlb_marginal), dex",
    "r2_max": "per star 1 - min(crlb_marginal, var_prior) / var_prior (r2_max_3d: with crlb_marginal_3d)",
    "ceiling_pop": "1 - mean(min(crlb_marginal, var_prior)) / var_prior over the stars: "
    "the population ceiling (headline)",
    "ceiling_median": "median over the stars of r2_max (the study's definition)",
    "_top20": "the same on the 20% of stars with the highest per-spectrum S/N (specscale.models.metrics.top_snr_mask)",
    "_snr_bin": "the same per S/N bin, edges specscale.models.metrics.SNR_EDGES (NaN for an empty bin)",
    "_3d": "with [alpha/M] known (as the study)",
    "sigma_min_pN": "N-th percentile of sigma_min over the stars, dex",
    "info_ratio_marginal_conditional": "median over stars of crlb_conditional / crlb_marginal: the fraction of the "
    "log g information left once the nuisance parameters are marginalised (study: ~0.69, 3D)",
    "var_prior": "variance of log g under the uniform prior, dex^2 ((hi - lo)^2 / 12)",
    "logg_var_empirical": "variance of the stars' true log g, dex^2",
    "snr": "per-spectrum S/N ||noiseless flux|| / ||sigma|| at this noise level (as Observed.snr)",
}


# ---- Jacobians ---------------------------------------------------------------------------------
def forward_jacobian(flux_fn, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flux (B, n_pix) and J = d flux / d theta (B, n_pix, P) of any differentiable ``flux_fn``
    by forward-mode AD, one dual pass per parameter (the simulator's own ``jacobian`` does this)."""
    import torch.autograd.forward_ad as fwad

    cols, flux = [], None
    for k in range(theta.shape[-1]):
        tangent = torch.zeros_like(theta)
        tangent[..., k] = 1.0
        with fwad.dual_level():
            primal, tan = fwad.unpack_dual(flux_fn(fwad.make_dual(theta, tangent)))
        flux = primal if flux is None else flux
        cols.append(tan)
    return flux, torch.stack(cols, dim=-1)


class SimulatorJacobian:
    """J of a synthetic dataset's stars by autodiff of its simulator (``SyntheticAtmosphere.jacobian``),
    float64."""

    method = "autodiff of the dataset's simulator (float64), checked against the stored flux"

    def __init__(self, source: Source, config: FisherConfig):
        self.source, self.config = source, config
        self.model = simulator_of(source)
        self.device = torch.device(resolve_device(config.device, "fisher.device"))

    def __call__(self, split: str, rows: np.ndarray, stored_flux: np.ndarray) -> np.ndarray:
        """(n, n_pix, 4) float64 for ``rows``; ``stored_flux`` is their stored noiseless flux."""
        theta = torch.as_tensor(self.source.labels(split, rows), dtype=torch.float64, device=self.device)
        with torch.no_grad():
            flux, jac = self.model.jacobian(theta)
        check_resimulated(self.source, split, rows, flux.cpu().numpy(), stored_flux, self.config.check_atol)
        return jac.cpu().numpy()


class NeighbourJacobian:
    """J for files without a simulator: local-linear finite differences.

    For each star, the ``k`` nearest training stars in label space (each axis scaled by its
    training range) give  f_j - f_star ~ J (theta_j - theta_star); J is the least-squares
    solution. On a regular grid with the +-1 grid neighbours this is the study's central
    difference; on random draws its truncation error grows with the neighbour distance
    (~ range / N_train^(1/4)), so use the largest training split. A label that does not vary in
    the training set (e.g. [alpha/M] fixed) gets a zero column: it is treated as known.
    """

    method = "local-linear finite differences over the nearest noiseless training spectra"

    def __init__(self, source: Source, config: FisherConfig, cell):
        from scipy.spatial import cKDTree

        self.source, self.k, self.cell = source, config.neighbours, MagRange.parse(cell)
        train = source.labels("train").astype(np.float64)
        if len(train) < self.k:
            raise DataError(f"{source.path}: {len(train)} training stars, need >= fisher.neighbours={self.k}")
        span = train.max(0) - train.min(0)
        self.free = span > 1e-6 * np.maximum(1.0, np.abs(train).max(0))
        self.scale = np.where(self.free, span, 1.0)
        self.tree = cKDTree(train[:, self.free] / self.scale[self.free])
        self.train = train

    def __call__(self, split: str, rows: np.ndarray, stored_flux: np.ndarray) -> np.ndarray:
        """(n, n_pix, 4) float64 for ``rows`` (zero columns for labels fixed in the file)."""
        theta = self.source.labels(split, rows).astype(np.float64)
        _, idx = self.tree.query(theta[:, self.free] / self.scale[self.free], k=self.k)
        jac = np.zeros(stored_flux.shape + (4,))
        flat = np.unique(idx)
        ref = self.source.noiseless("train", flat, self.cell).flux.astype(np.float64)
        pos = np.searchsorted(flat, idx)
        for i in range(len(rows)):
            dtheta = (self.train[idx[i]] - theta[i])[:, self.free] / self.scale[self.free]
            df = ref[pos[i]] - stored_flux[i].astype(np.float64)
            coef, *_ = np.linalg.lstsq(dtheta, df, rcond=None)
            jac[i][:, self.free] = (coef / self.scale[self.free][:, None]).T
        return jac


def jacobian_for(source: Source, config: FisherConfig, cell):
    """The Jacobian provider of a source: autodiff where the source has a simulator."""
    if isinstance(getattr(source, "config", None), dict) and "atmosphere" in source.config:
        return SimulatorJacobian(source, config)
    return NeighbourJacobian(source, config, cell)


# ---- Fisher matrices and bounds ----------------------------------------------------------------
def fisher_matrix(jac: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """I = J^T diag(1/sigma^2) J per star: jac (n, n_pix, P), sigma (n, n_pix) in flux units ->
    (n, P, P) in units of 1/(parameter units)^2. Pixels with infinite sigma carry no information."""
    jw = jac / np.asarray(sigma, dtype=np.float64)[..., None]
    return np.matmul(jw.transpose(0, 2, 1), jw)


def marginal_crlb(info: np.ndarray, index: int = LOGG, known: tuple[int, ...] = ()) -> np.ndarray:
    """Bound on parameter ``index`` with every parameter not in ``known`` unknown: the Schur
    complement 1 / (I_ii - I_in I_nn^+ I_ni), computed on the unit-diagonal rescaled matrix (Teff
    in K and log g in dex differ by 10^3) with a pseudo-inverse, so a nuisance parameter without
    information is simply dropped. inf where parameter ``index`` carries no information."""
    info = np.asarray(info, dtype=np.float64)
    p = info.shape[-1]
    nuis = [j for j in range(p) if j != index and j not in known]
    d = np.sqrt(np.clip(np.einsum("nii->ni", info), 0, None))
    d = np.where(d > 0, d, 1.0)
    s = info / (d[:, :, None] * d[:, None, :])
    schur = s[:, index, index].copy()
    if nuis:
        b = s[:, index, nuis]
        inv = np.linalg.pinv(s[:, nuis][:, :, nuis], rcond=1e-12, hermitian=True)
        schur -= np.einsum("ni,nij,nj->n", b, inv, b)
    with np.errstate(divide="ignore"):
        out = np.where(schur > 1e-12, 1.0 / np.maximum(schur, 1e-300), np.inf) / d[:, index] ** 2
    return out


def conditional_crlb(info: np.ndarray, index: int = LOGG) -> np.ndarray:
    """Bound on parameter ``index`` with all others known: 1 / I_ii."""
    with np.errstate(divide="ignore"):
        return 1.0 / np.asarray(info, dtype=np.float64)[:, index, index]


def r2_max(crlb: np.ndarray, var_prior: float) -> np.ndarray:
    """Per-star ceiling 1 - min(CRLB, Var_prior) / Var_prior."""
    return 1.0 - np.minimum(crlb, var_prior) / var_prior


def _median_ratio(num: np.ndarray, den: np.ndarray) -> float:
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    return float(np.median(num[ok] / den[ok])) if ok.any() else float("nan")


def summarise(crlb4, crlb3, crlb_cond, snr, var_prior: float, unit=None) -> dict[str, np.ndarray | float]:
    """The cell's scalar ceilings from per-star bounds (dex^2) and S/N (see DEFINITIONS).
    ``unit``: the (crlb4, crlb3, crlb_cond) at noise level 1 for the noise-free information
    ratios (defaults to the given bounds)."""
    crlb4, crlb3, crlb_cond, snr = (np.asarray(a, np.float64) for a in (crlb4, crlb3, crlb_cond, snr))
    top = top_snr_mask(snr)
    bins = np.digitize(snr, SNR_EDGES[1:-1])
    n_bins = len(SNR_EDGES) - 1

    def pop(c, m):
        return float(1.0 - np.mean(np.minimum(c[m], var_prior)) / var_prior) if m.any() else float("nan")

    def med(c, m):
        return float(np.median(r2_max(c[m], var_prior))) if m.any() else float("nan")

    every = np.ones(snr.size, bool)
    out: dict[str, np.ndarray | float] = {}
    for suffix, c in (("", crlb4), ("_3d", crlb3)):
        out[f"ceiling_pop{suffix}"] = pop(c, every)
        out[f"ceiling_median{suffix}"] = med(c, every)
        out[f"ceiling_pop{suffix}_top20"] = pop(c, top)
        out[f"ceiling_median{suffix}_top20"] = med(c, top)
        out[f"ceiling_pop{suffix}_snr_bin"] = np.array([pop(c, bins == i) for i in range(n_bins)])
        out[f"ceiling_median{suffix}_snr_bin"] = np.array([med(c, bins == i) for i in range(n_bins)])
    sig = np.sqrt(crlb4)
    for q, v in zip(PERCENTILES, np.percentile(sig, PERCENTILES)):
        out[f"sigma_min_p{q}"] = float(v)
    u4, u3, uc = unit if unit is not None else (crlb4, crlb3, crlb_cond)
    out["info_ratio_marginal_conditional"] = _median_ratio(uc, u4)
    out["info_ratio_marginal_conditional_3d"] = _median_ratio(uc, u3)
    out["n_snr_bin"] = np.array([int((bins == i).sum()) for i in range(n_bins)])
    out["snr_median"] = float(np.median(snr))
    out["snr_top20_min"] = float(snr[top].min())
    return out


# ---- one cell ----------------------------------------------------------------------------------
def _scale(crlb: np.ndarray, noise: float) -> np.ndarray:
    """Bounds at noise level ``noise`` from those at 1 (sigma scales with it; exact spectra: 0)."""
    return np.zeros_like(crlb) if noise == 0 else crlb * noise**2


def _check_request(source: Source, noises, n_stars, split: str) -> int:
    for nl in noises:
        if not (np.isfinite(nl) and nl >= 0):
            raise ConfigError(f"noise level must be a finite number >= 0, got {nl}")
    n = source.n(split)
    if n_stars is None:
        return n
    if not isinstance(n_stars, (int, np.integer)) or not 1 <= n_stars <= n:
        raise ConfigError(f"--stars must be between 1 and the {n} {split} stars of {source.path}, got {n_stars}")
    return int(n_stars)


def snr_of(flux: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Per-spectrum S/N ||flux|| / ||sigma|| (the definition of Observed.snr)."""
    return np.linalg.norm(flux.astype(np.float64), axis=1) / np.linalg.norm(sigma, axis=1)


def sigma_unit(batch) -> np.ndarray:
    """True 1-sigma per pixel at noise level 1 (float64) from a source Batch."""
    return np.sqrt(batch.var_a.astype(np.float64) * batch.flux + batch.var_b.astype(np.float64))


def window_pixels(source: Source, window, where: str = "--window") -> np.ndarray | None:
    """Boolean pixel mask of a window spec (:func:`specscale.sim.windows.window_mask`) on the
    source's wavelength grid, or None for the full spectrum (None or "full")."""
    if window_ranges(window, where) is None:
        return None
    return window_mask(source.wave, window, where)


def star_bounds(
    source: Source, mags, n_stars: int, config: FisherConfig, split: str = "test", mask: np.ndarray | None = None
):
    """Per-star bounds at noise level 1 for every magnitude cell in ``mags``, J computed once per
    star: dict of (n_mag, n) arrays crlb4, crlb3, crlb_cond, snr, plus labels (n, 4) and the
    Jacobian method. A bound at noise level nl is nl^2 times these, the S/N 1/nl times. ``mask``
    (n_pix,) bool restricts I = J^T W J to those pixels (a window); the S/N stays that of the full
    spectrum (``Observed.snr``, which the S/N bins of the models' metrics use)."""
    cells = [MagRange.parse(m) for m in mags]
    for c in cells:
        source.check_cell(c)
    jac_of = jacobian_for(source, config, cells[0])
    out = {k: np.empty((len(cells), n_stars)) for k in ("crlb4", "crlb3", "crlb_cond", "snr")}
    labels = np.empty((n_stars, 4), np.float64)
    for start in range(0, n_stars, config.batch):
        rows = np.arange(start, min(n_stars, start + config.batch))
        batches = [source.noiseless(split, rows, c) for c in cells]
        jac = jac_of(split, rows, batches[0].flux)
        labels[rows] = batches[0].labels
        for m, b in enumerate(batches):
            sig = sigma_unit(b)
            info = fisher_matrix(jac, sig) if mask is None else fisher_matrix(jac[:, mask], sig[:, mask])
            out["crlb4"][m, rows] = marginal_crlb(info)
            out["crlb3"][m, rows] = marginal_crlb(info, known=(ALPHA,))
            out["crlb_cond"][m, rows] = conditional_crlb(info)
            out["snr"][m, rows] = snr_of(b.flux, sig)
    out["labels"] = labels
    out["method"] = jac_of.method
    return out


def _attrs(source: Source, config: FisherConfig, method: str, **extra) -> dict:
    obs = getattr(source, "observation", None)
    prov = provenance(
        config={"fisher": to_jsonable(config)},
        dataset_id=source.dataset_id,
        device=resolve_device(config.device, "fisher.device"),
    )
    prov.update(
        {"source": source.describe(), "observation": to_jsonable(obs) if obs is not None else None, "jacobian": method}
    )
    return {
        "provenance": json.dumps(prov, sort_keys=True, default=str),
        "definitions": json.dumps(DEFINITIONS),
        "jacobian_method": method,
        "dataset_id": source.dataset_id,
        **extra,
    }


def cell_ceiling(
    source: Source,
    noise: float,
    mag,
    n_stars: int | None = None,
    config: FisherConfig | None = None,
    split: str = "test",
    window=None,
) -> xr.Dataset:
    """The ceiling of one cell (noise level, magnitude cell) on the first ``n_stars`` stars of
    ``split`` (default all), with the same stars and observing conditions a model cell uses.
    ``window``: a window spec (:mod:`specscale.models.features`; None or "full": every pixel) whose
    pixels alone carry the information, so a window model has its own ceiling on the same stars."""
    config = config or FisherConfig()
    cell = MagRange.parse(mag)
    source.check_cell(cell)
    n = _check_request(source, [noise], n_stars, split)
    mask = window_pixels(source, window)
    b = star_bounds(source, [cell], n, config, split, mask)
    box = prior_box(source)
    var_prior = float((box[LOGG, 1] - box[LOGG, 0]) ** 2 / 12.0)
    c4, c3, cc = (_scale(b[k][0], noise) for k in ("crlb4", "crlb3", "crlb_cond"))
    with np.errstate(divide="ignore"):
        snr = b["snr"][0] / noise
    logg = b["labels"][:, LOGG]
    star = {
        "crlb_marginal": c4,
        "crlb_marginal_3d": c3,
        "crlb_conditional": cc,
        "sigma_min": np.sqrt(c4),
        "r2_max": r2_max(c4, var_prior),
        "r2_max_3d": r2_max(c3, var_prior),
        "snr": snr,
        **{name: b["labels"][:, i] for i, name in enumerate(LABELS)},
    }
    data = {k: ("star", v) for k, v in star.items()}
    unit = tuple(b[k][0] for k in ("crlb4", "crlb3", "crlb_cond"))
    for k, v in summarise(c4, c3, cc, snr, var_prior, unit).items():
        data[k] = ("snr_bin", v) if np.ndim(v) else ((), v)
    data["var_prior"] = ((), var_prior)
    data["logg_var_empirical"] = ((), float(np.var(logg)))
    coords = {
        "star": np.arange(n),
        "snr_bin": list(SNR_BIN_LABELS),
        "snr_bin_lo": ("snr_bin", np.array(SNR_EDGES[:-1])),
        "snr_bin_hi": ("snr_bin", np.array(SNR_EDGES[1:])),
    }
    attrs = _attrs(source, config, b["method"], noise=float(noise), mag=cell.label(), n_stars=n, split=split)
    attrs.update(window=window_label(window), n_pixels=int(source.wave.size if mask is None else mask.sum()))
    return xr.Dataset(data, coords=coords, attrs=attrs)


# ---- curves ------------------------------------------------------------------------------------
def fisher_curves(
    source: Source,
    noises,
    mags,
    n_stars: int | None = None,
    config: FisherConfig | None = None,
    split: str = "test",
    window=None,
) -> xr.Dataset:
    """Ceilings on a grid of noise levels x FIXED magnitudes (AB), dims (noise, mag[, snr_bin]).
    J is computed once per star; only sigma changes across the grid. ``window`` as in
    :func:`cell_ceiling`."""
    config = config or FisherConfig()
    mags = [float(m) for m in mags]
    noises = [float(x) for x in noises]
    if not mags or not noises:
        raise ConfigError("fisher-curves needs at least one noise level and one magnitude")
    n = _check_request(source, noises, n_stars, split)
    mask = window_pixels(source, window)
    b = star_bounds(source, mags, n, config, split, mask)
    box = prior_box(source)
    var_prior = float((box[LOGG, 1] - box[LOGG, 0]) ** 2 / 12.0)
    rows = {}
    for i, nl in enumerate(noises):
        for j in range(len(mags)):
            with np.errstate(divide="ignore"):
                snr = b["snr"][j] / nl
            unit = tuple(b[k][j] for k in ("crlb4", "crlb3", "crlb_cond"))
            s = summarise(*(_scale(u, nl) for u in unit), snr, var_prior, unit)
            for k, v in s.items():
                rows.setdefault(k, np.empty((len(noises), len(mags)) + np.shape(v)))[i, j] = v
    data = {k: (("noise", "mag", "snr_bin") if v.ndim == 3 else ("noise", "mag"), v) for k, v in rows.items()}
    data["var_prior"] = ((), var_prior)
    data["logg_var_empirical"] = ((), float(np.var(b["labels"][:, LOGG])))
    coords = {
        "noise": noises,
        "mag": mags,
        "snr_bin": list(SNR_BIN_LABELS),
        "snr_bin_lo": ("snr_bin", np.array(SNR_EDGES[:-1])),
        "snr_bin_hi": ("snr_bin", np.array(SNR_EDGES[1:])),
    }
    attrs = _attrs(source, config, b["method"], n_stars=n, split=split, window=window_label(window))
    return xr.Dataset(data, coords=coords, attrs=attrs)


def magnitude_for_snr(
    source: Source,
    target: float,
    noise: float = 1.0,
    n_stars: int | None = None,
    split: str = "test",
    tol: float = 1e-3,
) -> float:
    """The fixed HSC-i magnitude (AB) at which the median per-spectrum S/N of the first
    ``n_stars`` stars equals ``target`` (Brent's method on log S/N, which falls smoothly and
    monotonically with magnitude), to ``tol`` mag."""
    from scipy.optimize import brentq

    limits = getattr(source, "mag_limits", None)
    if limits is None:
        raise DataError(f"{source.path}: its magnitudes are fixed by the file; a target S/N cannot be matched")
    n = _check_request(source, [noise], n_stars, split)
    if noise == 0 or not target > 0:
        raise ConfigError(
            f"matching a median S/N needs noise > 0 and a positive target (got noise {noise}, S/N {target})"
        )
    rows = np.arange(n)

    def median_snr(mag):
        b = source.noiseless(split, rows, MagRange(mag, mag))
        return float(np.median(snr_of(b.flux, sigma_unit(b)))) / noise

    lo, hi = map(float, limits)
    f_lo, f_hi = (np.log(median_snr(m) / target) for m in (lo, hi))
    if not f_hi <= 0 <= f_lo:
        raise ConfigError(f"target S/N {target} is outside what magnitudes {lo:g}-{hi:g} give ({source.path})")
    return round(float(brentq(lambda m: np.log(median_snr(m) / target), lo, hi, xtol=tol)), 4)


# ---- information per wavelength chunk ----------------------------------------------------------
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
    n = _check_request(source, [noise], n_stars, split)
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
    full = info.sum(1)
    n_c = len(starts)
    box = prior_box(source)
    var_prior = float((box[LOGG, 1] - box[LOGG, 0]) ** 2 / 12.0)

    def pop(crlb, axis=0):
        return 1.0 - np.mean(np.minimum(crlb, var_prior), axis=axis) / var_prior

    crlb_full = marginal_crlb(full)
    alone = marginal_crlb(info.reshape(-1, 4, 4)).reshape(n, n_c)
    without = marginal_crlb((full[:, None] - info).reshape(-1, 4, 4)).reshape(n, n_c)
    with np.errstate(divide="ignore", invalid="ignore"):
        i_alone = np.where(np.isfinite(alone), 1.0 / alone, 0.0)
        i_full = np.where(np.isfinite(crlb_full), 1.0 / crlb_full, 0.0)
        i_without = np.where(np.isfinite(without), 1.0 / without, 0.0)
        loss_fraction = np.where(i_full[:, None] > 0, 1.0 - i_without / i_full[:, None], np.nan)
    ceiling_full = float(pop(crlb_full))
    ceiling_without = pop(without)
    data = {
        "info_logg": ("chunk", np.median(i_alone, 0)),
        "info_logg_mean": ("chunk", i_alone.mean(0)),
        "info_logg_conditional": ("chunk", np.median(info[:, :, LOGG, LOGG], 0)),
        "ceiling_pop_alone": ("chunk", pop(alone)),
        "ceiling_pop_without": ("chunk", ceiling_without),
        "loss_logg": ("chunk", ceiling_full - ceiling_without),
        "info_logg_loss_fraction": ("chunk", np.nanmedian(loss_fraction, 0)),
        "ceiling_pop_full": ((), ceiling_full),
        "info_logg_full": ((), float(np.median(i_full))),
    }
    wave = np.asarray(source.wave, dtype=np.float64)
    # pixel edges: midpoints between centres, the outer ones half a pixel out
    edges = np.concatenate(
        [[1.5 * wave[0] - 0.5 * wave[1]], 0.5 * (wave[1:] + wave[:-1]), [1.5 * wave[-1] - 0.5 * wave[-2]]]
    )
    coords = {
        "chunk": np.arange(n_c),
        "pixel_start": ("chunk", starts),
        "pixel_stop": ("chunk", stops),
        "wave_lo": ("chunk", edges[starts]),
        "wave_hi": ("chunk", edges[stops]),
        "wave_center": ("chunk", 0.5 * (edges[starts] + edges[stops])),
    }
    ds = xr.Dataset(data, coords=coords)
    for name, unit in CHUNK_UNITS.items():
        ds[name].attrs["units"] = unit
        if name in CHUNK_DEFINITIONS:
            ds[name].attrs["long_name"] = CHUNK_DEFINITIONS[name]
    jac_method = getattr(jac_of, "method", "?")
    ds.attrs = _attrs(
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
