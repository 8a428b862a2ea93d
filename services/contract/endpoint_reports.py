"""Each worker process's report of the engine endpoints it sends attempts to, in Redis, for the
gateway's /metrics and `tiller status`.

Every few seconds (`REPORT_SECONDS`) a worker writes one key of its own, `<prefix>endpoints:<id>`,
holding a small JSON snapshot: per task queue it polls, each endpoint's state, attempts in flight,
capacity, and counts since the worker started. The key expires after `REPORT_TTL_SECONDS`, so a
worker that died (no chance to withdraw it) drops out within that long. A set,
`<prefix>endpoints`, names the workers that reported, so a reader needs no scan of the keyspace;
a name whose key has expired is taken out of it by the next reader.

What a report holds is counts, task-queue names and endpoint URLs as the worker's logs and
metrics show them (no user or password: `replicas.shown`); never a prompt, an answer or a key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

from redis.asyncio import Redis

from tiller.common.redis_text import text

REPORT_SECONDS = 2.0  # how often a worker writes its report
REPORT_TTL_SECONDS = 10  # how long a report outlives its worker
FORMAT = 1  # a reader skips a report of a format it does not know

# What an endpoint does for one worker: its circuit breaker's state, or draining (models.yaml
# says `drain: true`; it takes no new attempt, whatever its health).
EndpointState = Literal["serving", "half-open", "ejected", "draining"]
STATES: tuple[EndpointState, ...] = ("serving", "half-open", "ejected", "draining")
_STATE_NAMED: dict[str, EndpointState] = {s: s for s in STATES}


@dataclass(frozen=True, slots=True)
class EndpointReport:
    """One endpoint of one task queue, as one worker sees it."""

    task_queue: str
    endpoint: str  # as shown: without user or password
    state: EndpointState
    in_flight: int
    capacity: int  # its max_concurrency (per worker)
    attempts: int  # attempts that ended on it since the worker started
    failures: int  # of them, those that failed by the engine's fault
    ejections: int
    seconds: float  # the attempts' summed duration


@dataclass(frozen=True, slots=True)
class WorkerReport:
    worker: str  # pid@host: one per worker process
    endpoints: tuple[EndpointReport, ...]
    waiting: dict[str, int]  # task queue -> attempts waiting for an endpoint to serve


def index_key(prefix: str) -> str:
    return f"{prefix}endpoints"


def report_key(prefix: str, worker: str) -> str:
    return f"{prefix}endpoints:{worker}"


def encode(report: WorkerReport) -> bytes:
    body = {
        "format": FORMAT,
        "worker": report.worker,
        "endpoints": [asdict(e) for e in report.endpoints],
        "waiting": report.waiting,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode(raw: bytes | str) -> WorkerReport | None:
    """The report, or None for one this reader cannot read (another format, damaged)."""
    try:
        body = json.loads(raw)
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            return None
        endpoints = tuple(_endpoint(e) for e in body["endpoints"])
        waiting = {str(q): _count(n) for q, n in dict(body["waiting"]).items()}
        return WorkerReport(str(body["worker"]), endpoints, waiting)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _endpoint(e: dict[str, object]) -> EndpointReport:
    return EndpointReport(
        str(e["task_queue"]),
        str(e["endpoint"]),
        _STATE_NAMED[str(e["state"])],  # KeyError: not a state
        _count(e["in_flight"]),
        _count(e["capacity"]),
        _count(e["attempts"]),
        _count(e["failures"]),
        _count(e["ejections"]),
        _seconds(e["seconds"]),
    )


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(value)
    return value


def _seconds(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(value)
    return float(value)


async def publish(redis: Redis, prefix: str, report: WorkerReport) -> None:
    """Write the worker's report (and name it in the index), both expiring unless renewed."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(report_key(prefix, report.worker), encode(report), ex=REPORT_TTL_SECONDS)
        pipe.sadd(index_key(prefix), report.worker)
        pipe.expire(index_key(prefix), REPORT_TTL_SECONDS)
        await pipe.execute()


async def withdraw(redis: Redis, prefix: str, worker: str) -> None:
    """A worker that stops takes its report away at once."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(report_key(prefix, worker))
        pipe.srem(index_key(prefix), worker)
        await pipe.execute()


async def read(redis: Redis, prefix: str) -> list[WorkerReport]:
    """The reports of the workers alive now (their keys have not expired)."""
    workers = sorted(text(w) for w in await redis.smembers(index_key(prefix)))
    if not workers:
        return []
    raws = await redis.mget([report_key(prefix, w) for w in workers])
    gone = [w for w, raw in zip(workers, raws, strict=True) if raw is None]
    if gone:
        await redis.srem(index_key(prefix), *gone)
    reports = [decode(raw) for raw in raws if raw is not None]
    return [r for r in reports if r is not None]
