"""Observation model: from a normalised spectrum, an HSC-i AB magnitude and observing conditions
to per-pixel variance, noisy spectra and the error a real pipeline would report.

Counts per pixel, summed over exposures (e-):
    object  N_obj = f * fmed(mag) * K(lambda) * eta_obj
    sky     N_sky = [dark-sky continuum + UVES sky lines through the LSF] * K(lambda) * fibre area * eta_sky
    detector n_exp * trace_width * (read^2 + dark * t_exp)
with K = collecting area * total time * pixel width * throughput * lambda / (h c)
(e- per erg s^-1 cm^-2 A^-1). eta_obj holds the fibre aperture fraction of a Gaussian PSF of the
seeing (FWHM grows as airmass^0.6) and telescope spot, vignetting, atmospheric extinction and the
calibrated ``efficiency``; eta_sky holds vignetting and ``efficiency``.

In normalised-flux units the variance is linear in the flux:  sigma^2 = a * f + b,
a = adjust_noise / scale,  b = adjust_noise * (N_sky + N_det) / scale^2,  scale = N_obj / f.
Every source (simulated or real file) hands (a, b) per pixel to :func:`observe`, which draws
    observed = f + N(0,1) * sigma * noise_level
and returns the pipeline error  noise_level * sqrt(a * max(observed, 0) + b):
estimated from the OBSERVED counts, as a real pipeline does, never from the noiseless flux.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from specscale.sim.instrument import Instrument, gaussian_pixel_matrix, sky_lines_vacuum

HC_ERG_A = 1.98644586e-8  # h c in erg Angstrom
C_A_PER_S = 2.99792458e18
FIELD_NODES_DEG = np.array([0.0, 0.1625, 0.325, 0.4875, 0.65])  # ETC field-angle nodes (rfov = 0.65 deg)
VIGNETTING = np.array([0.94, 0.90, 0.84, 0.78, 0.71])
SPOT_RMS_UM = np.array([7.1, 8.4, 9.7, 11.2, 13.2])
MAX_FIELD_ANGLE_DEG = 0.7  # PFS field radius (hexagon corners ~0.69 deg); the ETC fixture sits at 0.675


@dataclass(frozen=True)
class ObservingConfig:
    """Observing setup. Ranges (lo, hi) are drawn per star, uniformly and deterministically."""

    n_exposures: int = 12
    exptime_s: float = 900.0
    seeing_arcsec: tuple[float, float] = (0.5, 1.5)  # FWHM at zenith, arcsec
    zenith_deg: tuple[float, float] = (0.0, 45.0)
    field_angle_deg: float = 0.0  # position in the PFS field (vignetting, telescope spot)
    sky_ab_arcsec2: tuple[float, float, float] = (21.3, 21.1, 20.9)  # dark-sky continuum at 7100/8000/8850 A
    extinction_mag_per_airmass: float = 0.03  # continuum extinction near 8000 A
    efficiency: float = 1.16  # zero point calibrated on the study test set (0.51 matches the ETC fixture; README)

    def __post_init__(self):
        # every comparison is written so that NaN fails it (NaN compares False)
        for name, top in (("seeing_arcsec", math.inf), ("zenith_deg", 90.0)):
            pair = getattr(self, name)
            if len(pair) != 2 or not (0 <= pair[0] <= pair[1] < top):
                raise ValueError(
                    f"observation.{name}={pair!r} must be an increasing pair of finite non-negative numbers"
                    + (" below 90 (the airmass diverges at the horizon)" if name == "zenith_deg" else "")
                )
        if not isinstance(self.n_exposures, int) or isinstance(self.n_exposures, bool) or self.n_exposures < 1:
            raise ValueError(f"observation.n_exposures={self.n_exposures!r} must be a positive integer")
        if not 0 < self.exptime_s < math.inf:
            raise ValueError(f"observation.exptime_s={self.exptime_s!r} must be a finite positive number")
        if not 0 <= self.field_angle_deg <= MAX_FIELD_ANGLE_DEG:
            raise ValueError(
                f"observation.field_angle_deg={self.field_angle_deg!r} must be in [0, {MAX_FIELD_ANGLE_DEG}] "
                "(the PFS field radius; the tabulated optics end at 0.65 and hold beyond)"
            )
        sky = self.sky_ab_arcsec2
        if len(sky) != 3 or not all(-math.inf < v < math.inf for v in sky):
            raise ValueError(
                f"observation.sky_ab_arcsec2={sky!r} must be 3 finite AB surface brightnesses (7100, 8000, 8850 A)"
            )
        if not 0 <= self.extinction_mag_per_airmass < math.inf:
            raise ValueError(
                f"observation.extinction_mag_per_airmass={self.extinction_mag_per_airmass!r} must be finite and >= 0"
            )
        if not 0 < self.efficiency <= 2:
            raise ValueError(f"observation.efficiency={self.efficiency!r} must be in (0, 2]")


class NoiseModel:
    """Per-pixel variance coefficients (a, b) of a star, for the PFS MR arm and a setup."""

    def __init__(self, config: ObservingConfig | None = None, instrument: Instrument | None = None):
        self.config = config or ObservingConfig()
        self.instrument = instrument or Instrument()

    @cached_property
    def counts_per_flambda(self) -> np.ndarray:
        """K(lambda): e- per pixel per (erg s^-1 cm^-2 A^-1), all exposures, before eta."""
        inst, c = self.instrument, self.config
        wave = inst.wave
        t = c.n_exposures * c.exptime_s
        return inst.collecting_area_cm2 * t * inst.dlambda * inst.throughput(wave) * wave / HC_ERG_A

    @cached_property
    def sky_flambda_arcsec2(self) -> np.ndarray:
        """Dark-sky f_lambda per arcsec^2 at airmass 1.1, per pixel (erg s^-1 cm^-2 A^-1 arcsec^-2):
        continuum from the AB surface brightnesses plus the UVES lines through the LSF."""
        inst = self.instrument
        wave = inst.wave
        mag = np.interp(wave, [7100.0, 8000.0, 8850.0], self.config.sky_ab_arcsec2)
        cont = 10 ** (-0.4 * (mag + 48.6)) * C_A_PER_S / wave**2
        lam, inten = sky_lines_vacuum()
        keep = (lam > inst.lambda_min - 10) & (lam < inst.lambda_max + 10)
        frac = gaussian_pixel_matrix(lam[keep], wave, inst.lsf_sigma(lam[keep]))
        lines = inten[keep] @ frac / inst.dlambda  # erg s^-1 cm^-2 arcsec^-2 per A
        return cont + lines

    def airmass(self, zenith_deg):
        return 1.0 / np.cos(np.radians(zenith_deg))

    def object_efficiency(self, seeing_arcsec, zenith_deg) -> np.ndarray:
        """eta_obj per star: fibre aperture x vignetting x extinction x efficiency."""
        inst, c = self.instrument, self.config
        x = self.airmass(np.asarray(zenith_deg, dtype=np.float64))
        # seeing is quoted at 5000 A and zenith: Kolmogorov scaling to the arm centre and airmass
        fwhm = np.asarray(seeing_arcsec, dtype=np.float64) * (8000.0 / 5000.0) ** -0.2 * x**0.6
        spot = np.interp(c.field_angle_deg, FIELD_NODES_DEG, SPOT_RMS_UM) * 1e-6 / inst.focal_length_m * 206_264.806
        sig2 = (fwhm / 2.3548200450309493) ** 2 + spot**2
        aperture = 1.0 - np.exp(-(inst.fiber_radius_arcsec**2) / (2 * sig2))
        vignet = np.interp(c.field_angle_deg, FIELD_NODES_DEG, VIGNETTING)
        return aperture * vignet * 10 ** (-0.4 * c.extinction_mag_per_airmass * x) * c.efficiency

    @cached_property
    def variance_basis(self) -> np.ndarray:
        """(3, n_pix) float64 pixel vectors B with, for a star's ``star_coefficients`` c,
        a = c0 B0 and b = c1 B1 + c2 B2 (sigma^2 = a f + b). The star's object counts per unit
        normalised flux are s K(lambda); with K_ref = median K, B0 = adj K_ref / K (object shot noise),
        B1 = adj K_ref^2 sky(lambda) / K^2 at airmass 1.1, B2 = adj K_ref^2 det / K^2 (read + dark)."""
        inst, c = self.instrument, self.config
        k = self.counts_per_flambda
        k_ref = float(np.median(k))
        fibre_area = np.pi * inst.fiber_radius_arcsec**2
        vignet = np.interp(c.field_angle_deg, FIELD_NODES_DEG, VIGNETTING)
        sky = self.sky_flambda_arcsec2 * k * fibre_area * vignet * c.efficiency  # e- per pixel at airmass 1.1
        det = c.n_exposures * inst.trace_width_pix * (inst.read_noise_e**2 + inst.dark_e_per_s * c.exptime_s)
        adj = inst.adjust_noise
        r = k_ref / k
        return np.stack([adj * r, adj * r**2 * sky, adj * r**2 * np.full_like(k, det)])

    def star_coefficients(self, fmed0, mag, seeing_arcsec, zenith_deg) -> np.ndarray:
        """(n, 3) float64 per-star coefficients of ``variance_basis``: 1/(s K_ref),
        (airmass/1.1)/(s K_ref)^2, 1/(s K_ref)^2, with s K_ref the star's object counts per unit
        normalised flux at the median pixel.

        fmed0: median f_lambda (erg s^-1 cm^-2 A^-1) of the star at HSC-i AB 0; mag: HSC-i AB mag;
        seeing_arcsec: FWHM at zenith; zenith_deg: zenith angle."""
        fmed0, mag = np.asarray(fmed0, dtype=np.float64), np.asarray(mag, dtype=np.float64)
        x = self.airmass(np.asarray(zenith_deg, dtype=np.float64))
        counts = (
            fmed0
            * 10 ** (-0.4 * mag)
            * self.object_efficiency(seeing_arcsec, zenith_deg)
            * np.median(self.counts_per_flambda)
        )
        inv = 1.0 / counts
        return np.stack([inv, (x / 1.1) * inv**2, inv**2], axis=1)

    def coefficients(self, fmed0, mag, seeing_arcsec, zenith_deg) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) per star and pixel, shape (n, n_pix), float64, such that sigma^2 = a f + b
        (arguments as ``star_coefficients``)."""
        return expand_variances(self.star_coefficients(fmed0, mag, seeing_arcsec, zenith_deg), self.variance_basis)

    def per_pixel_snr_flat(self, mag_ab: float, seeing_arcsec: float, zenith_deg: float) -> np.ndarray:
        """Per-pixel S/N of a spectrum flat in f_nu at AB magnitude ``mag_ab`` (the ETC's test case)."""
        wave = self.instrument.wave
        flam = 10 ** (-0.4 * (mag_ab + 48.6)) * C_A_PER_S / wave**2
        fmed = np.median(flam)
        f = flam / fmed
        a, b = self.coefficients([fmed], [0.0], [seeing_arcsec], [zenith_deg])
        return f / np.sqrt(a[0] * f + b[0])


def expand_variances(coef, basis):
    """(a, b), each (n, n_pix), from per-star coefficients ``coef`` (n, 3) and the pixel vectors
    ``basis`` (3, n_pix) of :attr:`NoiseModel.variance_basis`: a = c0 B0, b = c1 B1 + c2 B2
    (numpy arrays or torch tensors alike)."""
    return coef[:, :1] * basis[0], coef[:, 1:2] * basis[1] + coef[:, 2:3] * basis[2]


def observe(flux, var_a, var_b, noise_level: float, normal):
    """Noisy spectra and pipeline errors (torch or numpy arrays, same shape).

    normal: standard-normal draws of the same shape (the caller owns determinism).
    Returns (observed, error, sigma): sigma is the true 1-sigma at this noise level; error is what a
    pipeline reports, from the observed counts."""
    lib = torch if isinstance(flux, torch.Tensor) else np
    sigma = lib.sqrt(var_a * flux + var_b) * noise_level
    observed = flux + normal * sigma
    clip = torch.clamp(observed, min=0.0) if lib is torch else np.maximum(observed, 0.0)
    error = lib.sqrt(var_a * clip + var_b) * noise_level
    return observed, error, sigma
