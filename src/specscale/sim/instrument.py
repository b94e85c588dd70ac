"""The Subaru PFS medium-resolution red arm: pixel grid, line-spread function, throughput.

All wavelengths are vacuum Angstrom, as the PFS pipeline uses. Line lists and the UVES sky
atlas are tabulated in air and go through :func:`air_to_vacuum` on load.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from importlib import resources

import numpy as np

C_KMS = 299_792.458  # speed of light, km/s


def data_path(name: str):
    """Path of a data file shipped inside the package (see ``specscale/data/SOURCES.md``)."""
    return resources.files("specscale.sim") / "tables" / name


def air_to_vacuum(wave_air):
    """Air -> vacuum wavelength (Angstrom), IAU standard of Morton (2000, ApJS 130, 403)."""
    wave_air = np.asarray(wave_air, dtype=np.float64)
    s2 = (1e4 / wave_air) ** 2
    n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)
    return wave_air * n


def vacuum_to_air(wave_vac: np.ndarray) -> np.ndarray:
    """Inverse of :func:`air_to_vacuum` (three fixed-point steps: error < 1e-9 A)."""
    wave_vac = np.asarray(wave_vac, dtype=np.float64)
    air = wave_vac / 1.00028
    for _ in range(3):
        air = air * wave_vac / air_to_vacuum(air)
    return air


def read_table(name: str) -> np.ndarray:
    """Read a comma-separated shipped table with ``#`` comments and one header row."""
    with data_path(name).open() as fh:
        rows = [ln for ln in fh if ln.strip() and not ln.startswith("#")]
    return np.genfromtxt(rows[1:], delimiter=",", dtype=np.float64)


@dataclass(frozen=True)
class Instrument:
    """PFS MR red arm. Defaults are the ETC's ``PFS.redMR.20240714.dat`` values.

    lambda_min, lambda_max: edges of the arm (vacuum Angstrom); n_pix: detector pixels.
    resolving_power: R = lambda / FWHM of the Gaussian LSF (constant R: FWHM grows with lambda).
    """

    lambda_min: float = 7100.0
    lambda_max: float = 8850.0
    n_pix: int = 4096
    resolving_power: float = 5000.0
    read_noise_e: float = 4.0  # e- rms per pixel per read
    dark_e_per_s: float = 1.0e-4  # e-/pix/s
    trace_width_pix: int = 5  # spatial pixels summed in extraction
    adjust_throughput: float = 1.20  # ETC's empirical MR-red factor
    adjust_noise: float = 1.015  # ETC's empirical variance factor
    mirror_diameter_m: float = 8.3
    central_obscuration: float = 0.22  # linear fraction of the pupil
    fiber_radius_um: float = 63.5
    focal_length_m: float = 23.39  # at field centre: sets the fibre's angular size

    @cached_property
    def dlambda(self) -> float:
        """Pixel width, Angstrom (0.427 A for the default arm)."""
        return (self.lambda_max - self.lambda_min) / self.n_pix

    @cached_property
    def wave(self) -> np.ndarray:
        """Pixel centres, vacuum Angstrom, shape (n_pix,)."""
        return self.lambda_min + (np.arange(self.n_pix) + 0.5) * self.dlambda

    @property
    def lsf_sigma_ln(self) -> float:
        """Gaussian LSF sigma in ln(lambda) (dimensionless); sigma_A = lambda * this."""
        return 1.0 / (self.resolving_power * 2.0 * np.sqrt(2.0 * np.log(2.0)))

    def lsf_sigma(self, wave) -> np.ndarray:
        """LSF Gaussian sigma in Angstrom at ``wave`` (Angstrom): ~0.68 A at 8000 A for R=5000."""
        return np.asarray(wave) * self.lsf_sigma_ln

    @cached_property
    def collecting_area_cm2(self) -> float:
        """Unobscured primary area, cm^2."""
        r = self.mirror_diameter_m * 50.0
        return np.pi * r**2 * (1.0 - self.central_obscuration**2)

    @cached_property
    def fiber_radius_arcsec(self) -> float:
        """Fibre entrance radius on the sky, arcsec (~0.56")."""
        return self.fiber_radius_um * 1e-6 / self.focal_length_m * 206_264.806

    def throughput(self, wave) -> np.ndarray:
        """End-to-end instrument throughput at ``wave`` (vacuum Angstrom), ETC factor included.

        The shipped table is on a 5 nm grid in air-ish nm as the ETC tabulates; its slow variation
        makes the air/vacuum distinction (2 A) irrelevant. Outside the arm it is held constant.
        """
        tab = read_table("pfs_mr_red_throughput.csv")
        return np.interp(np.asarray(wave), tab[:, 0] * 10.0, tab[:, 1]) * self.adjust_throughput


def sky_lines_vacuum() -> tuple[np.ndarray, np.ndarray]:
    """UVES sky-line atlas (Hanuschik 2003): vacuum wavelength (A) and intensity.

    Intensity unit: erg s^-1 cm^-2 arcsec^-2 at the atlas reference airmass 1.1. The one slightly
    negative atlas entry is clipped to zero.
    """
    tab = read_table("uves_sky_lines_710_885nm.csv")
    return air_to_vacuum(tab[:, 0] * 10.0), np.clip(tab[:, 1], 0.0, None) * 1e-16


def gaussian_pixel_matrix(centres, wave, sigma) -> np.ndarray:
    """Fraction of a unit Gaussian line at each centre falling in each pixel.

    centres: (n_lines,) Angstrom; wave: (n_pix,) uniform pixel centres; sigma: (n_lines,) A.
    Returns (n_lines, n_pix); rows sum to 1 for lines well inside the grid.
    """
    from scipy.special import ndtr

    dl = wave[1] - wave[0]
    edges = np.concatenate([wave - dl / 2, [wave[-1] + dl / 2]])
    z = (edges[None, :] - np.asarray(centres)[:, None]) / np.asarray(sigma)[:, None]
    return np.diff(ndtr(z), axis=1)
