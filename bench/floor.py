"""The bare Temporal floor: Tiller's dispatch pattern with no Tiller code.

A client starts one standalone activity per request on a task queue and waits on a Redis stream;
a worker process runs the activity, which sends the request to the engine, verifies the answer
(bench/loadgen.py's checks) and appends one entry to that stream. This is what any durable
gateway built the way Tiller is must pay: Temporal's start, matching and completion, plus one
Redis round trip. No admission, routing, streaming of deltas, or OpenAI shaping.

    python bench/floor.py --worker TEMPORAL_ADDRESS REDIS_URL TASK_QUEUE ENGINE_URL

runs the worker (prints READY); `run_closed_loop` below is the client side.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

import loadgen
from redis.asyncio import Redis
from redis.exceptions import RedisError
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

ACTIVITY = "floor.generate"
TIMEOUT_S = 120.0
START_TIMEOUT_S = 30.0  # as Tiller's gateway: a burst waits at Temporal's frontend
# A connection per waiting request, the simplest design: enough for the 1,000-stream burst.
MAX_CONNECTIONS = 2000


class EngineCaller:
    """Keep-alive connections to the engine, one per concurrent activity, reused."""

    def __init__(self, engine_url: str, redis: Redis) -> None:
        self.engine_url, self.redis = engine_url, redis
        self.idle: dict[tuple[bool, int, str], list[loadgen.Connection]] = {}

    @activity.defn(name=ACTIVITY)
    async def generate(self, stream: bool, tokens: int, model: str, key: str) -> None:
        pool = self.idle.setdefault((stream, tokens, model), [])
        if pool:
            conn = pool.pop()
        else:
            scenario = loadgen.Scenario("floor", stream, tokens, model)
            target = loadgen.make_target(self.engine_url, scenario, None, None, TIMEOUT_S)
            conn = loadgen.Connection(target)
        try:
            await loadgen.one_request(conn)
            outcome = b"ok"
        except loadgen.BadResponse as bad:
            outcome = str(bad).encode()
        pool.append(conn)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, {b"r": outcome})
            pipe.expire(key, 60)
            await pipe.execute()


def connect_redis(url: str) -> Redis:
    # Reads block until the answer (or TIMEOUT_S): the socket must wait at least as long.
    return Redis.from_url(url, max_connections=MAX_CONNECTIONS, socket_timeout=TIMEOUT_S + 10)


async def serve_worker(address: str, redis_url: str, task_queue: str, engine_url: str) -> None:
    client = await Client.connect(address)
    redis = connect_redis(redis_url)
    caller = EngineCaller(engine_url, redis)
    async with Worker(
        client, task_queue=task_queue, activities=[caller.generate], max_concurrent_activities=2000
    ):
        print("READY", flush=True)
        await asyncio.Event().wait()


async def one(client: Client, redis: Redis, queue: str, scenario: loadgen.Scenario) -> float:
    """Seconds from start_activity to the worker's entry in Redis; raises BadResponse."""
    request_id = f"floor-{uuid.uuid4().hex}"
    key = f"floor:{request_id}"
    start = time.perf_counter()
    try:
        await client.start_activity(
            ACTIVITY,
            args=[scenario.stream, scenario.tokens, scenario.model, key],
            id=request_id,
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=TIMEOUT_S),
            rpc_timeout=timedelta(seconds=START_TIMEOUT_S),
        )
    except RPCError as error:
        raise loadgen.BadResponse(f"start: {error.status.name}") from None
    try:
        reply: Any = await redis.xread({key: "0"}, block=int(TIMEOUT_S * 1000))
    except RedisError as error:
        raise loadgen.BadResponse(f"Redis: {error}") from None
    elapsed = time.perf_counter() - start
    if not reply:
        raise loadgen.BadResponse("no answer from the floor worker")
    outcome = reply[0][1][0][1][b"r"]
    if outcome != b"ok":
        raise loadgen.BadResponse(outcome.decode())
    return elapsed


async def run_closed_loop(
    client: Client,
    redis: Redis,
    queue: str,
    scenario: loadgen.Scenario,
    concurrency: int,
    seconds: float,
) -> loadgen.Report:
    tally = loadgen.Tally(scenario.tokens, scenario.stream)
    deadline = time.perf_counter() + seconds

    async def user() -> None:
        while time.perf_counter() < deadline:
            await measured(tally, client, redis, queue, scenario)

    start = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    return tally.report(scenario.name, time.perf_counter() - start)


async def run_burst(
    client: Client, redis: Redis, queue: str, scenario: loadgen.Scenario, requests: int
) -> loadgen.Report:
    """`requests` at once, each waiting for its answer."""
    tally = loadgen.Tally(scenario.tokens, scenario.stream)
    start = time.perf_counter()
    await asyncio.gather(
        *(measured(tally, client, redis, queue, scenario) for _ in range(requests))
    )
    return tally.report(scenario.name, time.perf_counter() - start)


async def measured(
    tally: loadgen.Tally, client: Client, redis: Redis, queue: str, scenario: loadgen.Scenario
) -> None:
    """One request, its latency or its error counted."""
    try:
        latency = await one(client, redis, queue, scenario)
    except loadgen.BadResponse as bad:
        tally.errors[str(bad)] += 1
    else:
        tally.results.append(loadgen.Result(latency, latency, 1))


if __name__ == "__main__":
    if sys.argv[1:2] != ["--worker"] or len(sys.argv) != 6:
        sys.exit(__doc__)
    asyncio.run(serve_worker(*sys.argv[2:6]))
