"""One reader for the answer streams of every open request on this gateway.

Each request waits on its own Redis stream. Instead of a blocking XREAD (and a connection) per
request, one task issues a single blocking XREAD over every stream being waited on and hands the
entries to each request. A request that joins while that read is blocked adds an entry to this
gateway's wake-up stream, which is part of every read, so it is picked up at once; when the
reader is not blocked (it is busy, or idle with nothing to wait on) joining costs nothing.

Entries that piled up between two reads reach the request together, and `answer_stream.coalesce`
merges their deltas: a client slower than the engine gets fewer, larger chunks. Each read costs
the reader and Redis in proportion to the streams it covers, so with many streams open the
reader pauses briefly between reads (at most PACE_MAX_SECONDS) and takes more entries per read:
with one stream there is no pause, with 250 or more it is 5 ms.

Redis away does not end anyone's wait: the reader tries again with backoff, and each request
reads on from its place once Redis is back (the workers hold what they could not append). A
request whose run ends meanwhile is answered from Temporal's copy of its result (calls.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tiller.common import backoff, redis_client
from tiller.common.errors import AnswerUnreadable
from tiller.common.lifecycle import service_task
from tiller.common.redis_text import text
from tiller.common.sealing import Sealer
from tiller.contract.answer_stream import decode_entry, newer, order
from tiller.contract.events import Event

log = logging.getLogger(__name__)
WAKE_TTL_SECONDS = 3600
RETRY_SECONDS = 0.2
RETRY_MOST_SECONDS = 2.0
CLOSE_WAIT_SECONDS = 2.0
PACE_PER_STREAM_SECONDS = 0.00002
PACE_MAX_SECONDS = 0.005


class Subscription:
    """The entries of one request's stream, as they arrive."""

    __slots__ = ("_batch", "_error", "_ready", "after", "key")

    def __init__(self, key: bytes, after: str) -> None:
        self.key, self.after = key, after
        self._batch: list[Event] = []
        self._ready = asyncio.Event()
        self._error: BaseException | None = None

    def deliver(self, entries: list[Event]) -> None:
        """Hand over the entries this subscription has not had yet (a stream read for several
        readers starts at the earliest one's position)."""
        if self.after != "0" and not newer(entries[0].id, self.after):
            entries = [e for e in entries if newer(e.id, self.after)]
        if entries:
            self._batch.extend(entries)
            self.after = entries[-1].id
            self._ready.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._ready.set()

    async def next(self, wait_seconds: float) -> list[Event]:
        """Every entry that arrived since the last call; [] if none came in `wait_seconds`."""
        if not self._batch and self._error is None:
            try:
                await asyncio.wait_for(self._ready.wait(), wait_seconds)
            except TimeoutError:
                return []
        if self._error is not None:
            error, self._error = self._error, None
            self._ready.clear()
            raise error
        batch, self._batch = self._batch, []
        self._ready.clear()
        return batch


class AnswerHub:
    def __init__(
        self, redis_url: str, redis: Redis, prefix: str, block_ms: int, *, sealer: Sealer
    ) -> None:
        self.redis = redis  # the shared pool: wake-ups
        self.sealer = sealer  # opens the streams' entries (contract/answer_stream.py)
        # The reader's own connection, blocked in XREAD most of the time.
        self.reader = redis_client.single(redis_url, socket_timeout=block_ms / 1000 + 5.0)
        self.block_ms = block_ms
        self.wake_key = f"{prefix}gateway-wake:{uuid.uuid4().hex}".encode()
        self._wake_after = "0"
        # Each stream's readers: usually one; a background request's watcher and the clients
        # streaming it share a stream.
        self._subs: dict[bytes, list[Subscription]] = {}
        self._blocked = False  # the reader is inside a blocking XREAD
        self._woken = False  # a wake-up was sent during this read
        self._has_work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._wakes: set[asyncio.Task[None]] = set()  # referenced until done
        self._closing = False

    def subscribe(self, key: str, after: str = "0") -> Subscription:
        sub = Subscription(key.encode(), after)
        self._subs.setdefault(sub.key, []).append(sub)
        if self._task is None:
            self._task = service_task(self._run())
        self._has_work.set()
        if self._blocked and not self._woken:
            self._woken = True
            wake = service_task(self._wake())
            self._wakes.add(wake)
            wake.add_done_callback(self._wakes.discard)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        readers = self._subs.get(sub.key, [])
        if sub in readers:
            readers.remove(sub)
            if not readers:
                del self._subs[sub.key]

    async def close(self) -> None:
        self._closing = True
        task = self._task
        if task is not None:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=CLOSE_WAIT_SECONDS)
            if not done:
                # Something under the blocked read absorbed the cancellation (seen once in CI):
                # cut the reader's connection, which ends the read.
                log.warning("answer reader did not stop; closing its connection")
                if self.reader.connection is not None:
                    await self.reader.connection.disconnect(nowait=True)
                task.cancel()
                await asyncio.wait({task}, timeout=CLOSE_WAIT_SECONDS)
        with contextlib.suppress(RedisError):
            await self.redis.delete(self.wake_key)
        await self.reader.aclose()

    async def _wake(self) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_key, {b"w": b"1"}, maxlen=1)
                pipe.expire(self.wake_key, WAKE_TTL_SECONDS)
                await pipe.execute()
        except RedisError:
            pass  # the reader fails too and tells every waiting request

    async def _run(self) -> None:
        away: Iterator[float] | None = None  # Redis unreachable: the waits between tries
        while not self._closing:
            if not self._subs:
                self._has_work.clear()
                await self._has_work.wait()
                continue
            streams: dict[Any, Any] = {
                key: _earliest(readers) for key, readers in self._subs.items()
            }
            streams[self.wake_key] = self._wake_after
            self._blocked, self._woken = True, False
            try:
                reply: Any = await self.reader.xread(streams, block=self.block_ms)
                away = None
            except RedisError as error:  # Redis away: everyone waits on, from their place
                if away is None:
                    log.warning("answer streams unreachable", extra={"error": type(error).__name__})
                    away = backoff.delays(first=RETRY_SECONDS, most=RETRY_MOST_SECONDS)
                if not self._closing:
                    await asyncio.sleep(next(away))
                continue
            except Exception as error:  # a reply we cannot use: tell everyone
                log.warning("answer streams unreadable", extra={"error": type(error).__name__})
                failure = AnswerUnreadable()
                for readers in self._subs.values():
                    for sub in readers:
                        sub.fail(failure)
                self._subs.clear()
                if not self._closing:
                    await asyncio.sleep(RETRY_SECONDS)
                continue
            finally:
                self._blocked = False
            for key, entries in reply or ():
                if key == self.wake_key:
                    self._wake_after = text(entries[-1][0])
                    continue
                waiting = self._subs.get(key)
                if waiting:
                    try:
                        name = text(key)
                        decoded = [
                            decode_entry(i, fields, name, self.sealer) for i, fields in entries
                        ]
                    except Exception:  # a malformed entry fails that stream's readers only
                        log.exception("unreadable answer stream entry")
                        for sub in self._subs.pop(key, []):
                            sub.fail(AnswerUnreadable())
                        continue
                    start = streams[key]
                    for sub in list(waiting):
                        # One that joined during the read, further back than it began, would
                        # miss entries: the next read starts from its place instead.
                        if not newer(start, sub.after):
                            sub.deliver(decoded)
            if len(self._subs) > 1:
                await asyncio.sleep(
                    min(PACE_MAX_SECONDS, PACE_PER_STREAM_SECONDS * len(self._subs))
                )


def _earliest(readers: list[Subscription]) -> str:
    if len(readers) == 1:
        return readers[0].after
    return min((r.after for r in readers), key=order)
