"""How many requests wait in each deployment's Temporal task queue, and for how long: asked of
Temporal every few seconds and kept in the `tiller_queue_backlog*` gauges (metrics.py), which
`tiller status`, dashboards and autoscalers read. Every gateway polls; the values are Temporal's,
so replicas agree (take the max across them)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Awaitable, Callable

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from tiller.common.lifecycle import service_task
from tiller.gateway import metrics
from tiller.protos.router.v1 import router_pb2

log = logging.getLogger(__name__)
QUEUES_SECONDS = 30.0  # how often the list of task queues is asked of the router again


POLLER_SEEN_SECONDS = 60.0


async def backlog(client: Client, queue: str) -> tuple[int, float, int]:
    """Temporal's approximate count of activity tasks waiting in `queue`, the oldest's age in
    seconds, and how many workers polled it in the last minute."""
    reply = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            report_stats=True,
        ),
        timeout=datetime.timedelta(seconds=5),
    )
    age = reply.stats.approximate_backlog_age
    now = time.time()
    pollers = sum(
        1 for p in reply.pollers if now - p.last_access_time.ToSeconds() < POLLER_SEEN_SECONDS
    )
    return reply.stats.approximate_backlog_count, age.seconds + age.nanos / 1e9, pollers


class BacklogWatch:
    def __init__(
        self,
        client: Client,
        list_models: Callable[[], Awaitable[router_pb2.ListModelsResponse]],
        interval_seconds: float,
    ) -> None:
        self.client = client
        self.list_models = list_models
        self.interval = interval_seconds
        self.queues: set[tuple[str, str, str]] = set()  # task queue, model, deployment
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._task = service_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        listed_at = -QUEUES_SECONDS
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() - listed_at >= QUEUES_SECONDS:
                    listing = await self.list_models()
                    self._follow(
                        {
                            (d.task_queue, m.id, d.name)
                            for m in listing.models
                            for d in m.deployments
                        }
                    )
                    listed_at = loop.time()
                for queue in sorted({q for q, _, _ in self.queues}):
                    count, age, pollers = await backlog(self.client, queue)
                    metrics.BACKLOG.labels(queue).set(count)
                    metrics.BACKLOG_AGE.labels(queue).set(age)
                    metrics.POLLERS.labels(queue).set(pollers)
            except (RPCError, Exception) as error:  # keep polling: this is telemetry only
                log.warning("backlog poll failed", extra={"error": type(error).__name__})
            await asyncio.sleep(self.interval)

    def _follow(self, queues: set[tuple[str, str, str]]) -> None:
        """Track these (task queue, model, deployment); forget the gauges of those gone."""
        for gone in self.queues - queues:
            metrics.QUEUE_INFO.remove(*gone)
        names = {q for q, _, _ in queues}
        for queue in {q for q, _, _ in self.queues} - names:
            for gauge in (metrics.BACKLOG, metrics.BACKLOG_AGE, metrics.POLLERS):
                with contextlib.suppress(KeyError):
                    gauge.remove(queue)
        for entry in queues:
            metrics.QUEUE_INFO.labels(*entry).set(1)
        self.queues = queues
