"""Background requests: submitted now, answered later, surviving the gateway that took them.

`background: true` on a chat completion starts the request as usual and records it in Redis
(`{prefix}background:{id}`: owner key, model, how it runs in Temporal, then its status and
result). Its run lives in Temporal and its answer in the Redis stream, so no gateway needs to
stay: a client that disconnects does not cancel it, and any gateway can answer
`GET /v1/chat/completions/{id}` or resume its stream.

One gateway watches each unfinished request, to settle it with quota (usage, concurrency lease)
and store its result the moment it ends. The watcher holds a lease key refreshed while it runs;
every gateway looks for unfinished requests whose lease lapsed (their gateway stopped or died)
and adopts them. Settling is done once, whoever gets there first (HSETNX on the record).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tiller.common.errors import Cancelled, TillerError
from tiller.common.redis_text import text
from tiller.gateway.executions import Kind
from tiller.worker.shared import InferenceResult

if TYPE_CHECKING:
    from tiller.gateway.inference import Call, Inference

log = logging.getLogger(__name__)
QUEUED, COMPLETED, FAILED, CANCELLED = "in_progress", "completed", "failed", "cancelled"

# Refresh the lease unless we still hold it (so a lapsed lease another gateway took stays its).
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Record:
    """What Redis holds about one background request."""

    request_id: str
    key_id: str
    model: str
    created: int
    kind: Kind
    events_key: str
    include_usage: bool
    status: str
    result: InferenceResult | None = None
    error: TillerError | None = None

    @classmethod
    def decode(cls, request_id: str, fields: Mapping[bytes | str, bytes | str]) -> Record:
        data = {text(k): text(v) for k, v in fields.items()}
        result = data.get("result")
        error = data.get("error")
        kind: Kind = "workflow" if data["kind"] == "workflow" else "activity"
        return cls(
            request_id=request_id,
            key_id=data["key_id"],
            model=data["model"],
            created=int(data["created"]),
            kind=kind,
            events_key=data["events_key"],
            include_usage=data.get("include_usage") == "1",
            status=data.get("status", QUEUED),
            result=InferenceResult.from_dict(orjson.loads(result)) if result else None,
            error=TillerError.from_dict(orjson.loads(error)) if error else None,
        )


class BackgroundRequests:
    def __init__(
        self,
        inference: Inference,
        redis: Redis,
        prefix: str,
        ttl_seconds: int,
        lease_seconds: float,
    ) -> None:
        self.inference = inference
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl_seconds
        self.lease_ms = int(lease_seconds * 1000)
        self.pending_key = f"{prefix}background-pending"
        self.me = uuid.uuid4().hex  # this gateway, as a lease holder
        self._refresh = redis.register_script(_REFRESH)
        self._release = redis.register_script(_RELEASE)
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._adopter: asyncio.Task[None] | None = None

    def record_key(self, request_id: str) -> str:
        return f"{self.prefix}background:{request_id}"

    def _lease_key(self, request_id: str) -> str:
        return f"{self.prefix}background-watch:{request_id}"

    def start(self) -> None:
        """Begin adopting unfinished requests whose gateway went away (at once, then often)."""
        if self._adopter is None:
            self._adopter = asyncio.get_running_loop().create_task(self._adopt_forever())

    async def submit(self, call: Call, include_usage: bool) -> Record:
        """Record an admitted, started request as a background one and watch it."""
        record = Record(
            request_id=call.request_id,
            key_id=call.key_id,
            model=call.model,
            created=call.created,
            kind=call.execution.kind,
            events_key=call.events_key,
            include_usage=include_usage,
            status=QUEUED,
        )
        key = self.record_key(call.request_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "key_id": record.key_id,
                    "model": record.model,
                    "created": record.created,
                    "kind": record.kind,
                    "events_key": record.events_key,
                    "include_usage": "1" if include_usage else "0",
                    "status": QUEUED,
                },
            )
            pipe.expire(key, self.ttl)
            pipe.zadd(self.pending_key, {call.request_id: time.time()})
            pipe.set(self._lease_key(call.request_id), self.me, px=self.lease_ms)
            await pipe.execute()
        self._watch(call, record)
        return record

    async def get(self, request_id: str) -> Record | None:
        fields: Any = await self.redis.hgetall(self.record_key(request_id))
        return Record.decode(request_id, fields) if fields else None

    async def cancel(self, record: Record) -> None:
        """Stop a background request (the watcher then settles it as cancelled)."""
        call = self.inference.attach(record)
        await call.stop()

    def _watch(self, call: Call, record: Record) -> None:
        if record.request_id in self._watchers:
            return
        task = asyncio.get_running_loop().create_task(self._follow(call, record))
        self._watchers[record.request_id] = task
        task.add_done_callback(lambda _: self._watchers.pop(record.request_id, None))

    async def _follow(self, call: Call, record: Record) -> None:
        lease = self._lease_key(record.request_id)
        keeper = asyncio.get_running_loop().create_task(self._keep(lease))
        try:
            try:
                result = await call.result()
            except TillerError as error:
                await self._finish(call, error=error)
            else:
                await self._finish(call, result=result)
        except RedisError:
            log.warning("background request left for another gateway", exc_info=False)
        finally:
            keeper.cancel()
            with contextlib.suppress(RedisError):
                await self._release(keys=[lease], args=[self.me])

    async def _keep(self, lease: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            with contextlib.suppress(RedisError):
                if not await self._refresh(keys=[lease], args=[self.me, self.lease_ms]):
                    return  # taken over: the other gateway settles it

    async def _finish(
        self,
        call: Call,
        result: InferenceResult | None = None,
        error: TillerError | None = None,
    ) -> None:
        key = self.record_key(call.request_id)
        if not await self.redis.hsetnx(key, "settled", "1"):
            return  # another gateway got there first
        if result is not None:
            call.complete(result.usage)
            fields: dict[Any, Any] = {
                "status": COMPLETED,
                "result": orjson.dumps(dataclasses.asdict(result)),
            }
        else:
            assert error is not None
            call.release()
            status = CANCELLED if isinstance(error, Cancelled) else FAILED
            fields = {"status": status, "error": orjson.dumps(error.to_dict())}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self.ttl)
            pipe.zrem(self.pending_key, call.request_id)
            await pipe.execute()
        log.info(
            "background request finished",
            extra={"request_id": call.request_id, "status": fields["status"]},
        )

    async def _adopt_forever(self) -> None:
        while True:
            with contextlib.suppress(RedisError):  # else: again at the next round
                await self._adopt()
            await asyncio.sleep(self.lease_ms / 3000)

    async def _adopt(self) -> None:
        members: Any = await self.redis.zrange(self.pending_key, 0, 999)
        pending = [text(m) for m in members]
        for request_id in pending:
            if request_id in self._watchers:
                continue
            if not await self.redis.set(
                self._lease_key(request_id), self.me, px=self.lease_ms, nx=True
            ):
                continue  # a live gateway watches it
            record = await self.get(request_id)
            if record is None or record.status != QUEUED:
                await self.redis.zrem(self.pending_key, request_id)
                await self._release(keys=[self._lease_key(request_id)], args=[self.me])
                continue
            log.info("adopted a background request", extra={"request_id": request_id})
            self._watch(self.inference.attach(record), record)

    async def close(self) -> None:
        """Stop watching; peers (or this gateway's successor) adopt what is left at once."""
        tasks = [t for t in (self._adopter, *self._watchers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
