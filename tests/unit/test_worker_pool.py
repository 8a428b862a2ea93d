"""The worker process's Temporal workers as models.yaml changes (worker/pool.py): endpoints
change in place; a queue's slots change kind (one endpoint: fixed; several: the endpoints')
with a new worker taking over; a queue gone is retired."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from temporalio.worker import Worker

from tiller.protos.router.v1 import router_pb2
from tiller.worker.pool import WorkerPool
from tiller.worker.replicas import QueueReplicas


class FakeWorker:
    def __init__(self, replicas: QueueReplicas) -> None:
        self.fixed = replicas.fixed
        self.stopped = asyncio.Event()
        self.shut = False

    async def run(self) -> None:
        await self.stopped.wait()

    async def shutdown(self) -> None:
        self.shut = True
        self.stopped.set()


def listing(*urls: str, capacity: int = 4) -> dict[str, list[tuple[str, Any]]]:
    endpoints = [router_pb2.Endpoint(url=u, max_concurrency=capacity, weight=1) for u in urls]
    deployment = router_pb2.Deployment(
        name="d",
        adapter="vllm",
        endpoint=urls[0],
        task_queue="q",
        max_concurrency=capacity * len(urls),
        model="m",
        endpoints=endpoints,
    )
    return {"q": [("m", deployment)]}


async def test_a_queue_follows_its_endpoints_and_changes_worker_only_when_its_slots_do() -> None:
    made: list[FakeWorker] = []

    def make(replicas: QueueReplicas) -> Worker:
        made.append(FakeWorker(replicas))
        return cast(Worker, made[-1])

    pool = WorkerPool(make)
    pool.apply(listing("http://a/v1"))
    assert [w.fixed for w in made] == [4]  # one endpoint: a fixed number of slots
    pool.apply(listing("http://a/v1", "http://b/v1"))
    await asyncio.sleep(0)
    assert [w.fixed for w in made] == [4, None] and made[0].shut  # the endpoints' slots now
    replicas = pool.queues["q"]
    pool.apply(listing("http://a/v1", "http://c/v1"))
    assert len(made) == 2 and pool.queues["q"] is replicas  # in place, same worker
    assert {r.url for r in replicas.replicas.values()} == {"http://a/v1", "http://c/v1"}
    pool.apply(listing("http://a/v1", capacity=8))
    await asyncio.sleep(0)
    assert [w.fixed for w in made] == [4, None, 8] and made[1].shut
    pool.apply({})
    await asyncio.sleep(0)
    assert made[2].shut and pool.queues == {}
    await pool.shutdown()
