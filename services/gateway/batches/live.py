"""Live traffic first: a batch line waits while live requests are being answered anywhere.

The lowest priority class orders an engine's queue, but a small stack's own CPU (gateways,
workers, Temporal on one host) has no queue: a batch running flat out slows every live
request's path, not only its engine's. So each gateway says, every TICK_SECONDS while it is
answering live requests (callers waiting on an answer; batch lines are not callers), that it is
busy: its id in one Redis sorted set, scored with the time. A batch line about to start waits
while any gateway said so within the last HORIZON_SECONDS, up to the batch's yield limit, then
starts anyway (a batch under constant live traffic still moves, slowly). An idle gateway writes
nothing; the live path itself does nothing per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
TICK_SECONDS = 0.1
HORIZON_SECONDS = 0.5
FORGET_MS = 60_000


class LiveTraffic:
    def __init__(self, redis: Redis, prefix: str, answering: Callable[[], int]) -> None:
        self.redis, self.key = redis, f"{prefix}batch:live"
        self.answering = answering
        self.me = uuid.uuid4().hex
        self._seen_at = 0.0  # when `_busy` was last read
        self._busy = False

    async def publish(self) -> None:
        """Say this gateway is answering live requests, every tick while it is (until
        cancelled)."""
        while True:
            if self.answering():
                now = time.time() * 1000
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        pipe.zadd(self.key, {self.me: now})
                        pipe.zremrangebyscore(self.key, "-inf", now - FORGET_MS)  # gone gateways
                        await pipe.execute()
                except RedisError:
                    pass  # batches then do not wait for this gateway's callers: nothing breaks
            await asyncio.sleep(TICK_SECONDS)

    async def busy(self) -> bool:
        """Whether any gateway answered live requests within the horizon (read once a tick)."""
        now = time.monotonic()
        if now - self._seen_at >= TICK_SECONDS:
            self._seen_at = now
            since = time.time() * 1000 - HORIZON_SECONDS * 1000
            try:
                self._busy = bool(await self.redis.zcount(self.key, since, "+inf"))
            except RedisError:
                self._busy = False
        return self._busy

    async def quiet(self, limit: float) -> float:
        """Wait until no live request is being answered, at most `limit` seconds; how long it
        waited."""
        started = time.monotonic()
        for _ in range(round(limit / TICK_SECONDS)):
            if not await self.busy():
                break
            await asyncio.sleep(TICK_SECONDS)
        return time.monotonic() - started
