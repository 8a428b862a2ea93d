"""Gateway process: the REST API on uvicorn and the Inference gRPC service, one event loop."""

from __future__ import annotations

import asyncio

import uvicorn

from tiller.common.grpc_server import GrpcServer
from tiller.common.lifecycle import run_service, stop_event
from tiller.common.net import bind
from tiller.gateway.grpc_api import InferenceService
from tiller.gateway.http_api import create_app
from tiller.gateway.inference import Inference
from tiller.gateway.settings import GatewaySettings
from tiller.gateway.upstreams import Upstreams
from tiller.protos.inference.v1 import inference_pb2, inference_pb2_grpc


async def serve(settings: GatewaySettings) -> None:
    sock = bind(settings.host, settings.port)
    upstreams = await Upstreams.connect(settings)
    inference = Inference(upstreams, settings)
    inference.start()
    service = InferenceService(inference)
    grpc_server = GrpcServer(
        settings.grpc_address,
        lambda s: inference_pb2_grpc.add_InferenceServicer_to_server(service, s),
        [inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name],
    )
    http = uvicorn.Server(
        uvicorn.Config(
            create_app(inference),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        )
    )
    stop = stop_event()
    try:
        await grpc_server.start()
        serving = asyncio.create_task(http.serve(sockets=[sock]))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([serving, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        http.should_exit = True
        await serving
        await grpc_server.stop(settings.shutdown_grace_seconds)
        await inference.drain()
    finally:
        await inference.close()
        await upstreams.close()


def main() -> None:
    run_service("gateway", GatewaySettings.from_env, serve)
