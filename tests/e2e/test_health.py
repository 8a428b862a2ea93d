"""Every gRPC service answers the standard health check and lists itself through server
reflection (what grpcurl and load balancers use); the gateway's /healthz and /readyz answer.
Router and quota speak only mutual TLS (the internal plane): they are asked with a service's
certificate, as their callers ask them."""

from __future__ import annotations

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.support import Stack, internal_tls


def open_channel(port: int, server: str | None) -> grpc.Channel:
    if server is None:  # the gateway's Inference service: callers' own, keys in metadata
        return grpc.insecure_channel(f"127.0.0.1:{port}")
    return grpc.secure_channel(
        f"127.0.0.1:{port}",
        internal_tls("gateway").channel_credentials(),
        options=[("grpc.ssl_target_name_override", server)],
    )


@pytest.mark.parametrize(
    ("port_of", "server", "service"),
    [
        (lambda s: s.router_port, "router", "tiller.router.v1.Router"),
        (lambda s: s.quota_port, "quota", "tiller.quota.v1.Quota"),
        (lambda s: s.grpc_port, None, "tiller.inference.v1.Inference"),
    ],
)
def test_health_and_reflection(
    stack: Stack, port_of: object, server: str | None, service: str
) -> None:
    port = port_of(stack)  # type: ignore[operator]
    with open_channel(port, server) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        listed = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed


def test_gateway_health_endpoints(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.gateway_port}"
    assert httpx.get(f"{base}/healthz").status_code == 200
    ready = httpx.get(f"{base}/readyz").json()
    assert ready["ready"] and set(ready["checks"]) == {"router", "quota", "redis", "temporal"}
