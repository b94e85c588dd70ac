# Paths, wildcard constraints, input functions and resources of the rules. The sweep itself (the
# checks naming the config key, the cells, the resolved models, the ceiling cells, the cube's
# axes, the generated configs) is specscale.sweep.grid.Sweep, built once at parse time: a
# malformed config fails before any job runs; the resources are specscale.sweep.resources, as
# `specscale plan` reads them. No rules here; each stage has its own file.
import json
import os
import re
import shlex

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from specscale.core.config import ConfigError
from specscale.report.figures import FIGURES
from specscale.sweep import resources
from specscale.sweep.grid import Sweep

validate(config, schema="../schemas/config.schema.yaml")
try:
    SWEEP = Sweep.from_config(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None


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
BAYES = f"{R}/bayes/{{dataset}}/noise{{noise}}_mag{{mag}}.nc"
CEILING_WINDOW = (
    f"{R}/ceiling/{{dataset}}/window_{{window}}/noise{{noise}}_mag{{mag}}.nc"
)
BAYES_WINDOW = f"{R}/bayes/{{dataset}}/window_{{window}}/noise{{noise}}_mag{{mag}}.nc"
CURVES = f"{R}/ceiling/{{dataset}}/curves.nc"
INFORMATION = f"{R}/ceiling/{{dataset}}/information.nc"
PRETRAIN = f"{R}/pretrain/{{dataset}}/{{name}}/encoder.pt"
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
    window=alternatives(SWEEP.windows),


# ---------------------------------------------------------------- inputs
def dataset_file(wildcards):
    """The dataset of a job: simulated into results/data/ or the configured file."""
    spec = config["datasets"][wildcards.dataset]
    return (
        DATA.format(dataset=wildcards.dataset)
        if spec["source"] == "synthetic"
        else spec["path"]
    )


def cell_path(cell, name):
    """The file ``name`` of a cell (specscale.core.vocab.Cell) of the sweep."""
    return f"{CELL.format(dataset=SWEEP.dataset, **cell.wildcards())}/{name}"


def ceiling_files():
    """The ceiling file of every (noise, mag) cell the models run at."""
    return [
        CEILING.format(dataset=SWEEP.dataset, noise=n, mag=m)
        for n, m in SWEEP.ceiling_cells
    ]


def bayes_files():
    """The Bayes reference file of every (noise, mag) cell the models run at."""
    return [
        BAYES.format(dataset=SWEEP.dataset, noise=n, mag=m)
        for n, m in SWEEP.ceiling_cells
    ]


def window_files(template):
    """A window reference file (CEILING_WINDOW, BAYES_WINDOW) of every window cell: the
    (noise, mag) cells where a variant with that window runs."""
    return [
        template.format(dataset=SWEEP.dataset, window=w, noise=n, mag=m)
        for w, n, m in SWEEP.window_cells
    ]


def window_option(wildcards):
    """``--window SPEC`` of a window reference job (the spec: a name or JSON), shell-quoted."""
    return f"--window {shlex.quote(SWEEP.window_argument(wildcards.window))}"


def ceiling_of_cell(wildcards):
    """The ceiling of a tracked model's cell (rule train_vit), logged to W&B beside its R^2.
    ancient(): a recomputed ceiling does not retrain the model (the cube reads the ceiling
    files themselves)."""
    return ancient(CEILING.format(**dict(wildcards)))


def encoder_of_cell(wildcards):
    """The encoder file a fine-tuned ViT's cell starts from (rule pretrain's output), or nothing."""
    run = SWEEP.pretrain_of(wildcards.model)
    return [] if run is None else SWEEP.encoder_file(run)


def pretrain_options(name):
    """``--noise X --mag M --seed S`` of pre-training run ``name``."""
    return " ".join(
        f"--{k} {shlex.quote(v)}" for k, v in SWEEP.pretrains[name].cli_args().items()
    )


def ceiling_option(wildcards, input):
    """``--ceiling FILE`` for a job that has a ceiling input (train_vit), else nothing."""
    ceiling = getattr(input, "ceiling", None)
    return f"--ceiling {shlex.quote(ceiling)}" if ceiling else ""


def final_outputs():
    """Every product of the sweep. The cells and ceilings are listed too: Snakemake regenerates
    a deleted file only when something it must run needs it, and the targets are such.
    """
    return (
        [cell_path(c, "metrics.json") for c in SWEEP.cells]
        + [SWEEP.encoder_file(name) for name in SWEEP.pretrain_runs]
        + ceiling_files()
        + bayes_files()
        + window_files(CEILING_WINDOW)
        + window_files(BAYES_WINDOW)
        + [CUBE, REPORT]
        + [f"{PLOTS}/{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")]
    )


# ---------------------------------------------------------------- resources
def scaled(stage, key):
    """A resource (mem_mb, runtime) of a stage's jobs that grows with n_train and the attempt."""

    def value(wildcards, attempt):
        spec = resources.job_spec(SWEEP, stage, getattr(wildcards, "model", None))
        n_train = int(getattr(wildcards, "n_train", 0))
        return resources.scaled(spec, key, n_train, attempt)

    return value


def pretrain_resource(key):
    """A pre-training job's memory or runtime: grows with its n_spectra (the dataset's train
    split when unset) and the attempt."""

    def value(wildcards, attempt):
        run = SWEEP.pretrains[wildcards.name]
        n = run.n_spectra or SWEEP.dataset_info.n_train
        return resources.scaled(resources.job_spec(SWEEP, "pretrain"), key, n, attempt)

    return value


def train_resource(name):
    """A train job's resource ``name`` (threads, gpus, cpus_per_gpu) for its model."""
    get = getattr(resources, name)
    return lambda wildcards: get(resources.job_spec(SWEEP, "train", wildcards.model))
