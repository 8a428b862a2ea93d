"""Expired answers leave Redis's disk: the append-only file keeps a key's writes after the key
expired, until Redis rewrites the file, and a rewrite writes an expired key Redis has not yet
reclaimed; quota reclaims Tiller's (a SCAN) and asks for the rewrite every period (one replica
per period), and afterwards the expired value is gone from the file. On the stack's real Redis
(`tiller up` runs it with its append-only file on), with its active expiry switched off for the
test, as a busy Redis's lags."""

from __future__ import annotations

import asyncio
import secrets
import uuid

from redis.asyncio import Redis

from tests.support import Stack, wait_for
from tiller.quota.compaction import rewrite_once


async def test_a_rewrite_drops_what_expired_from_the_append_only_file(stack: Stack) -> None:
    marker = f"expired-answer-{secrets.token_hex(8)}".encode()
    aof = stack.data_dir / "redis" / "appendonly.aof"
    redis = Redis.from_url(stack.redis_url)
    try:
        await redis.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")  # type: ignore[no-untyped-call]
        await redis.set(f"test:{uuid.uuid4().hex}", marker, px=100)
        await asyncio.sleep(0.3)
        assert wait_for(lambda: marker in aof.read_bytes(), timeout=5)  # expired, yet on disk
        lock, me = f"test:{uuid.uuid4().hex}:aof-rewrite", uuid.uuid4().hex
        while not await rewrite_once(redis, "test:", lock, me, every_seconds=60):
            await asyncio.sleep(0.2)  # a rewrite or snapshot of another test was under way
            await redis.delete(lock)
        again = await rewrite_once(redis, "test:", lock, "another-quota", every_seconds=60)
        assert not again  # one per period, whichever replica asks
        for _ in range(200):  # the rewrite may wait for another child (a snapshot) to end
            persistence = await redis.info("persistence")
            busy = persistence["aof_rewrite_in_progress"] or persistence["aof_rewrite_scheduled"]
            if not busy and marker not in aof.read_bytes():
                break
            await asyncio.sleep(0.1)
        assert marker not in aof.read_bytes()
    finally:
        await redis.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "1")  # type: ignore[no-untyped-call]
        await redis.aclose()
