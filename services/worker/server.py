"""Worker process: one Temporal worker per task queue, taking tasks only while one of the
queue's engine endpoints has a free slot (replicas.py, slots.py), all sharing one Redis pool and
one HTTP pool; one on the failover queue that runs the workflows of models with more than one
deployment to try, and one on the pipelines queue (pipeline models' workflows and their own
activities). The activity queues follow models.yaml as it changes (pool.py)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import aiohttp
import grpc
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tiller import pipelines
from tiller.common import redis_client, temporal
from tiller.common.grpc_client import channel
from tiller.common.internal_tls import ROUTER, WORKER
from tiller.common.lifecycle import StartupError, run_service, stop_event
from tiller.common.metrics import serve_metrics
from tiller.common.offload import RedisOffload
from tiller.common.sealing import Sealer
from tiller.contract.names import FAILOVER_TASK_QUEUE, PIPELINE_TASK_QUEUE
from tiller.protos.router.v1 import router_pb2, router_pb2_grpc
from tiller.worker import metrics, slots
from tiller.worker.activities import InferenceActivities
from tiller.worker.adapters import Adapters
from tiller.worker.adapters.base import AdapterResources
from tiller.worker.cancels import CancelSignals
from tiller.worker.endpoint_report import EndpointReporter
from tiller.worker.failover import FailoverWorkflow
from tiller.worker.health import ReplicaHealth
from tiller.worker.pipeline_activities import PipelineActivities
from tiller.worker.pool import QueueDeployments, WorkerPool
from tiller.worker.replicas import QueueReplicas
from tiller.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def router_channel(settings: WorkerSettings) -> grpc.aio.Channel:
    """The worker's one channel to the router: the route listings, the pipelines' steps."""
    tls = settings.internal_tls(WORKER)
    return channel(settings.router_address, tls, ROUTER)


async def list_routes(
    router: router_pb2_grpc.RouterStub, wait: float
) -> router_pb2.ListModelsResponse:
    """Every model's deployments, from the router (which owns models.yaml)."""
    listing: router_pb2.ListModelsResponse = await router.ListModels(
        router_pb2.ListModelsRequest(), timeout=wait, wait_for_ready=True
    )
    return listing


def queue_deployments(
    listing: router_pb2.ListModelsResponse, wanted: tuple[str, ...]
) -> QueueDeployments:
    """Task queue -> its (model, deployment) pairs; only the `wanted` queues if any are named."""
    queues: QueueDeployments = {}
    for m in listing.models:
        for d in m.deployments:
            queues.setdefault(d.task_queue, []).append((m.id, d))
    if wanted:
        queues = {q: queues[q] for q in wanted if q in queues}
    return queues


async def task_queues(
    settings: WorkerSettings, router: router_pb2_grpc.RouterStub
) -> tuple[QueueDeployments, int]:
    """The queues to poll at start-up, and the routing table's version."""
    try:
        listing = await list_routes(router, settings.dependency_wait_seconds)
    except grpc.aio.AioRpcError as error:
        raise StartupError(
            f"cannot reach the router at {settings.router_address}: {error.details()}"
        ) from None
    queues = queue_deployments(listing, settings.task_queues)
    unknown = set(settings.task_queues) - set(queues)
    if unknown:
        raise StartupError(f"task queues not in models.yaml: {', '.join(sorted(unknown))}")
    return queues, listing.config_version


async def follow_router(
    settings: WorkerSettings, router: router_pb2_grpc.RouterStub, pool: WorkerPool, version: int
) -> None:
    """Keep the pool's queues in line with the router's table as models.yaml changes."""
    while True:
        await asyncio.sleep(settings.reload_seconds)
        try:
            listing = await list_routes(router, settings.reload_seconds * 2)
        except grpc.aio.AioRpcError:
            continue  # the router is away: keep polling what we poll
        if listing.config_version == version:
            continue
        queues = queue_deployments(listing, settings.task_queues)
        missing = set(settings.task_queues) - set(queues)
        if missing:
            log.warning("task queues left models.yaml", extra={"task_queues": sorted(missing)})
        try:
            pool.apply(queues)
        except Exception:  # keep what polls now; try again at the next round
            log.exception("cannot apply the new task queues")
            continue
        version = listing.config_version


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


def pipeline_worker(client: Client, activities: PipelineActivities, grace: float) -> Worker:
    return Worker(
        client,
        task_queue=PIPELINE_TASK_QUEUE,
        workflows=pipelines.workflows(),
        activities=[activities.route, activities.publish],
        # Pipelines are deterministic workflow code that call activities for every effect
        # (docs/pipelines.md); like the failover workflow, they run unsandboxed.
        workflow_runner=UnsandboxedWorkflowRunner(),
        # A bug in a pipeline's code fails its request at once (pipelines.BUG_TYPES says which
        # exceptions, and why not nondeterminism).
        workflow_failure_exception_types=list(pipelines.BUG_TYPES),
        graceful_shutdown_timeout=timedelta(seconds=grace),
    )


def activity_worker(
    client: Client, activities: InferenceActivities, replicas: QueueReplicas, grace: float
) -> Worker:
    beat = timedelta(seconds=activities.heartbeat_interval)
    return Worker(
        client,
        task_queue=replicas.queue,
        activities=[activities.generate],
        # A task is taken only while one of the queue's engine endpoints has a free slot.
        tuner=slots.tuner(replicas),
        # Send each heartbeat when the activity beats: a cancelled request (client gone) is
        # noticed within one heartbeat interval, not at the SDK's default 8 s throttle.
        max_heartbeat_throttle_interval=beat,
        default_heartbeat_throttle_interval=beat,
        graceful_shutdown_timeout=timedelta(seconds=grace),
    )


async def serve(settings: WorkerSettings) -> None:
    router = router_channel(settings)
    try:
        await _serve(settings, router)
    finally:
        await router.close()


async def _serve(settings: WorkerSettings, router: grpc.aio.Channel) -> None:
    routes = router_pb2_grpc.RouterStub(router)
    queues, version = await task_queues(settings, routes)
    serve_metrics(settings.metrics_host, settings.metrics_port)
    redis = redis_client.connect(settings.redis_url, wait_seconds=10.0)
    keys = temporal.payload_keys(settings.payload_keys, settings.payload_keys_file)
    client = await temporal.connect(
        settings.temporal_address,
        settings.temporal_namespace,
        settings.dependency_wait_seconds,
        keys,
        temporal.metrics_runtime(settings.metrics_host, settings.sdk_metrics_port),
        offload=RedisOffload(redis, settings.key_prefix),
        access=temporal.TemporalAccess.of(settings),
    )
    sealer = Sealer(keys)  # what the activities write to Redis, with the same keys
    # Pooled keep-alive connections to every engine, no cap (each deployment's
    # max_concurrency bounds them); aiohttp costs a quarter of httpx's CPU per request.
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=False)
    resources = AdapterResources(http=http)
    adapters = Adapters(resources)
    cancels = CancelSignals(redis, settings.key_prefix)
    health = ReplicaHealth(adapters.__getitem__)
    activities = InferenceActivities(
        redis,
        adapters,
        settings.event_ttl_seconds,
        settings.heartbeat_interval_seconds,
        cancels,
        sealer=sealer,
        redis_outage_seconds=settings.redis_outage_seconds,
        health=health,
        stream_interval_seconds=settings.stream_interval_seconds,
    )
    steps = PipelineActivities(routes, redis, settings.event_ttl_seconds, sealer=sealer)
    grace = settings.shutdown_grace_seconds
    pool = WorkerPool(lambda replicas: activity_worker(client, activities, replicas, grace), health)
    activities.queues = pool.queues
    metrics.watch_endpoints(lambda: list(pool.queues.values()))
    reporter = EndpointReporter(redis, settings.key_prefix, lambda: list(pool.queues.values()))
    stop = stop_event()
    listening = asyncio.create_task(cancels.listen())
    following = asyncio.create_task(follow_router(settings, routes, pool, version))
    reporter.start()
    try:
        pool.add(failover_worker(client, grace))
        pool.add(pipeline_worker(client, steps, grace))
        pool.apply(queues)
        stopped = asyncio.create_task(stop.wait())
        broken = asyncio.create_task(pool.broken.wait())
        await asyncio.wait([stopped, broken], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        broken.cancel()
        following.cancel()
        await pool.shutdown()
        if pool.failure is not None:
            raise StartupError(f"worker stopped: {pool.failure}")
    finally:
        following.cancel()
        listening.cancel()
        await reporter.close()
        await health.aclose()
        await adapters.aclose()
        await http.close()
        await redis.aclose()


def main() -> None:
    run_service("worker", WorkerSettings.from_env, serve)
