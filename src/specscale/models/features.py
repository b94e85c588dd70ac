"""The feature pipeline of a variant (config ``variants.<name>.features``): :class:`FeatureConfig`
(window, normalisation, input), bound to a wavelength grid as a :class:`FeaturePipeline` that turns
an observed batch (flux, pipeline error) into the model's input matrix. Ridge and LightGBM apply
all of it; the ViT applies the window (:func:`specscale.sim.windows.window_pixels`) and maps
``input`` to its own ``inputs`` option. Windows themselves live in :mod:`specscale.sim.windows`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from specscale.core.config import ConfigError
from specscale.sim.windows import window_mask, window_ranges

# ---------------------------------------------------------------------------------------- the feature pipeline
NORMALISATIONS = ("median", "continuum", "chunk_zscore")
FEATURE_INPUTS = ("flux", "flux+error", "flux/error")
CONTINUUM_DEGREE = 3  # Legendre degree of the continuum over the arm (the slope is smooth: ~1.15 -> ~0.88)
CONTINUUM_ITERATIONS = 5  # refits, each rejecting pixels off the current fit
CONTINUUM_CLIP = (2.0, 3.0)  # reject residuals below -2 or above +3 robust sigma (lines; sky/noise spikes)


@dataclass(frozen=True)
class FeatureConfig:
    """What a model sees of an observed spectrum (config ``variants.<name>.features``).

    window         pixels kept: a window spec (module docstring); None/"full": every pixel
    normalisation  median: the data as stored (already divided by their median; identity) |
                   continuum: divided by a smooth continuum fitted per spectrum (a degree-3
                   Legendre polynomial over the arm, refitted with pixels more than 2 robust sigma
                   below or 3 above the fit rejected, so lines and noise spikes do not pull it) |
                   chunk_zscore: z-scored within fixed chunks of ``chunk`` pixels per spectrum
    input          flux | flux+error (the pipeline error as a second block of features) |
                   flux/error (per-pixel S/N; needs noise > 0)
    chunk          pixels per chunk of chunk_zscore (chunks start at pixel 0 of the arm)

    Normalisation acts on the whole arm, then the window picks pixels, then the input is formed;
    the error is divided by the same continuum / chunk scale as the flux. Only the pipeline error
    (from observed counts) is ever used, never the true sigma."""

    window: str | tuple | None = None
    normalisation: str = "median"
    input: str = "flux"
    chunk: int = 256

    @classmethod
    def from_config(cls, values, where: str) -> FeatureConfig:
        """Build from a config mapping; ConfigError ``WHERE.KEY: message`` for an unknown key or a
        bad value (an unknown window name, normalisation or input)."""
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: must be a mapping of {[f.name for f in fields(cls)]}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown feature option; known: {known}")
        window = values.get("window")
        window_ranges(window, f"{where}.window")  # names and ranges; the arm is checked with the data
        if isinstance(window, list):
            window = tuple(tuple(w) if isinstance(w, list) else w for w in window)
        norm = values.get("normalisation", "median")
        if norm not in NORMALISATIONS:
            raise ConfigError(f"{where}.normalisation: {norm!r} is not one of {list(NORMALISATIONS)}")
        kind = values.get("input", "flux")
        if kind not in FEATURE_INPUTS:
            raise ConfigError(f"{where}.input: {kind!r} is not one of {list(FEATURE_INPUTS)}")
        chunk = values.get("chunk", 256)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 2:
            raise ConfigError(f"{where}.chunk: {chunk!r} must be an integer >= 2 (pixels)")
        return cls(window=window, normalisation=norm, input=kind, chunk=chunk)

    @property
    def is_identity(self) -> bool:
        """True when the pipeline hands the model the stored flux unchanged (every pixel, median
        normalisation, flux only): a model then takes its default path."""
        return window_ranges(self.window) is None and self.normalisation == "median" and self.input == "flux"

    def to_dict(self) -> dict:
        """JSON-able form (for provenance)."""
        window = self.window
        if isinstance(window, tuple):
            window = [list(w) if isinstance(w, tuple) else w for w in window]
        return {"window": window, "normalisation": self.normalisation, "input": self.input, "chunk": self.chunk}

    def bind(self, wave: np.ndarray, where: str = "features.window") -> FeaturePipeline:
        """The pipeline on the wavelength grid ``wave`` (vacuum Angstrom); ConfigError naming
        ``where`` for a window range that holds no pixel of the grid."""
        return FeaturePipeline(self, np.asarray(wave, np.float64), window_mask(wave, self.window, where))


@dataclass(frozen=True, eq=False)
class FeaturePipeline:
    """A :class:`FeatureConfig` bound to a wavelength grid: call it on (flux, error) batches."""

    config: FeatureConfig
    wave: np.ndarray  # (n_pix,) vacuum Angstrom
    mask: np.ndarray  # (n_pix,) bool: the window's pixels

    @property
    def n_pixels(self) -> int:
        """Pixels of the window."""
        return int(self.mask.sum())

    @property
    def n_features(self) -> int:
        """Columns of the model's input matrix (pixels, twice that for flux+error)."""
        return self.n_pixels * (2 if self.config.input == "flux+error" else 1)

    def __call__(self, flux: np.ndarray, error: np.ndarray) -> np.ndarray:
        """(n, n_features) float64 model input from observed flux and pipeline error (n, n_pix)."""
        c = self.config
        flux = np.asarray(flux, np.float64)
        error = np.asarray(error, np.float64)
        if flux.ndim != 2 or flux.shape[1] != self.wave.size or error.shape != flux.shape:
            raise ValueError(f"expected flux and error (n, {self.wave.size}), got {flux.shape} and {error.shape}")
        if c.normalisation == "continuum":
            cont = continuum(flux, self.wave)
            flux, error = flux / cont, error / cont
        elif c.normalisation == "chunk_zscore":
            mean, scale = chunk_stats(flux, c.chunk)
            flux, error = (flux - mean) / scale, error / scale
        flux, error = flux[:, self.mask], error[:, self.mask]
        if c.input == "flux":
            return flux
        if c.input == "flux+error":
            return np.concatenate([flux, error], axis=1)
        if not (error > 0).all():
            raise ValueError("features.input 'flux/error' needs a pipeline error > 0 at every pixel (noise > 0)")
        return flux / error


def apply_features(config: FeatureConfig | None, flux, error, wave) -> np.ndarray:
    """The model input matrix of an observed batch (flux, pipeline error (n, n_pix); ``wave`` the
    grid, vacuum Angstrom): ``config`` bound to ``wave`` and applied; None: the flux as it is."""
    if config is None:
        return np.asarray(flux)
    return config.bind(wave)(flux, error)


def continuum(flux: np.ndarray, wave: np.ndarray) -> np.ndarray:
    """Smooth continuum (n, n_pix) of each spectrum: a degree-``CONTINUUM_DEGREE`` Legendre fit
    over the arm, refitted ``CONTINUUM_ITERATIONS`` times without the pixels that lie more than
    ``CONTINUUM_CLIP`` robust sigma (1.4826 x the median |residual|) below / above the fit.
    Dimensionless, like the median-normalised flux; floored at 1e-3 of its median."""
    flux = np.asarray(flux, np.float64)
    wave = np.asarray(wave, np.float64)
    t = (2.0 * wave - wave[0] - wave[-1]) / (wave[-1] - wave[0]) if wave.size > 1 else np.zeros(1)
    basis = np.polynomial.legendre.legvander(t, CONTINUUM_DEGREE)  # (n_pix, k)
    k = basis.shape[1]
    outer = (basis[:, :, None] * basis[:, None, :]).reshape(-1, k * k)  # (n_pix, k^2)
    w = np.ones(flux.shape)
    lo, hi = CONTINUUM_CLIP
    for it in range(CONTINUUM_ITERATIONS + 1):
        gram = (w @ outer).reshape(-1, k, k) + 1e-9 * np.eye(k)  # 1e-9: almost every pixel rejected
        coef = np.linalg.solve(gram, ((w * flux) @ basis)[..., None])[..., 0]
        fit = coef @ basis.T
        if it == CONTINUUM_ITERATIONS:
            break
        resid = flux - fit
        scale = 1.4826 * np.median(np.abs(resid), axis=1, keepdims=True)  # lines inflate it a little
        scale = np.where(scale > 0, scale, np.inf)
        w = ((resid > -lo * scale) & (resid < hi * scale)).astype(np.float64)
    floor = 1e-3 * np.abs(np.median(fit, axis=1, keepdims=True))
    return np.maximum(fit, np.maximum(floor, 1e-12))


def chunk_stats(flux: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-spectrum mean and standard deviation (ddof 0) of each block of ``chunk`` consecutive
    pixels (the last block may be shorter), broadcast back to (n, n_pix); a constant block gets
    scale 1."""
    flux = np.asarray(flux, np.float64)
    n_pix = flux.shape[1]
    starts = np.arange(0, n_pix, chunk)
    sizes = np.diff(np.append(starts, n_pix))
    mean = np.add.reduceat(flux, starts, axis=1) / sizes
    mean = np.repeat(mean, sizes, axis=1)
    var = np.add.reduceat((flux - mean) ** 2, starts, axis=1) / sizes
    scale = np.sqrt(var)
    scale = np.repeat(np.where(scale > 1e-12, scale, 1.0), sizes, axis=1)
    return mean, scale
