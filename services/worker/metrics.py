"""The worker's metrics (common/metrics.py serves them; Temporal's SDK serves its own worker
metrics on TILLER_WORKER_SDK_METRICS_PORT)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram
from temporalio.exceptions import ApplicationError

ATTEMPTS = Counter(
    "tiller_engine_attempts",
    "Attempts against an engine, by deployment and outcome (ok, error, superseded, cancelled).",
    ["deployment", "outcome"],
)
ENGINE_ERRORS = Counter(
    "tiller_engine_errors",
    "Failed attempts by deployment and error (EngineUnavailable, EngineError, ...).",
    ["deployment", "reason"],
)
RETRIES = Counter(
    "tiller_engine_retries",
    "Attempts that retried an earlier failed one on the same deployment.",
    ["deployment"],
)
FAILOVERS = Counter(
    "tiller_failovers",
    "Attempts on a later deployment or a fallback model after the first one failed.",
    ["model", "deployment"],
)
ATTEMPT_SECONDS = Histogram(
    "tiller_engine_attempt_seconds",
    "Duration of one attempt against an engine.",
    ["deployment"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
IN_FLIGHT = Gauge("tiller_engine_in_flight", "Attempts running on this worker now.", ["deployment"])
WAITING = Gauge(
    "tiller_engine_waiting",
    "Attempts on this worker waiting for their unreachable engine to come back.",
    ["deployment"],
)


@contextlib.contextmanager
def attempt(model: str, deployment: str, number: int, failover: bool) -> Iterator[None]:
    """Count one attempt: retries, failovers, what it ended in and how long it took."""
    if number > 1:
        RETRIES.labels(deployment).inc()
    elif failover:
        FAILOVERS.labels(model, deployment).inc()
    IN_FLIGHT.labels(deployment).inc()
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except ApplicationError as error:
        outcome = "superseded" if error.message == SUPERSEDED else "error"
        if outcome == "error":
            ENGINE_ERRORS.labels(deployment, error.type or "error").inc()
        raise
    except BaseException:
        outcome = "cancelled"
        raise
    finally:
        IN_FLIGHT.labels(deployment).dec()
        ATTEMPTS.labels(deployment, outcome).inc()
        ATTEMPT_SECONDS.labels(deployment).observe(time.perf_counter() - started)


SUPERSEDED = "Superseded by a later attempt."
