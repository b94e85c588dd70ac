"""The Fisher ceiling: exact Jacobians, closed forms, bound ordering, noise scaling, the cell and
curve files, the real-file (finite-difference) path and honest failures."""

import json
import math

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from specscale.ceiling.bounds import conditional_crlb, fisher_matrix, marginal_crlb, sigma_unit
from specscale.ceiling.chunks import chunk_information
from specscale.ceiling.configs import FisherConfig
from specscale.ceiling.fisher import cell_ceiling, fisher_curves, magnitude_for_snr
from specscale.ceiling.jacobians import SimulatorJacobian, forward_jacobian
from specscale.cli import main
from specscale.core.config import ConfigError
from specscale.core.vocab import ALPHA, SNR_EDGES
from specscale.data.simulate import SimulationConfig, simulate
from specscale.data.simulator import simulator_of
from specscale.data.sources import DataError, open_source
from specscale.models.metrics import top_snr_mask
from specscale.sim.atmosphere import AtmosphereConfig, SyntheticAtmosphere

N_TEST = 60


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("fisher") / "small.h5"
    simulate(path, SimulationConfig(n_train=20, n_val=5, n_test=N_TEST, seed=3, device="cpu"), progress=False)
    return path


@pytest.fixture(scope="module")
def source(data):
    return open_source(data)


@pytest.fixture(scope="module")
def cell(source):
    return cell_ceiling(source, 1.0, "21.5")


def test_autodiff_fisher_equals_central_differences(source):
    rows = np.arange(4)
    b = source.noiseless("test", rows, "21")
    jac = SimulatorJacobian(source, FisherConfig())("test", rows, b.flux)
    model = simulator_of(source)
    theta = torch.as_tensor(b.labels, dtype=torch.float64)
    steps = np.array([0.5, 1e-3, 1e-3, 1e-3])
    cd = np.empty_like(jac)
    with torch.no_grad():
        for k in range(4):
            d = torch.zeros_like(theta)
            d[:, k] = steps[k]
            cd[..., k] = ((model.flux(theta + d) - model.flux(theta - d)) / (2 * steps[k])).numpy()
    sig = sigma_unit(b)
    i_ad, i_cd = fisher_matrix(jac, sig), fisher_matrix(cd, sig)
    scale = np.sqrt(np.einsum("nii->ni", i_ad))
    rel = (i_ad - i_cd) / (scale[:, :, None] * scale[:, None, :])
    assert np.abs(rel).max() < 1e-4
    np.testing.assert_allclose(marginal_crlb(i_ad), marginal_crlb(i_cd), rtol=1e-3)


def test_single_gaussian_line_crlb_matches_closed_form():
    """f(x) = 1 - A exp(-x^2 / 2 s^2), white noise sigma, pixels of width dx: with
    g = exp(-x^2/2s^2), I = [[sqrt(pi) s, A sqrt(pi)/2], [A sqrt(pi)/2, 3 sqrt(pi) A^2 / (4 s)]] / (sigma^2 dx),
    so CRLB(A) = 3 sigma^2 dx / (2 sqrt(pi) s) with s unknown and sigma^2 dx / (sqrt(pi) s) with s known."""
    dx, sigma, amp, s = 0.01, 0.02, 0.3, 0.7
    x = torch.arange(-15.0, 15.0, dx, dtype=torch.float64)

    def line(theta):
        a, w = theta[..., :1], theta[..., 1:]
        return 1 - a * torch.exp(-(x**2) / (2 * w**2))

    flux, jac = forward_jacobian(line, torch.tensor([[amp, s]], dtype=torch.float64))
    info = fisher_matrix(jac.numpy(), np.full(flux.shape, sigma))
    rp = math.sqrt(math.pi)
    exact = np.array([[rp * s, amp * rp / 2], [amp * rp / 2, 3 * rp * amp**2 / (4 * s)]]) / (sigma**2 * dx)
    np.testing.assert_allclose(info[0], exact, rtol=1e-9)
    assert marginal_crlb(info, index=0)[0] == pytest.approx(3 * sigma**2 * dx / (2 * rp * s), rel=1e-9)
    assert conditional_crlb(info, index=0)[0] == pytest.approx(sigma**2 * dx / (rp * s), rel=1e-9)
    assert marginal_crlb(info, index=0, known=(1,))[0] == pytest.approx(sigma**2 * dx / (rp * s), rel=1e-9)


def test_schur_bound_is_at_least_the_conditional_bound(cell):
    m4, m3, c = cell.crlb_marginal.values, cell.crlb_marginal_3d.values, cell.crlb_conditional.values
    assert np.all(m4 >= m3 * (1 - 1e-9)) and np.all(m3 >= c * (1 - 1e-9))
    assert np.mean(m4 > 1.01 * c) > 0.9  # the nuisance parameters do cost information
    assert 0 < float(cell.info_ratio_marginal_conditional) < float(cell.info_ratio_marginal_conditional_3d) <= 1


def test_doubling_noise_multiplies_crlb_by_four(source, cell):
    twice = cell_ceiling(source, 2.0, "21.5")
    for name in ("crlb_marginal", "crlb_marginal_3d", "crlb_conditional"):
        np.testing.assert_allclose(twice[name].values, 4 * cell[name].values, rtol=1e-12)
    np.testing.assert_allclose(twice.snr.values, cell.snr.values / 2, rtol=1e-12)
    assert float(twice.ceiling_pop) < float(cell.ceiling_pop)


def test_cell_uses_the_model_cells_stars_and_sigma(source, cell):
    obs = source.observed("test", np.arange(N_TEST), "21.5", 1.0)
    np.testing.assert_allclose(cell.snr.values, obs.snr, rtol=1e-5)
    np.testing.assert_array_equal(cell.logg.values, obs.labels[:, 1])
    # the same bounds straight from Observed.sigma
    jac = SimulatorJacobian(source, FisherConfig())("test", obs.rows, source.noiseless("test", obs.rows, "21.5").flux)
    np.testing.assert_allclose(
        cell.crlb_marginal.values, marginal_crlb(fisher_matrix(jac, obs.sigma.astype(np.float64))), rtol=1e-5
    )


def test_cell_dataset_contents_and_definitions(cell):
    vp = 16 / 12
    c = cell.crlb_marginal.values
    assert float(cell.var_prior) == pytest.approx(vp)
    assert float(cell.ceiling_pop) == pytest.approx(1 - np.mean(np.minimum(c, vp)) / vp)
    assert float(cell.ceiling_median) == pytest.approx(np.median(1 - np.minimum(c, vp) / vp))
    top = top_snr_mask(cell.snr.values)
    assert float(cell.ceiling_pop_top20) == pytest.approx(1 - np.mean(np.minimum(c[top], vp)) / vp)
    assert float(cell.ceiling_median_3d) >= float(cell.ceiling_median)
    np.testing.assert_allclose(cell.sigma_min.values, np.sqrt(c))
    assert float(cell.sigma_min_p5) <= float(cell.sigma_min_p50) <= float(cell.sigma_min_p95)
    assert list(cell.snr_bin_lo.values) == list(SNR_EDGES[:-1])
    assert int(cell.n_snr_bin.sum()) == N_TEST
    filled = cell.n_snr_bin.values > 0
    assert (
        np.isfinite(cell.ceiling_pop_snr_bin.values[filled]).all()
        and np.isnan(cell.ceiling_pop_snr_bin.values[~filled]).all()
    )
    assert cell.sizes["star"] == N_TEST and cell.attrs["mag"] == "21.5" and cell.attrs["noise"] == 1.0
    prov = json.loads(cell.attrs["provenance"])
    assert prov["dataset_id"] and prov["code_version"] and "jacobian" in prov
    assert "ceiling_pop" in json.loads(cell.attrs["definitions"])
    assert 0 <= float(cell.ceiling_pop) <= float(cell.ceiling_median) <= 1


def test_curves_reuse_the_jacobian_and_agree_with_cells(source):
    curves = fisher_curves(source, [1.0, 2.0], [20.0, 22.0], n_stars=30)
    assert curves.ceiling_pop.dims == ("noise", "mag") and curves.ceiling_pop_snr_bin.dims == (
        "noise",
        "mag",
        "snr_bin",
    )
    one = cell_ceiling(source, 2.0, "22", n_stars=30)
    for name in (
        "ceiling_pop",
        "ceiling_median",
        "ceiling_pop_3d",
        "ceiling_median_top20",
        "info_ratio_marginal_conditional",
    ):
        assert float(curves[name].sel(noise=2.0, mag=22.0)) == pytest.approx(float(one[name]), rel=1e-12)
    assert (curves.ceiling_pop.sel(mag=20.0) > curves.ceiling_pop.sel(mag=22.0)).all()


def test_magnitude_for_snr_matches_the_target(source):
    mag = magnitude_for_snr(source, 6.0)
    b = source.noiseless("test", np.arange(N_TEST), f"{mag}")
    snr = np.linalg.norm(b.flux, axis=1) / np.linalg.norm(sigma_unit(b), axis=1)
    assert np.median(snr) == pytest.approx(6.0, rel=2e-3)


def test_wrong_simulator_version_fails_loudly(source, tmp_path):
    other = tmp_path / "other.h5"
    simulate(
        other,
        SimulationConfig(n_train=2, n_val=2, n_test=4, seed=3, device="cpu"),
        atm=AtmosphereConfig(gravity_scale=0.5),
        progress=False,
    )
    src = open_source(other)
    src.config["atmosphere"]["gravity_scale"] = 1.0  # what a file from another simulator looks like
    with pytest.raises(DataError, match="does not reproduce the stored flux of test row"):
        cell_ceiling(src, 1.0, "21")


def _write_study(path, flux, err, labels, mag):
    with h5py.File(path, "w") as f:
        f["spectrumdataset/wave"] = np.linspace(7100, 8850, flux.shape[1])
        f["dataset/arrays/flux/value"] = flux
        f["dataset/arrays/error/value"] = err
    pd.DataFrame(
        {
            "T_eff": labels[:, 0],
            "log_g": labels[:, 1],
            "M_H": labels[:, 2],
            "a_M": labels[:, 3],
            "mag": np.full(len(labels), mag),
        }
    ).to_hdf(path, key="dataset/params", mode="a", format="table")


def test_real_file_source_uses_finite_differences_along_the_grid(source, tmp_path):
    """A study-format file whose training set holds the +-h grid neighbours of each test star
    ([alpha/M] fixed, as in the study): the local-linear Jacobian is the central difference and
    the 3D bound matches the autodiff one. Version 1's spectra: the comparison with autodiff goes
    through the plain median's derivative (two middle pixels), which version 2's denser saturated
    lines make jump more within +-h; the finite-difference path itself is simulator-blind."""
    model = SyntheticAtmosphere(AtmosphereConfig())
    test = np.array([[4300.0, 2.0, -0.5, 0.0], [5200.0, 4.2, -1.2, 0.0], [4800.0, 3.0, 0.2, 0.0]])
    h = np.array([1.0, 0.002, 0.002, 0.0])
    grid = [t + s * h[k] * np.eye(4)[k] for t in test for k in range(3) for s in (-1, 1)]
    grid = np.array(grid)
    with torch.no_grad():
        f_test = model.flux(torch.as_tensor(test)).numpy()
        f_grid = model.flux(torch.as_tensor(grid)).numpy()
    err = 0.01 * np.ones_like(f_test)
    _write_study(tmp_path / "test.h5", f_test, err, test, 21.0)
    _write_study(tmp_path / "val.h5", f_test, err, test, 21.0)
    _write_study(tmp_path / "train.h5", f_grid, 0.01 * np.ones_like(f_grid), grid, 21.0)
    (tmp_path / "study.yaml").write_text("format: pfs-study\ntrain: train.h5\nval: val.h5\ntest: test.h5\n")
    study = open_source(tmp_path / "study.yaml")
    ds = cell_ceiling(study, 1.0, "21", config=FisherConfig(neighbours=6))
    assert "finite differences" in ds.attrs["jacobian_method"]
    # the study reader divides by the plain median: central differences of f / median(f)
    norm = lambda f: f / np.median(f, axis=1, keepdims=True)
    fg = norm(f_grid).reshape(len(test), 3, 2, -1)
    cd = np.zeros(f_test.shape + (4,))
    cd[..., :3] = ((fg[:, :, 1] - fg[:, :, 0]) / (2 * h[:3, None])).transpose(0, 2, 1)
    sig = err / np.median(f_test, axis=1, keepdims=True)
    np.testing.assert_allclose(
        ds.crlb_marginal_3d.values, marginal_crlb(fisher_matrix(cd, sig), known=(ALPHA,)), rtol=1e-3
    )
    # and the autodiff bound of f / median(f) (through the two middle pixels), up to the plain
    # median's jumps: within +-h many pixels near the median swap places
    with torch.no_grad():
        _, jac = model.jacobian(torch.as_tensor(test))
    jac, med = jac.numpy(), np.median(f_test, axis=1)[:, None]
    mid = np.argsort(f_test, axis=1)[:, 2047:2049]
    dmed = np.stack([jac[i, mid[i]].mean(0) for i in range(len(test))])[:, None, :]
    jac = jac / med[..., None] - f_test[..., None] * dmed / med[..., None] ** 2
    np.testing.assert_allclose(
        ds.crlb_marginal_3d.values, marginal_crlb(fisher_matrix(jac, sig), known=(ALPHA,)), rtol=0.1
    )
    # [alpha/M] does not vary in the file: it is known, 4D = 3D
    np.testing.assert_allclose(ds.crlb_marginal.values, ds.crlb_marginal_3d.values, rtol=1e-9)


def test_cli_writes_the_cell_and_rejects_bad_input_before_work(data, tmp_path, capsys):
    out = tmp_path / "cell.nc"
    assert (
        main(["fisher", "--data", str(data), "--noise", "1", "--mag", "20.5-22.5", "--stars", "12", "--out", str(out)])
        == 0
    )
    ds = xr.open_dataset(out, engine="h5netcdf")
    assert ds.sizes["star"] == 12 and ds.attrs["mag"] == "20.5-22.5" and "ceiling_pop" in ds
    assert not list(tmp_path.glob("*.tmp-*"))
    bad = tmp_path / "bad.nc"
    for args in (
        ["--noise", "1", "--mag", "40"],
        ["--noise", "-1", "--mag", "21"],
        ["--noise", "1", "--mag", "21", "--stars", "999"],
    ):
        assert main(["fisher", "--data", str(data), *args, "--out", str(bad)]) == 2
        assert not bad.exists()
    assert "outside the data" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("fisher:\n  batchsize: 3\n")
    assert (
        main(["fisher", "--data", str(data), "--noise", "1", "--mag", "21", "--config", str(cfg), "--out", str(bad)])
        == 2
    )
    assert "fisher.batchsize" in capsys.readouterr().err
    curves = tmp_path / "curves.nc"
    assert (
        main(
            [
                "fisher-curves",
                "--data",
                str(data),
                "--noise",
                "1,2",
                "--mag",
                "20:21:0.5",
                "--stars",
                "8",
                "--out",
                str(curves),
            ]
        )
        == 0
    )
    c = xr.open_dataset(curves, engine="h5netcdf")
    assert list(c.mag.values) == [20.0, 20.5, 21.0] and list(c.noise.values) == [1.0, 2.0]
    # the study's observing setup on the same stars, matched by S/N instead of magnitude
    obs = tmp_path / "study.yaml"
    obs.write_text("observation:\n  n_exposures: 4\n  seeing_arcsec: [1.0, 1.0]\n")
    matched = tmp_path / "matched.nc"
    assert (
        main(
            [
                "fisher",
                "--data",
                str(data),
                "--noise",
                "1",
                "--snr",
                "5",
                "--stars",
                "10",
                "--observation",
                str(obs),
                "--out",
                str(matched),
            ]
        )
        == 0
    )
    m = xr.open_dataset(matched, engine="h5netcdf")
    assert float(m.snr_median) == pytest.approx(5.0, rel=2e-3) and m.attrs["snr_target"] == 5.0
    assert json.loads(m.attrs["provenance"])["observation"]["n_exposures"] == 4


def test_window_ceiling_is_at_most_the_full_spectrum(source, cell):
    win = cell_ceiling(source, 1.0, "21.5", window="ca_triplet")
    # per star: fewer pixels, never more information; the same stars and full-spectrum S/N
    assert np.all(win.crlb_marginal.values >= cell.crlb_marginal.values * (1 - 1e-9))
    assert np.all(win.crlb_conditional.values >= cell.crlb_conditional.values * (1 - 1e-9))
    assert float(win.ceiling_pop) <= float(cell.ceiling_pop) and float(win.ceiling_median) <= float(cell.ceiling_median)
    np.testing.assert_array_equal(win.snr.values, cell.snr.values)
    assert win.attrs["window"] == '"ca_triplet"' and 0 < win.attrs["n_pixels"] < source.wave.size
    assert cell.attrs["window"] == "full" and cell.attrs["n_pixels"] == source.wave.size
    # a union with an explicit range holds more, "full" is every pixel
    more = cell_ceiling(source, 1.0, "21.5", window=["ca_triplet", [8790.0, 8830.0]])
    assert np.all(more.crlb_marginal.values <= win.crlb_marginal.values * (1 + 1e-9))
    full = cell_ceiling(source, 1.0, "21.5", window="full")
    np.testing.assert_allclose(full.crlb_marginal.values, cell.crlb_marginal.values, rtol=1e-12)
    with pytest.raises(ConfigError, match="unknown window"):
        cell_ceiling(source, 1.0, "21.5", window="ca_triplett")
    curves = fisher_curves(source, [1.0], [21.5], config=FisherConfig(), window="ca_triplet")
    assert float(curves.ceiling_pop.squeeze()) == pytest.approx(float(win.ceiling_pop), rel=1e-9)


def test_information_per_chunk(source, cell, data, tmp_path):
    ds = chunk_information(source, 1.0, "21.5", chunk=500)  # 9 chunks, the last one shorter
    n_pix = source.wave.size
    assert ds.sizes["chunk"] == 9 and int(ds.pixel_stop[-1]) == n_pix and int(ds.pixel_start[-1]) == 4000
    assert float(ds.ceiling_pop_full) == pytest.approx(float(cell.ceiling_pop), rel=1e-9)
    # removing a chunk never adds information; a chunk alone never beats the whole spectrum
    assert (ds.loss_logg.values >= -1e-12).all() and (ds.info_logg_loss_fraction.values >= -1e-9).all()
    assert (ds.ceiling_pop_alone.values <= float(ds.ceiling_pop_full) + 1e-12).all()
    assert (ds.info_logg.values <= float(ds.info_logg_full) * (1 + 1e-9)).all()
    np.testing.assert_allclose(ds.ceiling_pop_full - ds.ceiling_pop_without, ds.loss_logg, atol=1e-12)
    # contiguous chunk edges, vacuum Angstrom, units and meanings in the attributes
    np.testing.assert_allclose(ds.wave_hi.values[:-1], ds.wave_lo.values[1:])
    assert ds.wave_lo[0] < source.wave[0] < source.wave[-1] < ds.wave_hi[-1]
    assert ds.info_logg.attrs["units"] == "dex^-2" and "chunk alone" in ds.info_logg.attrs["long_name"]
    assert ds.loss_logg.attrs["units"] == "1 (R^2)" and ds.attrs["wavelength_frame"] == "vacuum"
    # the conditional information is additive over chunks: with one chunk it is the whole
    one = chunk_information(source, 1.0, "21.5", n_stars=5, chunk=n_pix)
    np.testing.assert_allclose(
        one.info_logg_conditional.values[0], np.median(1 / cell.crlb_conditional.values[:5]), rtol=1e-9
    )
    out = tmp_path / "chunks.nc"
    args = ["fisher-chunks", "--data", str(data), "--noise", "1", "--mag", "21.5", "--stars", "6", "--chunk", "1024"]
    assert main([*args, "--out", str(out)]) == 0
    with xr.open_dataset(out, engine="h5netcdf") as f:
        assert f.sizes["chunk"] == 4 and f.attrs["n_stars"] == 6
    assert main([*args[:-1], "0", "--out", str(tmp_path / "x.nc")]) == 2
    assert main([*args[:4], "0", *args[5:], "--out", str(tmp_path / "x.nc")]) == 2
    assert not (tmp_path / "x.nc").exists()


def test_cli_window_option(data, tmp_path):
    out = tmp_path / "win.nc"
    base = ["fisher", "--data", str(data), "--noise", "1", "--mag", "21.5", "--stars", "6"]
    assert main([*base, "--window", '["mg_8807", [8490, 8510]]', "--out", str(out)]) == 0
    with xr.open_dataset(out, engine="h5netcdf") as f:
        assert json.loads(f.attrs["window"]) == ["mg_8807", [8490, 8510]] and f.attrs["n_pixels"] < 4096
    for bad in ("nope", "[8490, 8510", "[[9000, 9100]]"):
        assert main([*base, "--window", bad, "--out", str(tmp_path / "x.nc")]) == 2
    assert not (tmp_path / "x.nc").exists()
