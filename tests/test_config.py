"""Tests of core.config: strict dataclasses from YAML refuse non-finite and out-of-range numbers, naming the key."""

from __future__ import annotations

import pytest
import yaml
from bad_input import INF, NAN, SIM, error_line

from specscale.cli import main
from specscale.core.config import ConfigError, from_dict


# ---------------------------------------------------------------- config numbers
@pytest.mark.parametrize(
    "sections, key",
    [
        ({"observation": {"exptime_s": NAN}}, "observation.exptime_s"),
        ({"observation": {"sky_ab_arcsec2": [21.3, NAN, 20.9]}}, "observation.sky_ab_arcsec2"),
        ({"observation": {"zenith_deg": [0.0, 90.0]}}, "observation.zenith_deg"),
        ({"atmosphere": {"gravity_scale": INF}}, "atmosphere.gravity_scale"),
        ({"simulation": {"mag_limits": [-INF, INF]}}, "simulation.mag_limits"),
    ],
)
def test_simulate_refuses_nonfinite_or_out_of_range_config_numbers(tmp_path, capsys, sections, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(sections))  # NaN and infinity as YAML's .nan / .inf
    assert main(["simulate", "--out", str(tmp_path / "x.h5"), "--config", str(cfg), *SIM]) == 2
    assert key in error_line(capsys, "simulate")
    assert not list(tmp_path.glob("x.h5*"))


@pytest.mark.parametrize(
    "cls, values, key",
    [
        ("specscale.models.ridge:RidgeParams", {"alpha_max": INF}, "models.x.alpha_max"),
        ("specscale.models.gbm:LightGBMParams", {"lambda_l2": NAN}, "models.x.lambda_l2"),
        ("specscale.models.gbm:LightGBMParams", {"learning_rate": "nan"}, "learning_rate"),  # YAML 1.1: a string
        ("specscale.models.gbm:LightGBMParams", {"learning_rate": "1e400"}, "learning_rate"),  # overflows to inf
        ("specscale.models.gbm:LightGBMParams", {"max_bin": 1}, "max_bin"),  # LightGBM needs > 1
        ("specscale.models.vit:ViTTinyParams", {"lr": INF}, "models.x.lr"),
        ("specscale.ceiling.configs:FisherConfig", {"check_atol": INF}, "models.x.check_atol"),
        ("specscale.sim.observe:ObservingConfig", {"field_angle_deg": -1.0}, "field_angle_deg"),
        ("specscale.sim.observe:ObservingConfig", {"sky_ab_arcsec2": [21.0, 21.0]}, "sky_ab_arcsec2"),
        ("specscale.sim.observe:ObservingConfig", {"extinction_mag_per_airmass": -0.1}, "extinction_mag_per_airmass"),
        ("specscale.data.simulate:SimulationConfig", {"seed": -1}, "seed"),
    ],
)
def test_from_dict_names_nonfinite_and_out_of_range_numbers(cls, values, key):
    import importlib

    module, name = cls.split(":")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(getattr(importlib.import_module(module), name), values, "models.x")


def test_dataclasses_built_in_code_refuse_nonfinite_floats_too():
    from specscale.models.ridge import RidgeParams
    from specscale.sim.observe import ObservingConfig

    with pytest.raises(ValueError, match="alpha_max=inf"):
        RidgeParams(alpha_max=INF)
    with pytest.raises(ValueError, match="exptime_s"):
        ObservingConfig(exptime_s=NAN)
    assert RidgeParams() == RidgeParams(alpha_min=1e-2)  # valid values unchanged
