"""Configuration: small dataclasses filled from YAML, strict about unknown keys.

A config file is YAML with top-level sections. The package reads ``simulation``,
``observation``, ``atmosphere``, ``models`` (the oracle fit's settings are ``models.oracle``),
``variants``, ``fisher`` and ``wandb``; a caller that accepts a whole sweep config names the
workflow's own sections (``specscale.sweep.sections.WORKFLOW_SECTIONS``: ``datasets``, ``grid``, ...,
validated by the workflow against its JSON schema), which are then ignored here. Any other key is
an error that names it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

PACKAGE_SECTIONS = ("simulation", "observation", "atmosphere", "models", "variants", "fisher", "wandb")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it."""


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """The YAML document in ``path`` (None for an empty file): the one reader of every YAML file
    specscale takes. A file that is not YAML is a ConfigError ``FILE:LINE:COL: problem``; a missing
    or unreadable one names ``what`` and the path."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = "; ".join(str(part).strip() for part in (exc.problem, exc.context) if part)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None


def unknown_key(key: str, known, where: str) -> ConfigError:
    """The error for an unknown config key: its full path, a close known key if there is one."""
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
    hint = f" (did you mean {where}{close[0]}?)" if close else f"; known: {', '.join(sorted(map(str, known)))}"
    return ConfigError(f"unknown config key {where}{key}{hint}")


def load_config(path: str | Path | None, also: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML config file (:func:`read_yaml`); an absent path gives an empty config (all
    defaults). Its top-level keys are package sections or, for a caller that reads whole sweep
    configs, those of ``also``; an unknown one is named."""
    if path is None:
        return {}
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    known = [*PACKAGE_SECTIONS, *also]
    unknown = sorted(map(str, set(data) - set(known)))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{path}: unknown top-level config key(s) {unknown}{hint}; known: {known}")
    return data


def validate_schema(config: dict[str, Any], schema_path: str | Path, where: str | Path) -> None:
    """Check ``config`` against the JSON schema in ``schema_path`` (YAML); the first error is a
    ConfigError naming ``where`` and the key path, e.g. ``FILE: grid.noise[2]: -1 is less than ...``."""
    import jsonschema

    schema = read_yaml(schema_path, "schema")
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    if error.validator == "additionalProperties":  # name the unexpected key(s) with their path
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = list(error.schema.get("properties", {}))
        if len(extra) == 1 and known:
            raise ConfigError(f"{where}: {unknown_key(extra[0], known, key + '.' if key else '')}")
    raise ConfigError(f"{where}: {key or '(top level)'}: {error.message}")


def from_dict(cls, values: dict[str, Any] | None, where: str):
    """Build dataclass ``cls`` from ``values``, failing on keys it does not have.

    ``where`` is the dotted config path used in error messages (e.g. ``models.ridge``).
    """
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {[f'{where}.{k}' for k in unknown]}; known: {sorted(fields)}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # annotations that do not resolve: no string check, the value check still runs
        hints = {}
    out = {}
    for name, value in values.items():
        if not_finite(value, parse_strings=_takes_float(hints.get(name))):
            raise ConfigError(f"{where}.{name}={value!r} must be finite (NaN and infinity are not allowed)")
        default = fields[name].default
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        out[name] = value
    try:
        obj = cls(**out)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return obj


def not_finite(value, parse_strings: bool = False) -> bool:
    """True when ``value`` is, or holds (lists, tuples), a NaN or an infinity. With
    ``parse_strings``, numeric strings count as the float they spell ("nan", "1e400"): YAML 1.1
    reads those as strings, and :func:`check_fields` turns them into floats."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, str) and parse_strings:
        try:
            return not math.isfinite(float(value))
        except ValueError:
            return False
    if isinstance(value, (list, tuple)):
        return any(not_finite(v, parse_strings) for v in value)
    return False


def _takes_float(hint) -> bool:
    """Whether a type hint admits floats (float, float | None, tuple[float, ...])."""
    if hint is None:
        return False
    if hint is float:
        return True
    return any(_takes_float(a) for a in typing.get_args(hint) if a is not Ellipsis)


def section(config: dict[str, Any], *path: str) -> dict[str, Any]:
    """Nested sub-dict of ``config`` (empty if absent)."""
    node: Any = config
    for key in path:
        node = (node or {}).get(key, {})
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ConfigError(f"config {'.'.join(path)} must be a mapping, got {type(node).__name__}")
    return node


def to_jsonable(obj) -> Any:
    """Dataclasses/tuples/paths -> plain JSON types."""
    if dataclasses.is_dataclass(obj):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return obj.item()
    return obj


def config_hash(obj) -> str:
    """Short stable hash of a config (sorted-key JSON), for provenance."""
    blob = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_fields(params) -> None:
    """Raise ValueError naming the field when a dataclass value has the wrong type or is not a
    finite number (NaN and infinity are refused in every float, also inside tuples). ints are
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
        if not_finite(value):
            raise ValueError(f"{f.name}={value!r} must be a finite number (NaN and infinity are not allowed)")
