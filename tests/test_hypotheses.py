"""Decision hypotheses (specscale.sweep.hypotheses): the paired bootstrap's coverage and speed, the
config checks naming the key, and their evaluation at collect from the cells' predictions.h5
(fabricated, paired cells of tests/factories.py) into the cube and the report."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from factories import write_ceiling, write_curves, write_paired_cell
from snakemake.utils import validate

from specscale.core.config import ConfigError
from specscale.core.vocab import Cell
from specscale.models.metrics import point_metrics, top_snr_mask
from specscale.report.markdown import render_report
from specscale.sweep.bootstrap import paired_bootstrap
from specscale.sweep.cube import collect, open_cube, write_cube
from specscale.sweep.grid import Sweep
from specscale.sweep.hypotheses import (
    INCONCLUSIVE,
    NOT_EVALUATED,
    REJECTED,
    SUPPORTED,
    Hypothesis,
    PredictionsError,
    check_hypotheses,
    hypotheses_of,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
DEFAULT = yaml.safe_load((REPO / "config/config.yaml").read_text())
GOOD = {"question": "Is lightgbm's MAE 5% below ridge's?", "base": "ridge", "variant": "lightgbm"}
GOOD |= {"metric": "mae", "change": "relative", "op": "<=", "threshold": -0.05}


# ---------------------------------------------------------------- the bootstrap
def _errors(rng, n, sigma_base=0.5):
    """Correlated errors of two models on the same stars (shared test noise): true RMSE sigma_base
    and sqrt(0.8^2 sigma_base^2 + 0.2^2), true MAE sqrt(2/pi) times those."""
    y = rng.uniform(1, 5, n)
    eb = rng.normal(0, sigma_base, n)
    ev = 0.8 * eb + rng.normal(0, 0.2, n)
    return y, eb, ev, np.sqrt(0.64 * sigma_base**2 + 0.04)


@pytest.mark.parametrize(
    ("metric", "change"), [("mae", "relative"), ("rmse", "absolute")], ids=["mae-relative", "rmse-absolute"]
)
def test_paired_bootstrap_interval_covers_the_true_difference_at_its_nominal_rate(metric, change):
    rng = np.random.default_rng(2024)
    covered = []
    for _ in range(200):
        y, eb, ev, sigma_v = _errors(rng, 1000)
        scale = np.sqrt(2 / np.pi) if metric == "mae" else 1.0
        truth = (sigma_v - 0.5) / 0.5 if change == "relative" else scale * (sigma_v - 0.5)
        res = paired_bootstrap(y, y + eb, y + ev, metric=metric, change=change, n_boot=500, seed=rng.integers(2**31))
        covered.append(res.ci_lo <= truth <= res.ci_hi)
    assert 0.90 <= np.mean(covered) <= 0.99


def test_resampling_seeds_covers_a_training_seed_effect():
    """Seeds vary the model (a per-seed offset): star resampling alone misses that spread, the
    two-stage bootstrap covers the true mean difference (with enough seeds)."""
    rng = np.random.default_rng(7)
    covered, star_only = [], []
    for _ in range(200):
        y, eb, _, _ = _errors(rng, 300)
        pb = y[:, None] + eb[:, None] + rng.normal(0, 0.05, (1, 16))
        pv = y[:, None] + eb[:, None] + rng.normal(0.03, 0.05, (1, 16))
        res = paired_bootstrap(y, pb, pv, metric="bias", n_boot=400, seed=rng.integers(2**31), paired_seeds=False)
        covered.append(res.ci_lo <= 0.03 <= res.ci_hi)
        one = paired_bootstrap(y, pb[:, :1], pv[:, :1], metric="bias", n_boot=400, seed=1)
        star_only.append(one.ci_lo <= 0.03 <= one.ci_hi)
    assert 0.90 <= np.mean(covered) <= 0.99
    assert np.mean(star_only) < 0.5  # one seed each: the interval is about the test stars only


def test_point_estimates_are_the_metrics_and_the_bootstrap_is_seeded_and_fast():
    rng = np.random.default_rng(3)
    y, eb, ev, _ = _errors(rng, 2000)
    for metric in ("r2", "mae", "rmse", "bias"):
        res = paired_bootstrap(y, y + eb, y + ev, metric=metric, n_boot=200)
        assert res.base == pytest.approx(point_metrics(y, y + eb)[metric])
        assert res.variant == pytest.approx(point_metrics(y, y + ev)[metric])
        assert res.diff == pytest.approx(res.variant - res.base)
        assert res.ci_lo <= res.diff <= res.ci_hi
    rel = paired_bootstrap(y, y + eb, y + ev, metric="mae", change="relative", n_boot=200)
    assert rel.diff == pytest.approx((rel.variant - rel.base) / rel.base)
    # several seeds: the metric of a model is the mean over its seeds
    two = np.stack([y + eb, y + 1.1 * eb], axis=1)
    res = paired_bootstrap(y, two, y + ev, metric="rmse", n_boot=200)
    assert res.base == pytest.approx(np.mean([point_metrics(y, two[:, s])["rmse"] for s in range(2)]))
    assert (res.n_stars, res.n_seeds_base, res.n_seeds_variant) == (2000, 2, 1)
    # seeded: the same seed gives the same interval, another seed another one
    a, b = (paired_bootstrap(y, y + eb, y + ev, n_boot=1000, seed=s) for s in (5, 5))
    assert (a.ci_lo, a.ci_hi) == (b.ci_lo, b.ci_hi)
    assert paired_bootstrap(y, y + eb, y + ev, n_boot=1000, seed=6).ci_lo != a.ci_lo
    t0 = time.perf_counter()
    paired_bootstrap(y, np.stack([y + eb] * 3, 1), np.stack([y + ev] * 3, 1), metric="r2", n_boot=1000)
    assert time.perf_counter() - t0 < 1.0  # 2,000 stars, 3 + 3 seeds, 1,000 replicates


def test_verdicts_follow_the_interval_and_the_threshold():
    h = Hypothesis("h", "q", "a", "b", "mae", "relative", "<=", -0.05)
    assert h.verdict(-0.2, -0.06) == SUPPORTED
    assert h.verdict(-0.04, 0.1) == REJECTED
    assert h.verdict(-0.1, 0.0) == INCONCLUSIVE
    assert h.verdict(np.nan, np.nan) == NOT_EVALUATED
    up = Hypothesis("h", "q", "a", "b", "r2", "absolute", ">", 0.01)
    assert up.verdict(0.02, 0.03) == SUPPORTED and up.verdict(-0.01, 0.01) == REJECTED
    assert up.verdict(0.0, 0.05) == INCONCLUSIVE
    assert h.decision() == "relative MAE change <= -5%"
    assert up.decision() == "absolute R^2 change > +0.01"


# ---------------------------------------------------------------- config checks
def _config(*entries, models=("ridge", "lightgbm", "vit-tiny")):
    return {"grid": {"model": list(models)}, "hypotheses": list(entries)}


def test_well_formed_hypotheses_get_their_defaults():
    (h, g) = check_hypotheses(_config(GOOD, GOOD | {"name": "top", "metric": "r2_top20", "change": "absolute"}))
    assert (h.name, h.confidence, h.n_boot, h.seed) == ("H1", 0.95, 1000, 0)
    assert (g.name, g.metric, g.change, g.op, g.threshold) == ("top", "r2_top20", "absolute", "<=", -0.05)
    assert check_hypotheses({"grid": {"model": ["ridge"]}}) == []


@pytest.mark.parametrize(
    ("edit", "key", "message"),
    [
        (lambda h: h.update(metric="mape"), r"hypotheses\[0\]\.metric", "unknown metric 'mape'"),
        (lambda h: h.update(op="=<"), r"hypotheses\[0\]\.op", "unknown op"),
        (lambda h: h.update(change="percent"), r"hypotheses\[0\]\.change", "unknown change"),
        (lambda h: h.update(base="mlp"), r"hypotheses\[0\]\.base", "not on the grid's model axis"),
        (lambda h: h.update(variant="vit"), r"hypotheses\[0\]\.variant", "not on the grid's model axis"),
        (lambda h: h.update(variant="ridge"), r"hypotheses\[0\]\.variant", "the same model as base"),
        (lambda h: h.pop("threshold"), r"hypotheses\[0\]\.threshold", "required key missing"),
        (lambda h: h.pop("question"), r"hypotheses\[0\]\.question", "required key missing"),
        (lambda h: h.update(thresold=0.1), r"hypotheses\[0\]\.thresold", "unknown key"),
        (lambda h: h.update(threshold="5%"), r"hypotheses\[0\]\.threshold", "not a number"),
        (lambda h: h.update(confidence=95), r"hypotheses\[0\]\.confidence", r"not in \(0, 1\)"),
        (lambda h: h.update(n_boot=10), r"hypotheses\[0\]\.n_boot", "too few"),
        (lambda h: h.update(seed=1.5), r"hypotheses\[0\]\.seed", "not an integer"),
    ],
)
def test_malformed_hypotheses_fail_naming_the_key(edit, key, message):
    entry = dict(GOOD)
    edit(entry)
    with pytest.raises(ConfigError, match=rf"^config error at {key}: .*{message}"):
        check_hypotheses(_config(entry))


def test_malformed_sections_and_duplicate_names_fail_naming_the_key():
    with pytest.raises(ConfigError, match=r"config error at hypotheses: must be a list"):
        check_hypotheses({"grid": {"model": ["ridge"]}, "hypotheses": {"a": GOOD}})
    with pytest.raises(ConfigError, match=r"config error at hypotheses\[1\]: must be a mapping"):
        check_hypotheses(_config(GOOD, "ridge < lightgbm"))
    with pytest.raises(ConfigError, match=r"config error at hypotheses\[1\]\.name: 'H1' is already"):
        check_hypotheses(_config(GOOD, GOOD | {"name": "H1"}))


def _resolved(edit) -> dict:
    config = copy.deepcopy(DEFAULT)
    edit(config)
    validate(config, str(SCHEMA))
    return config


def test_sweep_from_config_checks_the_hypotheses():
    """The schema accepts the section and fills its defaults; Sweep.from_config runs the checks
    (a variant off the grid passes the schema and fails here, naming the key)."""
    config = _resolved(lambda c: c.update(hypotheses=[dict(GOOD, change="relative")]))
    assert config["hypotheses"][0]["n_boot"] == 1000
    Sweep.from_config(config)
    bad = _resolved(lambda c: c.update(hypotheses=[dict(GOOD, variant="vit")]))
    with pytest.raises(ConfigError, match=r"config error at hypotheses\[0\]\.variant: 'vit' is not on the grid"):
        Sweep.from_config(bad)


# ---------------------------------------------------------------- collect
def _paired_sweep(root: Path, noises=(0.5, 1.0), mags=("21.5",), sizes=(1000, 4000), seeds=(0, 1)):
    """ridge and lightgbm at every size and seed, vit-tiny at the largest size with one seed, all on
    shared test stars; R^2 0.4 (ridge), 0.6 (lightgbm), 0.5 (vit-tiny), less 0.01 per seed."""
    cells = [
        Cell(noise, mag, model, n, s)
        for noise in noises
        for mag in mags
        for n in sizes
        for s in seeds
        for model in ("ridge", "lightgbm")
    ]
    cells += [Cell(noise, mag, "vit-tiny", sizes[-1], seeds[0]) for noise in noises for mag in mags]
    r2 = {"ridge": 0.4, "lightgbm": 0.6, "vit-tiny": 0.5}
    return [(c, write_paired_cell(root, c, r2=r2[c.model] - 0.01 * c.seed)) for c in cells]


HYPOTHESES = [
    Hypothesis("gbm_mae", "Is lightgbm's MAE 5% below ridge's?", "ridge", "lightgbm", "mae", "relative", "<=", -0.05),
    Hypothesis("gbm_r2", "Does lightgbm add 0.5 to R^2?", "ridge", "lightgbm", "r2", "absolute", ">=", 0.5),
    Hypothesis("vit_top", "Is vit-tiny's top-20% RMSE lower?", "ridge", "vit-tiny", "rmse_top20", "absolute", "<", 0),
]


def test_collect_evaluates_the_hypotheses_into_the_cube(tmp_path):
    pairs = _paired_sweep(tmp_path)
    ds = collect(pairs, hypotheses=HYPOTHESES)
    assert ds.hyp_diff.dims == ("hypothesis", "noise", "mag", "n_train")
    assert list(ds.hypothesis.values) == ["gbm_mae", "gbm_r2", "vit_top"]
    mae = ds.mae.mean("seed")
    gbm = ds.sel(hypothesis="gbm_mae")
    # the metrics are the cube's seed means, the difference relative, inside its interval
    np.testing.assert_allclose(gbm.hyp_base, mae.sel(model="ridge"))
    np.testing.assert_allclose(gbm.hyp_variant, mae.sel(model="lightgbm"))
    np.testing.assert_allclose(gbm.hyp_diff, (gbm.hyp_variant - gbm.hyp_base) / gbm.hyp_base)
    assert (gbm.hyp_ci_lo <= gbm.hyp_diff).all() and (gbm.hyp_diff <= gbm.hyp_ci_hi).all()
    assert (gbm.hyp_n_stars == 400).all() and (gbm.hyp_n_seeds_base == 2).all()
    assert (gbm.hyp_verdict == SUPPORTED).all()  # lightgbm's errors are 18% smaller
    assert (ds.hyp_verdict.sel(hypothesis="gbm_r2") == REJECTED).all()
    # vit-tiny ran at the largest size only: the smaller one is not evaluated (NaN, verdict 0)
    vit = ds.sel(hypothesis="vit_top")
    assert (vit.hyp_verdict.sel(n_train=1000) == NOT_EVALUATED).all() and np.isnan(vit.hyp_diff.sel(n_train=1000)).all()
    assert (vit.hyp_n_stars.sel(n_train=4000) == 80).all() and (vit.hyp_n_seeds_variant.sel(n_train=4000) == 1).all()
    np.testing.assert_allclose(
        vit.hyp_variant.sel(n_train=4000), ds.rmse_top20.sel(model="vit-tiny", n_train=4000, seed=0)
    )
    # the codes agree with interval and threshold
    for h in HYPOTHESES:
        at = ds.sel(hypothesis=h.name)
        codes = [h.verdict(lo, hi) for lo, hi in zip(at.hyp_ci_lo.values.ravel(), at.hyp_ci_hi.values.ravel())]
        assert codes == at.hyp_verdict.values.ravel().tolist()
    # the cube carries the definitions and survives a round trip; re-collecting gives the same numbers
    back = open_cube(write_cube(ds, tmp_path / "cube.nc"))
    assert hypotheses_of(back) == HYPOTHESES
    np.testing.assert_array_equal(back.hyp_ci_lo.values, collect(pairs, hypotheses=HYPOTHESES).hyp_ci_lo.values)
    assert "hypothesis" not in collect(pairs).dims  # no hypotheses, no axis


def test_collect_refuses_cells_that_are_not_the_same_test_stars(tmp_path):
    pairs = _paired_sweep(tmp_path, noises=(1.0,), sizes=(1000,), seeds=(0,))
    variant = next(p for c, p in pairs if c.model == "lightgbm").with_name("predictions.h5")
    with h5py.File(variant, "r+") as f:
        f["rows"][0] = 999
    with pytest.raises(PredictionsError, match=rf"{variant} and .*ridge.*different test stars"):
        collect(pairs, hypotheses=HYPOTHESES[:1])
    variant.unlink()
    with pytest.raises(PredictionsError, match=rf"{variant}: predictions file not found"):
        collect(pairs, hypotheses=HYPOTHESES[:1])


def test_sweep_collect_puts_the_decision_table_in_the_report(tmp_path):
    config = _resolved(
        lambda c: c.update(hypotheses=[dict(GOOD, name="gbm_mae"), dict(GOOD, name="gbm_r2", metric="r2", op=">=")])
    )
    sweep = Sweep.from_config(config)
    for c in sweep.cells:
        cell = Cell(c.noise, c.mag.label(), c.model, c.n_train, c.seed)
        write_paired_cell(tmp_path / "cells" / sweep.dataset, cell)
    for noise, mag in sweep.ceiling_cells:
        write_ceiling(tmp_path / "ceiling" / sweep.dataset / f"noise{noise}_mag{mag}.nc", float(noise), mag)
    curves = write_curves(tmp_path / "curves.nc", [float(n) for n in sweep.curve_noise], [21.0, 22.0])
    ds = sweep.collect(
        str(tmp_path / "cells/{dataset}/noise{noise}/mag{mag}/{model}/n{n_train}/s{seed}/metrics.json"),
        str(tmp_path / "ceiling/{dataset}/noise{noise}_mag{mag}.nc"),
        curves,
    )
    assert list(ds.hypothesis.values) == ["gbm_mae", "gbm_r2"]
    evaluated = int((ds.hyp_verdict != NOT_EVALUATED).sum())
    common = {(c.noise, c.mag, c.n_train) for c in sweep.cells if c.model == "ridge"}
    common &= {(c.noise, c.mag, c.n_train) for c in sweep.cells if c.model == "lightgbm"}
    assert evaluated == 2 * len(common)
    text = render_report(ds, "plots")
    assert "## Decision table" in text
    table = [line for line in text.splitlines() if line.startswith("| gbm_")]
    assert len(table) == evaluated
    gbm = ds.sel(hypothesis="gbm_mae")
    first = next(
        gbm.sel(noise=noise, mag=mag, n_train=n)
        for noise in ds.noise.values
        for mag in ds.mag.values
        for n in ds.n_train.values
        if int(gbm.hyp_verdict.sel(noise=noise, mag=mag, n_train=n)) != NOT_EVALUATED
    )
    row = [c.strip() for c in table[0].strip("|").split("|")]
    assert row[0] == "gbm_mae: " + GOOD["question"]
    assert row[1] == f"noise {float(first.noise):g}, mag {first.mag.item()}" and row[2] == str(int(first.n_train))
    assert row[3] == f"MAE: ridge {float(first.hyp_base):.3f} → lightgbm {float(first.hyp_variant):.3f} dex"
    pct = [f"{100 * float(first[v]):+.1f}%" for v in ("hyp_diff", "hyp_ci_lo", "hyp_ci_hi")]
    assert row[4] == f"{pct[0]} [{pct[1]}, {pct[2]}]"
    assert row[5] == "relative <= -5.0%" and row[6] in ("**supported**", "rejected", "inconclusive")
    assert "- **gbm_r2**: " in text and "decision: relative R^2 change >= -5%" in text
    # a hypothesis's top-20% subset is the metrics' one
    stars = h5py.File(next(tmp_path.rglob("predictions.h5")), "r")
    assert int(top_snr_mask(stars["snr"][()]).sum()) == 400 // 5
    stars.close()
