"""Model registry: a sweep names a model ("ridge", "lightgbm", "vit", "vit-tiny", "oracle") and gets
its class and its hyper-parameters, filled strictly from config ``models.<name>``.

Entries are import strings, so a model's dependencies (torch, lightgbm) load only when it is used
and a model module written later (the oracle) registers without touching this file's imports.

A *variant* is a named experiment that the sweep treats as one more model (config ``variants``)::

    variants:
      ridge-ca:     {base: ridge, features: {window: ca_triplet}}
      vit-nll:      {base: vit-tiny, params: {loss: gaussian_nll}, features: {input: flux+error}}

``base`` is a registered model (not another variant: no chains), ``params`` override its
``models.<base>`` section key by key (checked by the base's Params dataclass), ``features`` is a
:class:`~specscale.models.features.FeatureConfig` (window, normalisation, input). A model class
says which feature options it applies in ``feature_options`` (ridge, lightgbm: all; the ViT:
window and input, which becomes its ``inputs`` hyper-parameter; the oracle: none). Every lookup
by name (:func:`resolve_model`, :func:`build_model`) accepts a model or a variant.
"""

from __future__ import annotations

import importlib
from dataclasses import fields, replace

from specscale.core.config import ConfigError, from_dict, section
from specscale.models.features import FeatureConfig

REGISTRY = {
    "ridge": "specscale.models.ridge:RidgeModel",
    "lightgbm": "specscale.models.gbm:LightGBMModel",
    "vit": "specscale.models.vit:ViTModel",
    "vit-tiny": "specscale.models.vit:ViTTinyModel",
    "oracle": "specscale.models.oracle:OracleModel",
}


def model_names() -> list[str]:
    """Names a sweep may use."""
    return list(REGISTRY)


def model_class(name: str):
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


def model_params(name: str, config: dict):
    """Hyper-parameters of ``name``: its ``Params`` dataclass filled from ``models.<name>``
    (unknown keys or bad values raise ConfigError naming the key)."""
    cls = model_class(name)
    return from_dict(cls.Params, section(config, "models", name), f"models.{name}")


def build_model(name: str, config: dict, *, seed: int, device: str = "cpu", n_threads: int = 1):
    """An untrained model ``name`` (a registered model or a variant) with hyper-parameters, and for
    a variant its feature pipeline (the model's ``features``), from ``config``."""
    base, params, features = resolve_model(name, config)
    model = model_class(base)(params, seed=seed, device=device, n_threads=n_threads)
    if features is not None:
        model.features = features
    return model


# ---------------------------------------------------------------------------------------- variants
VARIANT_KEYS = ("base", "params", "features")


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


def variant_names(config: dict) -> list[str]:
    """Names of the variants defined in ``config`` (section ``variants``)."""
    return list(section(config, "variants"))


def variant_definition(name: str, config: dict) -> dict:
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


def resolve_model(name: str, config: dict) -> tuple[str, object, FeatureConfig | None]:
    """(base model, its Params, its FeatureConfig or None) of ``name``: a registered model gives
    itself, ``model_params`` and None; a variant (config ``variants.<name>``) its base, the base's
    Params filled from ``models.<base>`` updated by the variant's ``params``, and its features
    (None when they leave the data as they are). Errors are VariantError/ConfigError naming the key."""
    if name in REGISTRY:
        if name in section(config, "variants"):
            variant_definition(name, config)  # raises: a variant may not shadow a model
        return name, model_params(name, config), None
    if name not in section(config, "variants"):
        variants = variant_names(config)
        also = f"; variants: {', '.join(variants)}" if variants else ""
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}{also}")
    where = f"variants.{name}"
    spec = variant_definition(name, config)
    base = spec["base"]
    if base in section(config, "variants") and base not in REGISTRY:
        raise VariantError(
            f"{where}.base", f"{base!r} is itself a variant; a variant's base must be a registered model (no chains)"
        )
    if not isinstance(base, str) or base not in REGISTRY:
        raise VariantError(f"{where}.base", f"unknown base model {base!r}; known: {list(REGISTRY)}")
    cls = model_class(base)
    overrides = dict(spec.get("params") or {})
    try:
        features = FeatureConfig.from_config(spec.get("features"), f"{where}.features")
    except ConfigError as exc:
        raise _keyed(exc, f"{where}.features") from None
    options = getattr(cls, "feature_options", ())
    for option in ("window", "normalisation", "input"):
        if getattr(features, option) != getattr(FeatureConfig(), option) and option not in options:
            raise VariantError(
                f"{where}.features.{option}",
                f"model {base!r} does not apply feature option {option!r} (it applies {list(options) or 'none'})",
            )
    param_names = {f.name for f in fields(cls.Params)}
    if "inputs" in param_names and "input" in options:  # the ViT: features.input is its inputs option
        if "input" in (spec.get("features") or {}):
            if "inputs" in overrides and overrides["inputs"] != features.input:
                raise VariantError(
                    f"{where}.features.input",
                    f"{features.input!r} conflicts with {where}.params.inputs={overrides['inputs']!r}; set one",
                )
            overrides["inputs"] = features.input
        features = replace(features, input="flux")  # the network builds its own input channels
    merged = {**section(config, "models", base), **overrides}
    try:
        params = from_dict(cls.Params, merged, f"{where}.params")
    except ConfigError as exc:
        raise _keyed(exc, f"{where}.params") from None
    return base, params, None if features.is_identity else features


def base_model(name: str, config: dict) -> str:
    """The registered model behind ``name`` (itself for a registered model, a variant's base),
    without checking the variant's params and features; ``name`` itself when it is neither."""
    spec = section(config, "variants").get(name)
    if name in REGISTRY or not isinstance(spec, dict):
        return name
    return str(spec.get("base", name))
