"""gRPC servers close a client's connection once it is old (GOAWAY), so clients behind a
DNS name re-resolve it and reach replicas added since; the next call simply reconnects."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import free_port
from tiller.common.grpc_server import GrpcServer


async def test_an_old_connection_is_closed_and_the_next_call_reconnects() -> None:
    server = GrpcServer(
        f"127.0.0.1:{free_port()}", lambda s: None, [], connection_age=1.0, connection_age_grace=1.0
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert channel.get_state() == grpc.ChannelConnectivity.READY
            states = []
            for _ in range(40):  # age 1 s (+10 % jitter) then the grace: gone within 4 s
                await asyncio.sleep(0.1)
                states.append(channel.get_state())
            assert grpc.ChannelConnectivity.IDLE in states  # the server closed it
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)
