"""Model registry: a sweep names a model ("ridge", "lightgbm", "vit", "vit-tiny", "oracle") or a
variant of one, and :func:`resolve_model` turns that name and the config into a :class:`ModelSpec`:
its class, its hyper-parameters filled strictly from config ``models.<name>``, its features, what
the class can do and the dict a cell's config hash covers. A spec builds the model.

Entries are import strings, so a model's dependencies (torch, lightgbm) load only when it is used
and a model module registers without touching this file's imports.

A *variant* is a named experiment that the sweep treats as one more model (config ``variants``)::

    variants:
      ridge-ca:     {base: ridge, features: {window: ca_triplet}}
      vit-nll:      {base: vit-tiny, params: {loss: gaussian_nll}, features: {input: flux+error}}

``base`` is a registered model (not another variant: no chains), ``params`` override its
``models.<base>`` section key by key (checked by the base's Params dataclass), ``features`` is a
:class:`~specscale.models.features.FeatureConfig` (window, normalisation, input). A model class
says which feature options it applies in ``feature_options`` (ridge, lightgbm: all; the ViT:
window and input, which becomes its ``inputs`` hyper-parameter; the oracle: none).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from specscale.core.config import ConfigError, from_dict, section, to_jsonable
from specscale.core.vocab import Cell
from specscale.models.base import Model
from specscale.models.features import FeatureConfig

REGISTRY = {
    "ridge": "specscale.models.ridge:RidgeModel",
    "lightgbm": "specscale.models.gbm:LightGBMModel",
    "vit": "specscale.models.vit:ViTModel",
    "vit-tiny": "specscale.models.vit:ViTTinyModel",
    "oracle": "specscale.models.oracle:OracleModel",
}
VARIANT_KEYS = ("base", "params", "features")


@dataclass(frozen=True)
class ModelSpec:
    """A model of the sweep, resolved once: ``name`` as the grid says it, the registered ``base``
    model and its class, the filled ``params`` (the class's Params), the variant's ``features``
    (None: the data as it is) and, for a variant, its ``definition`` as the config writes it."""

    name: str
    base: str
    cls: type[Model]
    params: Any
    features: FeatureConfig | None = None
    definition: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def is_variant(self) -> bool:
        return self.definition is not None

    @property
    def tracked(self) -> bool:
        """Its runs log to Weights & Biases (the class's ``tracked``)."""
        return self.cls.tracked

    @property
    def cpu_only(self) -> bool:
        """It runs on the CPU whatever the device asked (the class's ``cpu_only``)."""
        return self.cls.cpu_only

    @property
    def feature_options(self) -> tuple[str, ...]:
        return self.cls.feature_options

    def variant_info(self) -> dict | None:
        """What a cell's config hash covers of the variant: base and features (None: a model)."""
        if not self.is_variant:
            return None
        return {"base": self.base, "features": None if self.features is None else self.features.to_dict()}

    def effective(self, cell: Cell, dataset_id: str) -> dict:
        """The effective configuration of ``cell`` on dataset ``dataset_id``: the dict its config
        hash covers (a finished cell is recognised by that hash). A registered model's has no
        ``variant`` key, so its hash does not depend on the variants of the config."""
        out = {"cell": cell.info(), "params": hashed_params(self.params), "dataset_id": dataset_id}
        if self.is_variant:
            out["variant"] = self.variant_info()
        return out

    def build(self, *, seed: int, device: str = "cpu", n_threads: int = 1) -> Model:
        """An untrained model with these hyper-parameters and features."""
        model = self.cls(self.params, seed=seed, device=device, n_threads=n_threads)
        if self.features is not None:
            model.features = self.features
        return model


def hashed_params(params) -> dict:
    """The hyper-parameters a config hash covers: every field, except that the fields a Params
    class lists in ``hashed_if_set`` count only when they differ from their default (an option
    added to a model leaves the hashes of the cells that do not use it, and so their results, as
    they were)."""
    values = asdict(params)
    optional = getattr(params, "hashed_if_set", ())
    for f in fields(params):
        if f.name in optional and values[f.name] == f.default:
            del values[f.name]
    return values


def model_names() -> list[str]:
    """Names of the registered models."""
    return list(REGISTRY)


def model_class(name: str) -> type[Model]:
    """The ``Model`` subclass registered as ``name``; ConfigError naming the known ones otherwise."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}")
    module, attr = REGISTRY[name].split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # a missing third-party dependency: let it surface as is
            raise
        raise ConfigError(f"model {name!r} is registered but its module {module} is not installed") from exc


def resolve_model(name: str, config: Mapping, overrides: Mapping | None = None) -> ModelSpec:
    """The :class:`ModelSpec` of ``name`` (a registered model or a variant of ``config``), with
    ``overrides`` (hyper-parameter values, e.g. a W&B sweep agent's) over the config's: those of
    ``models.<name>``, or of a variant's ``params``. Errors are ConfigError (VariantError for a
    variant) naming the config key at fault."""
    overrides = dict(overrides or {})
    variants = section(config, "variants")
    if name in REGISTRY:
        if name in variants:
            variant_definition(name, config)  # raises: a variant may not shadow a model
        cls = model_class(name)
        params = from_dict(cls.Params, {**section(config, "models", name), **overrides}, f"models.{name}")
        return ModelSpec(name, name, cls, params)
    if name not in variants:
        also = f"; variants: {', '.join(variants)}" if variants else ""
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}{also}")
    definition = dict(variant_definition(name, config))
    if overrides:
        definition["params"] = {**(definition.get("params") or {}), **overrides}
    return _resolve_variant(name, definition, config)


def _resolve_variant(name: str, definition: dict, config: Mapping) -> ModelSpec:
    """The spec of variant ``name`` from its (structure-checked) ``definition``: its base, the
    base's Params from ``models.<base>`` updated by the variant's params, its features."""
    where = f"variants.{name}"
    base = definition["base"]
    if base in section(config, "variants") and base not in REGISTRY:
        raise VariantError(
            f"{where}.base", f"{base!r} is itself a variant; a variant's base must be a registered model (no chains)"
        )
    if not isinstance(base, str) or base not in REGISTRY:
        raise VariantError(f"{where}.base", f"unknown base model {base!r}; known: {list(REGISTRY)}")
    cls = model_class(base)
    overrides = dict(definition.get("params") or {})
    try:
        features = FeatureConfig.from_config(definition.get("features"), f"{where}.features")
    except ConfigError as exc:
        raise _keyed(exc, f"{where}.features") from None
    for option in ("window", "normalisation", "input"):
        if getattr(features, option) != getattr(FeatureConfig(), option) and option not in cls.feature_options:
            raise VariantError(
                f"{where}.features.{option}",
                f"model {base!r} does not apply feature option {option!r} "
                f"(it applies {list(cls.feature_options) or 'none'})",
            )
    if "inputs" in {f.name for f in fields(cls.Params)} and "input" in cls.feature_options:
        # the ViT: features.input is its inputs hyper-parameter; the network builds its channels
        if "input" in (definition.get("features") or {}):
            if "inputs" in overrides and overrides["inputs"] != features.input:
                raise VariantError(
                    f"{where}.features.input",
                    f"{features.input!r} conflicts with {where}.params.inputs={overrides['inputs']!r}; set one",
                )
            overrides["inputs"] = features.input
        features = replace(features, input="flux")
    try:
        params = from_dict(cls.Params, {**section(config, "models", base), **overrides}, f"{where}.params")
    except ConfigError as exc:
        raise _keyed(exc, f"{where}.params") from None
    return ModelSpec(name, base, cls, params, None if features.is_identity else features, to_jsonable(definition))


# ---------------------------------------------------------------------------------------- variants
class VariantError(ConfigError):
    """A malformed variant; ``key`` is the config key at fault (``variants.NAME.features.window``)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


def _keyed(exc: ConfigError, key: str) -> VariantError:
    """``exc`` as a VariantError: its own leading key when it names one under ``key``."""
    head, sep, rest = str(exc).partition(": ")
    if sep and head.startswith(key) and " " not in head:
        return VariantError(head, rest)
    return VariantError(key, str(exc).removeprefix(f"{key}: "))


def variant_names(config: Mapping) -> list[str]:
    """Names of the variants defined in ``config`` (section ``variants``)."""
    return list(section(config, "variants"))


def variant_definition(name: str, config: Mapping) -> dict:
    """The raw definition ``variants.<name>`` (keys base, params, features), structure checked:
    a mapping with a base, no other keys, and a name that is not a registered model."""
    where = f"variants.{name}"
    spec = section(config, "variants").get(name)
    if name in REGISTRY:
        raise VariantError(where, f"the name collides with the registered model {name!r}; rename the variant")
    if not isinstance(spec, dict):
        raise VariantError(where, f"must be a mapping with keys {list(VARIANT_KEYS)}, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(VARIANT_KEYS))
    if unknown:
        raise VariantError(f"{where}.{unknown[0]}", f"unknown key; a variant has {list(VARIANT_KEYS)}")
    if "base" not in spec:
        raise VariantError(f"{where}.base", "missing: name the registered model this variant changes")
    for key in ("params", "features"):
        if not isinstance(spec.get(key) or {}, dict):
            raise VariantError(f"{where}.{key}", f"must be a mapping, got {type(spec[key]).__name__}")
    return spec
