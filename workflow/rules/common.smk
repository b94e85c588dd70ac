# Config validation, the grid, paths and resources: everything the rules need, computed once at
# parse time. No rules here; each stage has its own file. Checks fail before any job runs, with a
# message naming the config key.
import itertools
import math
import os
import re
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from specscale.cells import MagCell
from specscale.config import ConfigError, from_dict, section
from specscale.cube import Cell, mag_order
from specscale.models import model_names, model_params
from specscale.sources import open_source
from specscale.store import simulation_configs
from specscale.train import TRACKED

validate(config, schema="../schemas/config.schema.yaml")

SIZE_KEYS = ("n_train", "n_val", "n_test", "seed")
# the transformer models: their own rule (train_vit) asks for a GPU and logs to W&B
VIT_MODELS = tuple(m for m in config["grid"]["model"] if m in TRACKED)
CPU_MODELS = tuple(m for m in config["grid"]["model"] if m not in TRACKED)
FIGURES = ("scaling", "ceiling_curves", "gap", "snr_bins")


def config_error(key, message):
    return WorkflowError(f"config error at {key}: {message}")


# ---------------------------------------------------------------- datasets
def simulation_sections(name):
    """The simulate config of dataset ``name``: the package sections, sizes and seed from
    ``datasets.<name>`` over the ``simulation`` section."""
    sim = dict(section(config, "simulation"))
    sim.update({k: v for k, v in config["datasets"][name].items() if k in SIZE_KEYS})
    return {
        "simulation": sim,
        "observation": section(config, "observation"),
        "atmosphere": section(config, "atmosphere"),
    }


def describe_dataset(name):
    """Sizes of dataset ``name`` and a check of a magnitude cell, without simulating it."""
    spec = config["datasets"][name]
    if spec["source"] == "synthetic":
        try:
            sim, _, _ = simulation_configs(simulation_sections(name))
        except (ConfigError, ValueError) as exc:
            raise config_error(f"datasets.{name} / simulation", exc) from None
        lo, hi = sim.mag_limits

        def check_mag(cell):
            if cell.lo < lo or cell.hi > hi:
                raise ValueError(f"outside simulation.mag_limits {lo:g}-{hi:g}")

        return {"n_train": sim.n_train, "n_test": sim.n_test, "check_mag": check_mag}
    if not Path(spec["path"]).exists():
        raise config_error(f"datasets.{name}.path", f"file not found: {spec['path']}")
    try:
        source = open_source(spec["path"])
    except ValueError as exc:
        raise config_error(f"datasets.{name}.path", exc) from None
    return {
        "n_train": source.n("train"),
        "n_test": source.n("test"),
        "check_mag": source.check_cell,
    }


def pick_dataset():
    names = list(config["datasets"])
    name = config["grid"].get("dataset")
    if name is None:
        if len(names) > 1:
            raise config_error(
                "grid.dataset", f"several datasets {names}: name the one to sweep"
            )
        return names[0]
    if name not in names:
        raise config_error("grid.dataset", f"{name!r} is not in datasets {names}")
    return name


DATASET = pick_dataset()
DATA_INFO = describe_dataset(DATASET)


# ---------------------------------------------------------------- the grid
def canonical(axis, value):
    """The path/coordinate form of an axis value: noise "0.5", mag "20.5-22.5", ints."""
    if axis == "noise":
        return f"{float(value):g}"
    if axis == "mag":
        return MagCell.parse(value).label()
    if axis in ("n_train", "seed"):
        return int(value)
    return str(value)


def check_models():
    """Grid models, per-model entries, report models and models.<name> sections: known names,
    hyper-parameters accepted by the model's Params dataclass."""
    grid, known = config["grid"], model_names()
    named = [(f"grid.model[{i}]", m) for i, m in enumerate(grid["model"])]
    named += [("report.baseline", config["report"]["baseline"])]
    named += [
        (f"report.references[{i}]", m)
        for i, m in enumerate(config["report"]["references"])
    ]
    named += [(f"models.{m}", m) for m in section(config, "models")]
    for key, model in named:
        if model not in known:
            raise config_error(key, f"unknown model {model!r}; known: {known}")
    for model in grid["per_model"]:
        if model not in grid["model"]:
            raise config_error(
                f"grid.per_model.{model}", f"not in grid.model {grid['model']}"
            )
    for model in dict.fromkeys([*grid["model"], *section(config, "models")]):
        try:
            model_params(model, config)
        except (ConfigError, ValueError) as exc:
            raise config_error(f"models.{model}", exc) from None


def check_against_dataset():
    """Training sizes, magnitude cells and star counts the dataset can serve."""
    grid = config["grid"]
    places = [("grid", grid)] + [
        (f"grid.per_model.{m}", s) for m, s in grid["per_model"].items()
    ]
    mags = [(f"grid.curves.mag[{i}]", m) for i, m in enumerate(grid["curves"]["mag"])]
    for where, spec in places:
        mags += [(f"{where}.mag[{i}]", m) for i, m in enumerate(spec.get("mag", []))]
        for i, n in enumerate(spec.get("n_train", [])):
            if n > DATA_INFO["n_train"]:
                raise config_error(
                    f"{where}.n_train[{i}]",
                    f"{n} exceeds the {DATA_INFO['n_train']} training stars of "
                    f"datasets.{DATASET} (its n_train)",
                )
    for key, mag in mags:
        try:
            DATA_INFO["check_mag"](MagCell.parse(mag))
        except ValueError as exc:
            raise config_error(key, f"{mag!r}: {exc}") from None
    for key in ("ceiling", "curves"):
        stars = grid[key].get("stars")
        if stars is not None and stars > DATA_INFO["n_test"]:
            raise config_error(
                f"grid.{key}.stars",
                f"{stars} exceeds the {DATA_INFO['n_test']} test stars of datasets.{DATASET}",
            )


def check_package_sections():
    from specscale.fisher import FisherConfig
    from specscale.tracking import WandbConfig

    for key, cls in (("fisher", FisherConfig), ("wandb", WandbConfig)):
        try:
            from_dict(cls, section(config, key), key)
        except (ConfigError, ValueError) as exc:
            raise config_error(key, exc) from None


def grid_cells():
    """Every cell of the sweep: the product of the axes (per-model values where given) minus
    the exclusions. An exclusion matching no cell is an error (a typo)."""
    grid = config["grid"]
    rules = [
        {
            axis: {
                canonical(axis, v) for v in (vals if isinstance(vals, list) else [vals])
            }
            for axis, vals in rule.items()
        }
        for rule in config["exclude"]
    ]
    used = [0] * len(rules)
    cells = []
    for model in grid["model"]:
        own = grid["per_model"].get(model, {})
        values = [
            own.get(axis, grid[axis]) for axis in ("noise", "mag", "n_train", "seed")
        ]
        for noise, mag, n, seed in itertools.product(*values):
            cell = {
                "dataset": DATASET,
                "model": model,
                "noise": canonical("noise", noise),
                "mag": canonical("mag", mag),
                "n_train": int(n),
                "seed": int(seed),
            }
            hits = [
                i
                for i, r in enumerate(rules)
                if all(cell[a] in v for a, v in r.items())
            ]
            for i in hits:
                used[i] += 1
            if not hits:
                cells.append(cell)
    for i, n in enumerate(used):
        if n == 0:
            raise config_error(
                f"exclude[{i}]", f"{config['exclude'][i]} matches no cell of the grid"
            )
    if not cells:
        raise config_error("exclude", "every cell of the grid is excluded")
    return cells


check_models()
check_against_dataset()
check_package_sections()
CELLS = grid_cells()
# (noise, mag) cells with a Fisher ceiling: those the models run at
CEILING_CELLS = sorted(
    {(c["noise"], c["mag"]) for c in CELLS},
    key=lambda nm: (float(nm[0]), mag_order(nm[1])),
)
CUBE_AXES = {
    "noise": sorted({float(c["noise"]) for c in CELLS}),
    "mag": sorted({c["mag"] for c in CELLS}, key=mag_order),
    "model": [
        m for m in config["grid"]["model"] if any(c["model"] == m for c in CELLS)
    ],
    "n_train": sorted({c["n_train"] for c in CELLS}),
    "seed": sorted({c["seed"] for c in CELLS}),
}
CURVE_NOISE = [
    canonical("noise", v)
    for v in config["grid"]["curves"].get("noise", config["grid"]["noise"])
]
CURVE_MAG = [f"{float(m):g}" for m in config["grid"]["curves"]["mag"]]


# ---------------------------------------------------------------- paths
R = config["results"]["dir"]
LOGS = f"{R}/logs"
BENCH = f"{R}/benchmarks"
CONFIGS = f"{R}/configs"
DATA = f"{R}/data/{{dataset}}.h5"
CELL = (
    f"{R}/cells/{{dataset}}/noise{{noise}}/mag{{mag}}/{{model}}/n{{n_train}}/s{{seed}}"
)
CEILING = f"{R}/ceiling/{{dataset}}/noise{{noise}}_mag{{mag}}.nc"
CURVES = f"{R}/ceiling/{{dataset}}/curves.nc"
CUBE = f"{R}/cube.nc"
PLOTS = f"{R}/plots"
REPORT = f"{R}/report.md"
SYNTHETIC = [n for n, d in config["datasets"].items() if d["source"] == "synthetic"]


def alternatives(names):
    """A wildcard regex matching exactly ``names`` (none: matches nothing)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_]*",
    noise=r"[0-9.]+(e[-+]?[0-9]+)?",
    mag=r"[0-9.]+(-[0-9.]+)?",
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    n_train=r"[0-9]+",
    seed=r"[0-9]+",


def dataset_file(wildcards):
    """The dataset of a job: simulated into results/data/ or the configured file."""
    spec = config["datasets"][wildcards.dataset]
    return (
        DATA.format(dataset=wildcards.dataset)
        if spec["source"] == "synthetic"
        else spec["path"]
    )


def cell_path(cell, name):
    return f"{CELL.format(**cell)}/{name}"


def ceiling_path(cell):
    return CEILING.format(dataset=cell["dataset"], noise=cell["noise"], mag=cell["mag"])


def cell_ceiling(wildcards):
    """The ceiling of a ViT cell, logged to W&B beside its R^2. ancient(): a recomputed ceiling
    does not retrain the model (the cube reads the ceiling files themselves)."""
    return ancient(ceiling_path(dict(wildcards)))


def final_outputs():
    """Every product of the sweep. The cells and ceilings are listed too: Snakemake regenerates
    a deleted file only when something it must run needs it, and the targets are such.
    """
    return (
        [cell_path(c, "metrics.json") for c in CELLS]
        + [
            ceiling_path({"dataset": DATASET, "noise": n, "mag": m})
            for n, m in CEILING_CELLS
        ]
        + [CUBE, REPORT]
        + [f"{PLOTS}/{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")]
    )


# ---------------------------------------------------------------- generated config files
def config_sections(name):
    """What the config file ``results/configs/<name>.yaml`` holds: data/<dataset> (simulate),
    model/<model> (train; W&B settings for the tracked models), fisher (ceiling)."""
    if name == "fisher":
        return {"fisher": section(config, "fisher")}
    kind, key = name.split("/", 1)
    if kind == "data":
        return simulation_sections(key)
    out = {"models": {key: section(config, "models", key)}}
    if key in VIT_MODELS:
        out["wandb"] = section(config, "wandb")
    return out


def write_config(path, sections, log):
    """Write a generated config atomically (a killed job leaves no finished-looking file)."""
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    header = "# generated by the workflow from the sweep config (config_file job): do not edit\n"
    tmp.write_text(header + yaml.safe_dump(sections, sort_keys=False))
    os.replace(tmp, path)
    Path(log).write_text(f"wrote {path}: sections {list(sections)}\n")


# ---------------------------------------------------------------- resources
def job_spec(stage, model=None):
    """Resources of a stage; for train those of the model, else resources.train.default."""
    res = config["resources"]
    if stage == "train":
        return res["train"].get(model, res["train"]["default"])
    return res[stage]


def scaled(stage, key):
    """A resource (mem_mb, runtime) that grows with n_train and with the attempt:
    (base + per_1k * n_train / 1000) * attempt."""

    def value(wildcards, attempt):
        spec = job_spec(stage, getattr(wildcards, "model", None))
        n = int(getattr(wildcards, "n_train", 0))
        return math.ceil((spec[key] + spec[f"{key}_per_1k"] * n / 1000) * attempt)

    return value


def train_threads(wildcards):
    return job_spec("train", wildcards.model)["threads"]


def train_gpus(wildcards):
    return job_spec("train", wildcards.model)["gpu"]


def train_cpus_per_gpu(wildcards):
    spec = job_spec("train", wildcards.model)
    return spec.get("cpus_per_gpu", spec["threads"])


# ---------------------------------------------------------------- the cube
def collect_cube(input, output, log):
    """Read every cell's metrics.json and the ceilings into the cube (specscale.cube)."""
    import json
    import time

    from specscale.config import config_hash
    from specscale.cube import collect, write_cube

    t0 = time.perf_counter()
    cells = [
        (Cell(float(c["noise"]), c["mag"], c["model"], c["n_train"], c["seed"]), path)
        for c, path in zip(CELLS, input.metrics)
    ]
    ceilings = {(float(n), m): p for (n, m), p in zip(CEILING_CELLS, input.ceilings)}
    attrs = {
        "config": json.loads(json.dumps(config, default=str)),
        "config_hash": config_hash(config),
        "dataset": DATASET,
        "baseline_model": config["report"]["baseline"],
        "reference_models": config["report"]["references"],
    }
    try:
        ds = collect(
            cells, axes=CUBE_AXES, ceilings=ceilings, curves=input.curves, attrs=attrs
        )
        write_cube(ds, output[0])
    except Exception as exc:  # the log says why; Snakemake names the log
        Path(log[0]).write_text(f"collect failed: {type(exc).__name__}: {exc}\n")
        raise
    Path(log[0]).write_text(
        f"collected {len(cells)} cells and {len(ceilings)} ceilings into {output[0]} "
        f"in {time.perf_counter() - t0:.2f} s\n"
    )
