"""The administration audit log: who created, changed, rotated or revoked which key or team,
when, and from where.

One Redis stream under quota's hash tag (`{prefix}{quota}:audit`), so an entry is added in the
same transaction as the change it records (keys.py): a change is never without its entry, nor
an entry without its change. Entries older than `TILLER_QUOTA_AUDIT_DAYS` are trimmed as new
ones arrive. An entry names keys by id, never by the key, and records new settings, never a
secret.

The actor (who, from where) comes with each administration call from the gateway that the
admin caller reached (admin_gate.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from tiller.common.redis_text import text

MAX_ENTRIES = 1000
DEFAULT_ENTRIES = 100
_PAGE = 500


@dataclass(frozen=True)
class Actor:
    """Who asked for a change, and from where."""

    key_id: str
    name: str
    role: str = "admin"
    client_address: str = ""
    forwarded_for: str = ""
    user_agent: str = ""
    gateway: str = ""


# Quota's own changes: the bootstrap admin key from TILLER_ADMIN_KEY at each start.
QUOTA_ITSELF = Actor("", "quota (TILLER_ADMIN_KEY)")


@dataclass(frozen=True)
class Entry:
    id: str
    at_ms: int
    action: str
    actor: Actor
    key_id: str = ""
    team: str = ""
    changes: Mapping[str, str] = field(default_factory=dict)
    new_key_id: str = ""


class AuditLog:
    def __init__(self, redis: Redis, prefix: str, keep_days: float = 400.0) -> None:
        self.redis = redis
        self.key = f"{prefix}{{quota}}:audit"
        self.keep_ms = int(keep_days * 86_400_000)

    def add(
        self,
        pipe: Pipeline,
        action: str,
        actor: Actor,
        *,
        key_id: str = "",
        team: str = "",
        changes: Mapping[str, Any] | None = None,
        new_key_id: str = "",
    ) -> None:
        """Queue an entry in `pipe`, the transaction that makes the change."""
        fields = {
            "action": action,
            "key_id": key_id,
            "team": team,
            "actor_key_id": actor.key_id,
            "actor_name": actor.name,
            "client_address": actor.client_address,
            "forwarded_for": actor.forwarded_for,
            "user_agent": actor.user_agent,
            "gateway": actor.gateway,
            "changes": json.dumps(dict(changes or {}), sort_keys=True, default=str),
            "new_key_id": new_key_id,
        }
        oldest = int(time.time() * 1000) - self.keep_ms
        pipe.xadd(self.key, fields, minid=oldest, approximate=True)  # type: ignore[arg-type]

    async def query(
        self,
        *,
        key_id: str = "",
        team: str = "",
        since_ms: int = 0,
        until_ms: int = 0,
        limit: int = 0,
    ) -> list[Entry]:
        """Entries newest first, of one key or team if asked, within [since, until)."""
        wanted = min(limit or DEFAULT_ENTRIES, MAX_ENTRIES)
        newest = f"({until_ms}-0" if until_ms else "+"
        oldest = f"{since_ms}-0" if since_ms else "-"
        found: list[Entry] = []
        while len(found) < wanted:
            page: Any = await self.redis.xrevrange(self.key, newest, oldest, count=_PAGE)
            if not page:
                break
            for entry_id, fields in page:
                entry = _entry(text(entry_id), fields)
                if (not key_id or key_id in (entry.key_id, entry.new_key_id)) and (
                    not team or entry.team == team
                ):
                    found.append(entry)
                    if len(found) == wanted:
                        break
            newest = f"({text(page[-1][0])}"
            if len(page) < _PAGE:
                break
        return found


def _entry(entry_id: str, raw: Mapping[bytes, bytes]) -> Entry:
    data = {text(k): text(v) for k, v in raw.items()}
    actor = Actor(
        key_id=data.get("actor_key_id", ""),
        name=data.get("actor_name", ""),
        client_address=data.get("client_address", ""),
        forwarded_for=data.get("forwarded_for", ""),
        user_agent=data.get("user_agent", ""),
        gateway=data.get("gateway", ""),
    )
    changes = json.loads(data.get("changes") or "{}")
    return Entry(
        id=entry_id,
        at_ms=int(entry_id.partition("-")[0]),
        action=data.get("action", ""),
        actor=actor,
        key_id=data.get("key_id", ""),
        team=data.get("team", ""),
        changes={str(k): v if isinstance(v, str) else json.dumps(v) for k, v in changes.items()},
        new_key_id=data.get("new_key_id", ""),
    )
