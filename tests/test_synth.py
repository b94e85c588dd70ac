"""The synthesis stage (specscale.synth): label draws, chunk files, the emulator fit and its npz
format, the GES line-list reader, config errors; one slow test runs real SME (pysme) when the
`synth` extra is installed."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from specscale.core.config import ConfigError
from specscale.synth.chunks import read_chunks, write_chunk
from specscale.synth.config import SynthesisConfig, synthesis_config
from specscale.synth.labels import chunk_labels, draw_labels
from specscale.synth.linelist import read_turbospectrum
from specscale.synth.train import NPZ_KEYS, fit, predict, residual_stats, targets, write_emulator


def analytic_fine_flux(config, theta):
    """A smooth f_lambda on the fine grid: Planck-like slope by Teff, a Gaussian line whose depth
    follows log g and [M/H] (no pysme needed)."""
    from specscale.synth.synthesize import stages

    wave = stages(config).fine_wave
    teff, logg, mh, am = theta
    cont = wave ** (-4.0 + teff / 2000.0)
    depth = 0.3 + 0.05 * (logg - 3.0) + 0.05 * mh + 0.02 * am
    line = 1.0 - depth * np.exp(-0.5 * ((wave - 8000.0) / (3.0 + 0.3 * logg)) ** 2)
    return cont * line


def small_config(**kw):
    return SynthesisConfig(n_train=16, n_test=4, chunk_size=4, **kw)


def test_labels_deterministic_inside_prior_and_sets_differ():
    cfg = small_config()
    a, b = draw_labels(cfg, "train"), draw_labels(cfg, "train")
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16, 4)
    box = np.asarray(cfg.box)
    for lab in (a, draw_labels(cfg, "test")):
        assert np.all(lab >= box[:, 0]) and np.all(lab <= box[:, 1])
    test = draw_labels(cfg, "test")
    assert not np.any(np.isclose(test[:, None, 0], a[None, :, 0]))
    np.testing.assert_array_equal(chunk_labels(a, 4, 3), a[12:16])
    with pytest.raises(ValueError, match="chunk index 4"):
        chunk_labels(a, 4, 4)


def test_chunk_atomic_and_skipped_on_rerun(tmp_path, monkeypatch):
    cfg = small_config()
    labels = draw_labels(cfg, "train")[:3]
    out = tmp_path / "chunks" / "train_000.npz"
    assert write_chunk(cfg, labels, out, fine_flux=analytic_fine_flux)
    assert sorted(os.listdir(out.parent)) == ["train_000.npz"]  # no temporary file left
    with np.load(out, allow_pickle=False) as data:
        assert data["flux"].shape == (3, 4096) and data["flux"].dtype == np.float32
        assert np.all(data["ok"]) and np.all(np.isfinite(data["ln_fmed0"]))
        np.testing.assert_allclose(np.median(data["flux"], axis=1), 1.0, atol=0.02)
    mtime = out.stat().st_mtime_ns
    calls = []
    assert not write_chunk(cfg, labels, out, fine_flux=lambda c, t: calls.append(t))
    assert calls == [] and out.stat().st_mtime_ns == mtime

    # a failure while writing leaves neither the chunk nor a temporary file
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    other = tmp_path / "chunks" / "train_001.npz"
    with pytest.raises(OSError, match="disk full"):
        write_chunk(cfg, labels, other, fine_flux=analytic_fine_flux)
    assert sorted(os.listdir(out.parent)) == ["train_000.npz"]


def test_failed_star_is_a_nan_row_dropped_on_read(tmp_path):
    cfg = small_config()
    labels = draw_labels(cfg, "train")[:2]

    def half_broken(config, theta):
        if theta[0] == labels[1, 0]:
            raise RuntimeError("SME failed")
        return analytic_fine_flux(config, theta)

    out = tmp_path / "c.npz"
    write_chunk(cfg, labels, out, fine_flux=half_broken)
    data = read_chunks([out])
    assert len(data["labels"]) == 1 and np.all(np.isfinite(data["flux"]))


def test_train_writes_npz_with_exact_format(tmp_path):
    cfg = SynthesisConfig(n_train=64, n_test=8, chunk_size=64, epochs=300, patience=300, hidden=256)
    chunks = []
    for which in ("train", "test"):
        out = tmp_path / f"{which}.npz"
        write_chunk(cfg, draw_labels(cfg, which), out, fine_flux=analytic_fine_flux)
        chunks.append(read_chunks([out]))
    train, test = chunks
    params, summary = fit(cfg, train["labels"], targets(train))
    acc = residual_stats(params, test["labels"], targets(test))
    assert summary["epochs_run"] >= 1 and acc["n_test"] == 8
    wave = np.linspace(7100, 8850, 4096)
    path = write_emulator(params, wave, {"accuracy": acc}, tmp_path / "emu.npz")
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(NPZ_KEYS)
        shapes = {
            "w0": (256, 4), "b0": (256,), "w1": (256, 256), "b1": (256,), "w2": (4097, 256), "b2": (4097,),
            "x_lo": (4,), "x_hi": (4,), "y_mean": (4097,), "y_scale": (4097,), "wave": (4096,), "provenance": (),
        }  # fmt: skip
        for key, shape in shapes.items():
            assert data[key].shape == shape, key
        for key in ("w0", "b0", "w1", "b1", "w2", "b2", "y_mean", "y_scale"):
            assert data[key].dtype == np.float32, key
        for key in ("x_lo", "x_hi", "wave"):
            assert data[key].dtype == np.float64, key
        assert json.loads(str(data["provenance"]))["accuracy"]["n_test"] == 8
        loaded = {k: data[k] for k in data.files}
    # the numpy forward pass written here, from the format's definition, reproduces torch's
    import torch

    from specscale.synth.train import _net

    net = _net(4, 256, 4097)
    with torch.no_grad():
        for k, layer in enumerate(m for m in net if isinstance(m, torch.nn.Linear)):
            layer.weight.copy_(torch.as_tensor(loaded[f"w{k}"]))
            layer.bias.copy_(torch.as_tensor(loaded[f"b{k}"]))
    theta = test["labels"]
    x = (theta - loaded["x_lo"]) / (loaded["x_hi"] - loaded["x_lo"]) - 0.5
    h = x @ loaded["w0"].T.astype(np.float64) + loaded["b0"]
    h = h / (1 + np.exp(-h))
    h = h @ loaded["w1"].T.astype(np.float64) + loaded["b1"]
    h = h / (1 + np.exp(-h))
    mine = loaded["y_mean"] + loaded["y_scale"] * (h @ loaded["w2"].T.astype(np.float64) + loaded["b2"])
    with torch.no_grad():
        z = net(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
    torch_out = loaded["y_mean"] + loaded["y_scale"] * z
    np.testing.assert_allclose(mine, torch_out, atol=2e-4 * np.abs(torch_out).max())
    # and the runtime's forward pass (EmulatorNet, float64), which residual_stats uses, equals it
    np.testing.assert_allclose(predict(loaded, theta), mine, rtol=1e-10, atol=1e-10)


GES_SAMPLE = """\
'  11.000            '    1         2
'Na I    LTE'
  8183.256  2.102  0.237  407.273    4.0  1.00E+08 'p' 'd'   0.0    1.0 'Na I'
  9500.000  2.102  0.237  407.273    4.0  1.00E+08 'p' 'd'   0.0    1.0 'Na I'
'  20.000            '    2         2
'Ca II   LTE'
  8542.091  1.700 -0.463 -7.800    6.0  1.48E+08  -5.50 'p' 'd'   0.0    1.0 'Ca II'
  8498.023  1.692 -1.312    2.500    4.0  1.48E+08  -5.50 'p' 'd'   0.0    1.0 'Ca II'
'  56.138            '    2         1
'Ba II   LTE'
  6496.897  0.604 -0.377  343.254    4.0  1.00E+08 'p' 'd'   0.0    1.0 'Ba II'
'  56.999            '    2         1
'Ba II   LTE'
  6496.000  0.604 -0.377  343.254    4.0  1.00E+08 'p' 'd'   0.0    1.0 'Ba II'
"""


def test_ges_reader(tmp_path):
    path = tmp_path / "ges"
    path.write_text(GES_SAMPLE)
    lines = read_turbospectrum(path, 6400, 9000)
    assert list(lines.species) == ["Ba 2", "Na 1", "Ca 2", "Ca 2"]
    np.testing.assert_allclose(lines.wlcent, [6496.897, 8183.256, 8498.023, 8542.091])
    assert lines.gamvw[1] == 407.273  # ABO sigma.alpha kept packed, as SME takes it
    assert lines.gamvw[3] == -7.8  # log gamma_6 kept
    assert lines.gamvw[2] == 0.0 and lines.n_unsold_factor == 1  # Unsoeld factor -> SME's estimate
    np.testing.assert_allclose(lines.gamqst, [0.0, 0.0, -5.5, -5.5])
    np.testing.assert_allclose(lines.gamrad[1], 8.0)
    np.testing.assert_allclose(lines.gflog[0], -0.377 + np.log10(0.71698))  # 138Ba's solar fraction
    assert lines.n_isotope_skipped == 1  # an isotope without a solar fraction
    nan = tmp_path / "nan"
    nan.write_text(GES_SAMPLE.replace("0.237  407.273", "nan  407.273", 1))
    with pytest.raises(ValueError, match=r"NaN or infinity in gflog of the line at 8183\.256"):
        read_turbospectrum(nan, 6400, 9000)
    bad = tmp_path / "bad"
    bad.write_text("not a line list\n")
    with pytest.raises(ValueError, match="bad:1"):
        read_turbospectrum(bad, 6400, 9000)


H_SAMPLE = """\
'01.000000                 '    1   3
'H I lam(AA) nblo nbup elo(eV)   eup(eV)  loggf     ident      raddamp/from BE 20/11-96'
  6562.797     2    3   10.199   12.088    0.710   'Halpha   ' 5.70E+08
  8750.476     3   12   12.088   13.505   -1.175   'Pa 12    ' 6.31E+08
  9545.969     3    8   12.088   13.386   -0.726   'Pa  8    ' 6.31E+08
"""

# MOOG's ten-character columns: wave, species, excitation, log gf, [C6], D0, free text
MOOG_SAMPLE = (
    "  8000.100 607.01214     0.500    -2.000               7.724          1500Ra0045\n"
    "  8000.200 607.01314     0.500    -2.000               7.724          1500Ra0045\n"
    "  8000.300 822.01646     0.500    -1.000               6.870                PLEZ\n"
    "  8000.400 822.01647     0.500    -1.000               6.870                PLEZ\n"
    "  8000.500 822.01647     3.000    -1.000               6.870                PLEZ\n"
    "  9500.000 822.01647     0.500    -1.000               6.870                PLEZ\n"
)


def test_hydrogen_block_in_turbospectrum_layout(tmp_path):
    path = tmp_path / "Hlinedata"
    path.write_text(H_SAMPLE)
    lines = read_turbospectrum(path, 6400, 9000)
    assert list(lines.species) == ["H 1", "H 1"]  # Pa 8 at 9546 A is outside
    np.testing.assert_allclose(lines.wlcent, [6562.797, 8750.476])
    np.testing.assert_allclose(lines.excit, [10.199, 12.088])  # the lower level's energy, not n
    np.testing.assert_allclose(lines.gflog, [0.710, -1.175])
    np.testing.assert_allclose(lines.gamrad, np.log10([5.70e8, 6.31e8]))
    # SME takes a hydrogen line's principal quantum numbers in the gamqst / gamvw slots
    np.testing.assert_allclose(lines.gamqst, [2, 3])
    np.testing.assert_allclose(lines.gamvw, [3, 12])


def test_moog_molecules_fractions_coverage_and_pruning(tmp_path):
    import gzip

    from specscale.synth.molecules import parse_code, read_moog_molecules

    assert parse_code("607.01214") == ("CN 1", pytest.approx(0.9893 * 0.99636))
    assert parse_code("822.01648") == ("TiO 1", pytest.approx(0.99757 * 0.7372))
    path = tmp_path / "mol.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(MOOG_SAMPLE)
    lines = read_moog_molecules(path, 6400, 9000, teff_ref=3750.0, prune_dex=3.0)
    assert list(lines.species) == ["CN 1", "CN 1", "TiO 1", "TiO 1"]  # 9500 A out, 3 eV line pruned
    # CN: both isotopologues listed (coverage 0.9893 + 0.0107 of C with 14N): nearly unscaled
    cn = 0.99636 * np.array([0.9893, 0.0107])
    np.testing.assert_allclose(lines.gflog[:2], -2.0 + np.log10(cn / cn.sum()))
    # TiO: only 46/47TiO listed; they stand in for the whole molecule in proportion
    ti = np.array([0.0825, 0.0744])
    np.testing.assert_allclose(lines.gflog[2:], -1.0 + np.log10(ti / ti.sum()))
    cov = lines.isotopologue_coverage
    assert cov["TiO 1"] == pytest.approx(0.99757 * ti.sum())
    # pruning is per molecule, relative to its strongest line: 13CN is 1.97 dex below 12CN
    strict = read_moog_molecules(path, 6400, 9000, teff_ref=3750.0, prune_dex=1.0)
    assert list(strict.species) == ["CN 1", "TiO 1", "TiO 1"]
    bad = tmp_path / "bad.txt"
    bad.write_text(MOOG_SAMPLE + "  8001.000 not-a-code\n")
    with pytest.raises(ValueError, match=r"bad.txt:7"):
        read_moog_molecules(bad, 6400, 9000, 3750.0, 3.0)
    nan = tmp_path / "nan.txt"
    nan.write_text("  8000.100 607.01214       nan    -2.000\n")
    with pytest.raises(ValueError, match=r"nan.txt:1: NaN or infinity"):
        read_moog_molecules(nan, 6400, 9000, 3750.0, 3.0)
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("  8000.100 812.01628     0.500    -2.000\n")
    with pytest.raises(ValueError, match=r"unknown.txt: species 812.01628"):
        read_moog_molecules(unknown, 6400, 9000, 3750.0, 3.0)


MOOG_ATOMS = (
    "  8183.256      11.0     2.102     0.237\n"
    "  8498.023      20.1     1.692    -1.312\n"
    "  6707.761    3.0007     0.000    -0.009                                 KURUCZ\n"
    "  8750.472       1.0    12.087    -1.175\n"
    "  9500.000      26.0     2.000    -1.000\n"
    "  8000.000      26.0     2.000    -1.000\n"
)


def test_moog_atoms_species_hydrogen_left_out_and_errors(tmp_path):
    from specscale.synth.moog_atoms import atom_species, read_moog_atoms

    assert [atom_species(c) for c in ("26.0", "20.1", "3.0007", "1.0", "92.2")] == [
        "Fe 1", "Ca 2", "Li 1", "H 1", "U 3",
    ]  # fmt: skip
    path = tmp_path / "atoms.txt"
    path.write_text(MOOG_ATOMS)
    lines = read_moog_atoms(path, 6400, 9000)
    # sorted by wavelength; Paschen 12 left out (no quantum numbers: SME would return zeros), 9500 A out
    assert list(lines.species) == ["Li 1", "Fe 1", "Na 1", "Ca 2"]
    np.testing.assert_allclose(lines.wlcent, [6707.761, 8000.0, 8183.256, 8498.023])
    np.testing.assert_allclose(lines.gflog, [-0.009, -1.0, 0.237, -1.312])
    assert not lines.gamvw.any() and not lines.gamrad.any() and not lines.gamqst.any()  # SME's estimates
    for text, match in [
        ("  8000.100 607.01214     0.500    -2.000\n", r"mol.txt:1: not a MOOG atomic line \(species 607"),
        ("  8000.100      26.3     0.500    -2.000\n", r"mol.txt:1: .*ionisation stage 4"),
        ("  8000.100      26.0       inf    -2.000\n", r"mol.txt:1: NaN or infinity"),
        ("  8000.100      26.0     0.500    -2.0x0\n", r"mol.txt:1: not a MOOG atomic line"),
    ]:
        (tmp_path / "mol.txt").write_text(text)
        with pytest.raises(ValueError, match=match):
            read_moog_atoms(tmp_path / "mol.txt", 6400, 9000)


def test_moog_atomic_list_and_sme_damping_in_the_line_sets(tmp_path):
    from specscale.synth.emulator_file import line_lists
    from specscale.synth.synthesize import line_sets

    (tmp_path / "atoms").write_text(MOOG_ATOMS)
    (tmp_path / "ges").write_text(GES_SAMPLE)
    moog = SynthesisConfig(linelist=str(tmp_path / "atoms"), linelist_format="moog")
    [(lines, ref, file)] = line_sets(moog, 6400.0, 9000.0)
    assert (ref, file.name, len(lines)) == ("MOOG atoms", "atoms", 4)
    assert "MOOG atomic" in line_lists(moog)["MOOG atoms"]["format"]
    ges = SynthesisConfig(linelist=str(tmp_path / "ges"))
    estimated = SynthesisConfig(linelist=str(tmp_path / "ges"), atomic_damping="sme")
    [(listed, _, _)] = line_sets(ges, 6400.0, 9000.0)
    [(zeroed, _, _)] = line_sets(estimated, 6400.0, 9000.0)
    assert listed.gamvw.any() and listed.gamrad.any()
    assert not zeroed.gamvw.any() and not zeroed.gamrad.any() and not zeroed.gamqst.any()
    np.testing.assert_array_equal(zeroed.gflog, listed.gflog)
    assert line_lists(estimated)["GES"]["damping"].startswith("SME's estimates")
    assert line_lists(ges)["GES"]["damping"] == "the list's"


def test_line_sets_and_their_provenance(tmp_path):
    """The config's lists are read together, cut to the synthesised range, and each is named in the
    emulator's provenance with its sha256 (molecules: the pruning and the isotopologue coverage)."""
    from specscale.synth.emulator_file import line_lists
    from specscale.synth.linelist import file_sha256
    from specscale.synth.synthesize import line_sets

    (tmp_path / "ges").write_text(GES_SAMPLE)
    (tmp_path / "H").write_text(H_SAMPLE)
    (tmp_path / "mol").write_text(MOOG_SAMPLE)
    cfg = SynthesisConfig(
        linelist=str(tmp_path / "ges"),
        hydrogen_linelist=str(tmp_path / "H"),
        molecular_linelists=(str(tmp_path / "mol"),),
    )
    sets = line_sets(cfg, 6400.0, 9000.0)
    assert [ref for _, ref, _ in sets] == ["GES", "H", "mol"]
    assert [len(lines) for lines, _, _ in sets] == [4, 2, 4]
    prov = line_lists(cfg)
    assert set(prov) == {"GES", "H", "mol"}
    assert prov["H"]["sha256"] == file_sha256(tmp_path / "H") and prov["H"]["n_lines_synthesised_range"] == 2
    assert prov["mol"]["isotopologue_coverage"]["TiO 1"] == pytest.approx(0.99757 * (0.0825 + 0.0744))
    assert "2 dex" in prov["mol"]["pruned"]
    json.dumps(prov)  # JSON-able, as the emulator file needs


def test_extra_linelists_named_when_absent(tmp_path):
    with pytest.raises(ConfigError, match=r"synthesis\.hydrogen_linelist"):
        SynthesisConfig(hydrogen_linelist=str(tmp_path / "H")).extra_linelist_paths()
    with pytest.raises(ConfigError, match=r"synthesis\.molecular_linelists\[0\]"):
        SynthesisConfig(molecular_linelists=(str(tmp_path / "cn.gz"),)).extra_linelist_paths()
    with pytest.raises(ConfigError, match=r"synthesis\.molecular_linelists"):
        synthesis_config({"molecular_linelists": "cn.gz"})
    with pytest.raises(ConfigError, match=r"synthesis\.molecule_prune_dex"):
        synthesis_config({"molecule_prune_dex": float("nan")})
    assert synthesis_config({"molecular_linelists": ["a", "b"]}).molecular_linelists == ("a", "b")


@pytest.mark.parametrize(
    "key,value",
    [("n_train", 0), ("accrt", -1.0), ("synth_range", "half"), ("prior", "nope"), ("seed_test", 2026),
     ("val_fraction", 0.7), ("vmic_giant", -1.0), ("arm_min", 6000.0), ("chunk_size", 2.5),
     ("linelist_format", "vald"), ("atomic_damping", "abo")],
)  # fmt: skip
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ConfigError, match=f"synthesis.{key}"):
        synthesis_config({key: value})


def test_unknown_key_and_missing_linelist(tmp_path):
    with pytest.raises(ConfigError, match=r"synthesis\.n_trian"):
        synthesis_config({"n_trian": 3})
    with pytest.raises(ConfigError, match=r"synthesis\.linelist"):
        SynthesisConfig().linelist_path()
    with pytest.raises(ConfigError, match=r"synthesis\.linelist"):
        SynthesisConfig(linelist=str(tmp_path / "absent")).linelist_path()
    assert SynthesisConfig().vmic(5.0) == 1.0 and SynthesisConfig().vmic(1.0) == 2.0


@pytest.mark.slow
def test_real_sme_calcium_triplet_stronger_in_giant(tmp_path):
    pytest.importorskip("pysme")
    pytest.importorskip("atmosnet")
    from pysme.sme import SME_Structure
    from pysme.synthesize import synthesize_spectrum

    from specscale.synth.atmosphere import sme_atmosphere
    from specscale.synth.linelist import TurboLines
    from specscale.synth.synthesize import star_abund

    path = tmp_path / "ges"
    path.write_text(GES_SAMPLE)
    lines = read_turbospectrum(path, 8530, 8555)
    assert isinstance(lines, TurboLines) and len(lines) == 1
    cfg = SynthesisConfig(linelist=str(path))
    ew = {}
    for logg in (2.0, 4.5):
        abund = star_abund(cfg, 0.0, 0.0)
        sme = SME_Structure()
        sme.teff, sme.logg, sme.monh, sme.vmic, sme.vmac, sme.vsini = 4500.0, logg, 0.0, cfg.vmic(logg), 0.0, 0.0
        sme.abund = abund
        sme.atmo = sme_atmosphere(4500.0, logg, 0.0, 0.0, abund, cfg.vmic(logg))
        sme.linelist = lines.to_pysme()
        sme.wran = [[8532.0, 8552.0]]
        sme = synthesize_spectrum(sme)  # continuum-normalised
        wave, flux = np.asarray(sme.wave[0]), np.asarray(sme.synth[0])
        ew[logg] = np.trapezoid(1.0 - flux, wave)
    # the Ca II 8542 core forms high up, where the giant's lower density keeps more Ca+ in the
    # lower level; at fixed Teff the giant's line is the stronger one
    assert ew[2.0] > ew[4.5] > 0.3


@pytest.mark.slow
def test_real_sme_takes_hydrogen_and_molecular_lines(tmp_path):
    pytest.importorskip("pysme")
    pytest.importorskip("atmosnet")
    from pysme.sme import SME_Structure
    from pysme.synthesize import synthesize_spectrum

    from specscale.synth.atmosphere import sme_atmosphere
    from specscale.synth.linelist import to_pysme
    from specscale.synth.molecules import read_moog_molecules
    from specscale.synth.synthesize import star_abund

    (tmp_path / "H").write_text(H_SAMPLE)
    (tmp_path / "mol").write_text(MOOG_SAMPLE)
    hydrogen = read_turbospectrum(tmp_path / "H", 8700, 8800)
    molecules = read_moog_molecules(tmp_path / "mol", 7990, 8010, 3750.0, 3.0)
    cfg = SynthesisConfig()

    def depth(teff, logg, lines, wran, centre):
        abund = star_abund(cfg, 0.0, 0.0)
        sme = SME_Structure()
        sme.teff, sme.logg, sme.monh, sme.vmic, sme.vmac, sme.vsini = teff, logg, 0.0, cfg.vmic(logg), 0.0, 0.0
        sme.abund = abund
        sme.atmo = sme_atmosphere(teff, logg, 0.0, 0.0, abund, cfg.vmic(logg))
        sme.linelist = to_pysme(lines)
        sme.wran = [wran]
        sme = synthesize_spectrum(sme)
        wave, flux = np.asarray(sme.wave[0]), np.asarray(sme.synth[0])
        return 1.0 - float(np.interp(centre, wave, flux))

    # Paschen 12 in a 6000 K giant (SME's own hydrogen profiles; its core ~0.3 deep, a dwarf's
    # Stark-broadened one ~0.05); nearly gone at 4000 K
    pa12_warm = depth(6000.0, 2.0, [(hydrogen, "H")], [8740.0, 8760.0], 8750.476)
    pa12_cool = depth(4000.0, 2.0, [(hydrogen, "H")], [8740.0, 8760.0], 8750.476)
    assert pa12_warm > 0.1 and pa12_warm > 3 * pa12_cool, (pa12_warm, pa12_cool)
    # the "TiO 1" lines exist for SME's molecular equilibrium in a 3750 K dwarf, not at 6000 K
    tio_cool = depth(3750.0, 4.5, [(molecules, "mol")], [7998.0, 8002.0], 8000.3)
    tio_warm = depth(6000.0, 4.5, [(molecules, "mol")], [7998.0, 8002.0], 8000.3)
    assert tio_cool > 0.005 and tio_cool > 10 * tio_warm, (tio_cool, tio_warm)


def test_repair_redoes_only_failed_stars(tmp_path):
    cfg = small_config()
    labels = draw_labels(cfg, "train")[:3]
    out = tmp_path / "c.npz"

    def third_fails(config, theta):
        if theta[0] == labels[2, 0]:
            raise RuntimeError("SME failed")
        return analytic_fine_flux(config, theta)

    write_chunk(cfg, labels, out, fine_flux=third_fails)
    calls = []

    def counting(config, theta):
        calls.append(theta[0])
        return analytic_fine_flux(config, theta)

    assert write_chunk(cfg, labels, out, fine_flux=counting, repair=True)
    assert calls == [labels[2, 0]]
    assert len(read_chunks([out])["labels"]) == 3
    assert not write_chunk(cfg, labels, out, fine_flux=counting, repair=True)


def test_numerically_failed_star_dropped_on_read(tmp_path):
    cfg = small_config()
    labels = draw_labels(cfg, "train")[:2]
    out = tmp_path / "c.npz"
    write_chunk(cfg, labels, out, fine_flux=analytic_fine_flux)
    with np.load(out) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["flux"][1, 2000:] = 2e11  # what SME gave once, redward of 8205 A
    np.savez(out, **arrays)
    data = read_chunks([out])
    np.testing.assert_array_equal(data["labels"], labels[:1])


def test_atmosnet_files_are_checked_before_they_are_unpickled(tmp_path):
    """atmosnet loads its networks with dill: only the pinned release's two files pass."""
    from specscale.synth.atmosphere import ATMOSNET_PICKLES, check_atmosnet_files

    with pytest.raises(ValueError, match="expected atmosnet's files"):
        check_atmosnet_files(tmp_path)
    for name in ATMOSNET_PICKLES:
        (tmp_path / name).write_bytes(b"not the release's bytes")
    with pytest.raises(ValueError, match=r"sha256 differs\); refusing to unpickle it"):
        check_atmosnet_files(tmp_path)
