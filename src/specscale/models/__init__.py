"""Model registry: a sweep names a model ("ridge", "lightgbm", "vit", "vit-tiny", "oracle") and gets
its class and its hyper-parameters, filled strictly from config ``models.<name>``.

Entries are import strings, so a model's dependencies (torch, lightgbm) load only when it is used
and a model module written later (the oracle) registers without touching this file's imports.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing

from ..config import ConfigError, from_dict, section

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
    """An untrained model ``name`` with hyper-parameters from ``config``."""
    return model_class(name)(model_params(name, config), seed=seed, device=device, n_threads=n_threads)


def check_fields(params) -> None:
    """Raise ValueError naming the field when a dataclass value has the wrong type. ints are
    accepted for floats, and so are numeric strings: YAML 1.1 reads ``1e-3`` (no dot) as a string."""
    hints = typing.get_type_hints(type(params))
    for f in dataclasses.fields(params):
        value, hint = getattr(params, f.name), hints[f.name]
        if hint is float and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
            else:
                object.__setattr__(params, f.name, value)
        origin = typing.get_origin(hint) or hint
        if origin in (typing.Union, types.UnionType):
            allowed = tuple(typing.get_origin(a) or a for a in typing.get_args(hint))
        else:
            allowed = (origin,)
        if float in allowed:
            allowed += (int,)
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if not ok:
            raise ValueError(f"{f.name}={value!r} must be of type {getattr(hint, '__name__', hint)}")
