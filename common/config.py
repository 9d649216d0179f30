"""YAML -> strict pydantic config loading.

Every config model in the project derives from :class:`StrictModel` (unknown keys are an error,
objects are frozen).  :func:`load_config` turns any failure — missing file, YAML syntax, wrong
type, unknown key — into a :class:`ConfigError` whose message names the file, the field path
and the reason, so an installer can fix the file without reading a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Base for config objects and API request bodies: unknown keys rejected, no NaN or
    infinity (``.inf`` in YAML, ``1e999`` in JSON), values immutable after load."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ConfigError(ValueError):
    """A config file or value is invalid; the message says where and why."""


M = TypeVar("M", bound=BaseModel)


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            reason = "unknown field (check spelling; see the config reference in README.md)"
        lines.append(f"  {path}: {reason}")
    return "\n".join(lines)


def validate_config(model: type[M], data: Any, source: str = "<data>") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML in {path}{where}: {problem}") from None
    return {} if data is None else data


def load_config(model: type[M], path: str | Path, overrides: dict[str, Any] | None = None) -> M:
    """Load ``path`` as ``model``; ``overrides`` (nested dicts) are merged over the file."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid config {path}: top level must be a mapping, got {type(data).__name__}"
        )
    if overrides:
        data = deep_merge(data, overrides)
    return validate_config(model, data, str(path))


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
