"""Client channels to Tiller's gRPC services: one per process, reused for every call.

An address may name several replicas: `router:50052` (every address DNS gives the name: compose
`--scale`, a Kubernetes headless service), `10.0.0.5:50052,10.0.0.6:50052` (a list of IPs), or
any gRPC target (`dns:///...`, `ipv4:...`, `unix:...`). Calls are spread round-robin over the
replicas that are up and say they serve (standard health checking): a replica that is stopping
reports NOT_SERVING first (common/grpc_server.py), so callers move off it before it closes.
"""

from __future__ import annotations

import ipaddress
import json

import grpc

from tiller.common import tracing
from tiller.common.internal_tls import InternalTls

# Round-robin over the replicas whose health service says SERVING.
SERVICE_CONFIG = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
)
# A lost peer is noticed in seconds; a call that never reached a replica (it closed the
# connection first) is retried on another at once (gRPC's transparent retries).
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", SERVICE_CONFIG),
    # Look the name up again soon after a replica goes away (compose and Kubernetes move them).
    ("grpc.dns_min_time_between_resolutions_ms", 1_000),
]


def target(address: str) -> str:
    """The gRPC target for an address of one or more replicas."""
    if ":/" in address or address.startswith(("ipv4:", "ipv6:", "unix:", "dns:")):
        return address
    if "," in address:
        hosts = [a.strip().rpartition(":")[0].strip("[]") for a in address.split(",")]
        try:
            versions = {ipaddress.ip_address(h).version for h in hosts}
        except ValueError:
            raise ValueError(
                f"{address!r}: a list of replicas must be IP addresses; for names, give one name "
                "that DNS resolves to every replica"
            ) from None
        if len(versions) > 1:
            raise ValueError(f"{address!r}: IPv4 and IPv6 replicas cannot share one list")
        return f"ipv{versions.pop()}:{address.replace(' ', '')}"
    return f"dns:///{address}"


def channel(
    address: str, tls: InternalTls | None = None, server: str | None = None
) -> grpc.aio.Channel:
    """A channel to the service at `address`; with the internal plane's `tls`, mutual TLS to
    the service named `server` (its certificate must name it, whatever the address)."""
    if tls is None:
        return grpc.aio.insecure_channel(
            target(address), options=CHANNEL_OPTIONS, interceptors=tracing.client_interceptors()
        )
    if server is None:
        raise ValueError("a TLS channel needs the name of the service it reaches")
    return grpc.aio.secure_channel(
        target(address),
        tls.channel_credentials(),
        options=[*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", server)],
        interceptors=tracing.client_interceptors(),
    )
