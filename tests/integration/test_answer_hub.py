"""The gateway's answer hub on a real Redis: one blocking reader serves every waiting request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.support import TEST_SEALER, Stack
from tiller.common.errors import AnswerUnreadable
from tiller.contract.answer_stream import EventWriter, coalesce, read
from tiller.contract.events import Delta, Done, Event
from tiller.contract.results import InferenceResult, Usage
from tiller.gateway.answers import AnswerHub, Subscription


@pytest.fixture
async def hub(stack: Stack) -> AsyncIterator[tuple[AnswerHub, Redis]]:
    redis = Redis.from_url(stack.redis_url)
    # A read blocks for a minute: anything faster than that was woken, not timed out.
    answers = AnswerHub(stack.redis_url, redis, "test:", block_ms=60_000, sealer=TEST_SEALER)
    yield answers, redis
    await answers.close()
    await redis.aclose()


def key() -> str:
    return f"test:events:{uuid.uuid4().hex}"


RESULT = InferenceResult("abc", "stop", Usage(1, 3))


def text_of(event: Event) -> str | None:
    return event.text if isinstance(event, Delta) else None


async def test_a_request_that_joins_a_blocked_read_is_served_at_once(
    hub: tuple[AnswerHub, Redis],
) -> None:
    answers, redis = hub
    first = answers.subscribe(key())
    assert await first.next(0.2) == []  # the reader is now blocked on `first` alone
    late_key = key()
    late = answers.subscribe(late_key)
    await EventWriter(redis, late_key, 60, sealer=TEST_SEALER).delta("hello")
    batch = await late.next(5.0)
    assert batch == [Delta("hello", 1, (), batch[0].id)]


async def test_entries_that_pile_up_arrive_together_and_in_order(
    hub: tuple[AnswerHub, Redis],
) -> None:
    answers, redis = hub
    stream = key()
    writer = EventWriter(redis, stream, 60, sealer=TEST_SEALER)
    for word in ("a", "b", "c"):
        await writer.delta(word)
    await writer.done(RESULT)
    sub = answers.subscribe(stream)
    batch = await sub.next(5.0)
    merged = coalesce(batch)
    assert [text_of(e) for e in merged] == ["abc", None]
    assert isinstance(merged[1], Done) and merged[1].result == RESULT
    assert merged[0].id == batch[2].id  # a resumed stream continues after the last delta


async def test_many_requests_share_one_reader(hub: tuple[AnswerHub, Redis]) -> None:
    answers, redis = hub
    keys = [key() for _ in range(200)]
    # The stack's services share this Redis, with pools as large as their load has made them.
    before = len(await redis.client_list())
    subs = [answers.subscribe(k) for k in keys]
    async with redis.pipeline(transaction=False) as pipe:
        for k in keys:
            entry = b'{"kind": "delta", "text": "%s"}' % k.encode()
            pipe.xadd(k, {b"e": TEST_SEALER.seal(entry, k.encode())})
        await pipe.execute()
    batches = await asyncio.gather(*(s.next(5.0) for s in subs))
    assert [text_of(b[0]) for b in batches] == keys
    clients = await redis.client_list()
    # One reader and a small pool, not a connection per request.
    assert len(clients) - before < 20


async def test_an_entry_that_does_not_open_fails_its_stream_only(
    hub: tuple[AnswerHub, Redis],
) -> None:
    """Entries are sealed for their stream: one written in clear (or sealed for another
    stream, or without the key) is not delivered; its readers get an error, others go on."""
    answers, redis = hub
    forged, moved, good = key(), key(), key()
    subs = [answers.subscribe(k) for k in (forged, moved, good)]
    await redis.xadd(forged, {b"e": b'{"kind": "delta", "text": "injected"}'})
    await redis.xadd(
        moved, {b"e": TEST_SEALER.seal(b'{"kind": "delta", "text": "x"}', good.encode())}
    )
    await EventWriter(redis, good, 60, sealer=TEST_SEALER).delta("fine")
    for sub in subs[:2]:
        with pytest.raises(AnswerUnreadable):
            await sub.next(5.0)
    assert [text_of(e) for e in await subs[2].next(5.0)] == ["fine"]


async def test_closing_ends_a_read_that_absorbed_its_cancellation(
    hub: tuple[AnswerHub, Redis],
) -> None:
    answers, _ = hub
    absorbed = 0

    async def stubborn_read(*args: object, **kwargs: object) -> None:
        nonlocal absorbed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if absorbed:
                    raise
                absorbed += 1  # as a library under the read once did

    answers.reader.xread = stubborn_read  # type: ignore[method-assign,assignment]
    answers.subscribe(key())
    await asyncio.sleep(0.1)
    await asyncio.wait_for(answers.close(), 10)
    assert absorbed == 1 and answers._task is not None and answers._task.done()


async def test_two_readers_of_one_stream_each_get_every_entry_from_their_own_place(
    hub: tuple[AnswerHub, Redis],
) -> None:
    answers, redis = hub
    stream = key()
    writer = EventWriter(redis, stream, 60, sealer=TEST_SEALER)
    await writer.delta("a")
    await writer.delta("b")
    first = (await read(redis, stream, "0", 1, sealer=TEST_SEALER))[0]
    whole = answers.subscribe(stream)  # e.g. a background request's watcher
    resumed = answers.subscribe(stream, after=first.id)  # a client resuming after "a"
    await writer.delta("c")
    await writer.done(RESULT)

    async def texts(sub: Subscription) -> list[str | None]:
        got: list[Event] = []
        while not (got and got[-1].terminal):
            got += await sub.next(5.0)
        return [text_of(e) for e in got]

    assert await texts(whole) == ["a", "b", "c", None]
    assert await texts(resumed) == ["b", "c", None]
    answers.unsubscribe(whole)
    answers.unsubscribe(resumed)


async def test_a_reader_that_joins_further_back_during_a_read_misses_nothing(
    hub: tuple[AnswerHub, Redis],
) -> None:
    answers, redis = hub
    stream = key()
    writer = EventWriter(redis, stream, 60, sealer=TEST_SEALER)
    await writer.delta("a")
    ahead = answers.subscribe(stream)
    assert [text_of(e) for e in await ahead.next(5.0)] == ["a"]
    assert await ahead.next(0.2) == []  # the reader now blocks on the stream after "a"
    behind = answers.subscribe(stream)  # from the start, joining that blocked read
    await writer.delta("b")
    got: list[str] = []
    for _ in range(3):
        got += [e.text for e in await behind.next(2.0) if isinstance(e, Delta)]
        if len(got) >= 2:
            break
    assert got == ["a", "b"]
    assert [text_of(e) for e in await ahead.next(5.0)] == ["b"]
