"""The sweep's grid from its config: the checks (each naming its config key), the cells, the
ceiling cells, the cube's axes and the per-stage config files.

The workflow (``workflow/rules/common.smk``) builds one :class:`Sweep` at parse time from the
config Snakemake holds, so a malformed config fails before any job runs; ``specscale collect``
builds the same one to know the cube's cells. The config must have been validated against
``workflow/schemas/config.schema.yaml`` (which fills the defaults of the workflow sections); the
package sections are checked here by the package's dataclasses. Every check raises
:class:`~specscale.core.config.ConfigError` with the text ``config error at KEY: message``.

A cell is a dict ``{dataset, model, noise, mag, n_train, seed}`` in its canonical path form
(:func:`canonical`): noise ``"0.5"``, mag ``"20.5-22.5"``, ints for n_train and seed.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from specscale.ceiling.configs import FisherConfig
from specscale.core.config import ConfigError, config_hash, from_dict, section
from specscale.core.files import unsafe_path
from specscale.core.vocab import Cell, MagRange
from specscale.data.simulate import simulation_configs
from specscale.data.sources import open_source
from specscale.models.registry import (
    VariantError,
    base_model,
    model_names,
    model_params,
    resolve_model,
    variant_definition,
    variant_names,
)
from specscale.sim.instrument import Instrument
from specscale.sim.windows import window_label, window_pixels
from specscale.sweep.cell import TRACKED
from specscale.sweep.cube import DEFAULT_REFERENCES, collect
from specscale.sweep.cube_references import WindowReferences
from specscale.sweep.hypotheses import check_hypotheses
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


def window_id(spec) -> str:
    """The path and coordinate form of a window spec: "full" (None or "full"), its name, names
    and ranges joined by "+" (a range [lo, hi] in Angstrom as "lo-hi")."""
    if spec is None or spec == "full":
        return "full"
    items = [spec] if isinstance(spec, str) else list(spec)
    parts = [item if isinstance(item, str) else "-".join(f"{float(v):g}" for v in item) for item in items]
    return "+".join(parts)


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
    try:
        source = open_source(spec["path"])
    except ValueError as exc:
        raise config_error(f"datasets.{name}.path", exc) from None
    return DatasetInfo(n_train=source.n("train"), n_test=source.n("test"), check_mag=source.check_cell)


def check_models(config: Mapping) -> None:
    """Grid models, per-model entries, report models and ``models.<name>`` sections: known names
    (registered models, and for all but ``models.<name>`` the variants), hyper-parameters accepted
    by the model's Params dataclass (a variant's are checked by :func:`check_variants`)."""
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
    for model in dict.fromkeys([*grid["model"], *section(config, "models")]):
        if model not in registered:  # a variant
            continue
        try:
            model_params(model, config)
        except (ConfigError, ValueError) as exc:
            raise config_error(f"models.{model}", exc) from None


def dataset_wave(config: Mapping, dataset: str):
    """The wavelength grid (vacuum Angstrom) of dataset ``dataset``: the simulator's instrument
    for a synthetic dataset, the file's grid otherwise (the file was checked by describe_dataset)."""
    spec = config["datasets"][dataset]
    if spec["source"] == "synthetic":
        return Instrument().wave
    return open_source(spec["path"]).wave


def check_variants(config: Mapping, dataset: str) -> None:
    """Every entry of ``variants`` (a named experiment the grid treats as a model): its name is not
    a registered model, its base is a registered model (not a variant: no chains), its params fill
    the base's Params dataclass, its features are known options that the base applies, and its
    window holds pixels of the dataset's arm (for the ViT at least one patch). The key at fault
    is named: ``config error at variants.NAME.features.window[0]: ...``."""
    wave = None
    for name in variant_names(config):
        where = f"variants.{name}"
        try:
            _, params, features = resolve_model(name, config)
            if features is not None and features.window is not None:
                wave = dataset_wave(config, dataset) if wave is None else wave
                features.bind(wave, f"{where}.features.window")
                patch = getattr(params, "patch", None)  # the ViT: the window must hold a patch
                if patch is not None:
                    window_pixels(wave, features.window, f"{where}.features.window", multiple=patch)
        except VariantError as exc:
            raise config_error(exc.key, exc.message) from None
        except (ConfigError, ValueError) as exc:
            key, sep, message = str(exc).partition(": ")
            if not (sep and key.startswith(where) and " " not in key):
                key, message = where, str(exc)
            raise config_error(key, message) from None


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


def check_report_models(config: Mapping, cells: list[dict[str, Any]]) -> None:
    """``report.baseline`` and ``report.references`` are models with cells in the grid (after the
    exclusions): the report's columns for a model without cells would be dashes. Without
    ``report.references`` the oracle is the reference, where the grid runs it."""
    have = list(dict.fromkeys(c["model"] for c in cells))
    report = config["report"]
    named = [("report.baseline", report["baseline"])]
    named += [(f"report.references[{i}]", m) for i, m in enumerate(report.get("references", []))]
    for key, model in named:
        if model not in have:
            raise config_error(key, f"{model!r} has no cells in the grid (models with cells: {have})")


def grid_cells(config: Mapping, dataset: str) -> list[dict[str, Any]]:
    """Every cell of the sweep: per model (in ``grid.model`` order), the product of the axes
    (``grid.per_model.<model>`` values where given) minus the exclusions. An exclusion matching no
    cell is an error (a typo), and so is a grid left empty."""
    grid = config["grid"]
    rules = [
        {
            axis: {canonical(axis, v) for v in (vals if isinstance(vals, list) else [vals])}
            for axis, vals in rule.items()
        }
        for rule in config["exclude"]
    ]
    used = [0] * len(rules)
    cells = []
    for model in grid["model"]:
        own = grid["per_model"].get(model, {})
        for noise, mag, n, seed in itertools.product(*(own.get(axis, grid[axis]) for axis in AXES)):
            cell = {
                "dataset": dataset,
                "model": model,
                "noise": canonical("noise", noise),
                "mag": canonical("mag", mag),
                "n_train": int(n),
                "seed": int(seed),
            }
            hits = [i for i, r in enumerate(rules) if all(cell[a] in v for a, v in r.items())]
            for i in hits:
                used[i] += 1
            if not hits:
                cells.append(cell)
    for i, n in enumerate(used):
        if n == 0:
            raise config_error(f"exclude[{i}]", f"{config['exclude'][i]} matches no cell of the grid")
    if not cells:
        raise config_error("exclude", "every cell of the grid is excluded")
    return cells


@dataclass(frozen=True)
class Sweep:
    """One sweep: its (validated) config, the dataset it runs on and its cells. Build it with
    :meth:`from_config`; everything else derives from these."""

    config: Mapping[str, Any]
    dataset: str
    dataset_info: DatasetInfo
    cells: list[dict[str, Any]]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Sweep:
        """Check ``config`` (schema-validated, defaults filled) and expand its grid. The checks
        run in a fixed order (paths and axis values, dataset, models, the grid against the dataset,
        the fisher and wandb sections, exclusions, the report's models) and the first failure
        raises ConfigError naming its key."""
        check_paths(config)
        check_axis_values(config)
        dataset = pick_dataset(config)
        info = describe_dataset(config, dataset)
        check_models(config)
        check_variants(config, dataset)
        check_against_dataset(config, dataset, info)
        check_package_sections(config)
        check_hypotheses(config)
        cells = grid_cells(config, dataset)
        check_report_models(config, cells)
        return cls(config=config, dataset=dataset, dataset_info=info, cells=cells)

    # ------------------------------------------------------------------ models
    @property
    def vit_models(self) -> tuple[str, ...]:
        """The transformer models of the grid: their own rule (train_vit) asks for a GPU and logs
        to W&B (``specscale.sweep.cell.TRACKED``)."""
        return tuple(m for m in self.config["grid"]["model"] if base_model(m, self.config) in TRACKED)

    @property
    def cpu_models(self) -> tuple[str, ...]:
        """The other models of the grid (rule train)."""
        return tuple(m for m in self.config["grid"]["model"] if base_model(m, self.config) not in TRACKED)

    # ------------------------------------------------------------------ derived axes
    @cached_property
    def ceiling_cells(self) -> list[tuple[str, str]]:
        """(noise, mag) cells with a Fisher ceiling, canonical strings: those the models run at,
        by noise then magnitude."""
        return sorted(
            {(c["noise"], c["mag"]) for c in self.cells}, key=lambda nm: (float(nm[0]), MagRange.parse(nm[1]))
        )

    @cached_property
    def information_cell(self) -> tuple[str, str]:
        """The (noise, mag) cell of the log g information per wavelength chunk (the information
        figure): the study's cell (noise 1, HSC-i 20.5-22.5) when the sweep runs it, else the first
        ceiling cell."""
        return ("1", "20.5-22.5") if ("1", "20.5-22.5") in self.ceiling_cells else self.ceiling_cells[0]

    @cached_property
    def model_windows(self) -> dict[str, str]:
        """The window id (:func:`window_id`) of every model of the cube: "full" for those that see
        every pixel, else its variant's window."""
        out = {}
        for model in self.cube_axes["model"]:
            _, _, features = resolve_model(model, self.config)
            out[model] = window_id(None if features is None else features.window)
        return out

    @cached_property
    def windows(self) -> dict[str, Any]:
        """Window id -> window spec, for every window a model of the grid uses other than the
        full spectrum, in grid order."""
        out = {}
        for model in self.cube_axes["model"]:
            _, _, features = resolve_model(model, self.config)
            wid = self.model_windows[model]
            if wid != "full":
                out.setdefault(wid, features.window)
        return out

    def window_argument(self, window: str) -> str:
        """The ``--window`` argument of a window's references: its name, or its spec as JSON."""
        spec = self.windows[window]
        return spec if isinstance(spec, str) else json.dumps(spec)

    @cached_property
    def window_cells(self) -> list[tuple[str, str, str]]:
        """(window id, noise, mag) of every window's own references (Fisher ceiling, Bayes
        reference): the (noise, mag) cells where a model of that window runs, so "window vs full
        spectrum" is compared with its own ceiling on the same stars."""
        cells = {(self.model_windows[c["model"]], c["noise"], c["mag"]) for c in self.cells}
        order = {w: i for i, w in enumerate(self.windows)}
        return sorted(
            (c for c in cells if c[0] != "full"),
            key=lambda c: (order[c[0]], float(c[1]), MagRange.parse(c[2])),
        )

    @property
    def bayes_stars(self) -> int:
        """Test stars of the Bayes reference of each ceiling cell: ``grid.bayes.stars``, default
        min(1000, the dataset's test stars)."""
        return int(self.config["grid"].get("bayes", {}).get("stars") or min(1000, self.dataset_info.n_test))

    @cached_property
    def cube_axes(self) -> dict[str, list]:
        """The coordinates of the cube (``specscale.sweep.cube.collect``'s ``axes``): the values
        the cells take, sorted (noise as floats, mag by magnitude), models in grid order."""
        return {
            "noise": sorted({float(c["noise"]) for c in self.cells}),
            "mag": sorted({c["mag"] for c in self.cells}, key=MagRange.parse),
            "model": [m for m in self.config["grid"]["model"] if any(c["model"] == m for c in self.cells)],
            "n_train": sorted({c["n_train"] for c in self.cells}),
            "seed": sorted({c["seed"] for c in self.cells}),
        }

    @property
    def curve_noise(self) -> list[str]:
        """Noise levels of the ceiling curves (``grid.curves.noise``, default the grid's)."""
        curves = self.config["grid"]["curves"]
        return [canonical("noise", v) for v in curves.get("noise", self.config["grid"]["noise"])]

    @property
    def curve_mag(self) -> list[str]:
        """Fixed magnitudes of the ceiling curves (``grid.curves.mag``)."""
        return [f"{float(m):g}" for m in self.config["grid"]["curves"]["mag"]]

    # ------------------------------------------------------------------ generated configs
    def simulation_sections(self, name: str) -> dict[str, dict]:
        """The simulate config of dataset ``name`` (:func:`simulation_sections`)."""
        return simulation_sections(self.config, name)

    def config_sections(self, name: str) -> dict[str, dict]:
        """What the config file ``results/configs/<name>.yaml`` holds: ``data/<dataset>`` the
        simulate sections, ``model/<model>`` its ``models.<model>`` (and the ``wandb`` section for
        the tracked models), for a variant ``variants.<variant>`` and its base's ``models.<base>``,
        ``fisher`` the fisher section, ``sweep`` the whole config (``specscale collect``)."""
        if name == "fisher":
            return {"fisher": section(self.config, "fisher")}
        if name == "sweep":
            return json.loads(json.dumps(self.config, default=str))
        kind, key = name.split("/", 1)
        if kind == "data":
            return self.simulation_sections(key)
        base = base_model(key, self.config)
        out = {"models": {base: section(self.config, "models", base)}}
        if base != key:
            out["variants"] = {key: variant_definition(key, self.config)}
        if key in self.vit_models:
            out["wandb"] = section(self.config, "wandb")
        return out

    # ------------------------------------------------------------------ the cube
    def cube_attrs(self) -> dict[str, Any]:
        """Global attributes of the cube: the config (JSON types), its hash, the dataset and the
        report's baseline and reference models; with variants on the model axis, ``variants``: the
        definition of each (base, params, features as in the config)."""
        attrs = {
            "config": json.loads(json.dumps(self.config, default=str)),
            "config_hash": config_hash(self.config),
            "dataset": self.dataset,
            "baseline_model": self.config["report"]["baseline"],
            "reference_models": self.config["report"].get("references", list(DEFAULT_REFERENCES)),
        }
        variants = [m for m in self.cube_axes["model"] if base_model(m, self.config) != m]
        if variants:
            attrs["variants"] = {m: json.loads(json.dumps(variant_definition(m, self.config))) for m in variants}
        return attrs

    def collect(
        self,
        metrics: str,
        ceilings: str,
        curves: str | Path,
        bayes: str | None = None,
        window_ceilings: str | None = None,
        window_bayes: str | None = None,
    ):
        """The scaling cube of this sweep (an xarray Dataset; ``specscale.sweep.cube.collect``).

        ``metrics`` is the path template of a cell's metrics.json (fields dataset, noise, mag,
        model, n_train, seed, as in the workflow's paths), ``ceilings`` that of a (noise, mag)
        cell's ceiling file (dataset, noise, mag); ``curves`` is the ceiling curves file;
        ``bayes`` (optional) the path template of a (noise, mag) cell's Bayes reference file;
        ``window_ceilings`` and ``window_bayes`` (optional) those of a window's own references
        (fields dataset, window, noise, mag) at its :attr:`window_cells`."""
        cells = [
            (Cell(float(c["noise"]), c["mag"], c["model"], c["n_train"], c["seed"]), metrics.format(**c))
            for c in self.cells
        ]
        files = {(float(n), m): ceilings.format(dataset=self.dataset, noise=n, mag=m) for n, m in self.ceiling_cells}
        return collect(
            cells,
            axes=self.cube_axes,
            ceilings=files,
            curves=curves,
            attrs=self.cube_attrs(),
            hypotheses=check_hypotheses(self.config),
            bayes=None
            if bayes is None
            else {(float(n), m): bayes.format(dataset=self.dataset, noise=n, mag=m) for n, m in self.ceiling_cells},
            windows=self._window_references(window_ceilings, window_bayes),
        )

    def _window_references(self, ceilings: str | None, bayes: str | None) -> WindowReferences | None:
        """The window references of :meth:`collect` (None without window cells or templates)."""
        if not self.window_cells or (ceilings is None and bayes is None):
            return None

        def files(template):
            if template is None:
                return {}
            return {
                (w, float(n), m): template.format(dataset=self.dataset, window=w, noise=n, mag=m)
                for w, n, m in self.window_cells
            }

        return WindowReferences(
            labels={w: window_label(spec) for w, spec in self.windows.items()},
            models=dict(self.model_windows),
            ceilings=files(ceilings),
            bayes=files(bayes),
        )
