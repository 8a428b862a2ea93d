"""What an admin says about a key or a team: its settings (KeySpec, Limits), checked here, and
their flat form for the audit log. keys.py stores them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from tiller.common.pii.policy import MODES as PII_MODES
from tiller.common.pii.recognizers import TYPE_NAME
from tiller.common.priorities import DEFAULT_PRIORITY, HIGHEST_PRIORITY, LOWEST_PRIORITY
from tiller.common.redis_text import text

ROLES = ("admin", "member", "viewer")
LIMITS = ("rpm", "tpm", "concurrency", "tokens_per_day", "tokens_per_month")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")
_MODEL_GLOB = re.compile(r"^[A-Za-z0-9._:/*?-]{1,128}$")
MAX_WILDCARDS = 4


def split_types(joined: str) -> tuple[str, ...]:
    """A key record's PII types (comma-joined)."""
    return tuple(t for t in joined.split(",") if t)


@dataclass(frozen=True)
class Limits:
    """Per minute, at once, per day and per month; 0 = no limit."""

    rpm: int = 0
    tpm: int = 0
    concurrency: int = 0
    tokens_per_day: int = 0
    tokens_per_month: int = 0

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Limits:
        values = {}
        for name in LIMITS:
            value = data.get(name) or 0
            if isinstance(value, bytes | str):
                value = int(text(value) or 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a whole number, 0 or more")
            values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class KeySpec:
    """What an admin says about a key: everything but its secret and its bookkeeping."""

    name: str
    role: str = "member"
    owner: str = ""
    team: str = ""
    models: tuple[str, ...] = ()  # glob patterns of model names or aliases; () = every model
    limits: Limits = field(default_factory=Limits)
    priority: int = DEFAULT_PRIORITY
    expires_at: int = 0  # unix seconds; 0 = never
    # The key's own PII policy, on top of each model's (the stricter applies per type):
    # "" (none of its own), off, mask, mask+restore or block; for pii_types (() = every type).
    pii_policy: str = ""
    pii_types: tuple[str, ...] = ()

    def check(self) -> None:
        if not NAME.match(self.name):
            raise ValueError(
                "name: 1-128 letters, digits and ._:@/- (starting with one of the first two)"
            )
        if self.role not in ROLES:
            raise ValueError(f"role: one of {', '.join(ROLES)}")
        if self.team and not NAME.match(self.team):
            raise ValueError("team: 1-128 letters, digits and ._:@/-")
        if len(self.owner) > 256:
            raise ValueError("owner: at most 256 characters")
        for pattern in self.models:
            if not _MODEL_GLOB.match(pattern):
                raise ValueError(f"models: {pattern!r} is not a model name or glob pattern")
            # Lua's matcher backtracks: a few wildcards keep every admission cheap.
            if pattern.count("*") + pattern.count("?") > MAX_WILDCARDS:
                raise ValueError(f"models: {pattern!r} has more than {MAX_WILDCARDS} wildcards")
        if not HIGHEST_PRIORITY <= self.priority <= LOWEST_PRIORITY:
            raise ValueError(f"priority: {HIGHEST_PRIORITY} (first) to {LOWEST_PRIORITY}")
        if self.expires_at < 0:
            raise ValueError("expires_at: unix seconds, or 0 for never")
        if self.pii_policy not in ("", *PII_MODES):
            raise ValueError(f"pii: one of {', '.join(PII_MODES)}")
        if self.pii_types and not self.pii_policy:
            raise ValueError("pii: types need a mode")
        for type_ in self.pii_types:
            if not re.match(TYPE_NAME, type_):
                raise ValueError(f"pii: {type_!r} is not a PII type name (e.g. EMAIL, KR_RRN)")


def spec_settings(spec: KeySpec) -> dict[str, Any]:
    """A key's settings as the audit log records them (flat: limits.rpm, ...)."""
    settings: dict[str, Any] = {
        "name": spec.name,
        "role": spec.role,
        "owner": spec.owner,
        "team": spec.team,
        "models": list(spec.models),
        "priority": spec.priority,
        "expires_at": spec.expires_at,
        "pii": f"{spec.pii_policy}:{','.join(spec.pii_types)}".rstrip(":"),
    }
    settings.update({f"limits.{k}": v for k, v in asdict(spec.limits).items()})
    return settings
