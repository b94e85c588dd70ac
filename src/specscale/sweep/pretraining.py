"""The sweep's pre-training stage (config section ``pretrain``): named runs that train a ViT
encoder without labels (``specscale.models.vit.pretrain``), each one job of the workflow whose
``encoder.pt`` a fine-tuned variant starts from.

    pretrain:
      msm: {base: vit, tasks: [msm], n_spectra: 1000000, max_epochs: 20}
    variants:
      vit-msm: {base: vit, params: {pretrain: msm}}              # fine-tune from it
      vit-msm-probe: {base: vit, params: {pretrain: msm, freeze: true}}

A run's keys: ``base`` (a ViT model or ViT variant of the config: the architecture pre-trained,
its supervised settings dropped), ``n_spectra`` (training spectra, default all of the dataset's),
``noise`` (level, default 1), ``mag`` (HSC-i AB cell, default the study's 20.5-22.5), ``seed``
(default 0); every other key is a ``PretrainParams`` field (tasks, mask_frac, max_epochs, lr, ...).
A variant's ``params.pretrain`` holding a run's name is that run's encoder file, which the
generated per-model config spells as its path (:func:`encoder_file`), so the variant's train jobs
depend on the pre-training job and the cell's config hash covers a path, not a name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from specscale.core.config import ConfigError, from_dict
from specscale.core.vocab import MagRange
from specscale.models.registry import ModelSpec, resolve_model
from specscale.models.vit.params import ARCH_FIELDS, ENCODER_NAME, PretrainParams, ViTParams, architecture

JOB_KEYS = ("base", "n_spectra", "noise", "mag", "seed")  # the run's; the other keys are PretrainParams'
STUDY_MAG = "20.5-22.5"


@dataclass(frozen=True)
class PretrainRun:
    """One named pre-training run of the sweep: the model whose architecture it trains (``base``),
    the filled :class:`PretrainParams`, and the data it sees (``n_spectra`` training spectra, or
    0: all of them; ``noise`` level; ``mag`` HSC-i AB cell; ``seed``)."""

    name: str
    base: str
    params: PretrainParams
    n_spectra: int = 0
    noise: float = 1.0
    mag: str = STUDY_MAG
    seed: int = 0

    def cli_args(self) -> dict[str, str]:
        """The values of ``specscale pretrain``'s options for this run (the workflow's rule)."""
        return {"noise": f"{self.noise:g}", "mag": self.mag, "seed": str(self.seed)}


def resolve_run(config: Mapping[str, Any], name: str) -> PretrainRun:
    """The run ``pretrain.<name>`` of ``config``; ConfigError naming the key at fault."""
    where = f"pretrain.{name}"
    entries = config.get("pretrain") or {}
    if name not in entries:
        raise ConfigError(f"{where}: no such pre-training run; the config has {sorted(entries) or 'none'}")
    entry = dict(entries[name] or {})
    base = entry.get("base")
    if not isinstance(base, str):
        raise ConfigError(f"{where}.base: required, the ViT model or variant whose encoder it trains")
    try:
        spec = resolve_model(base, config)
    except ConfigError as exc:
        raise ConfigError(f"{where}.base={base!r}: {exc}") from None
    if not isinstance(spec.params, ViTParams):
        raise ConfigError(f"{where}.base={base!r} is a {spec.base} model: only a ViT's encoder is pre-trained")
    if spec.features is not None and spec.features.window is not None:
        raise ConfigError(f"{where}.base={base!r} sees a window: pre-train on the full spectrum's model")
    noise, seed = entry.get("noise", 1.0), entry.get("seed", 0)
    for key, low in (("n_spectra", 1), ("seed", 0)):
        value = entry.get(key, low)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{where}.{key}={value!r} must be an integer >= {low}")
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not 0 <= noise < float("inf"):
        raise ConfigError(f"{where}.noise={noise!r} must be a finite number >= 0")
    try:
        mag = MagRange.parse(str(entry.get("mag", STUDY_MAG))).label()
    except ValueError as exc:
        raise ConfigError(f"{where}.mag: {exc}") from None
    overrides = {k: v for k, v in entry.items() if k not in JOB_KEYS}
    known = {f.name for f in dataclasses.fields(PretrainParams)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {[f'{where}.{k}' for k in unknown]}; known: {sorted([*JOB_KEYS, *known])}"
        )
    try:
        base_params = PretrainParams.like(spec.params)
        params = from_dict(PretrainParams, {**_fields(base_params), **overrides}, where)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return PretrainRun(name, base, params, entry.get("n_spectra", 0), float(noise), mag, seed)


def _fields(params) -> dict[str, Any]:
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}


def resolve_runs(config: Mapping[str, Any]) -> dict[str, PretrainRun]:
    """Every run of the ``pretrain`` section."""
    return {name: resolve_run(config, name) for name in (config.get("pretrain") or {})}


def encoder_file(results_dir: str, dataset: str, name: str) -> str:
    """The encoder a run writes: ``RESULTS/pretrain/<dataset>/<name>/encoder.pt``."""
    return f"{results_dir}/pretrain/{dataset}/{name}/{ENCODER_NAME}"


def run_of(spec: ModelSpec, runs: Mapping[str, PretrainRun]) -> str | None:
    """The name of the pre-training run a model starts from (its ``pretrain`` names one), else None."""
    value = getattr(spec.params, "pretrain", "")
    return value if value in runs else None


def check_links(specs: Mapping[str, ModelSpec], runs: Mapping[str, PretrainRun], n_train: int) -> None:
    """Every ViT whose ``pretrain`` is set names a run (or an encoder file, ``*.pt``) whose
    architecture it shares, and every run's ``n_spectra`` fits the dataset's ``n_train`` stars."""
    for run in runs.values():
        if run.n_spectra > n_train:
            raise ConfigError(
                f"pretrain.{run.name}.n_spectra={run.n_spectra} exceeds the dataset's {n_train} training spectra"
            )
    for name, spec in specs.items():
        value = getattr(spec.params, "pretrain", "")
        if not value:
            continue
        where = f"variants.{name}.params.pretrain" if spec.is_variant else f"models.{name}.pretrain"
        if value not in runs:
            if not value.endswith(".pt"):
                raise ConfigError(
                    f"{where}={value!r} is neither a run of the pretrain section ({sorted(runs) or 'none'}) "
                    "nor an encoder file (.pt)"
                )
            continue
        mine, theirs = architecture(spec.params), architecture(runs[value].params)
        differ = [k for k in ARCH_FIELDS if mine[k] != theirs[k]]
        if differ:
            k = differ[0]
            raise ConfigError(
                f"{where}={value!r}: pretrain.{value} trains {k}={theirs[k]!r}, this model has {k}={mine[k]!r} "
                f"(set the same {', '.join(differ)}, or base the run on this model)"
            )
