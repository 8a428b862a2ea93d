"""The gRPC edge in-process over real gRPC: a TillerError from any method of any Tiller service
becomes its rich status in one interceptor, the gateway's inference calls are counted in
another, and the standard health service (whose Watch streams) is left alone by both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from tests.support import free_port
from tiller.common.errors import RateLimited, TillerError
from tiller.common.grpc_server import GrpcServer
from tiller.gateway.grpc_api import InferenceService
from tiller.gateway.metrics import RecordInference
from tiller.protos.inference.v1 import inference_pb2, inference_pb2_grpc


class Refusing:
    """Stands in for the gateway's Inference: every request is refused by quota."""

    async def begin(self, *args: Any, **kwargs: Any) -> None:
        raise RateLimited("Rate limit reached for requests per minute of this key.", retry_after=2)


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    service = InferenceService(Refusing())  # type: ignore[arg-type]
    name = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name
    server = GrpcServer(
        f"127.0.0.1:{free_port()}",
        lambda s: inference_pb2_grpc.add_InferenceServicer_to_server(service, s),
        [name],
        interceptors=[RecordInference()],
    )
    await server.start()
    yield server
    await server.stop(0)


def refused() -> float:
    labels = {"api": "grpc", "model": "", "key": "", "team": "", "status": "429"}
    return REGISTRY.get_sample_value("tiller_requests_total", labels) or 0.0


@pytest.mark.parametrize("streamed", [False, True])
async def test_an_error_becomes_its_rich_status_and_is_counted(
    server: GrpcServer, streamed: bool
) -> None:
    before = refused()
    request = inference_pb2.GenerateRequest(
        model="demo", messages=[inference_pb2.ChatMessage(role="user", content="hi")]
    )
    metadata = (("authorization", "Bearer tk-x"),)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if streamed:
                async for _ in stub.GenerateStream(request, metadata=metadata, timeout=5):
                    pass
            else:
                await stub.Generate(request, metadata=metadata, timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(caught.value)
    assert status is not None
    error = TillerError.from_status(status)
    assert isinstance(error, RateLimited) and error.retry_after == 2
    assert refused() == before + 1


async def test_health_watch_streams_untouched_by_the_interceptors(server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        first = await asyncio.wait_for(watch.read(), 5)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        await server.not_serving()
        second = await asyncio.wait_for(watch.read(), 5)
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()


async def test_a_request_that_is_not_the_methods_message_is_invalid_argument(
    server: GrpcServer,
) -> None:
    before = refused()
    async with grpc.aio.insecure_channel(server.address) as channel:
        raw = channel.unary_unary("/tiller.inference.v1.Inference/Generate")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(b"\xff\xff\xff\xff not protobuf", timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in (caught.value.details() or "")
    assert refused() == before  # refused before any method (or its count) saw it
