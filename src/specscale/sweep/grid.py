"""The sweep's grid from its config: the cells, the ceiling cells, the window cells, the cube's
axes and the per-stage config files, after the checks of :mod:`specscale.sweep.checks`.

The workflow (``workflow/rules/common.smk``) builds one :class:`Sweep` at parse time from the
config Snakemake holds, so a malformed config fails before any job runs; ``specscale collect``
and ``specscale plan`` build the same one. Every model of the grid is resolved once into a
:class:`~specscale.models.registry.ModelSpec` (``Sweep.specs``) that everything else reads.
A cell is a :class:`~specscale.core.vocab.Cell`; the sweep's dataset is ``Sweep.dataset``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from specscale.core.config import config_hash, section
from specscale.core.vocab import Cell
from specscale.models.registry import ModelSpec
from specscale.sim.windows import window_label
from specscale.sweep.checks import (
    AXES,
    DatasetInfo,
    canonical,
    check_against_dataset,
    check_axis_values,
    check_models,
    check_package_sections,
    check_paths,
    check_report_models,
    check_variants,
    config_error,
    describe_dataset,
    pick_dataset,
    simulation_sections,
)
from specscale.sweep.hypotheses import check_hypotheses
from specscale.sweep.pretraining import PretrainRun, check_links, encoder_file, resolve_runs, run_of


def window_id(spec) -> str:
    """The path and coordinate form of a window spec: "full" (None or "full"), its name, names
    and ranges joined by "+" (a range [lo, hi] in Angstrom as "lo-hi")."""
    if spec is None or spec == "full":
        return "full"
    items = [spec] if isinstance(spec, str) else list(spec)
    parts = [item if isinstance(item, str) else "-".join(f"{float(v):g}" for v in item) for item in items]
    return "+".join(parts)


def grid_cells(config: Mapping) -> list[Cell]:
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
            cell = Cell(noise=noise, mag=mag, model=model, n_train=n, seed=seed)
            form = cell.wildcards()
            hits = [i for i, r in enumerate(rules) if all(form[a] in v for a, v in r.items())]
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
    """One sweep: its (validated) config, the dataset it runs on, its cells and the spec of every
    model it names. Build it with :meth:`from_config`; everything else derives from these."""

    config: Mapping[str, Any]
    dataset: str
    dataset_info: DatasetInfo
    cells: list[Cell]
    specs: Mapping[str, ModelSpec]
    pretrains: Mapping[str, PretrainRun]
    pretrain_links: Mapping[str, str]  # model -> the pre-training run it starts from

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Sweep:
        """Check ``config`` (schema-validated, defaults filled) and expand its grid. The checks
        run in a fixed order (paths and axis values, dataset, models and variants, the grid against
        the dataset, the fisher and wandb sections, hypotheses, exclusions, the report's models)
        and the first failure raises ConfigError naming its key."""
        check_paths(config)
        check_axis_values(config)
        dataset = pick_dataset(config)
        info = describe_dataset(config, dataset)
        specs = check_models(config)
        specs.update(check_variants(config, dataset))
        pretrains = resolve_runs(config)
        check_links(specs, pretrains, info.n_train)
        links = {m: run_of(spec, pretrains) for m, spec in specs.items() if run_of(spec, pretrains)}
        for model, run in links.items():  # as the train job sees it: the run's encoder file
            path = encoder_file(config["results"]["dir"], dataset, run)
            specs[model] = dataclasses.replace(
                specs[model], params=dataclasses.replace(specs[model].params, pretrain=path)
            )
        check_against_dataset(config, dataset, info)
        check_package_sections(config)
        cells = grid_cells(config)
        check_report_models(config, cells)
        check_hypotheses(config, cells)
        return cls(
            config=config,
            dataset=dataset,
            dataset_info=info,
            cells=cells,
            specs=specs,
            pretrains=pretrains,
            pretrain_links=links,
        )

    # ------------------------------------------------------------------ models
    def spec(self, model: str) -> ModelSpec:
        """The resolved spec of a model (or variant) of the config."""
        return self.specs[model]

    @property
    def vit_models(self) -> tuple[str, ...]:
        """The tracked models of the grid (the transformers): their own rule (train_vit) asks for a
        GPU and logs to W&B."""
        return tuple(m for m in self.config["grid"]["model"] if self.specs[m].tracked)

    @property
    def cpu_models(self) -> tuple[str, ...]:
        """The other models of the grid (rule train)."""
        return tuple(m for m in self.config["grid"]["model"] if not self.specs[m].tracked)

    # ------------------------------------------------------------------ pre-training
    def pretrain_of(self, model: str) -> str | None:
        """The pre-training run a model of the config starts from (None: none of the section's)."""
        return self.pretrain_links.get(model)

    def encoder_file(self, run: str) -> str:
        """The encoder file pre-training run ``run`` writes (the workflow's output path)."""
        return encoder_file(self.config["results"]["dir"], self.dataset, run)

    @property
    def pretrain_runs(self) -> list[str]:
        """The pre-training runs the grid's models start from, in section order: the jobs run."""
        used = {self.pretrain_of(m) for m in self.cube_axes["model"]}
        return [name for name in self.pretrains if name in used]

    # ------------------------------------------------------------------ derived axes
    @cached_property
    def ceiling_cells(self) -> list[tuple[str, str]]:
        """(noise, mag) cells with a Fisher ceiling, in path form: those the models run at, by
        noise then magnitude."""
        cells = {(c.noise, c.mag) for c in self.cells}
        return [(f"{n:g}", m.label()) for n, m in sorted(cells)]

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
            features = self.specs[model].features
            out[model] = window_id(None if features is None else features.window)
        return out

    @cached_property
    def windows(self) -> dict[str, Any]:
        """Window id -> window spec, for every window a model of the grid uses other than the
        full spectrum, in grid order."""
        out = {}
        for model in self.cube_axes["model"]:
            wid = self.model_windows[model]
            if wid != "full":
                out.setdefault(wid, self.specs[model].features.window)
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
        cells = {(self.model_windows[c.model], c.noise, c.mag) for c in self.cells}
        order = {w: i for i, w in enumerate(self.windows)}
        ordered = sorted((c for c in cells if c[0] != "full"), key=lambda c: (order[c[0]], c[1], c[2]))
        return [(w, f"{n:g}", m.label()) for w, n, m in ordered]

    @property
    def bayes_stars(self) -> int:
        """Test stars of the Bayes reference of each ceiling cell: ``grid.bayes.stars``, default
        min(1000, the dataset's test stars)."""
        return int(self.config["grid"].get("bayes", {}).get("stars") or min(1000, self.dataset_info.n_test))

    @cached_property
    def cube_axes(self) -> dict[str, list]:
        """The coordinates of the cube (``specscale.sweep.cube.collect``'s ``axes``): the values
        the cells take, sorted (noise as floats, mag by magnitude), models in grid order."""
        models = {c.model for c in self.cells}
        return {
            "noise": sorted({c.noise for c in self.cells}),
            "mag": [m.label() for m in sorted({c.mag for c in self.cells})],
            "model": [m for m in self.config["grid"]["model"] if m in models],
            "n_train": sorted({c.n_train for c in self.cells}),
            "seed": sorted({c.seed for c in self.cells}),
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
        """The simulate config of dataset ``name`` (:func:`~specscale.sweep.checks.simulation_sections`)."""
        return simulation_sections(self.config, name)

    def config_sections(self, name: str) -> dict[str, dict]:
        """What the config file ``results/configs/<name>.yaml`` holds: ``data/<dataset>`` the
        simulate sections, ``model/<model>`` its ``models.<model>`` (and the ``wandb`` section for
        the tracked models), for a variant ``variants.<variant>`` and its base's ``models.<base>``,
        ``fisher`` the fisher section, ``sweep`` the whole config (``specscale collect``),
        ``pretrain/<run>`` the run's entry, its base's model (and variant) sections and ``wandb``.
        A model's ``pretrain`` naming a run is written as that run's encoder file."""
        if name == "fisher":
            return {"fisher": section(self.config, "fisher")}
        if name == "sweep":
            return json.loads(json.dumps(self.config, default=str))
        kind, key = name.split("/", 1)
        if kind == "data":
            return self.simulation_sections(key)
        if kind == "pretrain":
            run = self.pretrains[key]
            return {**self.config_sections(f"model/{run.base}"), "pretrain": {key: self.config["pretrain"][key]}}
        spec = self.specs[key]
        out = {"models": {spec.base: dict(section(self.config, "models", spec.base))}}
        if spec.is_variant:
            out["variants"] = {key: json.loads(json.dumps(spec.definition))}
        run = self.pretrain_of(key)
        if run is not None:  # the run's name becomes its encoder file, an input of the model's jobs
            where = out["variants"][key].setdefault("params", {}) if spec.is_variant else out["models"][spec.base]
            where["pretrain"] = spec.params.pretrain
        if spec.tracked:
            out["wandb"] = section(self.config, "wandb")
        return out

    # ------------------------------------------------------------------ the cube
    def cube_attrs(self) -> dict[str, Any]:
        """Global attributes of the cube: the config (JSON types), its hash, the dataset and the
        report's baseline and reference models; with variants on the model axis, ``variants``: the
        definition of each (base, params, features as in the config)."""
        from specscale.sweep.cube import DEFAULT_REFERENCES

        attrs = {
            "config": json.loads(json.dumps(self.config, default=str)),
            "config_hash": config_hash(self.config),
            "dataset": self.dataset,
            "baseline_model": self.config["report"]["baseline"],
            "reference_models": self.config["report"].get("references", list(DEFAULT_REFERENCES)),
        }
        variants = [m for m in self.cube_axes["model"] if self.specs[m].is_variant]
        if variants:
            attrs["variants"] = {m: json.loads(json.dumps(self.specs[m].definition)) for m in variants}
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
        from specscale.sweep import cube  # here: the cube is xarray, the workflow parses without it

        cells = [
            (
                c,
                metrics.format(dataset=self.dataset, **c.wildcards()),
            )
            for c in self.cells
        ]
        files = {(float(n), m): ceilings.format(dataset=self.dataset, noise=n, mag=m) for n, m in self.ceiling_cells}
        return cube.collect(
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

    def _window_references(self, ceilings: str | None, bayes: str | None):
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

        from specscale.sweep.cube_references import WindowReferences

        return WindowReferences(
            labels={w: window_label(spec) for w, spec in self.windows.items()},
            models=dict(self.model_windows),
            ceilings=files(ceilings),
            bayes=files(bayes),
        )
