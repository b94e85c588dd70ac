"""The checks of a sweep config, each raising :class:`~specscale.core.config.ConfigError` with the
text ``config error at KEY: message`` before any job runs: paths, axis values, the dataset, the
models and variants (resolved here, once, into :class:`~specscale.models.registry.ModelSpec`),
the grid against the dataset, the package sections, the report's models.

The config must have been validated against ``workflow/schemas/config.schema.yaml`` (which fills
the defaults of the workflow sections); the package sections are checked by the package's
dataclasses. The workflow imports this module at parse time: modules that import torch or xarray
(the simulator, the data readers, the Fisher stage) are imported inside the checks that need them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specscale.core.config import ConfigError, from_dict, section
from specscale.core.files import unsafe_path
from specscale.core.vocab import Cell, MagRange
from specscale.models.registry import ModelSpec, VariantError, model_names, resolve_model, variant_names
from specscale.sim.instrument import Instrument
from specscale.sim.windows import window_pixels
from specscale.sweep.tracking import WandbConfig

# keys of datasets.<name> that override the simulation section
SIZE_KEYS = ("n_train", "n_val", "n_test", "seed")
# the axes a per_model entry may replace, in the order of the cells' product
AXES = ("noise", "mag", "n_train", "seed")


def config_error(key: str, message) -> ConfigError:
    """The error of a bad config value: ``config error at KEY: message``."""
    return ConfigError(f"config error at {key}: {message}")


def canonical(axis: str, value):
    """The path/coordinate form of an axis value: noise "0.5", mag "20.5-22.5", ints."""
    if axis == "noise":
        return f"{float(value):g}"
    if axis == "mag":
        return MagRange.parse(value).label()
    if axis in ("n_train", "seed"):
        return int(value)
    return str(value)


@dataclass(frozen=True)
class DatasetInfo:
    """What the grid checks need of a dataset, read without simulating it: its training and test
    star counts, and ``check_mag(MagRange)``, which raises ValueError saying why the dataset cannot
    serve a magnitude cell."""

    n_train: int
    n_test: int
    check_mag: Callable[[MagRange], None]


def simulation_sections(config: Mapping, name: str) -> dict[str, dict]:
    """The simulate config of dataset ``name``: the package sections, with the sizes and seed of
    ``datasets.<name>`` over the ``simulation`` section."""
    sim = dict(section(config, "simulation"))
    sim.update({k: v for k, v in config["datasets"][name].items() if k in SIZE_KEYS})
    return {
        "simulation": sim,
        "observation": section(config, "observation"),
        "atmosphere": section(config, "atmosphere"),
    }


def pick_dataset(config: Mapping) -> str:
    """``grid.dataset``, which must name an entry of ``datasets``; default the only entry."""
    names = list(config["datasets"])
    name = config["grid"].get("dataset")
    if name is None:
        if len(names) > 1:
            raise config_error("grid.dataset", f"several datasets {names}: name the one to sweep")
        return names[0]
    if name not in names:
        raise config_error("grid.dataset", f"{name!r} is not in datasets {names}")
    return name


def describe_dataset(config: Mapping, name: str) -> DatasetInfo:
    """Sizes of dataset ``name`` and a check of a magnitude cell, without simulating it: a
    synthetic dataset from the config alone, a file dataset from its file (which must exist)."""
    spec = config["datasets"][name]
    if spec["source"] == "synthetic":
        from specscale.data.simulate import simulation_configs

        try:
            sim, _, _ = simulation_configs(simulation_sections(config, name))
        except (ConfigError, ValueError) as exc:
            raise config_error(f"datasets.{name} / simulation", exc) from None
        lo, hi = sim.mag_limits

        def check_mag(cell: MagRange) -> None:
            if cell.lo < lo or cell.hi > hi:
                raise ValueError(f"outside simulation.mag_limits {lo:g}-{hi:g}")

        return DatasetInfo(n_train=sim.n_train, n_test=sim.n_test, check_mag=check_mag)
    if not Path(spec["path"]).exists():
        raise config_error(f"datasets.{name}.path", f"file not found: {spec['path']}")
    from specscale.data.sources import open_source

    try:
        source = open_source(spec["path"])
    except ValueError as exc:
        raise config_error(f"datasets.{name}.path", exc) from None
    return DatasetInfo(n_train=source.n("train"), n_test=source.n("test"), check_mag=source.check_cell)


def check_models(config: Mapping) -> dict[str, ModelSpec]:
    """Grid models, per-model entries, report models and ``models.<name>`` sections: known names
    (registered models, and for all but ``models.<name>`` the variants), hyper-parameters accepted
    by the model's Params dataclass (a variant's are checked by :func:`check_variants`). Returns
    the spec of every registered model of the grid and of ``models``."""
    grid, registered, variants = config["grid"], model_names(), variant_names(config)
    known = [*registered, *(v for v in variants if v not in registered)]
    named = [(f"grid.model[{i}]", m) for i, m in enumerate(grid["model"])]
    named += [("report.baseline", config["report"]["baseline"])]
    named += [(f"report.references[{i}]", m) for i, m in enumerate(config["report"].get("references", []))]
    for key, model in named:
        if model not in known:
            raise config_error(key, f"unknown model {model!r}; known: {known}")
    for model in section(config, "models"):
        if model not in registered:
            hint = f" (a variant's hyper-parameters go in variants.{model}.params)" if model in variants else ""
            raise config_error(f"models.{model}", f"unknown model {model!r}; known: {registered}{hint}")
    for model in grid["per_model"]:
        if model not in grid["model"]:
            raise config_error(f"grid.per_model.{model}", f"not in grid.model {grid['model']}")
    specs = {}
    for model in dict.fromkeys([*grid["model"], *section(config, "models")]):
        if model not in registered:  # a variant
            continue
        try:
            specs[model] = resolve_model(model, config)
        except VariantError as exc:  # a variant named like the model
            raise config_error(exc.key, exc.message) from None
        except (ConfigError, ValueError) as exc:
            raise config_error(f"models.{model}", exc) from None
    return specs


def dataset_wave(config: Mapping, dataset: str):
    """The wavelength grid (vacuum Angstrom) of dataset ``dataset``: the simulator's instrument
    for a synthetic dataset, the file's grid otherwise (the file was checked by describe_dataset)."""
    spec = config["datasets"][dataset]
    if spec["source"] == "synthetic":
        return Instrument().wave
    from specscale.data.sources import open_source

    return open_source(spec["path"]).wave


def check_variants(config: Mapping, dataset: str) -> dict[str, ModelSpec]:
    """Every entry of ``variants`` (a named experiment the grid treats as a model): its name is not
    a registered model, its base is a registered model (not a variant: no chains), its params fill
    the base's Params dataclass, its features are known options that the base applies, and its
    window holds pixels of the dataset's arm (for the ViT at least one patch). The key at fault
    is named: ``config error at variants.NAME.features.window[0]: ...``. Returns the spec of
    every variant."""
    wave, specs = None, {}
    for name in variant_names(config):
        where = f"variants.{name}"
        try:
            spec = specs[name] = resolve_model(name, config)
            features = spec.features
            if features is not None and features.window is not None:
                wave = dataset_wave(config, dataset) if wave is None else wave
                features.bind(wave, f"{where}.features.window")
                patch = getattr(spec.params, "patch", None)  # the ViT: the window must hold a patch
                if patch is not None:
                    window_pixels(wave, features.window, f"{where}.features.window", multiple=patch)
        except VariantError as exc:
            raise config_error(exc.key, exc.message) from None
        except (ConfigError, ValueError) as exc:
            key, sep, message = str(exc).partition(": ")
            if not (sep and key.startswith(where) and " " not in key):
                key, message = where, str(exc)
            raise config_error(key, message) from None
    return specs


def check_against_dataset(config: Mapping, dataset: str, info: DatasetInfo) -> None:
    """Training sizes, magnitude cells and star counts the dataset can serve."""
    grid = config["grid"]
    places = [("grid", grid)] + [(f"grid.per_model.{m}", s) for m, s in grid["per_model"].items()]
    mags = [(f"grid.curves.mag[{i}]", m) for i, m in enumerate(grid["curves"]["mag"])]
    for where, spec in places:
        mags += [(f"{where}.mag[{i}]", m) for i, m in enumerate(spec.get("mag", []))]
        for i, n in enumerate(spec.get("n_train", [])):
            if n > info.n_train:
                raise config_error(
                    f"{where}.n_train[{i}]",
                    f"{n} exceeds the {info.n_train} training stars of datasets.{dataset} (its n_train)",
                )
    for key, mag in mags:
        try:
            info.check_mag(MagRange.parse(mag))
        except ValueError as exc:
            raise config_error(key, f"{mag!r}: {exc}") from None
    for key in ("ceiling", "bayes", "curves"):
        stars = grid[key].get("stars")
        if stars is not None and stars > info.n_test:
            raise config_error(
                f"grid.{key}.stars", f"{stars} exceeds the {info.n_test} test stars of datasets.{dataset}"
            )


def check_package_sections(config: Mapping) -> None:
    """The ``fisher`` and ``wandb`` sections fill their dataclasses (the other package sections are
    checked with the dataset and the models)."""
    from specscale.ceiling.configs import FisherConfig

    for key, cls in (("fisher", FisherConfig), ("wandb", WandbConfig)):
        try:
            from_dict(cls, section(config, key), key)
        except (ConfigError, ValueError) as exc:
            raise config_error(key, exc) from None


def check_paths(config: Mapping) -> None:
    """``results.dir`` (relative to the working directory), ``wandb.dir`` and
    ``sweep.agents.folder`` (relative or absolute) are safe folder paths
    (``specscale.core.files.SAFE_PATH``): one word in any shell command, no ``..``. The schema
    has the same patterns; this check also covers a config that did not pass it."""
    places = [
        ("results.dir", section(config, "results").get("dir", "results"), False),
        ("wandb.dir", section(config, "wandb").get("dir"), True),
        ("sweep.agents.folder", section(config, "sweep", "agents").get("folder"), True),
    ]
    for key, value, absolute in places:
        if value is not None and (why := unsafe_path(value, absolute=absolute)):
            raise config_error(key, why)


def _check_number(key: str, axis: str, value) -> None:
    """A numeric axis value is finite; noise and (fixed) magnitudes are > 0 too. JSON schema
    cannot refuse NaN: it is neither above nor below any bound."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return  # strings: the mag pattern of the schema and MagRange.parse
    positive = axis in ("noise", "mag")
    if not math.isfinite(value) or (positive and value <= 0):
        raise config_error(key, f"{value!r} is not a finite number" + (" > 0" if positive else ""))


def check_axis_values(config: Mapping) -> None:
    """Every value of ``grid.<axis>``, ``grid.per_model.<model>.<axis>``, ``grid.curves.noise`` and
    ``grid.curves.mag`` is a finite number (> 0 for noise and mag), and no list has one value twice
    in canonical form (mag "21.5", 21.5 and "21.50"; noise 1 and 1.0): two spellings would be two
    cells of one; ``exclude`` values are finite too."""
    grid = config["grid"]
    lists = [(f"grid.{a}", a, grid[a]) for a in AXES if a in grid]
    for model, own in (grid.get("per_model") or {}).items():
        lists += [(f"grid.per_model.{model}.{a}", a, own[a]) for a in AXES if a in own]
    curves = grid.get("curves") or {}
    lists += [(f"grid.curves.{a}", a, curves[a]) for a in ("noise", "mag") if a in curves]
    for key, axis, values in lists:
        seen: dict[Any, int] = {}
        for i, value in enumerate(values):
            _check_number(f"{key}[{i}]", axis, value)
            try:
                form = canonical(axis, value)
            except (TypeError, ValueError) as exc:
                raise config_error(f"{key}[{i}]", f"{value!r}: {exc}") from None
            if form in seen:
                j = seen[form]
                raise config_error(f"{key}[{i}]", f"{value!r} duplicates {key}[{j}] {values[j]!r} (both are {form})")
            seen[form] = i
    for i, rule in enumerate(config.get("exclude") or []):
        for axis in AXES:
            values = rule.get(axis)
            if isinstance(values, list):
                for j, value in enumerate(values):
                    _check_number(f"exclude[{i}].{axis}[{j}]", axis, value)
            elif values is not None:
                _check_number(f"exclude[{i}].{axis}", axis, values)


def check_report_models(config: Mapping, cells: list[Cell]) -> None:
    """``report.baseline`` and ``report.references`` are models with cells in the grid (after the
    exclusions): the report's columns for a model without cells would be dashes. Without
    ``report.references`` the oracle is the reference, where the grid runs it."""
    have = list(dict.fromkeys(c.model for c in cells))
    report = config["report"]
    named = [("report.baseline", report["baseline"])]
    named += [(f"report.references[{i}]", m) for i, m in enumerate(report.get("references", []))]
    for key, model in named:
        if model not in have:
            raise config_error(key, f"{model!r} has no cells in the grid (models with cells: {have})")
