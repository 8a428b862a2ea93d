"""Background requests: submitted now, answered later, surviving the gateway that took them.

`background: true` on a chat completion starts the request as usual and records it in Redis
(`{prefix}background:{id}`: owner key, model, how it runs in Temporal, then its status and
result, the result or error sealed with the payload keys: common/sealing.py). Its run lives in
Temporal and its answer in the Redis stream, so no gateway needs to stay: a client that
disconnects does not cancel it, and any gateway can answer `GET /v1/chat/completions/{id}` or
resume its stream.

One gateway watches each unfinished request, to settle it with quota (usage, concurrency lease)
and store its result the moment it ends. The watcher holds a lease key refreshed while it runs;
every gateway looks for unfinished requests whose lease lapsed (their gateway stopped or died)
and adopts them. The watcher settles with quota first and records the outcome after, so a
gateway dying in between leaves the request pending for the next one, whose settlement quota
ignores as a repeat; the outcome is recorded once (a script that checks the status).

Requests tied to a connection (not background) are recorded the same way while they run, so
that they outlive a gateway that dies: each gateway keeps the ones it answers in its own set
(`{prefix}live:{gateway}`) and says it is alive in `{prefix}gateways` every few seconds. When a
gateway stops saying so, another moves its set into the pending ones and adopts them like
background requests: it holds their concurrency leases and settles them. A stream's client may
resume it on any gateway by id meanwhile; one that nobody resumed within the resume grace is
cancelled (an unstreamed one at once: its caller never learned its id) and charged what its
engine wrote. The gateway that answers a request to its end deletes its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from tiller.common import backoff
from tiller.common.errors import AnswerUnreadable, Cancelled, InternalError, TillerError
from tiller.common.lifecycle import service_task
from tiller.common.redis_text import text
from tiller.contract.answer_stream import PUBLISH_FENCE, Delivered, EventWriter
from tiller.contract.results import InferenceResult
from tiller.gateway.calls import Stage
from tiller.gateway.executions import Kind

# Opens a sealed field of a record (its result or error) into its JSON bytes.
Opener = Callable[[bytes | str], bytes]

if TYPE_CHECKING:
    from tiller.gateway.calls import Accepted, Call
    from tiller.gateway.inference import Inference

log = logging.getLogger(__name__)
QUEUED, COMPLETED, FAILED, CANCELLED = "in_progress", "completed", "failed", "cancelled"
# A cancellation's end of an answer's stream: above every attempt's and a pipeline's own.
CANCEL_FENCE = PUBLISH_FENCE * 2
CANCELLED_STREAM_TTL = 300  # seconds: as long as a worker keeps an ended answer's stream

# Refresh the lease unless we still hold it (so a lapsed lease another gateway took stays its).
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Record the outcome unless another gateway already did; the request leaves the pending set.
_FINISH = """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[3], ARGV[4], ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"""
# Move the requests of gateways silent since ARGV[1] into the pending set (to be adopted).
_REAP = """
local moved = 0
for _, gateway in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
  local live = ARGV[2] .. gateway
  for _, id in ipairs(redis.call('ZRANGE', live, 0, -1)) do
    redis.call('ZADD', KEYS[2], ARGV[3], id)
    moved = moved + 1
  end
  redis.call('DEL', live)
  redis.call('ZREM', KEYS[1], gateway)
end
return moved
"""
# Record a request this gateway answers (one call: it is on every request's path).
_TRACK = """
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""
# Forget the requests this gateway answered to their end: KEYS[1] its set, then their records.
_UNTRACK = """
redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('DEL', unpack(KEYS, 2))
return 1
"""
UNTRACK_BATCH = 500
# Note that a client resumed a request's stream (unless the request's record is gone).
_RESUMED = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'resumed', '1') end
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
    # Tied to a connection (not background): adopted only if its gateway dies, and cancelled if
    # nobody resumes it; `resumable`: its caller streams it over REST and may resume it by id.
    live: bool = False
    resumable: bool = False
    legacy: bool = False  # a legacy completion (text_completion chunks), not a chat
    prompt_estimate: int = 0  # what an unfinished answer is charged for its prompt

    @classmethod
    def decode(
        cls, request_id: str, fields: Mapping[bytes | str, bytes | str], opened: Opener
    ) -> Record:
        """`opened` opens the sealed result or error (PayloadKeyError if it does not)."""
        raw = {text(k): v for k, v in fields.items()}
        result = opened(raw["result"]) if raw.get("result") else None
        error = opened(raw["error"]) if raw.get("error") else None
        data = {k: text(v) for k, v in raw.items() if k not in ("result", "error")}
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
            live=data.get("live") == "1",
            resumable=data.get("resumable") == "1",
            legacy=data.get("legacy") == "1",
            prompt_estimate=int(data.get("prompt_estimate") or 0),
        )

    def fields(self) -> dict[FieldT, EncodableT]:
        """What is written when it is recorded (its outcome comes later)."""
        return {
            "key_id": self.key_id,
            "model": self.model,
            "created": self.created,
            "kind": self.kind,
            "events_key": self.events_key,
            "include_usage": "1" if self.include_usage else "0",
            "status": QUEUED,
            "live": "1" if self.live else "0",
            "resumable": "1" if self.resumable else "0",
            "legacy": "1" if self.legacy else "0",
            "prompt_estimate": self.prompt_estimate,
        }


def new_record(
    accepted: Accepted, kind: Kind, live: bool = False, resumable: bool = False
) -> Record:
    """The record of a request just started (`live`: tied to its connection)."""
    return Record(
        request_id=accepted.request_id,
        key_id=accepted.key_id,
        model=accepted.model,
        created=accepted.created,
        kind=kind,
        events_key=accepted.events_key,
        include_usage=accepted.include_usage,
        status=QUEUED,
        live=live,
        resumable=resumable,
        legacy=accepted.legacy,
        prompt_estimate=accepted.prompt_estimate,
    )


class BackgroundRequests:
    def __init__(
        self,
        inference: Inference,
        redis: Redis,
        prefix: str,
        ttl_seconds: int,
        lease_seconds: float,
        resume_grace_seconds: float = 30.0,
    ) -> None:
        self.inference = inference
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl_seconds
        self._lease_ms = int(lease_seconds * 1000)
        self.resume_grace = resume_grace_seconds
        self.pending_key = f"{prefix}background-pending"
        self.me = uuid.uuid4().hex  # this gateway, as a lease holder
        self.gateways_key = f"{prefix}gateways"  # gateway -> when it last said it is alive
        self.live_key = f"{prefix}live:{self.me}"  # the requests this gateway answers
        self._refresh = redis.register_script(_REFRESH)
        self._release = redis.register_script(_RELEASE)
        self._finish = redis.register_script(_FINISH)
        self._reap = redis.register_script(_REAP)
        self._resumed = redis.register_script(_RESUMED)
        self._track = redis.register_script(_TRACK)
        self._untrack = redis.register_script(_UNTRACK)
        self._answered: list[str] = []  # to forget, in the next batch
        self._forgetting: asyncio.Task[None] | None = None
        # Since when every round reached Redis: only a gateway that has been saying it is alive
        # for a whole lease judges others silent (after an outage, everyone is silent at first).
        self._heard_since: float | None = None
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._adopter: asyncio.Task[None] | None = None

    @property
    def lease_ms(self) -> int:
        """The lease, as configured, or a third of quota's lease TTL where that is shorter: a
        dead gateway's requests must be taken up before the concurrency slots they hold lapse
        (a slot's lease was renewed at most a third of its TTL before the gateway died)."""
        quota_ttl = self.inference.leases.ttl_seconds
        if quota_ttl:
            return min(self._lease_ms, int(quota_ttl * 1000 / 3))
        return self._lease_ms

    def record_key(self, request_id: str) -> str:
        return f"{self.prefix}background:{request_id}"

    def _opener(self, key: str) -> Opener:
        sealer = self.inference.up.sealer
        where = key.encode()
        return lambda value: sealer.open(
            value if isinstance(value, bytes) else value.encode(), where
        )

    def _lease_key(self, request_id: str) -> str:
        return f"{self.prefix}background-watch:{request_id}"

    def start(self) -> None:
        """Begin adopting unfinished requests whose gateway went away (at once, then often)."""
        if self._adopter is None:
            self._adopter = service_task(self._adopt_forever())

    async def submit(self, call: Call) -> Record:
        """Record an admitted, started request as a background one, and watch it: the
        request is handed from its caller to this gateway's watcher."""
        record = await self._write(call, watched=True)
        call.hand_to(Stage.WATCHED)
        self._watch(call, record)
        return record

    async def record_for_adoption(self, call: Call) -> None:
        """Record a request this gateway stops answering for (it is stopping): unwatched, so
        another gateway adopts it at its next round, as a background request (its caller was
        told how to go on)."""
        if not call.tracked:
            await self._write(call, watched=False)
            return
        key = self.record_key(call.request_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "live", "0")
            pipe.zrem(self.live_key, call.request_id)
            pipe.zadd(self.pending_key, {call.request_id: time.time()})
            await pipe.execute()

    async def track(self, record: Record) -> bool:
        """Record a request tied to its connection while this gateway answers it, so that
        another gateway takes it up if this one dies. False if Redis cannot be written (the
        request goes on, untracked)."""
        fields = [x for pair in record.fields().items() for x in pair]
        keys = [self.record_key(record.request_id), self.live_key]
        try:
            await self._track(keys=keys, args=[self.ttl, record.request_id, time.time(), *fields])
        except RedisError:
            log.warning("request not recorded: it ends with this gateway")
            return False
        return True

    def untrack(self, request_id: str) -> None:
        """This gateway answered the request to its end: nobody needs to take it up. Forgotten
        in batches (at once when none is being sent; else with the requests that ended
        meanwhile)."""
        self._answered.append(request_id)
        if self._forgetting is None or self._forgetting.done():
            self._forgetting = asyncio.get_running_loop().create_task(self._forget())

    async def _forget(self) -> None:
        while self._answered:
            batch = self._answered[:UNTRACK_BATCH]
            del self._answered[:UNTRACK_BATCH]
            keys = [self.live_key, *(self.record_key(i) for i in batch)]
            with contextlib.suppress(RedisError):  # else: adopted later, settled again (no-op)
                await self._untrack(keys=keys, args=batch)

    async def resumed(self, record: Record) -> None:
        """A client resumes the request's stream: an adopted one is not an orphan."""
        if record.live and record.status == QUEUED:
            with contextlib.suppress(RedisError):
                await self._resumed(keys=[self.record_key(record.request_id)])

    def stop_adopting(self) -> None:
        if self._adopter is not None:
            self._adopter.cancel()

    async def _write(self, call: Call, watched: bool) -> Record:
        record = new_record(call.accepted, call.execution.kind)
        key = self.record_key(call.request_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=record.fields())
            pipe.expire(key, self.ttl)
            pipe.zadd(self.pending_key, {call.request_id: time.time()})
            if watched:
                pipe.set(self._lease_key(call.request_id), self.me, px=self.lease_ms)
            await pipe.execute()
        return record

    async def get(self, request_id: str) -> Record | None:
        key = self.record_key(request_id)
        fields: Any = await self.redis.hgetall(key)
        try:
            return Record.decode(request_id, fields, self._opener(key)) if fields else None
        except (KeyError, ValueError):  # PayloadKeyError (does not open) is a ValueError
            log.warning("unreadable background record", extra={"request_id": request_id})
            return None

    async def cancel(self, record: Record) -> None:
        """Stop a background request, and end its answer's stream with the cancellation
        (unless it ended already): its watcher and every reader hear at once, and settle it as
        cancelled, rather than at their next check of Temporal."""
        call = self.inference.attach(record)
        await call.stop()
        writer = EventWriter(
            self.redis,
            record.events_key,
            CANCELLED_STREAM_TTL,
            CANCEL_FENCE,
            sealer=self.inference.up.sealer,
        )
        delivered = Delivered.of(await writer.claim())  # the worker can no longer append
        if delivered.done is None and delivered.error is None:
            await writer.error(Cancelled("The request was cancelled."))
        else:
            await writer.ended()

    def _watch(self, call: Call, record: Record) -> None:
        if record.request_id in self._watchers:
            return
        task = asyncio.get_running_loop().create_task(self._follow(call, record))
        self._watchers[record.request_id] = task
        task.add_done_callback(lambda _: self._watchers.pop(record.request_id, None))

    async def _follow(self, call: Call, record: Record) -> None:
        lease = self._lease_key(record.request_id)
        follower = asyncio.current_task()
        assert follower is not None
        keeper = asyncio.get_running_loop().create_task(self._keep(lease, follower))
        orphan = (
            asyncio.get_running_loop().create_task(self._end_if_orphaned(record))
            if record.live
            else None
        )
        try:
            outcome = await self._outcome(call)
            await self._settle(call, outcome)
            await self.inference.responses.ended(call.request_id, outcome)  # one of /v1/responses
            await self._record(call.request_id, outcome)
        except RedisError:
            log.warning("background request left for another gateway to finish")
        finally:
            if call.stage is Stage.WATCHED:  # not settled: another gateway adopts it
                call.hand_to(Stage.HANDED_OVER)
            keeper.cancel()
            if orphan is not None:
                orphan.cancel()
            with contextlib.suppress(RedisError):
                await self._release(keys=[lease], args=[self.me])

    async def _end_if_orphaned(self, record: Record) -> None:
        """An adopted request whose gateway died: cancel it unless a client resumed its stream
        within the grace (an unstreamed one at once: its caller never learned its id)."""
        await asyncio.sleep(self.resume_grace if record.resumable else 0)
        for wait in backoff.delays():
            try:
                if await self.redis.hget(self.record_key(record.request_id), "resumed"):
                    return
                log.info("nobody resumed the request: cancelled", extra={"id": record.request_id})
                await self.cancel(record)
                return
            except RedisError:
                await asyncio.sleep(wait)

    async def _outcome(self, call: Call) -> InferenceResult | TillerError:
        """The request's result or final error; waits out a Redis or Temporal that is away."""
        waits = backoff.delays()
        while True:
            try:
                return await call.result(caller=False)
            except AnswerUnreadable:
                await asyncio.sleep(next(waits))  # it may still be running: read again
            except TillerError as error:
                return error
            except (RedisError, asyncio.CancelledError):
                raise
            except Exception:  # a bug, or an entry we cannot read: fail it rather than loop
                log.exception("background request unreadable", extra={"id": call.request_id})
                return InternalError()

    async def _settle(self, call: Call, outcome: InferenceResult | TillerError) -> None:
        """Settle with quota before the record says it is finished (quota applies a settlement
        once, so a gateway that dies in between leaves it for the next to settle again)."""
        usage = outcome.usage if isinstance(outcome, InferenceResult) else call.unfinished_usage()
        settlement = call.end(usage)
        if settlement is None:
            return
        for wait in backoff.delays():
            try:
                await self.inference.settler.send_now(settlement)
                return
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    log.warning(
                        "background settlement refused", extra={"status": error.code().name}
                    )
                    return
                await asyncio.sleep(wait)

    async def _record(self, request_id: str, outcome: InferenceResult | TillerError) -> None:
        if isinstance(outcome, InferenceResult):
            status, field, value = COMPLETED, "result", orjson.dumps(dataclasses.asdict(outcome))
        else:
            status = CANCELLED if isinstance(outcome, Cancelled) else FAILED
            field, value = "error", orjson.dumps(outcome.to_dict())
        keys = [self.record_key(request_id), self.pending_key]
        sealed = self.inference.up.sealer.seal(value, keys[0].encode())
        if await self._finish(
            keys=keys, args=[request_id, QUEUED, status, field, sealed, self.ttl]
        ):
            log.info(
                "background request finished", extra={"request_id": request_id, "status": status}
            )

    async def _keep(self, lease: str, follower: asyncio.Task[None]) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            with contextlib.suppress(RedisError):
                if not await self._refresh(keys=[lease], args=[self.me, self.lease_ms]):
                    follower.cancel()  # taken over (we were too slow): the other one finishes
                    return

    async def _adopt_forever(self) -> None:
        while True:
            try:
                await self._say_alive()
                await self._adopt()
            except RedisError:  # again at the next round
                self._heard_since = None
            await asyncio.sleep(self.lease_ms / 6000)

    async def _say_alive(self) -> None:
        """Say this gateway is alive, and move the requests of gateways silent for a whole
        lease into the pending set, to be adopted."""
        now = time.time()
        await self.redis.zadd(self.gateways_key, {self.me: now})
        if self._heard_since is None:
            self._heard_since = time.monotonic()
        if time.monotonic() - self._heard_since < self.lease_ms / 1000:
            return  # not yet sure the others had the chance to say so
        cutoff = now - self.lease_ms / 1000
        moved = await self._reap(
            keys=[self.gateways_key, self.pending_key],
            args=[cutoff, f"{self.prefix}live:", now],
        )
        if moved:
            log.warning("a gateway went silent: its requests are taken up", extra={"n": moved})

    async def _adopt(self) -> None:
        members: Any = await self.redis.zrange(self.pending_key, 0, -1)
        for request_id in (text(m) for m in members):
            if request_id in self._watchers:
                continue
            lease = self._lease_key(request_id)
            if not await self.redis.set(lease, self.me, px=self.lease_ms, nx=True):
                continue  # a live gateway watches it
            try:
                record = await self.get(request_id)
            except Exception:  # one bad record must not stop adoption of the rest
                log.exception("cannot read a background request", extra={"request_id": request_id})
                record = None
            if record is None or record.status != QUEUED:
                await self.redis.zrem(self.pending_key, request_id)
                await self._release(keys=[lease], args=[self.me])
                continue
            log.info("adopted a background request", extra={"request_id": request_id})
            self._watch(self.inference.attach(record, watch=True), record)

    async def close(self) -> None:
        """Stop watching; peers (or this gateway's successor) adopt what is left at once."""
        if self._forgetting is not None:
            await asyncio.wait({self._forgetting}, timeout=2.0)
        tasks = [t for t in (self._adopter, *self._watchers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
