"""Settings objects read once from the environment at start-up.

Each service declares one frozen dataclass and reads it with `load(Settings, "TILLER_GATEWAY_")`.
A field `redis_url` is read from `TILLER_GATEWAY_REDIS_URL`, or else from the shared name given
in its metadata (`TILLER_REDIS_URL`), or else keeps its default. Nothing else reads os.environ.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def shared(name: str, default: Any) -> Any:
    """A field that a service-specific variable overrides and a shared variable sets for all."""
    return dataclasses.field(default=default, metadata={"shared_env": name})


def load(cls: type[T], prefix: str, environ: Mapping[str, str] | None = None) -> T:
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        names = [prefix + field.name.upper()]
        if "shared_env" in field.metadata:
            names.append(field.metadata["shared_env"])
        for name in names:
            if name in env:
                values[field.name] = _convert(name, env[name], hints[field.name])
                break
    return cls(**values)


def env_names(cls: type[Any], prefix: str) -> set[str]:
    """Every variable a settings class reads (for documentation and compose checks)."""
    names = set()
    for field in dataclasses.fields(cls):
        names.add(prefix + field.name.upper())
        if "shared_env" in field.metadata:
            names.add(field.metadata["shared_env"])
    return names


def _convert(name: str, raw: str, hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw == "":
            return None
        hint = args[0]
    try:
        if hint is bool:
            return _to_bool(raw)
        if hint in (int, float, str):
            return hint(raw)
        if typing.get_origin(hint) is tuple:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        kind = {int: "an integer", float: "a number", bool: "true or false"}.get(hint, str(hint))
        raise SettingsError(f"{name}: expected {kind}, got {raw!r}") from None
    raise TypeError(f"unsupported settings type {hint!r} for {name}")


def _to_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)
