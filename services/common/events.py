"""The per-request Redis stream that carries an answer from the worker to the gateway.

The worker appends `delta` events while the engine streams, then exactly one terminal event:
`done` (with the result and usage) or `error`. Deltas that arrive while the previous append is
still in flight are merged into one entry, so a fast engine costs one append per burst, not one
per token, and a slow one still gets each token out at once. The gateway reads them in order;
each entry's stream id doubles as the SSE event id. The stream expires shortly after it ends,
so nothing of the answer stays in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from tiller.common.redis_text import text

DELTA, DONE, ERROR = "delta", "done", "error"
_FIELD = b"e"


def stream_key(prefix: str, request_id: str) -> str:
    return f"{prefix}events:{request_id}"


def cancel_channel(prefix: str) -> str:
    """Where the gateway publishes the id of a request whose client left (worker/cancels.py)."""
    return f"{prefix}cancel"


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    kind: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.kind in (DONE, ERROR)


class EventWriter:
    def __init__(self, redis: Redis, key: str, ttl_seconds: int) -> None:
        self.redis, self.key, self.ttl = redis, key, ttl_seconds
        self._expiry_set = False
        self._pending: list[str] = []
        self._flusher: asyncio.Task[None] | None = None

    async def delta(self, text: str) -> None:
        await self._append({"kind": DELTA, "text": text})

    def add_delta(self, text: str) -> None:
        """Queue a delta for appending; raises what a previous append raised."""
        self._pending.append(text)
        if self._flusher is None or self._flusher.done():
            if self._flusher is not None:
                self._flusher.result()
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def drain(self) -> None:
        """Wait until every queued delta is appended."""
        if self._flusher is not None:
            await self._flusher

    def abort(self) -> None:
        """Drop queued deltas and stop appending (the attempt was cancelled or failed)."""
        self._pending.clear()
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        elif self._flusher is not None:
            with contextlib.suppress(BaseException):
                self._flusher.result()  # retrieved, so asyncio does not log it as lost

    async def _flush(self) -> None:
        while self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            await self.delta(text)

    async def done(self, result: dict[str, Any]) -> None:
        await self._append({"kind": DONE, "result": result}, final=True)

    async def error(self, error: dict[str, Any]) -> None:
        await self._append({"kind": ERROR, "error": error}, final=True)

    async def _append(self, event: dict[str, Any], final: bool = False) -> None:
        if self._expiry_set and not final:
            await self.redis.xadd(self.key, {_FIELD: orjson.dumps(event)})
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self.key, {_FIELD: orjson.dumps(event)})
            pipe.expire(self.key, self.ttl)
            await pipe.execute()
        self._expiry_set = True


async def read(redis: Redis, key: str, after: str, block_ms: int) -> list[Event]:
    """Events after stream id `after` ("0" for all); waits up to block_ms for the first one."""
    # redis-py types stream replies loosely; the shape is [[key, [(id, {field: value})]]].
    reply: Any = await redis.xread({key: after}, block=block_ms)
    if not reply:
        return []
    return [decode(entry_id, fields) for entry_id, fields in reply[0][1]]


async def last(redis: Redis, key: str) -> Event | None:
    """The newest event of a stream, or None if nothing was published yet."""
    reply: Any = await redis.xrevrange(key, count=1)
    if not reply:
        return None
    return decode(*reply[0])


def decode(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Event:
    body = orjson.loads(fields[_FIELD])
    return Event(text(entry_id), body.pop("kind"), body)


def newer(event_id: str, after: str) -> bool:
    """Whether stream id `event_id` comes after `after` (ids are "<ms>-<seq>")."""
    return _order(event_id) > _order(after)


def _order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def coalesce(batch: list[Event]) -> list[Event]:
    """Merge runs of deltas into one delta each, keeping the last entry's id (for resuming)."""
    if len(batch) < 2:
        return batch
    merged: list[Event] = []
    run: list[Event] = []
    for event in batch:
        if event.kind == DELTA:
            run.append(event)
            continue
        if run:
            merged.append(_merge(run))
            run = []
        merged.append(event)
    if run:
        merged.append(_merge(run))
    return merged


def _merge(run: list[Event]) -> Event:
    if len(run) == 1:
        return run[0]
    return Event(run[-1].id, DELTA, {"text": "".join(e.data["text"] for e in run)})
