"""`tiller status`'s endpoints table, from the gateway's summed endpoint gauges
(cli/status.py, gateway/endpoint_totals.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tiller.cli.status import Sample, endpoint_lines, report, state_shown
from tiller.contract.endpoint_reports import EndpointReport, WorkerReport
from tiller.gateway.endpoint_totals import EndpointTotals, summed

A = "http://10.0.0.1:8000/v1"
B = "http://10.0.0.2:8000/v1"


def sample_of(*reports: WorkerReport) -> Sample:
    """What `tiller status` samples from a gateway that read these reports."""
    totals = EndpointTotals()
    totals.totals, totals.waiting = summed(reports)
    totals.reports = len(reports)
    registry = CollectorRegistry()
    registry.register(totals)
    taken = Sample(0.0)
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            taken.values.setdefault(s.name, []).append((dict(s.labels), s.value))
    return taken


def test_each_endpoint_has_a_row_summed_over_its_workers() -> None:
    worker_1 = WorkerReport(
        "1@a",
        (
            EndpointReport("pool.q", A, "serving", 3, 4, 100, 2, 0, 50.0),
            EndpointReport("pool.q", B, "ejected", 0, 2, 20, 9, 1, 10.0),
        ),
        {"pool.q": 0},
    )
    worker_2 = WorkerReport(
        "2@b",
        (
            EndpointReport("pool.q", A, "serving", 4, 4, 60, 0, 0, 30.0),
            EndpointReport("pool.q", B, "serving", 2, 2, 30, 0, 0, 3.0),
        ),
        {"pool.q": 2},
    )
    lines = endpoint_lines(sample_of(worker_1, worker_2))
    print("\n".join(lines))
    header, row_a, row_b, waiting = lines
    assert header.split() == [
        "task", "queue", "endpoint", "state", "in", "flight", "workers", "attempts", "failures",
        "ejections", "mean",
    ]  # fmt: skip
    assert row_a.split() == ["pool.q", A, "serving", "7/8", "2", "160", "2", "0", "500ms"]
    assert row_b.split() == ["pool.q", B, "ejected", "1/2", "2/4", "2", "50", "9", "1", "260ms"]
    assert waiting == "pool.q: 2 attempts wait for an endpoint"
    assert len({len(header), len(row_a), len(row_b)}) == 1  # columns line up


def test_a_draining_endpoint_and_one_not_tried_yet() -> None:
    worker = WorkerReport(
        "1@a",
        (
            EndpointReport("q", A, "draining", 1, 4, 3, 0, 0, 6.0),
            EndpointReport("q", B, "serving", 0, 4, 0, 0, 0, 0.0),
        ),
        {"q": 0},
    )
    _, row_a, row_b = endpoint_lines(sample_of(worker))
    assert row_a.split()[2:4] == ["draining", "1/0"]  # takes nothing new
    assert row_a.split()[-1] == "2.00s"
    assert row_b.split()[2:4] == ["serving", "0/4"] and row_b.split()[-1] == "-"


def test_with_no_reports_it_says_so() -> None:
    assert endpoint_lines(sample_of()) == [
        "(no endpoint reports: no worker has written one to Redis in the last 10 s)"
    ]


def test_the_state_over_workers_is_the_worst_one_and_how_many_have_it() -> None:
    assert state_shown({"serving": 3}) == "serving"
    assert state_shown({"serving": 2, "ejected": 1}) == "ejected 1/3"
    assert state_shown({"serving": 0, "half-open": 2}) == "half-open"
    assert state_shown({"ejected": 1, "draining": 1}) == "draining 1/2"


def test_the_whole_report_ends_with_the_endpoints() -> None:
    worker = WorkerReport(
        "1@a", (EndpointReport("q", A, "serving", 0, 64, 0, 0, 0, 0.0),), {"q": 0}
    )
    second = sample_of(worker)
    second.values["tiller_queue_info"] = [({"model": "m", "deployment": "d", "task_queue": "q"}, 1)]
    shown = report("http://gw", {"ready": True, "checks": {"redis": True}}, Sample(-2.0), second)
    print(shown)
    assert shown.splitlines()[-1].split()[:4] == ["q", A, "serving", "0/64"]
