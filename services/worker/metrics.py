"""The worker's metrics (common/metrics.py serves them; Temporal's SDK serves its own worker
metrics on TILLER_WORKER_SDK_METRICS_PORT)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tiller.worker.replicas import QueueReplicas

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
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
ENDPOINT_SECONDS = Histogram(
    "tiller_endpoint_attempt_seconds",
    "Duration of one attempt on one endpoint (replica) of a task queue's engine.",
    ["task_queue", "endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
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


class EndpointCollector(Collector):
    """Each polled endpoint's state at scrape time, read from the worker's replicas: nothing is
    counted per request for these."""

    def __init__(self, queues: Callable[[], Iterable[QueueReplicas]]) -> None:
        self._queues = queues

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["task_queue", "endpoint"]
        in_flight = GaugeMetricFamily(
            "tiller_endpoint_in_flight",
            "Attempts this worker runs on the endpoint now.",
            labels=labels,
        )
        capacity = GaugeMetricFamily(
            "tiller_endpoint_capacity",
            "The endpoint's max_concurrency (0 while it drains).",
            labels=labels,
        )
        ejected = GaugeMetricFamily(
            "tiller_endpoint_ejected",
            "1 while the endpoint is ejected (takes no attempt), 0.5 half-open, 0 serving.",
            labels=labels,
        )
        weight = GaugeMetricFamily(
            "tiller_endpoint_weight", "The endpoint's weight in models.yaml.", labels=labels
        )
        attempts = CounterMetricFamily(
            "tiller_endpoint_attempts", "Attempts that ended on the endpoint.", labels=labels
        )
        failed = CounterMetricFamily(
            "tiller_endpoint_failures",
            "Attempts on the endpoint that failed by the engine's fault.",
            labels=labels,
        )
        ejections = CounterMetricFamily(
            "tiller_endpoint_ejections", "Times the endpoint was ejected.", labels=labels
        )
        waiting = GaugeMetricFamily(
            "tiller_task_queue_waiting_for_endpoint",
            "Attempts on this worker waiting for an endpoint of their deployment to serve.",
            labels=["task_queue"],
        )
        for queue in self._queues():
            waiting.add_metric([queue.queue], queue.waiting)
            for r in queue.replicas.values():
                at = [queue.queue, r.shown]
                in_flight.add_metric(at, r.in_flight)
                capacity.add_metric(at, 0 if r.drain else r.capacity)
                state = {"serving": 0.0, "half-open": 0.5, "ejected": 1.0}[r.state]
                ejected.add_metric(at, state)
                weight.add_metric(at, r.weight)
                attempts.add_metric(at, r.attempts)
                failed.add_metric(at, r.failed)
                ejections.add_metric(at, r.ejections)
        yield from (in_flight, capacity, ejected, weight, attempts, failed, ejections, waiting)


def watch_endpoints(queues: Callable[[], Iterable[QueueReplicas]]) -> None:
    REGISTRY.register(EndpointCollector(queues))
