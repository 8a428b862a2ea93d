"""Every gRPC service answers the standard health check and lists itself through server
reflection (what grpcurl and load balancers use); the gateway's /healthz and /readyz answer."""

from __future__ import annotations

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.support import Stack


@pytest.mark.parametrize(
    ("port_of", "service"),
    [
        (lambda s: s.router_port, "tiller.router.v1.Router"),
        (lambda s: s.quota_port, "tiller.quota.v1.Quota"),
        (lambda s: s.grpc_port, "tiller.inference.v1.Inference"),
    ],
)
def test_health_and_reflection(stack: Stack, port_of: object, service: str) -> None:
    port = port_of(stack)  # type: ignore[operator]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
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
