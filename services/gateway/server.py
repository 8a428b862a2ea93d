"""Gateway process: the REST API on uvicorn and the Inference gRPC service, one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator

import uvicorn
from sse_starlette.sse import AppStatus

from tiller.common.grpc_server import GrpcServer
from tiller.common.lifecycle import run_service, stop_event
from tiller.common.net import bind
from tiller.gateway.batches.service import Batches
from tiller.gateway.edge import JsonErrorsProtocol
from tiller.gateway.grpc_api import InferenceService
from tiller.gateway.http_api import create_app
from tiller.gateway.inference import Inference
from tiller.gateway.metrics import RecordInference
from tiller.gateway.settings import GatewaySettings
from tiller.gateway.upstreams import Upstreams
from tiller.protos.inference.v1 import inference_pb2, inference_pb2_grpc

log = logging.getLogger(__name__)
# SIGTERM must not end open streams at once (sse-starlette's default): drain() decides.
AppStatus.enable_automatic_graceful_drain = False
# After a hand-over, how long the callers told get to read that before their streams end.
HAND_OVER_SECONDS = 1.0


async def serve(settings: GatewaySettings) -> None:
    sock = bind(settings.host, settings.port)
    upstreams = await Upstreams.connect(settings)
    inference = Inference(upstreams, settings)
    inference.start()
    service = InferenceService(inference)
    app = create_app(inference)
    grpc_server = GrpcServer(
        settings.grpc_address,
        lambda s: inference_pb2_grpc.add_InferenceServicer_to_server(service, s),
        [inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name],
        # Answers stream for minutes: a connection past its age keeps running streams an hour.
        connection_age_grace=3600.0,
        interceptors=[RecordInference()],
    )
    http = _Server(
        uvicorn.Config(
            app,
            log_level="warning",
            log_config=None,  # uvicorn's own lines (a traceback too) are JSON lines like ours
            http=JsonErrorsProtocol,  # an unparseable request's 400 is JSON too
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds + HAND_OVER_SECONDS) + 2,
        )
    )
    app.state.batches = batches = Batches(inference, app.state.files)
    stop = stop_event()
    batch_work = asyncio.create_task(batches.serve(settings.shutdown_grace_seconds))
    try:
        await grpc_server.start()
        serving = asyncio.create_task(http.serve(sockets=[sock]))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([serving, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        batch_work.cancel()  # takes no more lines; those running get the grace to finish
        await drain(settings, inference, grpc_server, http, serving)
        await asyncio.gather(batch_work, return_exceptions=True)
        await inference.drain()
    finally:
        batch_work.cancel()
        await inference.close()
        await upstreams.close()


async def drain(
    settings: GatewaySettings,
    inference: Inference,
    grpc_server: GrpcServer,
    http: uvicorn.Server,
    serving: asyncio.Task[None],
) -> None:
    """SIGTERM: not ready first (balancers move away) while still serving for drain_seconds;
    then no new connections, and open requests and streams get the grace to finish. Those
    still open then are handed over: they run on, another gateway answers for them, and their
    callers are told how to resume (Inference.hand_over)."""
    inference.draining = True
    await grpc_server.not_serving()
    log.info("draining", extra={"drain_seconds": settings.drain_seconds})
    if not serving.done():
        await asyncio.sleep(settings.drain_seconds)
    http.should_exit = True  # uvicorn stops accepting and waits for open requests
    grace = settings.shutdown_grace_seconds
    ending = asyncio.create_task(_grace_over(inference, grace))
    try:
        await asyncio.gather(serving, grpc_server.stop(grace + HAND_OVER_SECONDS + 1))
    finally:
        ending.cancel()


async def _grace_over(inference: Inference, grace: float) -> None:
    await asyncio.sleep(grace)
    told = await inference.hand_over()
    log.warning("grace over: open requests handed over", extra={"handed_over": told})
    await asyncio.sleep(HAND_OVER_SECONDS)  # their last events go out
    AppStatus.should_exit = True  # sse-starlette ends any stream still open


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handlers: SIGTERM is the gateway's (drain above)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def main() -> None:
    run_service("gateway", GatewaySettings.from_env, serve)
