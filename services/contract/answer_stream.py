"""The per-request Redis stream that carries an answer's events (events.py) from the worker to
the gateway.

The worker appends deltas while the engine streams, then exactly one terminal event. Deltas
that arrive while the previous append is still in flight are merged into one entry, so a fast
engine costs one append per burst, not one per token, and a slow one still gets each token out
at once. The gateway reads them in order; each entry's stream id doubles as the SSE event id.
The stream expires shortly after it ends, so nothing of the answer stays in Redis, and every
entry is sealed with the payload keys (common/sealing.py) for the stream it is in: Redis, its
append-only file and its snapshots hold ciphertext, and an entry written without a key does
not open (the reader fails that stream's request).

When an attempt fails and another takes over (a retry, the next deployment), the new attempt
first appends a claim with its higher fence, which makes the stream refuse every earlier
attempt's appends, and reads what was delivered before it: it can continue that text (or
return a finished result) without the client ever seeing a word twice.

Redis away (restarting, failing over) does not end an attempt: the writer keeps what it has
not appended and tries again with backoff for up to `outage_seconds`, then appends it all in
order. Each append carries its attempt's sequence number, and the script skips one the stream
already holds, so an append whose reply was lost (Redis died after writing it) is not added
twice when it is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tiller.common import backoff
from tiller.common.errors import TillerError
from tiller.common.redis_text import text
from tiller.common.sealing import Sealer
from tiller.contract.events import Choices, Claim, Delta, Done, Event, Failed, decode, encode
from tiller.contract.results import InferenceResult, Usage

_FIELD = b"e"
# Attempts are numbered across deployments: fence = target index * this + attempt.
FENCE_STRIDE = 100
# Above every engine attempt's fence: a pipeline's own write (its answer, its error) wins.
PUBLISH_FENCE = 1_000_000

# Append entries unless a later attempt has written to the stream (its newest entry carries a
# higher fence): a worker presumed dead that is in fact still running cannot add to an answer
# another attempt continues. Returns the last new entry's id, or 0 when refused.
# The same append sent again (its reply was lost) is skipped: the newest entry already carries
# this attempt's fence and a sequence number at least as high; its id is returned.
_APPEND = """
local fence = tonumber(ARGV[1])
local seq = tonumber(ARGV[3])
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if newest then
  local fields = newest[2]
  local a, s
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'a' then a = tonumber(fields[i + 1]) end
    if fields[i] == 's' then s = tonumber(fields[i + 1]) end
  end
  if a and a > fence then return 0 end
  if a == fence and s and s >= seq then return newest[1] end
end
local id
for i = 4, #ARGV do
  id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i], 'a', ARGV[1], 's', ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return id
"""
log = logging.getLogger(__name__)
T = TypeVar("T")


class Superseded(Exception):
    """A later attempt owns this answer's stream; this attempt must stop writing."""


@dataclass(frozen=True)
class Delivered:
    """What earlier attempts published: the text the client has (or will have) received."""

    text: str = ""
    tokens: int = 0  # engine deltas, about one token each
    any: bool = False  # any delta at all: tool-call or other choices' chunks carry no `text`
    done: Done | None = None
    error: Failed | None = None

    @classmethod
    def of(cls, published: list[Event]) -> Delivered:
        deltas = [e for e in published if isinstance(e, Delta)]
        return cls(
            text="".join(e.text for e in deltas),
            tokens=sum(e.tokens for e in deltas),
            any=bool(deltas),
            done=next((e for e in published if isinstance(e, Done)), None),
            error=next((e for e in published if isinstance(e, Failed)), None),
        )


class EventWriter:
    """Appends one attempt's events. `fence` orders attempts: a later attempt's is higher, and
    once it has claimed the stream an earlier attempt's appends raise Superseded."""

    def __init__(
        self,
        redis: Redis,
        key: str,
        ttl_seconds: int,
        fence: int = 1,
        live_ttl_seconds: int | None = None,
        *,
        sealer: Sealer,
        outage_seconds: float = 0.0,
        waiting: Callable[[], None] | None = None,
        interval_seconds: float = 0.0,
    ) -> None:
        """`ttl_seconds`: how long the stream stays once it ended; `live_ttl_seconds`: until
        then (long enough for a later attempt to find it, however long the request may run).
        `outage_seconds`: how long a Redis that cannot be reached is waited for before an
        append fails; `waiting` is called at each try meanwhile (the worker heartbeats).
        `interval_seconds`: queued deltas (add_delta) are appended at most this often, the
        first at once; what arrives in between goes in the next append, one entry."""
        self.redis, self.key, self.ttl, self.fence = redis, key, ttl_seconds, fence
        self.sealer = sealer
        self.outage_seconds, self.waiting = outage_seconds, waiting
        self._seq = 0
        self.live_ttl = max(live_ttl_seconds or 0, ttl_seconds)
        self._script = redis.register_script(_APPEND)
        self._pending: list[tuple[str, Choices | None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.interval = interval_seconds
        self._last_append = -math.inf  # the event loop's clock when the last flush appended
        self._timer: asyncio.TimerHandle | None = None  # a flush waiting for the interval

    async def claim(self) -> list[Event]:
        """Take the stream over from earlier attempts; returns what they published."""
        claimed = await self._append([Claim()])
        reply: Any = await self._riding_out(lambda: self.redis.xrange(self.key, "-", claimed))
        return [decode_entry(i, f, self.key, self.sealer) for i, f in reply if text(i) != claimed]

    async def ended(self) -> None:
        """The answer had ended before: give the stream back its short expiry."""
        await self.redis.expire(self.key, self.ttl)

    async def delta(self, text_: str, tokens: int = 1, chunks: tuple[Choices, ...] = ()) -> None:
        """`chunks`: the engine's chunk choices, one list per chunk, where the request passed
        parameters through (tool calls, logprobs, several choices) and the client gets them."""
        await self._append([Delta(text_, tokens, chunks)])

    def add_delta(self, text_: str, choices: Choices | None = None) -> None:
        """Queue a delta for appending; raises what a previous append raised.

        Deltas queued while an append is in flight, or within `interval` of the last one, go
        out together as one entry: fewer appends, stream reads and SSE events per token."""
        self._pending.append((text_, choices))
        self._schedule()

    def _schedule(self) -> None:
        """Start a flush of what is queued: now, or once the interval since the last is up."""
        if self._timer is not None:
            return  # one is due
        if self._flusher is not None:
            if not self._flusher.done():
                return  # it takes what is queued when its append returns
            self._flusher.result()
        loop = asyncio.get_running_loop()
        wait = self._last_append + self.interval - loop.time()
        if wait > 0:
            self._timer = loop.call_later(wait, self._flush_now)
        else:
            self._flush_now()

    def _flush_now(self) -> None:
        self._timer = None
        self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def drain(self) -> None:
        """Append every queued delta now (not waiting out the interval), and wait for it;
        raises what an append raised."""
        while True:
            if self._flusher is not None and not self._flusher.done():
                await self._flusher
                continue
            if self._flusher is not None:
                self._flusher.result()
            if self._timer is not None:
                self._timer.cancel()
            elif not self._pending:
                return
            self._flush_now()

    def abort(self) -> None:
        """Drop queued deltas and stop appending (the attempt was cancelled or failed)."""
        self._pending.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        elif self._flusher is not None:
            with contextlib.suppress(BaseException):
                self._flusher.result()  # retrieved, so asyncio does not log it as lost

    async def _flush(self) -> None:
        while self._pending:
            pieces = len(self._pending)
            joined = "".join(text_ for text_, _ in self._pending)
            chunks = tuple(choices for _, choices in self._pending if choices)
            self._pending.clear()
            loop = asyncio.get_running_loop()
            self._last_append = loop.time()
            await self.delta(joined, pieces, chunks)
            if self.interval > 0 and self._pending:
                # What came during the append waits out the interval (a timer, not this task).
                wait = self._last_append + self.interval - loop.time()
                self._timer = loop.call_later(max(0.0, wait), self._flush_now)
                return

    async def done(self, result: InferenceResult) -> None:
        await self._append([Done(result)], final=True)

    async def error(self, error: TillerError, spent: Usage | None = None) -> None:
        await self._append([Failed(error, spent or Usage())], final=True)

    async def _append(self, entries: list[Event], final: bool = False) -> str:
        """Append under this attempt's fence; the id of the last entry added."""
        ttl = self.ttl if final else self.live_ttl
        where = self.key.encode()
        sealed = [self.sealer.seal(encode(e), where) for e in entries]
        self._seq += 1
        args: list[bytes | int] = [self.fence, ttl, self._seq, *sealed]
        added = await self._riding_out(lambda: self._script(keys=[self.key], args=args))
        if not added:
            raise Superseded(self.key)
        return text(added)

    async def _riding_out(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call`, tried again while Redis cannot be reached, for up to outage_seconds."""
        try:
            return await call()  # the usual case: nothing to set up
        except (RedisConnectionError, RedisTimeoutError):
            if self.outage_seconds <= 0:
                raise
        log.warning("answer stream unreachable: holding the answer")
        deadline = time.monotonic() + self.outage_seconds
        for wait in backoff.delays(first=0.1, most=2.0):
            if self.waiting is not None:
                self.waiting()
            await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            try:
                return await call()
            except (RedisConnectionError, RedisTimeoutError):
                if time.monotonic() >= deadline:
                    raise
        raise AssertionError("unreachable: the delays never end")  # pragma: no cover


def decode_entry(
    entry_id: bytes | str, fields: dict[bytes, bytes], key: str, sealer: Sealer
) -> Event:
    """One entry (its id and fields) of stream `key` as its event; PayloadKeyError (a
    ValueError) if it does not open."""
    return decode(entry_id, sealer.open(fields[_FIELD], key.encode()))


async def read(redis: Redis, key: str, after: str, block_ms: int, *, sealer: Sealer) -> list[Event]:
    """Events after stream id `after` ("0" for all); waits up to block_ms for the first one."""
    # redis-py types stream replies loosely; the shape is [[key, [(id, {field: value})]]].
    reply: Any = await redis.xread({key: after}, block=block_ms)
    if not reply:
        return []
    return [decode_entry(entry_id, fields, key, sealer) for entry_id, fields in reply[0][1]]


async def newest(redis: Redis, key: str, *, sealer: Sealer) -> Event | None:
    """The stream's last entry, or None if it has none (or is gone)."""
    reply: Any = await redis.xrevrange(key, count=1)
    if not reply:
        return None
    entry_id, fields = reply[0]
    return decode_entry(entry_id, fields, key, sealer)


def newer(event_id: str, after: str) -> bool:
    """Whether stream id `event_id` comes after `after` (ids are "<ms>-<seq>")."""
    return order(event_id) > order(after)


def order(stream_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def claimless(batch: list[Event]) -> list[Event]:
    """The batch without its claims (an attempt taking over carries no answer)."""
    return [e for e in batch if not isinstance(e, Claim)]


def coalesce(batch: list[Event]) -> list[Event]:
    """Merge runs of deltas into one delta each, keeping the last entry's id (for resuming).

    Claims (an attempt taking over after a failure) are dropped: they carry no answer."""
    if len(batch) < 2:
        return claimless(batch)
    merged: list[Event] = []
    run: list[Delta] = []
    for event in batch:
        if isinstance(event, Delta):
            run.append(event)
            continue
        if isinstance(event, Claim):
            continue
        if run:
            merged.append(_merge(run))
            run = []
        merged.append(event)
    if run:
        merged.append(_merge(run))
    return merged


def _merge(run: list[Delta]) -> Delta:
    if len(run) == 1:
        return run[0]
    return Delta(
        "".join(e.text for e in run),
        sum(e.tokens for e in run),
        tuple(c for e in run for c in e.chunks),
        run[-1].id,
    )
