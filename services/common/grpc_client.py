"""Client channels to Tiller's gRPC services: one per process, reused for every call."""

from __future__ import annotations

import grpc

# A lost peer is noticed in seconds, and calls wait for a (re)connecting channel within their
# deadline instead of failing at once while a container restarts.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
]


def channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
