"""The simulator versions: an ``atmosphere`` config section -> its config dataclass -> its model.

Version 1 (:mod:`specscale.sim.atmosphere`), version 2 (:mod:`specscale.sim.atmosphere_v2`),
``grid``, spectra interpolated in a model grid (:mod:`specscale.sim.atmosphere_grid`), and
``emulated``, an emulator of real LTE synthesis (:mod:`specscale.sim.atmosphere_emulated`).
A user's config without ``atmosphere.version`` gets :data:`DEFAULT_VERSION`; a stored dataset's
section without it is version 1 (files written before version 2 existed have none, and version 1
sections are stored without it).
"""

from __future__ import annotations

from specscale.core.config import ConfigError, from_dict, not_finite
from specscale.sim.atmosphere import AtmosphereConfig, SyntheticAtmosphere
from specscale.sim.atmosphere_base import PfsStages
from specscale.sim.atmosphere_emulated import EmulatedAtmosphere, EmulatedAtmosphereConfig
from specscale.sim.atmosphere_grid import GridAtmosphere, GridAtmosphereConfig
from specscale.sim.atmosphere_v2 import AtmosphereV2Config, SyntheticAtmosphereV2
from specscale.sim.instrument import Instrument

VERSIONS = (1, 2, "grid", "emulated")
DEFAULT_VERSION = 2  # of a user's config without atmosphere.version


def atmosphere_config(values: dict | None, where: str = "atmosphere", default_version: int = 1):
    """The atmosphere config of a config section: ``version`` 1 -> :class:`AtmosphereConfig`,
    2 -> :class:`AtmosphereV2Config`, "grid" -> :class:`GridAtmosphereConfig`, "emulated" ->
    :class:`EmulatedAtmosphereConfig`. A section without
    ``version`` is ``default_version``: 1 for
    a stored dataset's section, :data:`DEFAULT_VERSION` for a user's config. ``where`` names the
    section in errors."""
    values = dict(values or {})
    version = values.get("version", default_version)
    if not_finite(version, parse_strings=True):
        raise ConfigError(f"{where}.version={version!r} must be finite (NaN and infinity are not allowed)")
    if version == "grid":
        return from_dict(GridAtmosphereConfig, values, where)
    if version == "emulated":
        return from_dict(EmulatedAtmosphereConfig, values, where)
    if isinstance(version, bool) or not isinstance(version, int) or version not in VERSIONS:
        raise ConfigError(f"{where}.version={version!r}: known simulator versions are {list(VERSIONS)}")
    if version == 1:
        values.pop("version", None)
        return from_dict(AtmosphereConfig, values, where)
    return from_dict(AtmosphereV2Config, values, where)


def make_atmosphere(config=None, instrument: Instrument | None = None) -> PfsStages | EmulatedAtmosphere:
    """The simulator of a config object (version 1, 2, grid or emulated; None: version 1's defaults)."""
    if isinstance(config, EmulatedAtmosphereConfig):
        return EmulatedAtmosphere(config, instrument)
    if isinstance(config, GridAtmosphereConfig):
        return GridAtmosphere(config, instrument)
    if isinstance(config, AtmosphereV2Config):
        return SyntheticAtmosphereV2(config, instrument)
    return SyntheticAtmosphere(config, instrument)


def simulator_version(config) -> str:
    """The version string a dataset records for the simulator of ``config``: "1.0", "2.0", "grid"
    or "emulated" (the grid's content hash, or the emulator's sha256, is recorded beside it)."""
    if isinstance(config, GridAtmosphereConfig):
        return "grid"
    if isinstance(config, EmulatedAtmosphereConfig):
        return "emulated"
    return "2.0" if isinstance(config, AtmosphereV2Config) else "1.0"
