"""The synthetic atmosphere: derivatives, where log g lives, physical directions, smoothness."""

import numpy as np
import pytest
import torch

from specscale.sim.atmosphere import SyntheticAtmosphere
from specscale.sim.instrument import Instrument, air_to_vacuum
from specscale.sim.linelist import BAND_HEADS
from specscale.sim.numerics import smoothed_median

STARS = torch.tensor(
    [
        [4000.0, 2.0, -0.5, 0.1],
        [4500.0, 3.0, 0.0, 0.0],
        [5000.0, 4.0, -1.0, 0.2],
        [5800.0, 2.5, -2.0, 0.3],
        [4200.0, 4.5, 0.5, 0.0],
        [3800.0, 1.2, -0.2, 0.4],
    ],
    dtype=torch.float64,
)


@pytest.fixture(scope="module")
def model():
    return SyntheticAtmosphere()


@pytest.fixture(scope="module")
def jac(model):
    return model.jacobian(STARS)


def _ew(wave, f, centre_air, half):
    """Equivalent width (A) in a window against a local pseudo-continuum."""
    c = air_to_vacuum(centre_air)
    s = np.abs(wave - c) < half
    side = (np.abs(wave - c) > half) & (np.abs(wave - c) < half + 3)
    return float(np.sum(1 - f[s] / np.percentile(f[side], 90)) * (wave[1] - wave[0]))


def test_air_to_vacuum_known_line():
    # Ca II 8542.09 A (air) is 8544.44 A in vacuum
    assert air_to_vacuum(8542.09) == pytest.approx(8544.44, abs=0.01)


def test_shapes_and_normalisation(model):
    flux, fmed0 = model.spectrum(STARS)
    assert flux.shape == (len(STARS), Instrument().n_pix)
    assert torch.isfinite(flux).all() and (flux > 0).all()
    # median-normalised (smoothed median: within 2e-3 of the plain median)
    assert torch.allclose(torch.median(flux, -1).values, torch.ones(len(STARS), dtype=flux.dtype), atol=2e-3)
    # f_lambda of an AB=0 star near 8000 A is ~1.7e-9 erg/s/cm^2/A
    assert ((fmed0 > 5e-10) & (fmed0 < 5e-9)).all()


def test_autodiff_jacobian_equals_central_differences(model, jac):
    _, J = jac
    steps = torch.tensor([0.05, 1e-4, 1e-4, 1e-4], dtype=torch.float64)
    for k in range(4):
        d = torch.zeros_like(STARS)
        d[:, k] = steps[k]
        fd = (model.flux(STARS + d) - model.flux(STARS - d)) / (2 * steps[k])
        scale = J[:, :, k].abs().max()
        assert (fd - J[:, :, k]).abs().max() < 1e-5 * scale, f"parameter {k}"


def test_fast_jacobian_equals_whole_simulator_forward_mode(model, jac):
    """The default Jacobian (autodiff through the laws, chain rule written out through the
    fine-grid stages) is the same derivative as forward-mode AD through the whole simulator."""
    flux, J = jac
    flux_ad, J_ad = model.jacobian(STARS, method="forward_ad")
    assert torch.allclose(flux, flux_ad, rtol=0, atol=1e-13)
    for k in range(4):
        scale = J_ad[:, :, k].abs().max()
        assert (J[:, :, k] - J_ad[:, :, k]).abs().max() < 1e-11 * scale, f"parameter {k}"
    with pytest.raises(ValueError, match="unknown Jacobian method"):
        model.jacobian(STARS, method="reverse")


def test_smooth_median_has_no_kinks():
    # the smoothed median's derivative changes continuously when pixels swap order
    x = torch.linspace(0.9, 1.1, 101, dtype=torch.float64)
    t = torch.linspace(-1e-3, 1e-3, 41, dtype=torch.float64, requires_grad=True)
    grads = []
    for ti in t:
        y = x.clone()
        y[50] = y[50] + ti  # the median pixel crosses its neighbours
        y = y.detach().requires_grad_(True)
        smoothed_median(y, 0.005).backward()
        grads.append(y.grad[50].item())
    assert np.max(np.abs(np.diff(grads))) < 0.01


def _feature_masks(wave):
    def win(c, lo, hi):
        c = air_to_vacuum(c)
        return (np.abs(wave - c) >= lo) & (np.abs(wave - c) < hi)

    na = win(8183.26, 0, 6) | win(8194.82, 0, 6)
    cat = win(8498.02, 0, 15) | win(8542.09, 0, 15) | win(8662.14, 0, 15)
    mg = win(8806.76, 0, 8)
    bands = np.zeros_like(na)
    for _, head, _, _length in BAND_HEADS:
        h = air_to_vacuum(head)
        bands |= (wave > h - 2) & (wave < h + 20)
    return na | cat | mg, bands


def test_dflux_dlogg_concentrates_in_gravity_features(model, jac):
    _, J = jac
    lines, bands = _feature_masks(model.instrument.wave)
    for b in range(len(STARS)):
        e = J[b, :, 1].numpy() ** 2
        if STARS[b, 0] >= 4000:
            # Ca II / Na I / Mg I windows (7% of the pixels) hold far more than their share
            assert e[lines].sum() / e.sum() > 2.5 * lines.mean(), STARS[b].tolist()
        else:
            # in M-type stars the molecular band heads join them
            feat = lines | bands
            assert e[feat].sum() / e.sum() > 1.4 * feat.mean(), STARS[b].tolist()
    # for the warm stars (no molecules, weak CN) nearly all of it is in the strong lines
    for b in (2, 3):
        e = J[b, :, 1].numpy() ** 2
        assert e[lines].sum() / e.sum() > 0.8


def test_gravity_moves_features_in_the_physical_direction(model):
    wave = model.instrument.wave

    def spec(teff, logg):
        return model.flux(torch.tensor([[teff, logg, 0.0, 0.0]], dtype=torch.float64))[0].numpy()

    for teff in (4000.0, 4800.0):
        giant, subgiant, dwarf = spec(teff, 1.5), spec(teff, 3.0), spec(teff, 4.8)
        # Na I 8183/8195: a dwarf/giant discriminator, much stronger in dwarfs
        na = lambda f: _ew(wave, f, 8183.26, 4) + _ew(wave, f, 8194.82, 4)
        assert na(dwarf) > 1.2 * na(subgiant)
        # Ca II triplet: stronger in giants (sum of the three lines)
        cat = lambda f: _ew(wave, f, 8498.02, 12) + _ew(wave, f, 8542.09, 15) + _ew(wave, f, 8662.14, 15)
        assert cat(giant) > cat(dwarf)
        # ... while its pressure-broadened wings (3-12 A from the core) are deeper in dwarfs
        c = air_to_vacuum(8542.09)
        wing = (np.abs(wave - c) > 3) & (np.abs(wave - c) < 12)
        assert dwarf[wing].mean() < giant[wing].mean()
        # Mg I 8807 wings: stronger in dwarfs
        assert _ew(wave, dwarf, 8806.76, 6) > _ew(wave, subgiant, 8806.76, 6)


def test_molecules_and_paschen_switch_on_where_they_should(model):
    wave = model.instrument.wave
    spec = lambda *p: model.flux(torch.tensor([p], dtype=torch.float64))[0].numpy()
    tio = (wave > air_to_vacuum(7054.0)) & (wave < air_to_vacuum(7120.0))
    ref = (wave > 7400) & (wave < 7500)
    depth = lambda f: 1 - f[tio].mean() / f[ref].mean()
    assert depth(spec(3750.0, 4.5, 0.0, 0.0)) > depth(spec(4500.0, 4.5, 0.0, 0.0)) + 0.2
    # Paschen P16 (8502.5 A) only in warm stars
    p16 = np.abs(wave - air_to_vacuum(8502.48)) < 1.0
    side = (np.abs(wave - air_to_vacuum(8502.48)) > 1.5) & (np.abs(wave - air_to_vacuum(8502.48)) < 2.5)
    strength = lambda f: f[side].mean() - f[p16].mean()
    assert strength(spec(6000.0, 4.0, -2.0, 0.0)) > strength(spec(4500.0, 4.0, -2.0, 0.0)) + 0.02


def test_metallicity_strengthens_lines(model):
    spec = lambda mh: model.flux(torch.tensor([[4800.0, 3.0, mh, 0.0]], dtype=torch.float64))[0].numpy()
    assert np.std(spec(0.5)) > np.std(spec(-2.0))
