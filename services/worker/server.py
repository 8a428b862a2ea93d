"""Worker process: one Temporal worker per task queue, each bounded by its deployment's
max_concurrency from models.yaml, sharing one Redis pool and one HTTP pool; and one on the
failover queue that runs the workflows of models with more than one deployment to try."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import aiohttp
import grpc
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tiller.common import redis_client, temporal
from tiller.common.grpc_client import channel
from tiller.common.lifecycle import StartupError, run_service, stop_event
from tiller.protos.router.v1 import router_pb2, router_pb2_grpc
from tiller.worker.activities import InferenceActivities
from tiller.worker.adapters import KINDS, adapter_class
from tiller.worker.adapters.base import AdapterResources
from tiller.worker.cancels import CancelSignals
from tiller.worker.failover import FailoverWorkflow
from tiller.worker.settings import WorkerSettings
from tiller.worker.shared import FAILOVER_TASK_QUEUE

log = logging.getLogger(__name__)


async def task_queue_limits(settings: WorkerSettings) -> dict[str, int]:
    """Task queue -> max concurrency, from the router (which owns models.yaml)."""
    async with channel(settings.router_address) as ch:
        try:
            listing = await router_pb2_grpc.RouterStub(ch).ListModels(
                router_pb2.ListModelsRequest(),
                timeout=settings.dependency_wait_seconds,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as error:
            raise StartupError(
                f"cannot reach the router at {settings.router_address}: {error.details()}"
            ) from None
    limits = {d.task_queue: d.max_concurrency for m in listing.models for d in m.deployments}
    if settings.task_queues:
        unknown = set(settings.task_queues) - set(limits)
        if unknown:
            raise StartupError(f"task queues not in models.yaml: {', '.join(sorted(unknown))}")
        limits = {q: limits[q] for q in settings.task_queues}
    return limits


def failover_worker(client: Client, grace: float) -> Worker:
    return Worker(
        client,
        task_queue=FAILOVER_TASK_QUEUE,
        workflows=[FailoverWorkflow],
        # The workflow only sequences activities and imports nothing but the shared
        # dataclasses; the sandbox would cost CPU on every request it runs.
        workflow_runner=UnsandboxedWorkflowRunner(),
        graceful_shutdown_timeout=timedelta(seconds=grace),
    )


def build_workers(
    client: Client, activities: InferenceActivities, limits: dict[str, int], grace: float
) -> list[Worker]:
    beat = timedelta(seconds=activities.heartbeat_interval)
    return [
        Worker(
            client,
            task_queue=queue,
            activities=[activities.generate],
            max_concurrent_activities=limit,
            # Send each heartbeat when the activity beats: a cancelled request (client gone) is
            # noticed within one heartbeat interval, not at the SDK's default 8 s throttle.
            max_heartbeat_throttle_interval=beat,
            default_heartbeat_throttle_interval=beat,
            graceful_shutdown_timeout=timedelta(seconds=grace),
        )
        for queue, limit in sorted(limits.items())
    ]


async def serve(settings: WorkerSettings) -> None:
    limits = await task_queue_limits(settings)
    client = await temporal.connect(
        settings.temporal_address, settings.temporal_namespace, settings.dependency_wait_seconds
    )
    redis = redis_client.connect(settings.redis_url, wait_seconds=10.0)
    # Pooled keep-alive connections to every engine, no cap (each deployment's
    # max_concurrency bounds them); aiohttp costs a quarter of httpx's CPU per request.
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=False)
    resources = AdapterResources(http=http)
    adapters = {kind: adapter_class(kind)(resources) for kind in KINDS}
    cancels = CancelSignals(redis, settings.key_prefix)
    activities = InferenceActivities(
        redis,
        adapters,
        settings.event_ttl_seconds,
        settings.heartbeat_interval_seconds,
        cancels,
    )
    grace = settings.shutdown_grace_seconds
    workers = [failover_worker(client, grace), *build_workers(client, activities, limits, grace)]
    stop = stop_event()
    listening = asyncio.create_task(cancels.listen())
    try:
        runs = [asyncio.create_task(w.run()) for w in workers]
        log.info("worker polling", extra={"task_queues": sorted(limits)})
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([stopped, *runs], return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*(w.shutdown() for w in workers))
        for run in runs:
            if run.done() and run.exception():
                raise StartupError(f"worker stopped: {run.exception()}")
    finally:
        listening.cancel()
        await http.close()
        await redis.aclose()


def main() -> None:
    run_service("worker", WorkerSettings.from_env, serve)
