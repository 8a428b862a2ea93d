"""The gateway's Prometheus metrics, served at GET /metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

PII_DETECTIONS = Counter(
    "tiller_pii_detections",
    "Personal data found in requests, by type and the mode that applied to it.",
    ["type", "mode"],
)
PII_BLOCKED = Counter(
    "tiller_pii_blocked_requests",
    "Requests refused because a policy blocks the personal data they carry.",
)
PII_SECONDS = Histogram(
    "tiller_pii_scan_seconds",
    "Time spent finding and masking personal data in one request.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
