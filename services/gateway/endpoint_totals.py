"""Every engine endpoint summed over the workers that send attempts to it, for /metrics and
`tiller status`: read from the workers' reports in Redis (contract/endpoint_reports.py) when
/metrics is scraped, at most once a second, never per request.

Each worker runs its own circuit breaker and its own slots, so per endpoint the gateway shows
how many workers see it in each state (`tiller_queue_endpoint_workers`), and the sum of their
in-flight attempts, capacities and counts. The counts are since each worker started and drop
when a worker stops: gauges, not counters (`rate()` them from the workers' own
`tiller_endpoint_*_total`). Every gateway reads the same reports: take `max` across gateways.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tiller.contract import endpoint_reports
from tiller.contract.endpoint_reports import STATES, EndpointState, WorkerReport

log = logging.getLogger(__name__)
FRESH_SECONDS = 1.0  # a read serves the scrapes within this long
READ_SECONDS = 1.0  # a scrape waits this long for Redis, then shows what it had
KEEP_SECONDS = float(endpoint_reports.REPORT_TTL_SECONDS)  # ... if read this recently


@dataclass
class EndpointTotal:
    task_queue: str
    endpoint: str
    workers: dict[EndpointState, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    in_flight: int = 0
    capacity: int = 0  # summed over workers; 0 from those where it drains
    attempts: int = 0
    failures: int = 0
    ejections: int = 0
    seconds: float = 0.0


def summed(reports: Iterable[WorkerReport]) -> tuple[list[EndpointTotal], dict[str, int]]:
    """Per (task queue, endpoint), the workers' figures added up; and per task queue, the
    attempts waiting for an endpoint."""
    totals: dict[tuple[str, str], EndpointTotal] = {}
    waiting: dict[str, int] = {}
    for report in reports:
        for queue, n in report.waiting.items():
            waiting[queue] = waiting.get(queue, 0) + n
        for e in report.endpoints:
            total = totals.setdefault(
                (e.task_queue, e.endpoint), EndpointTotal(e.task_queue, e.endpoint)
            )
            total.workers[e.state] += 1
            total.in_flight += e.in_flight
            total.capacity += 0 if e.state == "draining" else e.capacity
            total.attempts += e.attempts
            total.failures += e.failures
            total.ejections += e.ejections
            total.seconds += e.seconds
    return [totals[k] for k in sorted(totals)], dict(sorted(waiting.items()))


class EndpointTotals(Collector):
    """The latest sums, read from Redis by `refresh` (the /metrics handler calls it)."""

    def __init__(self) -> None:
        self.totals: list[EndpointTotal] = []
        self.waiting: dict[str, int] = {}
        self.reports = 0  # live worker reports
        self._read_at = -KEEP_SECONDS
        self._tried_at = -FRESH_SECONDS

    async def refresh(self, redis: Redis, prefix: str) -> None:
        """Read the reports again, unless that was tried within FRESH_SECONDS (a scrape at
        the same time as one reading gets what was read before)."""
        if time.monotonic() - self._tried_at < FRESH_SECONDS:
            return
        self._tried_at = time.monotonic()
        try:
            async with asyncio.timeout(READ_SECONDS):
                reports = await endpoint_reports.read(redis, prefix)
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("cannot read the endpoint reports", extra={"error": type(error).__name__})
            if time.monotonic() - self._read_at > KEEP_SECONDS:
                self.totals, self.waiting, self.reports = [], {}, 0
            return
        self.totals, self.waiting = summed(reports)
        self.reports = len(reports)
        self._read_at = time.monotonic()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["task_queue", "endpoint"]

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*labels, *extra])

        workers = gauge(
            "tiller_queue_endpoint_workers",
            "Workers sending attempts to the endpoint, by its state on each (serving, "
            "half-open, ejected, draining).",
            ("state",),
        )
        in_flight = gauge(
            "tiller_queue_endpoint_in_flight", "Attempts running on the endpoint, all workers."
        )
        capacity = gauge(
            "tiller_queue_endpoint_capacity",
            "The endpoint's max_concurrency summed over its workers (0 from those where it "
            "drains).",
        )
        attempts = gauge(
            "tiller_queue_endpoint_attempts",
            "Attempts that ended on the endpoint since its live workers started.",
        )
        failures = gauge(
            "tiller_queue_endpoint_failures",
            "Of them, attempts that failed by the engine's fault.",
        )
        ejections = gauge(
            "tiller_queue_endpoint_ejections",
            "Times the endpoint was ejected, summed over its live workers.",
        )
        seconds = gauge(
            "tiller_queue_endpoint_attempt_seconds",
            "The summed duration of those attempts (divide by attempts: the mean).",
        )
        waiting = GaugeMetricFamily(
            "tiller_queue_waiting_for_endpoint",
            "Attempts taken by workers that wait for an endpoint of their deployment to serve.",
            labels=["task_queue"],
        )
        reports = GaugeMetricFamily(
            "tiller_reporting_workers", "Workers whose endpoint report is live in Redis."
        )
        for t in self.totals:
            at = [t.task_queue, t.endpoint]
            for state, n in t.workers.items():
                workers.add_metric([*at, state], n)
            in_flight.add_metric(at, t.in_flight)
            capacity.add_metric(at, t.capacity)
            attempts.add_metric(at, t.attempts)
            failures.add_metric(at, t.failures)
            ejections.add_metric(at, t.ejections)
            seconds.add_metric(at, t.seconds)
        for queue, n in self.waiting.items():
            waiting.add_metric([queue], n)
        reports.add_metric([], self.reports)
        yield from (workers, in_flight, capacity, attempts, failures, ejections, seconds)
        yield from (waiting, reports)


TOTALS = EndpointTotals()
REGISTRY.register(TOTALS)
