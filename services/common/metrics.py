"""Prometheus metrics: one registry per process (prometheus_client's), served at GET /metrics.
The gateway serves it on its HTTP port; router, quota and worker on a port of their own
(TILLER_<SERVICE>_METRICS_PORT, 0 = none). Labels name models, deployments, keys by id and
teams, never a prompt or a key."""

from __future__ import annotations

from prometheus_client import start_http_server

from tiller.common.lifecycle import StartupError


def serve_metrics(host: str, port: int) -> None:
    """GET /metrics on host:port, from a daemon thread (0: not served)."""
    if not port:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as error:
        raise StartupError(f"cannot serve metrics on {host}:{port}: {error.strerror}") from None
