"""Waiting for `tiller up`'s children to be ready, each with the check that proves it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from tiller.cli.processes import Child, UpError
from tiller.common.grpc_client import channel
from tiller.common.internal_tls import QUOTA, ROUTER, InternalTls
from tiller.contract.names import FAILOVER_TASK_QUEUE
from tiller.protos.router.v1 import router_pb2, router_pb2_grpc
from tiller.worker.settings import WorkerSettings

if TYPE_CHECKING:
    from tiller.cli.up import Stack

Check = Callable[[], Awaitable[bool]]


async def _redis(host: str, port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 1.0)).startswith(b"+PONG")
    except (TimeoutError, OSError):
        return False
    finally:
        writer.close()


async def _grpc_health(
    address: str, service: str = "", tls: InternalTls | None = None, server: str | None = None
) -> bool:
    async with channel(address, tls, server) as ch:
        try:
            reply = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1.0
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def _http_ok(url: str) -> bool:
    async with httpx.AsyncClient(timeout=2.0) as client:
        try:
            return (await client.get(url)).status_code == 200
        except httpx.HTTPError:
            return False


async def _workers_polling(stack: Stack, tls: InternalTls | None) -> bool:
    """Every task queue of our worker (all in models.yaml unless TILLER_WORKER_TASK_QUEUES
    narrows them) has a worker polling it, and so has the failover queue. The router is asked
    as the worker asks it (with the worker's certificate)."""
    try:
        async with channel(f"127.0.0.1:{stack.router.port}", tls, ROUTER) as ch:
            listing = await router_pb2_grpc.RouterStub(ch).ListModels(
                router_pb2.ListModelsRequest(), timeout=2.0
            )
        client = await Client.connect(stack.temporal_address)
    except (grpc.aio.AioRpcError, RuntimeError):
        return False
    own = WorkerSettings.from_env().task_queues  # the worker `tiller up` runs polls these
    queues = {
        (d.task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
        for m in listing.models
        for d in m.deployments
        if not own or d.task_queue in own
    }
    queues.add((FAILOVER_TASK_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW))
    for queue, kind in sorted(queues):
        reply = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace="default", task_queue=TaskQueue(name=queue), task_queue_type=kind
            )
        )
        if not reply.pollers:
            return False
    return True


def _checks(stack: Stack, tls: InternalTls | None) -> list[tuple[str, Check]]:
    host = "127.0.0.1"
    checks: list[tuple[str, Check]] = [
        ("redis", lambda: _redis(host, stack.up.redis_port)),
        (
            "temporal",
            lambda: _grpc_health(
                stack.temporal_address, "temporal.api.workflowservice.v1.WorkflowService"
            ),
        ),
        ("router", lambda: _grpc_health(f"{host}:{stack.router.port}", "", tls, ROUTER)),
        ("quota", lambda: _grpc_health(f"{host}:{stack.quota.port}", "", tls, QUOTA)),
    ]
    if stack.up.demo_engine:
        checks.append(("demo-engine", lambda: _http_ok(f"http://{host}:{stack.demo.port}/health")))
    checks.append(("worker", lambda: _workers_polling(stack, tls)))
    checks.append(("gateway", lambda: _http_ok(f"http://{host}:{stack.gateway.port}/readyz")))
    return checks


async def wait_ready(stack: Stack, children: list[Child], tls: InternalTls | None) -> None:
    """`tls`: the internal plane's certificates, as the worker holds them (None: plaintext)."""
    deadline = time.monotonic() + stack.up.start_timeout_seconds
    for name, check in _checks(stack, tls):
        while not await check():
            for child in children:
                code = child.exit_code()
                if code is not None:
                    raise UpError(
                        f"{child.name} exited during start-up (code {code}); "
                        f"last lines of {child.log_path}:\n{child.log_tail()}"
                    )
            if time.monotonic() > deadline:
                raise UpError(
                    f"{name} not ready after {stack.up.start_timeout_seconds:.0f}s; "
                    f"see {stack.data / 'logs'}"
                )
            await asyncio.sleep(0.2)
