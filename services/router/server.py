"""Router process: load models.yaml (or refuse to start, saying why), serve it over gRPC, and
pick up changes to it while serving (reload.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from tiller.common.grpc_server import Callers, GrpcServer
from tiller.common.internal_tls import GATEWAY, ROUTER, WORKER
from tiller.common.lifecycle import StartupError, run_service, stop_event
from tiller.common.metrics import serve_metrics
from tiller.protos.router.v1 import router_pb2, router_pb2_grpc
from tiller.router import metrics
from tiller.router.config import ConfigError
from tiller.router.reload import Reloader
from tiller.router.service import RouterService
from tiller.router.settings import RouterSettings
from tiller.router.table import compile_file

log = logging.getLogger(__name__)
# Gateways resolve models; workers list them (their task queues) and pipelines resolve steps.
CALLERS = Callers(frozenset({GATEWAY, WORKER}))


def create_server(settings: RouterSettings) -> tuple[GrpcServer, RouterService]:
    try:
        table = compile_file(Path(settings.models_file))
    except ConfigError as error:
        raise StartupError(f"invalid models file:\n{error}") from None
    log.info("routing table loaded", extra={"models": len(table.models), "version": table.version})
    metrics.serving(table)
    service = RouterService(table)
    server = GrpcServer(
        settings.address,
        lambda s: router_pb2_grpc.add_RouterServicer_to_server(service, s),
        [router_pb2.DESCRIPTOR.services_by_name["Router"].full_name],
        tls=settings.internal_tls(ROUTER),
        callers=CALLERS,
        health_address=settings.health_address,
    )
    return server, service


async def serve(settings: RouterSettings) -> None:
    server, service = create_server(settings)
    serve_metrics(settings.host, settings.metrics_port)
    watching = None
    if settings.reload_seconds > 0:
        reloader = Reloader(Path(settings.models_file), service, settings.reload_seconds)
        watching = asyncio.create_task(reloader.run())
    try:
        await server.serve_until(stop_event())
    finally:
        if watching is not None:
            watching.cancel()


def main() -> None:
    run_service("router", RouterSettings.from_env, serve)
