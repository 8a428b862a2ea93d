"""Payloads too large for Temporal's history, kept in Redis (payload_codec.py's claim check).

A request's input over OFFLOAD_BYTES once sealed (a long prompt, a large batch of texts to embed)
is stored under `{prefix}payload:<random id>` for OFFLOAD_TTL_SECONDS, and its run's history holds
the reference. Everything under the gateway's body limit can then run; the history of a request
older than the TTL can no longer be opened in full (the Temporal UI, the codec endpoint), though
its run ended long before.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tiller.common.errors import ServiceUnavailable
from tiller.common.redis_text import text

OFFLOAD_BYTES = 256 * 1024
OFFLOAD_TTL_SECONDS = 7 * 86_400


class RedisOffload:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        threshold_bytes: int = OFFLOAD_BYTES,
        ttl_seconds: int = OFFLOAD_TTL_SECONDS,
    ) -> None:
        self.redis, self.prefix = redis, prefix
        self.threshold_bytes, self.ttl = threshold_bytes, ttl_seconds

    async def put(self, data: bytes) -> bytes:
        key = f"{self.prefix}payload:{uuid.uuid4().hex}"
        try:
            await self.redis.set(key, data, ex=self.ttl)
        except RedisError:
            raise ServiceUnavailable("A large request cannot be stored right now.") from None
        return key.encode()

    async def get(self, ref: bytes) -> bytes | None:
        key = text(ref)
        if not key.startswith(f"{self.prefix}payload:"):
            return None  # not one of ours: nothing to fetch
        try:
            data = await self.redis.get(key)
        except RedisError:
            raise ServiceUnavailable("A large request cannot be read right now.") from None
        return data.encode() if isinstance(data, str) else data
