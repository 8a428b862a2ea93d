"""Quota process: install the bootstrap admin key, then serve admission over gRPC."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tiller.common import redis_client
from tiller.common.grpc_server import Callers, GrpcServer
from tiller.common.internal_tls import GATEWAY, QUOTA
from tiller.common.lifecycle import StartupError, run_service, stop_event
from tiller.common.metrics import serve_metrics
from tiller.protos.quota.v1 import quota_pb2, quota_pb2_grpc
from tiller.quota import compaction
from tiller.quota.admin_gate import AdminGate
from tiller.quota.admission import Admission
from tiller.quota.audit import AuditLog
from tiller.quota.keys import KeyStore
from tiller.quota.service import QuotaService
from tiller.quota.settings import QuotaSettings
from tiller.quota.usage import Ledger

log = logging.getLogger(__name__)
REDIS_WAIT_SECONDS = 60
# Only gateways call quota: to admit and settle requests, and for an admin caller's key
# administration (which admin_gate.py checks further).
CALLERS = Callers(frozenset({GATEWAY}))


def connect_redis(settings: QuotaSettings) -> Redis:
    timeout = settings.redis_timeout_seconds
    return redis_client.connect(
        settings.redis_url,
        wait_seconds=timeout,
        socket_timeout=timeout,
        connect_timeout=timeout,
    )


def create_server(settings: QuotaSettings, redis: Redis) -> GrpcServer:
    admission = Admission(redis, settings.key_prefix, settings.lease_ttl_seconds)
    audit = AuditLog(redis, settings.key_prefix, settings.audit_days)
    service = QuotaService(
        admission, Ledger(redis, settings.key_prefix), KeyStore(redis, settings.key_prefix, audit)
    )
    return GrpcServer(
        settings.address,
        lambda s: quota_pb2_grpc.add_QuotaServicer_to_server(service, s),
        [quota_pb2.DESCRIPTOR.services_by_name["Quota"].full_name],
        interceptors=[AdminGate(admission)],
        tls=settings.internal_tls(QUOTA),
        callers=CALLERS,
        health_address=settings.health_address,
    )


async def serve(settings: QuotaSettings) -> None:
    redis = connect_redis(settings)
    serve_metrics(settings.host, settings.metrics_port)
    compacting = asyncio.create_task(
        compaction.rewrite_forever(redis, settings.key_prefix, settings.redis_rewrite_seconds)
    )
    try:
        server = create_server(settings, redis)  # its certificates first: a clear line at once
        if settings.admin_key:
            audit = AuditLog(redis, settings.key_prefix, settings.audit_days)
            await _install_admin(KeyStore(redis, settings.key_prefix, audit), settings)
        await server.serve_until(stop_event())
    finally:
        compacting.cancel()
        await redis.aclose()


async def _install_admin(store: KeyStore, settings: QuotaSettings) -> None:
    """Redis may come up after us (compose); wait for it a while before giving up."""
    assert settings.admin_key
    for _ in range(REDIS_WAIT_SECONDS * 2):
        try:
            key_id = await store.install_bootstrap_admin(settings.admin_key, settings.admin_rpm)
        except RedisError:
            await asyncio.sleep(0.5)
            continue
        log.info("bootstrap admin key installed", extra={"key_id": key_id})
        return
    raise StartupError(f"cannot reach Redis at {_redacted(settings.redis_url)}")


def _redacted(url: str) -> str:
    """A Redis URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


def main() -> None:
    run_service("quota", QuotaSettings.from_env, serve)
