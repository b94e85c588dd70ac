"""The emulated source (``atmosphere: {version: emulated[, path]}``): the emulator file's format
and its checks, the source's Jacobian against finite differences (the Fisher ceiling within 1%),
a dataset through ``specscale simulate`` that the references rebuild, and bad inputs. A small
random emulator written here stands in for a trained one where the test is about the machinery;
the shipped emulator is tested where it is about what ships."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import yaml

from specscale.ceiling.bounds import fisher_matrix, marginal_crlb
from specscale.cli import main
from specscale.core.config import ConfigError
from specscale.core.vocab import LABELS, PRIORS
from specscale.data.simulator import simulator_of
from specscale.data.sources import open_source
from specscale.sim.atmosphere_emulated import EmulatedAtmosphere, EmulatedAtmosphereConfig, shipped_emulator
from specscale.sim.emulator import EmulatorFileError, read_emulator, write_emulator
from specscale.sim.instrument import Instrument
from specscale.sim.versions import atmosphere_config, make_atmosphere, simulator_version

BOX = np.array([PRIORS["lowT"][k] for k in LABELS])
LN_FMED0 = -20.0  # ln erg s^-1 cm^-2 A^-1 at AB 0: the order of a K star's


def random_layers(seed=0, hidden=16, n_out=4097):
    rng = np.random.default_rng(seed)
    sizes = [4, hidden, hidden, n_out]
    weights = [rng.normal(0, 1 / np.sqrt(a), (b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(0, 0.1, b) for b in sizes[1:]]
    return weights, biases


def write_random(path, seed=0, **change):
    weights, biases = random_layers(seed)
    y_mean = np.r_[np.ones(4096), LN_FMED0]
    y_scale = np.r_[np.full(4096, 0.02), 0.1]
    args = dict(x_lo=BOX[:, 0], x_hi=BOX[:, 1], y_mean=y_mean, y_scale=y_scale, wave=Instrument().wave)
    args.update(change)
    return write_emulator(path, weights, biases, provenance={"what": "a random test emulator"}, **args)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    path = tmp_path_factory.mktemp("emu") / "emu.npz"
    write_random(path)
    return path


def test_file_round_trip_and_no_pickle(emulator):
    e = read_emulator(emulator)
    assert [w.shape for w in e.weights] == [(16, 4), (16, 16), (4097, 16)]
    assert e.n_pix == 4096 and e.provenance == {"what": "a random test emulator"} and len(e.sha256) == 64
    with np.load(emulator, allow_pickle=False) as z:  # plain arrays only
        assert all(z[k].dtype != object for k in z.files)


def test_bad_emulator_files_are_refused(tmp_path, emulator):
    with pytest.raises(EmulatorFileError, match="does not exist"):
        read_emulator(tmp_path / "missing.npz")
    with np.load(emulator) as z:
        arrays = dict(z)
    bad = dict(arrays, w1=arrays["w1"].copy())
    bad["w1"][3, 2] = np.nan
    np.savez(tmp_path / "nan.npz", **bad)
    with pytest.raises(EmulatorFileError, match=r"nan.npz: key 'w1' must hold finite floats"):
        read_emulator(tmp_path / "nan.npz")
    np.savez(tmp_path / "nokey.npz", **{k: v for k, v in arrays.items() if k != "y_scale"})
    with pytest.raises(EmulatorFileError, match=r"nokey.npz: missing key\(s\) \['y_scale'\]"):
        read_emulator(tmp_path / "nokey.npz")
    np.savez(tmp_path / "shape.npz", **dict(arrays, wave=arrays["wave"][:-1]))
    with pytest.raises(EmulatorFileError, match=r"key 'wave' has shape \(4095,\), not \(4096,\)"):
        read_emulator(tmp_path / "shape.npz")
    np.savez(tmp_path / "pickle.npz", **dict(arrays, provenance=np.array([{"a": 1}], dtype=object)))
    with pytest.raises(EmulatorFileError, match=r"not a readable \.npz of plain arrays"):
        read_emulator(tmp_path / "pickle.npz")
    with pytest.raises(EmulatorFileError, match="x_hi must exceed x_lo"):
        write_random(tmp_path / "box.npz", x_hi=BOX[:, 0])
    assert not (tmp_path / "box.npz").exists()  # a refused file is never left behind


def test_config_selects_the_source_and_names_bad_keys(emulator, tmp_path):
    atm = atmosphere_config({"version": "emulated", "path": str(emulator)}, default_version=2)
    assert isinstance(atm, EmulatedAtmosphereConfig) and simulator_version(atm) == "emulated"
    assert isinstance(make_atmosphere(atm), EmulatedAtmosphere)
    with pytest.raises(ConfigError, match=r"atmosphere.wave_min"):
        atmosphere_config({"version": "emulated", "wave_min": 6000}, default_version=2)
    with pytest.raises(ConfigError, match=r"atmosphere.path='nowhere.npz': no emulator file there"):
        make_atmosphere(atmosphere_config({"version": "emulated", "path": "nowhere.npz"}))
    (tmp_path / "junk.npz").write_text("not an npz")
    with pytest.raises(ConfigError, match=r"atmosphere.path: emulator file .*junk.npz: not a readable \.npz"):
        make_atmosphere(atmosphere_config({"version": "emulated", "path": str(tmp_path / "junk.npz")}))
    write_random(tmp_path / "shifted.npz", wave=Instrument().wave + 1.0)
    with pytest.raises(ConfigError, match="is for other pixels"):
        make_atmosphere(atmosphere_config({"version": "emulated", "path": str(tmp_path / "shifted.npz")}))


def test_labels_outside_the_box_are_refused(emulator):
    model = EmulatedAtmosphere(EmulatedAtmosphereConfig(path=str(emulator)))
    with pytest.raises(ConfigError, match=r"teff 3000..6000 K leaves the box the emulator emu.npz"):
        model.check_prior(dict(PRIORS["lowT"], teff=(3000.0, 6000.0)), "simulation.prior")
    with pytest.raises(ValueError, match=r"logg 0.5..0.5 leaves the emulator's box"):
        model.flux(torch.tensor([[5000.0, 0.5, 0.0, 0.0]]))


def test_jacobian_is_the_networks_derivative_and_the_ceiling_matches_finite_differences(emulator):
    """Forward-mode autodiff against central differences (float64): the per-pixel derivatives,
    and the marginal Cramer-Rao bound of log g built from them within 1% (the issue's test)."""
    model = EmulatedAtmosphere(EmulatedAtmosphereConfig(path=str(emulator)))
    theta = torch.tensor([[4300.0, 2.0, -1.7, 0.1], [5400.0, 4.0, 0.0, 0.3]], dtype=torch.float64)
    flux, jac = model.jacobian(theta)
    assert jac.shape == (2, 4096, 4) and torch.allclose(flux, model.flux(theta))
    steps = torch.tensor([1.0, 1e-3, 1e-3, 1e-3], dtype=torch.float64)
    fd = []
    for k in range(4):
        up, down = theta.clone(), theta.clone()
        up[:, k] += steps[k]
        down[:, k] -= steps[k]
        fd.append((model.flux(up) - model.flux(down)) / (2 * steps[k]))
    fd = torch.stack(fd, -1)
    assert torch.allclose(jac, fd, rtol=1e-5, atol=1e-9)
    sigma = np.full((2, 4096), 0.05)
    crlb_ad = marginal_crlb(fisher_matrix(jac.numpy(), sigma))
    crlb_fd = marginal_crlb(fisher_matrix(fd.numpy(), sigma))
    np.testing.assert_allclose(crlb_ad, crlb_fd, rtol=0.01)


def test_a_dataset_through_specscale_simulate(emulator, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"atmosphere": {"version": "emulated", "path": str(emulator)}}))
    outs = []
    for name in ("a.h5", "b.h5"):
        out = tmp_path / name
        argv = ["simulate", "--config", str(config), "--out", str(out), "--no-progress", "--device", "cpu"]
        assert main([*argv, "--n-train", "64", "--n-val", "16", "--n-test", "32"]) == 0
        outs.append(out)
    with h5py.File(outs[0]) as a, h5py.File(outs[1]) as b:
        assert a.attrs["simulator_version"].startswith("emulated+")
        assert a.attrs["emulator_sha256"] == read_emulator(emulator).sha256
        assert a.attrs["content_hash"] == b.attrs["content_hash"]  # deterministic
        labels, flux = a["test/labels"][()], a["test/flux"][()]
    model = simulator_of(open_source(outs[0]))  # the references rebuild it from the stored config
    assert isinstance(model, EmulatedAtmosphere)
    with torch.no_grad():
        again, _ = model.jacobian(torch.as_tensor(labels[:8], dtype=torch.float64))
    assert np.abs(again.numpy() - flux[:8]).max() < 1e-5


def test_the_shipped_emulator_loads_and_covers_the_prior():
    """What ships: plain arrays, the provenance of the spectra it learnt from, the lowT box,
    smooth spectra around 1 (median-normalised) with lines, and a finite Jacobian."""
    path = shipped_emulator()
    e = read_emulator(path)
    for key in ("codes", "line_list", "labels", "held_out_accuracy"):
        assert key in e.provenance, key
    model = EmulatedAtmosphere()
    model.check_prior(PRIORS["lowT"], "simulation.prior")
    theta = torch.tensor([[3800.0, 1.2, -2.4, -0.2], [5900.0, 4.9, 0.7, 0.45]], dtype=torch.float64)
    flux, jac = model.jacobian(theta)
    assert torch.isfinite(flux).all() and torch.isfinite(jac).all()
    assert (flux.median(1).values - 1).abs().max() < 0.02 and flux.min() < 0.8
