"""The gateway's connections: made once at start-up, shared by every request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis
from temporalio.client import Client

from tiller.common import redis_client, temporal
from tiller.common.errors import TillerError
from tiller.common.grpc_client import channel
from tiller.common.internal_tls import GATEWAY, QUOTA, ROUTER
from tiller.common.offload import RedisOffload
from tiller.common.sealing import Sealer
from tiller.gateway.settings import GatewaySettings
from tiller.protos.quota.v1 import quota_pb2_grpc
from tiller.protos.router.v1 import router_pb2_grpc

T = TypeVar("T")


@dataclass
class Upstreams:
    router: router_pb2_grpc.RouterStub
    quota: quota_pb2_grpc.QuotaStub
    temporal: Client
    redis: Redis
    # Seals what the gateway keeps in Redis and opens the answers workers write there, with
    # the payload keys (common/sealing.py).
    sealer: Sealer
    _channels: tuple[grpc.aio.Channel, ...]

    @classmethod
    async def connect(cls, settings: GatewaySettings) -> Upstreams:
        tls = settings.internal_tls(GATEWAY)
        router_channel = channel(settings.router_address, tls, ROUTER)
        quota_channel = channel(settings.quota_address, tls, QUOTA)
        keys = temporal.payload_keys(settings.payload_keys, settings.payload_keys_file)
        redis = redis_client.connect(
            settings.redis_url,
            wait_seconds=settings.rpc_timeout_seconds,
            socket_timeout=settings.rpc_timeout_seconds + 2.0,
        )
        client = await temporal.connect(
            settings.temporal_address,
            settings.temporal_namespace,
            settings.dependency_wait_seconds,
            keys,
            # A request too large for Temporal's history travels through Redis (offload.py).
            offload=RedisOffload(redis, settings.key_prefix),
            access=temporal.TemporalAccess.of(settings),
        )
        return cls(
            router_pb2_grpc.RouterStub(router_channel),
            quota_pb2_grpc.QuotaStub(quota_channel),
            client,
            redis,
            Sealer(keys),
            (router_channel, quota_channel),
        )

    async def close(self) -> None:
        await self.redis.aclose()
        for ch in self._channels:
            await ch.close()

    async def readiness(self, limit: float) -> dict[str, bool]:
        """Each dependency's health, checked concurrently."""
        router_channel, quota_channel = self._channels
        checks = {
            "router": _grpc_serving(router_channel, limit),
            "quota": _grpc_serving(quota_channel, limit),
            "redis": _redis_ok(self.redis, limit),
            "temporal": _temporal_ok(self.temporal, limit),
        }
        results = await asyncio.gather(*checks.values())
        return dict(zip(checks, results, strict=True))


async def rpc(call: Awaitable[T]) -> T:
    """Await a router/quota call; its failure becomes the TillerError the service raised."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        raise TillerError.from_grpc(error) from None


async def _grpc_serving(ch: grpc.aio.Channel, limit: float) -> bool:
    try:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=limit
        )
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def _redis_ok(redis: Redis, limit: float) -> bool:
    try:
        return bool(await asyncio.wait_for(redis.ping(), limit))
    except Exception:  # any failure means not ready; the reason is in Redis's own logs
        return False


async def _temporal_ok(client: Client, limit: float) -> bool:
    try:
        return await asyncio.wait_for(client.service_client.check_health(), limit)
    except Exception:  # same: readiness only reports yes or no
        return False
