"""Batches on real Redis: live traffic first (gateway/batches/live.py: a gateway answering live
requests makes batch lines on every gateway wait, up to their limit; an idle one does not), and
a line's first answer is the one kept (gateway/batches/store.py)."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from tests.support import TEST_SEALER, Stack
from tiller.gateway.batches.live import HORIZON_SECONDS, LiveTraffic
from tiller.gateway.batches.store import BatchStore


async def test_lines_wait_while_any_gateway_answers_live_requests(stack: Stack) -> None:
    redis = Redis.from_url(stack.redis_url)
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    answering = {"count": 0}
    busy_gateway = LiveTraffic(redis, prefix, lambda: answering["count"])
    batch_gateway = LiveTraffic(redis, prefix, lambda: 0)
    publishing = [asyncio.create_task(g.publish()) for g in (busy_gateway, batch_gateway)]
    try:
        await asyncio.sleep(0.3)
        assert await batch_gateway.quiet(1.0) < 0.05  # nobody live: a line starts at once
        answering["count"] = 3
        await asyncio.sleep(0.3)
        assert await batch_gateway.busy()
        waited = await batch_gateway.quiet(0.6)  # live all along: waits its limit, then goes
        assert 0.5 <= waited < 1.0
        answering["count"] = 0
        await asyncio.sleep(HORIZON_SECONDS + 0.25)
        assert not await batch_gateway.busy()
    finally:
        for task in publishing:
            task.cancel()
        await redis.aclose()


async def test_a_line_keeps_its_first_answer_whichever_hash_either_went_to(stack: Stack) -> None:
    redis = Redis.from_url(stack.redis_url)
    store = BatchStore(redis, TEST_SEALER, f"test-{uuid.uuid4().hex[:8]}:")
    try:
        assert await store.answer("batch_x", 3, True, {"line": "first"})
        assert not await store.answer("batch_x", 3, False, {"line": "late failure"})
        assert not await store.answer("batch_x", 3, True, {"line": "late success"})
        assert await store.answered("batch_x", 3) == (True, {"line": "first"})
        assert [i async for i, _ in store.answers("batch_x", False)] == []
    finally:
        await redis.aclose()
