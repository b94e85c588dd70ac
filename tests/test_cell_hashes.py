"""Every cell of config/config.yaml, config/logg1m.yaml and the small test configs keeps its
effective configuration and config hash (tests/data/cell_hashes.json, computed by the code
before model specs existed): a finished cell is recognised by that hash, so a drift would rerun
every finished cell of a user's sweep.

The hashes are recomputed as the train job sees its model: resolved from the model's generated
config file (``Sweep.config_sections("model/<model>")``, through JSON as the file is written),
dataset_id replaced by the fixture's placeholder."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from specscale.core.config import config_hash, to_jsonable
from specscale.models.registry import resolve_model
from specscale.sweep.grid import Sweep

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
FIXTURE = json.loads((REPO / "tests/data/cell_hashes.json").read_text())
DATASET = "DATASET"  # the fixture's placeholder for the dataset's content hash

SMALL = {
    "datasets": {"d": {"n_train": 1000, "n_val": 100, "n_test": 300, "seed": 1}},
    "grid": {
        "noise": [0.5, 1.0],
        "mag": ["21.5", 22],
        "model": ["ridge", "lightgbm"],
        "n_train": [200, 400],
        "seed": [0, 1],
        "curves": {"mag": [21.0, 22.0], "stars": 100},
    },
    "wandb": {"mode": "disabled"},
}
VARIANTS = {
    "ridge-ca": {"base": "ridge", "features": {"window": "ca_triplet"}},
    "lgbm-err": {"base": "lightgbm", "features": {"input": "flux+error"}},
    "vit-nll": {"base": "vit-tiny", "params": {"loss": "gaussian_nll"}, "features": {"input": "flux+error"}},
    "ridge-z": {"base": "ridge", "features": {"normalisation": "chunk_zscore"}},
    "vit-sin": {"base": "vit-tiny", "params": {"pos_encoding": "sinusoidal", "max_epochs": 2}},
}
WITH_VARIANTS = {
    "datasets": {"d": {"n_train": 1000, "n_val": 100, "n_test": 300, "seed": 1}},
    "grid": {
        "noise": [1.0],
        "mag": ["21.5"],
        "model": ["ridge", "lightgbm", "vit-tiny", *VARIANTS],
        "n_train": [200, 400],
        "curves": {"mag": [21.0], "stars": 100},
    },
    "variants": VARIANTS,
    "models": {"vit-tiny": {"max_epochs": 1}},
    "report": {"references": []},
    "wandb": {"mode": "disabled"},
}
CONFIGS = {
    "config.yaml": lambda: yaml.safe_load((REPO / "config/config.yaml").read_text()),
    "logg1m.yaml": lambda: yaml.safe_load((REPO / "config/logg1m.yaml").read_text()),
    "test_grid.small": lambda: SMALL,
    "test_variants.sweep_config": lambda: WITH_VARIANTS,
}


def cell_hashes(config: dict) -> tuple[dict, list[str]]:
    """Per model its params and variant block, and the fixture's line of every cell."""
    config = copy.deepcopy(config)
    validate(config, str(SCHEMA))
    sweep = Sweep.from_config(config)
    models, lines = {}, []
    for cell in sweep.cells:
        if cell.model not in models:
            sections = json.loads(json.dumps(sweep.config_sections(f"model/{cell.model}")))
            spec = resolve_model(cell.model, sections)
            assert spec == sweep.spec(cell.model)  # the sweep's cached spec is the train job's
            hashed = to_jsonable(spec.effective(cell, DATASET)["params"])
            models[cell.model] = (spec, {"params": hashed, "variant": spec.variant_info()})
        chash = config_hash(models[cell.model][0].effective(cell, DATASET))
        lines.append(f"{cell.model}|{cell.noise!r}|{cell.mag.label()}|{cell.n_train}|{cell.seed}={chash}")
    return {m: block for m, (_, block) in models.items()}, lines


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_cell_keeps_its_effective_config_and_hash(name):
    expected = FIXTURE[name]
    models, lines = cell_hashes(CONFIGS[name]())
    # models added to a config since the fixture was made add cells; those it pins keep theirs
    assert set(models) >= set(expected["models"])
    models = {m: block for m, block in models.items() if m in expected["models"]}
    lines = [line for line in lines if line.split("|", 1)[0] in expected["models"]]
    for model, block in models.items():  # a mismatch names the model
        assert block == expected["models"][model], model
    assert len(lines) == expected["n_cells"]
    assert sorted(lines)[0] == expected["hash_of_first_cell"]
    digest = hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()
    assert digest == expected["cells_digest"]
