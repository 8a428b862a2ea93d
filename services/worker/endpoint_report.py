"""This worker process's endpoints, reported to Redis every couple of seconds for the gateway's
/metrics and `tiller status` (contract/endpoint_reports.py holds the format and keys).

The worker's own /metrics has the same figures per process (metrics.EndpointCollector); the
report lets one gateway show them summed over every worker of a queue, wherever they run.
Reporting is telemetry: a Redis outage only pauses it (logged once), and a worker that stops
takes its report away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tiller.common.lifecycle import service_task
from tiller.contract import endpoint_reports
from tiller.contract.endpoint_reports import EndpointReport, EndpointState, WorkerReport
from tiller.worker.replicas import QueueReplicas, Replica

log = logging.getLogger(__name__)
WITHDRAW_SECONDS = 1.0  # how long a stopping worker tries to take its report away


def worker_id() -> str:
    """pid@host, as Temporal names a worker."""
    return f"{os.getpid()}@{socket.gethostname()}"


def snapshot(worker: str, queues: Iterable[QueueReplicas]) -> WorkerReport:
    endpoints = []
    waiting = {}
    for queue in queues:
        waiting[queue.queue] = queue.waiting
        for r in queue.replicas.values():
            endpoints.append(
                EndpointReport(
                    queue.queue,
                    r.shown,
                    state_of(r),
                    r.in_flight,
                    r.capacity,
                    r.attempts,
                    r.failed,
                    r.ejections,
                    round(r.seconds, 6),
                )
            )
    return WorkerReport(worker, tuple(endpoints), waiting)


def state_of(replica: Replica) -> EndpointState:
    return "draining" if replica.drain else replica.state


class EndpointReporter:
    """Writes this worker's report every `interval` seconds until closed."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        queues: Callable[[], Iterable[QueueReplicas]],
        *,
        worker: str | None = None,
        interval: float = endpoint_reports.REPORT_SECONDS,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.queues = queues
        self.worker = worker or worker_id()
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = service_task(self._run())

    async def publish(self) -> None:
        report = snapshot(self.worker, self.queues())
        await endpoint_reports.publish(self.redis, self.prefix, report)

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.publish()
                if failing:
                    log.info("endpoint report written again")
                failing = False
            except (RedisError, OSError) as error:
                if not failing:  # once per outage
                    log.warning(
                        "cannot write the endpoint report", extra={"error": type(error).__name__}
                    )
                failing = True
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        try:
            async with asyncio.timeout(WITHDRAW_SECONDS):
                await endpoint_reports.withdraw(self.redis, self.prefix, self.worker)
        except (RedisError, OSError, TimeoutError):
            pass  # it expires on its own
