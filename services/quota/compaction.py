"""Keeping expired answers off Redis's disk.

Redis's append-only file logs every write: an answer stream that expired after its
`TILLER_WORKER_EVENT_TTL_SECONDS` is gone from memory but its writes stay in the file (sealed,
common/sealing.py, but there) until the file is rewritten, which Redis does on its own only as
the file grows. A rewrite writes what is in memory now; but an expired key stays in memory until
Redis reclaims it (its active expiry samples keys a few times a second, so under load some
wait), and a rewrite (or a snapshot) writes those too. So every
`TILLER_QUOTA_REDIS_REWRITE_SECONDS` (one replica per period, under a lock key, and only where the
append-only file is on) quota first walks Tiller's keys with SCAN, which makes Redis reclaim
each expired one it meets, then asks for the rewrite: an expired answer leaves the disk at the
next period. (A Redis that keeps RDB snapshots instead writes its whole file at each snapshot;
the same walk helps it, and quota does not ask it for anything.)

The trade-off, in docs/operations.md: a rewrite forks Redis and writes its whole dataset, a few
milliseconds for Tiller's usual few megabytes; a Redis with gigabytes wants a longer period. A
Redis that refuses the command (managed services often do) is told once in the log, and its
own persistence settings decide.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

log = logging.getLogger(__name__)
SCAN_COUNT = 1000  # keys a SCAN call visits: bounded work per call, Redis serves others between


async def rewrite_forever(redis: Redis, prefix: str, every_seconds: float) -> None:
    """Ask Redis to rewrite its append-only file every `every_seconds` (0: never)."""
    if every_seconds <= 0:
        return
    lock = f"{prefix}{{quota}}:aof-rewrite"
    me = uuid.uuid4().hex
    while True:
        await asyncio.sleep(every_seconds)
        try:
            if not await rewrite_once(redis, prefix, lock, me, every_seconds):
                continue
        except ResponseError as error:
            log.warning(
                "Redis refused to rewrite its append-only file; its own settings decide how "
                "long expired answers stay on its disk",
                extra={"error": str(error).split(" ", 1)[0]},
            )
            return
        except RedisError:
            continue  # away for now: the next period tries again


async def rewrite_once(redis: Redis, prefix: str, lock: str, me: str, every_seconds: float) -> bool:
    """One rewrite, if no other replica asked for one this period and the file is on; Tiller's
    expired keys (under `prefix`) reclaimed first."""
    period_ms = max(1, int(every_seconds * 1000 * 0.9))
    if not await redis.set(lock, me, px=period_ms, nx=True):
        return False  # another quota asked this period
    persistence = await redis.info("persistence")
    if not persistence.get("aof_enabled"):
        return False
    if persistence.get("aof_rewrite_in_progress") or persistence.get("rdb_bgsave_in_progress"):
        return False  # Redis is writing already; the next period asks again
    async for _ in redis.scan_iter(match=f"{prefix}*", count=SCAN_COUNT):
        pass  # each expired key SCAN meets is reclaimed (deleted) by Redis on the way
    await redis.bgrewriteaof()
    log.info("asked Redis to rewrite its append-only file")
    return True
