"""Batches in Redis: each batch's object, and the answers of its lines until they are written to
its output and error files.

`{prefix}batch:{id}` is a hash: its owner key's id, endpoint, files, status and times in clear
(they say nothing of what was asked), its metadata and errors sealed. `{prefix}batch:{id}:out`
and `:err` hold each line's output line (sealed) by its index until the batch ends: a line is
answered once however often its activity runs, and the counts of the batch are their lengths.
`{prefix}batches:{key id}` and `{prefix}batches` list the batches newest first (a key's; all).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from tiller.common.redis_text import text
from tiller.common.sealing import Sealer
from tiller.gateway.batches.shared import FAILED, TERMINAL

# Sets the status (and its time) only from one of the statuses given; returns the status now.
# KEYS: the record. ARGV: the new status, its time field, the time, then the statuses allowed.
_TRANSITION = """
local now = redis.call('HGET', KEYS[1], 'status')
if not now then return false end
for i = 4, #ARGV do
  if now == ARGV[i] then
    redis.call('HSET', KEYS[1], 'status', ARGV[1], ARGV[2], ARGV[3])
    return ARGV[1]
  end
end
return now
"""
# A line's answer, unless it has one in either hash. KEYS: its hash (out or err), the other.
# ARGV: the line's index, the sealed answer. Returns 1 if recorded.
_FIRST_ANSWER = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1
then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
_TIMES = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


@dataclass
class Batch:
    id: str
    owner: str  # the key id that created it
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    times: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            **{name: self.times.get(name) for name in _TIMES},
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }


class BatchStore:
    def __init__(self, redis: Redis, sealer: Sealer, prefix: str) -> None:
        self.redis, self.sealer, self.prefix = redis, sealer, prefix
        self._transition = redis.register_script(_TRANSITION)
        self._first_answer = redis.register_script(_FIRST_ANSWER)

    def _key(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}"

    def _index(self, owner: str | None) -> str:
        return f"{self.prefix}batches:{owner}" if owner else f"{self.prefix}batches"

    def _seal(self, batch_id: str, value: Any) -> bytes:
        return self.sealer.seal(orjson.dumps(value), batch_id.encode())

    def _open(self, batch_id: str, blob: Any) -> Any:
        return orjson.loads(self.sealer.open(blob, batch_id.encode())) if blob else None

    async def create(self, batch: Batch) -> None:
        fields: dict[Any, Any] = {
            "id": batch.id,
            "owner": batch.owner,
            "endpoint": batch.endpoint,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": batch.status,
            "metadata": self._seal(batch.id, batch.metadata),
            **{name: at for name, at in batch.times.items()},
        }
        score = batch.times["created_at"]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(batch.id), mapping=fields)
            pipe.zadd(self._index(batch.owner), {batch.id: score})
            pipe.zadd(self._index(None), {batch.id: score})
            await pipe.execute()

    async def forget(self, batch: Batch) -> None:
        """A batch whose workflow never started: nothing of it stays."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(batch.id))
            pipe.zrem(self._index(batch.owner), batch.id)
            pipe.zrem(self._index(None), batch.id)
            await pipe.execute()

    async def get(self, batch_id: str) -> Batch | None:
        raw = {text(k): v for k, v in (await self.redis.hgetall(self._key(batch_id))).items()}
        if not raw:
            return None
        batch = Batch(
            id=text(raw["id"]),
            owner=text(raw["owner"]),
            endpoint=text(raw["endpoint"]),
            input_file_id=text(raw["input_file_id"]),
            completion_window=text(raw["completion_window"]),
            status=text(raw["status"]),
            times={name: int(raw[name]) for name in _TIMES if name in raw},
            metadata=self._open(batch_id, raw.get("metadata")),
            errors=self._open(batch_id, raw.get("errors")) or [],
            output_file_id=text(raw.get("output_file_id")) or None,
            error_file_id=text(raw.get("error_file_id")) or None,
            total=int(raw.get("total", 0)),
        )
        if batch.status in TERMINAL:
            batch.completed, batch.failed = int(raw.get("completed", 0)), int(raw.get("failed", 0))
        else:  # counted as the lines are answered
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hlen(self._results(batch_id, True))
                pipe.hlen(self._results(batch_id, False))
                batch.completed, batch.failed = await pipe.execute()
        return batch

    async def ids(self, owner: str | None, after: str | None, limit: int) -> list[str]:
        """Batch ids, newest first: the owner's (None: everyone's), after the batch `after`."""
        index = self._index(owner)
        start = 0
        if after:
            rank: Any = await self.redis.zrevrank(index, after)
            if rank is None:
                return []
            start = int(rank) + 1
        found: list[Any] = await self.redis.zrevrange(index, start, start + limit - 1)
        return [text(i) for i in found]

    async def transition(self, batch_id: str, status: str, *allowed: str) -> str | None:
        """Move the batch to `status` if it is in one of `allowed`; its status now (None: no
        such batch)."""
        now = int(time.time())
        result = await self._transition(
            keys=[self._key(batch_id)], args=[status, f"{status}_at", now, *allowed]
        )
        return text(result) if result else None

    async def validated(self, batch_id: str, total: int) -> None:
        await self.redis.hset(self._key(batch_id), "total", total)

    async def failed_validation(
        self, batch_id: str, total: int, errors: list[dict[str, Any]], error_file_id: str
    ) -> None:
        fields: dict[Any, Any] = {
            "status": FAILED,
            "failed_at": int(time.time()),
            "total": total,
            "completed": 0,
            "failed": 0,
            "errors": self._seal(batch_id, errors),
            "error_file_id": error_file_id,
        }
        await self.redis.hset(self._key(batch_id), mapping=fields)

    # --- the lines' answers -----------------------------------------------------------------

    def _results(self, batch_id: str, ok: bool) -> str:
        return f"{self._key(batch_id)}:{'out' if ok else 'err'}"

    async def answered(self, batch_id: str, index: int) -> tuple[bool, dict[str, Any]] | None:
        """A line's answer if it was recorded: whether it succeeded, and its record."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self._results(batch_id, True), str(index))
            pipe.hget(self._results(batch_id, False), str(index))
            out, err = await pipe.execute()
        if out is not None:
            return True, self._open(batch_id, out)
        if err is not None:
            return False, self._open(batch_id, err)
        return None

    async def answer(self, batch_id: str, index: int, ok: bool, record: dict[str, Any]) -> bool:
        """Record a line's answer, once: whether this one was recorded (False: another attempt
        of the same line answered it first, in either hash, and its answer stands)."""
        keys = [self._results(batch_id, ok), self._results(batch_id, not ok)]
        recorded = await self._first_answer(
            keys=keys, args=[str(index), self._seal(batch_id, record)]
        )
        return bool(recorded)

    async def answers(self, batch_id: str, ok: bool) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """Every recorded answer of one kind, in no particular order."""
        async for index, blob in self.redis.hscan_iter(self._results(batch_id, ok), count=500):
            yield int(text(index)), self._open(batch_id, blob)

    async def ended(
        self,
        batch_id: str,
        status: str,
        output_file_id: str | None,
        error_file_id: str | None,
        completed: int,
        failed: int,
    ) -> None:
        """The batch's end: its files and counts, and its lines' answers gone from Redis."""
        fields: dict[Any, Any] = {
            "status": status,
            f"{status}_at": int(time.time()),
            "completed": completed,
            "failed": failed,
            "output_file_id": output_file_id or "",
            "error_file_id": error_file_id or "",
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(batch_id), mapping=fields)
            pipe.delete(self._results(batch_id, True), self._results(batch_id, False))
            await pipe.execute()

    async def status(self, batch_id: str) -> str | None:
        return text(await self.redis.hget(self._key(batch_id), "status")) or None
