"""What each worker reports of its endpoints (worker/endpoint_report.py, in the format of
contract/endpoint_reports.py)."""

from __future__ import annotations

import json

from tiller.contract.endpoint_reports import (
    EndpointReport,
    EndpointState,
    WorkerReport,
    decode,
    encode,
)
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
