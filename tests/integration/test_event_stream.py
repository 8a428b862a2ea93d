"""The answer's Redis stream on a real Redis: deltas coalesce while an append is in flight or
within the writer's interval, and every entry is sealed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.support import TEST_SEALER, Stack
from tiller.common.errors import EngineUnavailable
from tiller.contract.answer_stream import EventWriter, read
from tiller.contract.events import Delta, Done
from tiller.contract.results import InferenceResult, Usage


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[Redis]:
    client = Redis.from_url(stack.redis_url)
    yield client
    await client.aclose()


def writer(redis: Redis) -> EventWriter:
    return EventWriter(redis, f"test:events:{uuid.uuid4().hex}", ttl_seconds=60, sealer=TEST_SEALER)


async def test_a_burst_of_deltas_becomes_few_entries_in_order(redis: Redis) -> None:
    out = writer(redis)
    words = [f"w{i} " for i in range(500)]
    for word in words:  # back to back, as a fast engine's deltas arrive
        out.add_delta(word)
    await out.drain()
    await out.done(InferenceResult("".join(words), "stop", Usage()))
    published = await read(redis, out.key, "0", 1, sealer=TEST_SEALER)
    deltas = [e.text for e in published if isinstance(e, Delta)]
    assert "".join(deltas) == "".join(words)
    assert len(deltas) <= 2  # the first append, then everything queued behind it
    assert isinstance(published[-1], Done)


async def test_deltas_that_arrive_apart_are_appended_one_by_one(redis: Redis) -> None:
    out = writer(redis)
    for word in ("a", "b", "c"):
        out.add_delta(word)
        await asyncio.sleep(0.05)  # a slow engine: each append finishes before the next token
    await out.drain()
    published = await read(redis, out.key, "0", 1, sealer=TEST_SEALER)
    assert [e.text for e in published if isinstance(e, Delta)] == ["a", "b", "c"]
    assert len(published) == 3


async def test_within_the_interval_deltas_wait_and_go_out_as_one_entry(redis: Redis) -> None:
    """A slow engine's tokens (10 ms apart) with a 60 ms interval: the first at once, the rest
    in few entries, none lost or reordered; drain sends what waits without waiting out the
    interval."""
    out = EventWriter(
        redis, f"test:events:{uuid.uuid4().hex}", 60, sealer=TEST_SEALER, interval_seconds=0.06
    )
    loop = asyncio.get_running_loop()
    words = [f"w{i} " for i in range(20)]
    started = loop.time()
    out.add_delta(words[0])
    await asyncio.sleep(0.02)
    first = await read(redis, out.key, "0", 1, sealer=TEST_SEALER)
    assert [e.text for e in first if isinstance(e, Delta)] == [words[0]]  # not held back
    for word in words[1:]:
        out.add_delta(word)
        await asyncio.sleep(0.01)
    before_drain = loop.time()
    await out.drain()
    assert loop.time() - before_drain < 0.05  # the last ones did not wait for the interval
    published = await read(redis, out.key, "0", 1, sealer=TEST_SEALER)
    deltas = [e for e in published if isinstance(e, Delta)]
    assert "".join(e.text for e in deltas) == "".join(words)
    assert sum(e.tokens for e in deltas) == len(words)
    elapsed = loop.time() - started
    assert len(deltas) <= 2 + elapsed / 0.06  # at most one entry per interval, plus the ends


async def test_an_append_that_failed_is_raised_to_the_attempt(redis: Redis) -> None:
    broken = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    out = writer(broken)
    out.add_delta("lost")
    with pytest.raises(RedisError):
        await out.drain()
    out.abort()
    await broken.aclose()


async def test_redis_holds_the_answer_sealed(redis: Redis) -> None:
    """What Redis keeps of an answer (and so its append-only file and snapshots) is ciphertext;
    the error event too, which may quote the engine."""
    out = writer(redis)
    await out.delta("kim@example.com 010-1234-5678")
    await out.error(EngineUnavailable("The engine could not read 'kim@example.com'"))
    raw: Any = await redis.xrange(out.key)
    stored = b"".join(value for _, fields in raw for value in fields.values())
    assert len(raw) == 2 and b"kim@example.com" not in stored and b"010-1234" not in stored
    assert b"delta" not in stored and b"error" not in stored  # not even the kinds
    opened = await read(redis, out.key, "0", 1, sealer=TEST_SEALER)
    assert isinstance(opened[0], Delta) and opened[0].text.startswith("kim@")
