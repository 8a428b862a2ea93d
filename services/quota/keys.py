"""API keys and teams: issued once in plain text, stored only as their SHA-256, with metadata.

Keys are 256 random bits, so a plain hash is as strong as a slow one here and keeps every check
one Redis lookup. The key id (the first 16 hex digits of the hash) is what logs, usage, leases
and the admin API name; the key itself is shown once, at creation (or rotation).

A key's record holds who it is for (name, owner, team), its role, the models it may use (glob
patterns; none means all), its own limits (requests and tokens per minute, concurrent requests,
tokens per day and per month; 0 = none), its queue priority class, an optional expiry and an
optional PII policy of its own (on top of each model's). A team's record holds the same
limits, shared by its keys.

Every quota entry lives under one Redis hash tag (`{quota}`), so one Lua script can check and
count a key, its team and its model atomically, in Redis Cluster too (one slot). Each change an
`actor` asks for is written to the audit log (audit.py) in the transaction that makes it.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from redis.asyncio import Redis

from tiller.common.priorities import DEFAULT_PRIORITY
from tiller.common.redis_text import text
from tiller.contract.keys import digest
from tiller.quota.audit import QUOTA_ITSELF, Actor, AuditLog
from tiller.quota.specs import NAME, spec_settings
from tiller.quota.specs import KeySpec as KeySpec  # where callers have always found them
from tiller.quota.specs import Limits as Limits
from tiller.quota.specs import split_types as split_types

KEY_PREFIX = "tk-"
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def valid_key_id(key_id: str) -> bool:
    return bool(_KEY_ID.match(key_id))


def lua_pattern(glob: str) -> str:
    """A model glob (`llama-*`, `gpt-?`) as an anchored Lua pattern, for the admission script."""
    out = []
    for char in glob:
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char in "^$()%.[]+-":
            out.append("%" + char)
        else:
            out.append(char)
    return "^" + "".join(out) + "$"


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    spec: KeySpec
    created: int
    revoked: bool = False

    @property
    def expired(self) -> bool:
        return bool(self.spec.expires_at) and self.spec.expires_at <= time.time()

    def public(self) -> dict[str, Any]:
        """What the admin API shows of a key: never the key, nor its hash."""
        spec = asdict(self.spec)
        spec["models"] = list(self.spec.models)
        return {"id": self.key_id, **spec, "created": self.created, "revoked": self.revoked}


@dataclass(frozen=True)
class NewKey:
    api_key: str  # shown once, never stored
    key_id: str


@dataclass(frozen=True)
class QuotaLayout:
    """Where quota entries live in Redis: all in one hash slot (`{quota}`)."""

    prefix: str

    @property
    def base(self) -> str:
        return f"{self.prefix}{{quota}}:"

    def record(self, full_digest: str) -> str:
        return f"{self.base}key:{full_digest}"

    def by_id(self, key_id: str) -> str:
        return f"{self.base}id:{key_id}"

    @property
    def keys(self) -> str:
        return f"{self.base}keys"

    def team(self, name: str) -> str:
        return f"{self.base}team:{name}"

    @property
    def teams(self) -> str:
        return f"{self.base}teams"

    def usage(self, day: str) -> str:
        return f"{self.base}usage:{day}"


class KeyStore:
    def __init__(self, redis: Redis, prefix: str, audit: AuditLog | None = None) -> None:
        self.redis, self.layout = redis, QuotaLayout(prefix)
        self.audit = audit or AuditLog(redis, prefix)

    async def create(
        self,
        spec: KeySpec,
        api_key: str | None = None,
        actor: Actor | None = None,
        action: str = "key.create",
    ) -> NewKey:
        spec.check()
        if spec.team and not await self.redis.exists(self.layout.team(spec.team)):
            raise LookupError(f"team: no team {spec.team!r} (create it first)")
        api_key = api_key or new_key()
        full = digest(api_key)
        key_id = full[:16]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.layout.record(full), mapping=_record_fields(key_id, spec))  # type: ignore[arg-type]
            pipe.set(self.layout.by_id(key_id), full)
            pipe.sadd(self.layout.keys, key_id)
            if actor is not None:
                changes = spec_settings(spec)
                self.audit.add(pipe, action, actor, key_id=key_id, team=spec.team, changes=changes)
            await pipe.execute()
        return NewKey(api_key, key_id)

    async def update(self, key_id: str, changes: Mapping[str, Any], actor: Actor) -> KeyRecord:
        """Change some of a key's settings (`changes`: KeySpec field names, and limits by
        name); its id, secret and creation stay. A revoked key stays revoked, unchanged."""
        old = await self.get(key_id)
        if old.revoked:
            raise ValueError(f"id: key {key_id} is revoked; create a new one instead")
        limits = {**asdict(old.spec.limits), **changes.get("limits", {})}
        spec = replace(
            old.spec,
            **{k: v for k, v in changes.items() if k != "limits"},
            limits=Limits.of(limits),
        )
        spec.check()
        moved = spec.team and spec.team != old.spec.team
        if moved and not await self.redis.exists(self.layout.team(spec.team)):
            raise LookupError(f"team: no team {spec.team!r} (create it first)")
        full = await self._digest(key_id)
        fields = _record_fields(key_id, spec)
        settled = {k: v for k, v in fields.items() if k not in ("created", "revoked", "id")}
        before, after = spec_settings(old.spec), spec_settings(spec)
        changed = {k: v for k, v in after.items() if before.get(k) != v}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.layout.record(full), mapping=settled)  # type: ignore[arg-type]
            self.audit.add(
                pipe, "key.update", actor, key_id=key_id, team=spec.team, changes=changed
            )
            await pipe.execute()
        return await self.get(key_id)

    async def issue(
        self, name: str, *, role: str = "member", priority: int = DEFAULT_PRIORITY, **limits: int
    ) -> NewKey:
        """A key with just these settings (every model, no team, no expiry)."""
        return await self.create(
            KeySpec(name, role=role, priority=priority, limits=Limits.of(limits))
        )

    async def get(self, key_id: str) -> KeyRecord:
        full = await self._digest(key_id)
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.layout.record(full))  # type: ignore[assignment]
        return _record(raw)

    async def list(self) -> list[KeyRecord]:
        ids = sorted(text(i) for i in await self.redis.smembers(self.layout.keys))
        records = []
        for key_id in ids:
            try:
                records.append(await self.get(key_id))
            except LookupError:
                continue  # removed meanwhile
        return records

    async def revoke(self, key_id: str, actor: Actor | None = None) -> KeyRecord:
        """Refused by every replica from the next request on: the record itself says so."""
        full = await self._digest(key_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.layout.record(full), "revoked", 1)
            if actor is not None:
                team = text(await self.redis.hget(self.layout.record(full), "team"))
                self.audit.add(pipe, "key.revoke", actor, key_id=key_id, team=team)
            await pipe.execute()
        return await self.get(key_id)

    async def rotate(self, key_id: str, actor: Actor | None = None) -> tuple[NewKey, KeyRecord]:
        """A new key with the same metadata; the old one is revoked in the same step."""
        old = await self.get(key_id)
        if old.revoked:
            raise ValueError(f"id: key {key_id} is revoked; create a new one instead")
        api_key = new_key()
        full, old_full = digest(api_key), await self._digest(key_id)
        new_id = full[:16]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.layout.record(full), mapping=_record_fields(new_id, old.spec))  # type: ignore[arg-type]
            pipe.set(self.layout.by_id(new_id), full)
            pipe.sadd(self.layout.keys, new_id)
            pipe.hset(self.layout.record(old_full), "revoked", 1)
            if actor is not None:
                self.audit.add(
                    pipe,
                    "key.rotate",
                    actor,
                    key_id=key_id,
                    team=old.spec.team,
                    new_key_id=new_id,
                )
            await pipe.execute()
        return NewKey(api_key, new_id), await self.get(new_id)

    async def put_team(self, name: str, limits: Limits, actor: Actor | None = None) -> None:
        if not NAME.match(name):
            raise ValueError("team: 1-128 letters, digits and ._:@/-")
        async with self.redis.pipeline(transaction=True) as pipe:
            fields_: dict[str, str | int] = {"name": name, **asdict(limits)}
            pipe.hset(self.layout.team(name), mapping=fields_)  # type: ignore[arg-type]
            pipe.sadd(self.layout.teams, name)
            if actor is not None:
                changes = {f"limits.{k}": v for k, v in asdict(limits).items()}
                self.audit.add(pipe, "team.put", actor, team=name, changes=changes)
            await pipe.execute()

    async def teams(self) -> dict[str, Limits]:
        names = sorted(text(n) for n in await self.redis.smembers(self.layout.teams))
        found = {}
        for name in names:
            data = await self.redis.hgetall(self.layout.team(name))
            if data:
                found[name] = Limits.of({text(k): v for k, v in data.items()})
        return found

    async def install_bootstrap_admin(self, api_key: str, rpm: int) -> str:
        """Make `api_key` the admin key from the environment, retiring the previous one."""
        marker = f"{self.layout.base}bootstrap-admin"
        previous = await self.redis.get(marker)
        spec = KeySpec("bootstrap-admin", role="admin", limits=Limits(rpm=rpm))
        created = await self.create(spec, api_key, QUOTA_ITSELF, action="key.bootstrap")
        full, old = digest(api_key), text(previous)
        if old and old != full:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.layout.record(old), self.layout.by_id(old[:16]))
                pipe.srem(self.layout.keys, old[:16])
                await pipe.execute()
        await self.redis.set(marker, full)
        return created.key_id

    async def _digest(self, key_id: str) -> str:
        if not valid_key_id(key_id):
            raise LookupError(f"no key {key_id!r}")
        full = text(await self.redis.get(self.layout.by_id(key_id)))
        if not full:
            raise LookupError(f"no key {key_id!r}")
        return full


def _record_fields(key_id: str, spec: KeySpec) -> dict[str, str | int]:
    return {
        "id": key_id,
        "name": spec.name,
        "owner": spec.owner,
        "team": spec.team,
        "role": spec.role,
        "models": json.dumps(list(spec.models)),
        # The same patterns for the admission script (Lua has no glob): one per line.
        "models_lua": "\n".join(lua_pattern(p) for p in spec.models),
        **asdict(spec.limits),
        "priority": spec.priority,
        "expires_at": spec.expires_at,
        "pii_policy": spec.pii_policy,
        "pii_types": ",".join(spec.pii_types),
        "created": int(time.time()),
        "revoked": 0,
    }


def _record(raw: Mapping[bytes, bytes]) -> KeyRecord:
    if not raw:
        raise LookupError("no such key")
    data = {text(k): text(v) for k, v in raw.items()}
    spec = KeySpec(
        name=data.get("name", ""),
        role=data.get("role", "member"),
        owner=data.get("owner", ""),
        team=data.get("team", ""),
        models=tuple(json.loads(data.get("models") or "[]")),
        limits=Limits.of(data),
        priority=int(data.get("priority") or DEFAULT_PRIORITY),
        expires_at=int(data.get("expires_at") or 0),
        pii_policy=data.get("pii_policy", ""),
        pii_types=split_types(data.get("pii_types", "")),
    )
    return KeyRecord(data["id"], spec, int(data.get("created") or 0), data.get("revoked") == "1")
