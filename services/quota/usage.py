"""Usage ledger and lease release: what a finished request leaves behind."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from tiller.common.errors import InvalidRequest
from tiller.quota.keys import KeyLayout, valid_key_id

USAGE_TTL_SECONDS = 400 * 86_400  # a little over a year of daily rows


class Ledger:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix

    def _layout(self, key_id: str) -> KeyLayout:
        if not valid_key_id(key_id):
            raise InvalidRequest("key_id is not a key id", param="key_id")
        return KeyLayout(self.prefix, key_id)

    async def record(
        self, key_id: str, request_id: str, model: str, prompt: int, completion: int
    ) -> None:
        layout = self._layout(key_id)
        usage = layout.usage(time.strftime("%Y%m%d", time.gmtime()))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(layout.leases, request_id)
            pipe.hincrby(usage, f"{model}:requests", 1)
            pipe.hincrby(usage, f"{model}:prompt_tokens", max(prompt, 0))
            pipe.hincrby(usage, f"{model}:completion_tokens", max(completion, 0))
            pipe.expire(usage, USAGE_TTL_SECONDS)
            await pipe.execute()

    async def release(self, key_id: str, request_id: str) -> None:
        await self.redis.zrem(self._layout(key_id).leases, request_id)
