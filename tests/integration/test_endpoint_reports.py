"""The workers' endpoint reports on a real Redis (contract/endpoint_reports.py): written by each
worker, read and summed by the gateway, gone when a worker stops or dies."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.support import Stack
from tiller.contract import endpoint_reports
from tiller.contract.endpoint_reports import REPORT_TTL_SECONDS, EndpointReport, WorkerReport
from tiller.gateway.endpoint_totals import EndpointTotals
from tiller.protos.router.v1 import router_pb2
from tiller.worker.endpoint_report import EndpointReporter
from tiller.worker.replicas import QueueReplicas

A = "http://a:8000/v1"


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[Redis]:
    client = Redis.from_url(stack.redis_url)
    yield client
    await client.aclose()


def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}:"


def report(worker: str, in_flight: int) -> WorkerReport:
    endpoint = EndpointReport("q", A, "serving", in_flight, 4, 10, 1, 0, 2.0)
    return WorkerReport(worker, (endpoint,), {"q": 0})


async def test_reports_are_read_back_and_one_withdrawn_is_gone(redis: Redis) -> None:
    at = prefix()
    await endpoint_reports.publish(redis, at, report("1@a", 1))
    await endpoint_reports.publish(redis, at, report("2@b", 2))
    assert await endpoint_reports.read(redis, at) == [report("1@a", 1), report("2@b", 2)]
    ttl = await redis.ttl(endpoint_reports.report_key(at, "1@a"))
    assert 0 < ttl <= REPORT_TTL_SECONDS
    await endpoint_reports.withdraw(redis, at, "1@a")
    assert await endpoint_reports.read(redis, at) == [report("2@b", 2)]


async def test_a_dead_workers_expired_report_leaves_the_index(redis: Redis) -> None:
    at = prefix()
    await endpoint_reports.publish(redis, at, report("1@a", 1))
    await endpoint_reports.publish(redis, at, report("2@b", 2))
    await redis.delete(endpoint_reports.report_key(at, "1@a"))  # as if it expired
    assert await endpoint_reports.read(redis, at) == [report("2@b", 2)]
    assert await redis.smembers(endpoint_reports.index_key(at)) == {b"2@b"}


async def test_a_reporter_writes_its_queues_and_takes_them_away_when_closed(
    redis: Redis,
) -> None:
    at = prefix()
    replicas = QueueReplicas("q")
    endpoint = router_pb2.Endpoint(url=A, max_concurrency=4, weight=1)
    replicas.update(
        [
            (
                "m",
                router_pb2.Deployment(
                    name="d", adapter="vllm", endpoint=A, task_queue="q", max_concurrency=4,
                    endpoints=[endpoint],
                ),
            )
        ]
    )  # fmt: skip
    reporter = EndpointReporter(redis, at, lambda: [replicas], worker="9@here", interval=0.05)
    reporter.start()
    for _ in range(100):
        if await endpoint_reports.read(redis, at):
            break
        await asyncio.sleep(0.02)
    totals = EndpointTotals()
    await totals.refresh(redis, at)
    [total] = totals.totals
    assert (total.task_queue, total.endpoint, total.capacity) == ("q", A, 4)
    assert total.workers["serving"] == 1 and totals.reports == 1
    await reporter.close()
    assert await endpoint_reports.read(redis, at) == []
