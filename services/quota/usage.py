"""Usage ledger and lease release: what a finished request leaves behind."""

from __future__ import annotations

import time
from collections.abc import Sequence

from redis.asyncio import Redis

from tiller.common.errors import InvalidRequest
from tiller.protos.quota.v1.quota_pb2 import Settlement
from tiller.quota.keys import KeyLayout, valid_key_id

USAGE_TTL_SECONDS = 400 * 86_400  # a little over a year of daily rows


class Ledger:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix

    def _layout(self, key_id: str) -> KeyLayout:
        if not valid_key_id(key_id):
            raise InvalidRequest("key_id is not a key id", param="key_id")
        return KeyLayout(self.prefix, key_id)

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Release every lease and record the usage of completed requests, in one round trip."""
        day = time.strftime("%Y%m%d", time.gmtime())
        layouts = [self._layout(s.key_id) for s in settlements]  # all valid, or none written
        async with self.redis.pipeline(transaction=False) as pipe:
            for s, layout in zip(settlements, layouts, strict=True):
                pipe.zrem(layout.leases, s.request_id)
                if s.completed:
                    usage = layout.usage(day)
                    pipe.hincrby(usage, f"{s.model}:requests", 1)
                    pipe.hincrby(usage, f"{s.model}:prompt_tokens", max(s.prompt_tokens, 0))
                    pipe.hincrby(usage, f"{s.model}:completion_tokens", max(s.completion_tokens, 0))
                    pipe.expire(usage, USAGE_TTL_SECONDS)
            await pipe.execute()
