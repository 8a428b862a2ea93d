"""API keys: issued once in plain text, stored only as their SHA-256.

Keys are 256 random bits, so a plain hash is as strong as a slow one here and keeps every check
one Redis lookup. All of one key's Redis entries share a hash tag, so the admission script
touches a single slot in Redis Cluster too. The key id (the first 16 hex digits of the hash) is
what logs, usage and leases name.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from tiller.common.priorities import DEFAULT_PRIORITY, HIGHEST_PRIORITY, LOWEST_PRIORITY
from tiller.common.redis_text import text

KEY_PREFIX = "tk-"
ROLES = ("admin", "member", "viewer")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def key_id_of(api_key: str) -> str:
    return digest(api_key)[:16]


def valid_key_id(key_id: str) -> bool:
    return bool(_KEY_ID.match(key_id))


@dataclass(frozen=True)
class KeyLayout:
    """Where one key's entries live in Redis."""

    prefix: str
    key_id: str

    @property
    def _base(self) -> str:
        return f"{self.prefix}{{{self.key_id}}}"

    def record(self, full_digest: str) -> str:
        return f"{self._base}:key:{full_digest}"

    @property
    def requests(self) -> str:
        return f"{self._base}:rpm"

    @property
    def leases(self) -> str:
        return f"{self._base}:leases"

    def usage(self, day: str) -> str:
        return f"{self._base}:usage:{day}"

    def settled(self, request_id: str) -> str:
        """Marks a request as settled, so settling it again changes nothing."""
        return f"{self._base}:settled:{request_id}"


@dataclass(frozen=True)
class NewKey:
    api_key: str  # shown once, never stored
    key_id: str


class KeyStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix

    def layout(self, key_id: str) -> KeyLayout:
        return KeyLayout(self.prefix, key_id)

    async def create(
        self,
        name: str,
        role: str = "member",
        rpm: int = 0,
        concurrency: int = 0,
        api_key: str | None = None,
        priority: int = DEFAULT_PRIORITY,
    ) -> NewKey:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not HIGHEST_PRIORITY <= priority <= LOWEST_PRIORITY:
            raise ValueError(f"priority must be {HIGHEST_PRIORITY} (first) to {LOWEST_PRIORITY}")
        api_key = api_key or new_key()
        full = digest(api_key)
        key_id = full[:16]
        await self.redis.hset(
            self.layout(key_id).record(full),
            mapping={
                "id": key_id,
                "name": name,
                "role": role,
                "rpm": rpm,
                "concurrency": concurrency,
                "priority": priority,
                "created": int(time.time()),
                "revoked": 0,
            },
        )
        return NewKey(api_key, key_id)

    async def install_bootstrap_admin(self, api_key: str, rpm: int) -> str:
        """Make `api_key` the admin key from the environment, retiring the previous one."""
        marker = f"{self.prefix}bootstrap-admin"
        previous = await self.redis.get(marker)
        created = await self.create("bootstrap admin", role="admin", rpm=rpm, api_key=api_key)
        full, old = digest(api_key), text(previous)
        if old and old != full:
            await self.redis.delete(self.layout(old[:16]).record(old))
        await self.redis.set(marker, full)
        return created.key_id
