"""What each worker reports of its endpoints (worker/endpoint_report.py, in the format of
contract/endpoint_reports.py) and how the gateway adds the reports up (gateway/endpoint_totals.py)."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tiller.contract.endpoint_reports import (
    EndpointReport,
    EndpointState,
    WorkerReport,
    decode,
    encode,
)
from tiller.gateway.endpoint_totals import EndpointTotals, summed
from tiller.protos.router.v1 import router_pb2
from tiller.worker.endpoint_report import snapshot
from tiller.worker.replicas import QueueReplicas

A = "http://a:8000/v1"
SECRET = "http://user:hunter2@b:8000/v1"


def pool(*endpoints: tuple[str, int, bool]) -> QueueReplicas:
    listed = [
        router_pb2.Endpoint(url=u, max_concurrency=c, weight=1, drain=d) for u, c, d in endpoints
    ]
    replicas = QueueReplicas("q")
    replicas.update(
        [
            (
                "model",
                router_pb2.Deployment(
                    name="pool",
                    adapter="vllm",
                    endpoint=listed[0].url,
                    task_queue="q",
                    max_concurrency=sum(e.max_concurrency for e in listed),
                    endpoints=listed,
                ),
            )
        ]
    )
    return replicas


def report(worker: str, *endpoints: EndpointReport, waiting: int = 0) -> WorkerReport:
    return WorkerReport(worker, endpoints, {"q": waiting})


def endpoint(
    state: EndpointState = "serving",
    *,
    in_flight: int = 0,
    attempts: int = 0,
    failures: int = 0,
    ejections: int = 0,
    seconds: float = 0.0,
) -> EndpointReport:
    return EndpointReport("q", A, state, in_flight, 4, attempts, failures, ejections, seconds)


def test_a_snapshot_holds_each_endpoints_state_and_counts_without_credentials() -> None:
    replicas = pool((A, 4, False), (SECRET, 2, True))
    a, _ = replicas.replicas.values()
    a.in_flight, a.attempts, a.failed, a.ejections, a.seconds = 3, 10, 2, 1, 5.5
    a.state = "half-open"
    replicas.waiting = 1
    taken = snapshot("7@host", [replicas])
    assert taken.worker == "7@host" and taken.waiting == {"q": 1}
    assert taken.endpoints == (
        EndpointReport("q", A, "half-open", 3, 4, 10, 2, 1, 5.5),
        EndpointReport("q", "http://b:8000/v1", "draining", 0, 2, 0, 0, 0, 0.0),
    )
    assert b"hunter2" not in encode(taken) and b"user" not in encode(taken)


def test_a_report_reads_back_as_written() -> None:
    written = report("1@a", endpoint(in_flight=2, attempts=9, seconds=1.25), waiting=3)
    assert decode(encode(written)) == written
    assert decode(encode(written).decode()) == written  # a client that decodes replies


def test_a_report_of_another_format_or_damaged_is_skipped() -> None:
    body = json.loads(encode(report("1@a", endpoint())))
    assert decode(json.dumps(body | {"format": 2})) is None
    assert decode(b"not json") is None
    assert decode(json.dumps(body | {"endpoints": [{"state": "serving"}]})) is None
    bad_state = body["endpoints"][0] | {"state": "on fire"}
    assert decode(json.dumps(body | {"endpoints": [bad_state]})) is None
    bad_count = body["endpoints"][0] | {"in_flight": "3"}
    assert decode(json.dumps(body | {"endpoints": [bad_count]})) is None


def test_the_gateway_sums_an_endpoint_over_its_workers() -> None:
    totals, waiting = summed(
        [
            report("1@a", endpoint(in_flight=4, attempts=10, failures=1, seconds=5.0), waiting=2),
            report("2@b", endpoint("ejected", attempts=6, failures=6, ejections=1, seconds=3.0)),
            report("3@c", endpoint("draining", in_flight=1, attempts=2, seconds=1.0)),
        ]
    )
    [total] = totals
    assert (total.task_queue, total.endpoint) == ("q", A)
    assert total.workers == {"serving": 1, "half-open": 0, "ejected": 1, "draining": 1}
    assert total.in_flight == 5
    assert total.capacity == 8  # a worker where it drains gives it no capacity
    assert (total.attempts, total.failures, total.ejections) == (18, 7, 1)
    assert total.seconds == 9.0
    assert waiting == {"q": 2}


def test_the_sums_are_gauges_on_the_gateways_metrics() -> None:
    totals = EndpointTotals()
    totals.totals, totals.waiting = summed(
        [report("1@a", endpoint(in_flight=1, attempts=4, seconds=2.0)), report("2@b", endpoint())]
    )
    totals.reports = 2
    registry = CollectorRegistry()
    registry.register(totals)
    series = {
        (s.name, s.labels.get("state", "")): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
        if s.labels.get("endpoint", A) == A
    }
    assert series[("tiller_queue_endpoint_workers", "serving")] == 2
    assert series[("tiller_queue_endpoint_workers", "ejected")] == 0
    assert series[("tiller_queue_endpoint_capacity", "")] == 8
    assert series[("tiller_queue_endpoint_in_flight", "")] == 1
    assert series[("tiller_queue_endpoint_attempts", "")] == 4
    assert series[("tiller_queue_endpoint_attempt_seconds", "")] == 2.0
    assert series[("tiller_queue_waiting_for_endpoint", "")] == 0
    assert series[("tiller_reporting_workers", "")] == 2
