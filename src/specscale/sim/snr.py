"""S/N summaries used to calibrate the observation model (``specscale snr``)."""

from __future__ import annotations

import numpy as np

from specscale.sim.observe import NoiseModel, ObservingConfig

# The two references of the calibration (see README, "S/N calibration").
ETC_FIXTURE = {
    "mag_ab": 18.0,
    "n_exposures": 8,
    "exptime_s": 900.0,
    "zenith_deg": 45.0,
    "seeing_arcsec": 0.8,
    "field_angle_deg": 0.675,
    "median": 55.9,
    "p5": 23.8,
    "p95": 62.6,
}
STUDY_TEST_SET = {"mag": "20.5-22.5", "noise": 1.0, "median": 8.2, "p1": 3.0, "p99": 28.0}


def snr_summary(source, cell, noise_level: float = 1.0, split: str = "test", n: int | None = None) -> dict:
    """Per-spectrum S/N (||flux|| / ||sigma||) and per-pixel S/N statistics over a split."""
    per_spec, per_pix = [], []
    for obs in source.iter_observed(split, cell, noise_level, n=n):
        per_spec.append(obs.snr)
        # per-pixel S/N of the noiseless flux: obs.snr-like but pixel by pixel
        flux = source.noiseless(split, obs.rows, cell).flux
        per_pix.append(np.median(flux / np.maximum(obs.sigma, 1e-30), axis=1))
    s = np.concatenate(per_spec)
    p = np.concatenate(per_pix)
    q = np.percentile(s, [1, 5, 50, 95, 99])
    return {
        "split": split,
        "n": int(s.size),
        "cell": str(cell),
        "noise_level": noise_level,
        "snr_spectrum": {"p1": q[0], "p5": q[1], "median": q[2], "p95": q[3], "p99": q[4], "mean": float(s.mean())},
        "snr_pixel_median": {"median": float(np.median(p))},
    }


def etc_fixture_snr(observation: ObservingConfig | None = None) -> dict:
    """Per-pixel S/N of the ETC's own fixture (flat AB 18.0, 8 x 900 s, zenith 45 deg, seeing 0.8",
    field angle 0.675 deg, dark sky) with this project's efficiency, against the ETC's numbers."""
    base = observation or ObservingConfig()
    fx = ETC_FIXTURE
    cfg = ObservingConfig(
        n_exposures=fx["n_exposures"],
        exptime_s=fx["exptime_s"],
        seeing_arcsec=(fx["seeing_arcsec"],) * 2,
        zenith_deg=(fx["zenith_deg"],) * 2,
        field_angle_deg=fx["field_angle_deg"],
        sky_ab_arcsec2=base.sky_ab_arcsec2,
        extinction_mag_per_airmass=base.extinction_mag_per_airmass,
        efficiency=base.efficiency,
    )
    s = NoiseModel(cfg).per_pixel_snr_flat(fx["mag_ab"], fx["seeing_arcsec"], fx["zenith_deg"])
    q = np.percentile(s, [5, 50, 95])
    return {
        "p5": q[0],
        "median": q[1],
        "p95": q[2],
        "etc": {k: fx[k] for k in ("p5", "median", "p95")},
        "median_ratio": q[1] / fx["median"],
    }
