"""Every service serves Prometheus metrics, and `tiller status` reads them: requests by model,
key, team and status; time to first token; tokens; Temporal's backlog and pollers per task
queue; each engine endpoint summed over its workers; admissions by outcome; router resolves;
engine attempts by deployment; and the Temporal SDK's own worker metrics."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT, Stack, wait_for


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for s in family.samples:
            found.setdefault(s.name, []).append((dict(s.labels), s.value))
    return found


def value(series: dict[str, list[tuple[dict[str, str], float]]], name: str, **match: str) -> float:
    return sum(
        v for labels, v in series.get(name, []) if all(labels.get(k) == x for k, x in match.items())
    )


def test_the_gateway_counts_requests_tokens_and_first_tokens(stack: Stack) -> None:
    gateway = f"http://127.0.0.1:{stack.gateway_port}/metrics"
    before = scrape(gateway)
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    body = {"model": "demo", "messages": [{"role": "user", "content": "count me"}]}
    assert httpx.post(f"{stack.base_url}/chat/completions", json=body, headers=headers).is_success
    with httpx.stream(
        "POST", f"{stack.base_url}/chat/completions", json=body | {"stream": True}, headers=headers
    ) as streamed:
        streamed.read()
    refused = httpx.post(f"{stack.base_url}/chat/completions", json=body, headers={})
    assert refused.status_code == 401
    after = scrape(gateway)
    ok = {"api": "rest", "model": "demo", "status": "200"}
    assert (
        value(after, "tiller_requests_total", **ok) - value(before, "tiller_requests_total", **ok)
        == 2
    )
    [(labels, _)] = [s for s in after["tiller_requests_total"] if s[0]["status"] == "200"][:1]
    assert labels["key"] and len(labels["key"]) == 16  # the key's id, never the key
    assert value(after, "tiller_requests_total", status="401") >= 1
    assert value(after, "tiller_time_to_first_token_seconds_count", model="demo") >= 1
    tokens = value(after, "tiller_tokens_total", model="demo", kind="completion")
    assert tokens - value(before, "tiller_tokens_total", model="demo", kind="completion") == 2 * 4
    assert value(after, "tiller_requests_in_flight", model="demo") == 0


def test_backlog_and_workers_per_task_queue_come_from_temporal(stack: Stack) -> None:
    gateway = f"http://127.0.0.1:{stack.gateway_port}/metrics"
    assert wait_for(
        lambda: value(scrape(gateway), "tiller_queue_pollers", task_queue="test.demo") >= 1,
        timeout=20,
        interval=0.5,
    )
    series = scrape(gateway)
    assert value(series, "tiller_queue_info", task_queue="test.demo", model="demo") == 1
    assert "tiller_queue_backlog" in series and "tiller_queue_backlog_age_seconds" in series


def test_router_quota_and_worker_serve_their_own(stack: Stack) -> None:
    port = {k: int(stack.env[f"TILLER_UP_{k}_PORT"]) for k in (
        "ROUTER_METRICS", "QUOTA_METRICS", "WORKER_METRICS", "WORKER_SDK_METRICS"
    )}  # fmt: skip
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    body = {"model": "demo", "messages": [{"role": "user", "content": "count me"}]}
    assert httpx.post(f"{stack.base_url}/chat/completions", json=body, headers=headers).is_success
    router = scrape(f"http://127.0.0.1:{port['ROUTER_METRICS']}/metrics")
    assert value(router, "tiller_router_resolves_total", outcome="found") >= 1
    assert value(router, "tiller_router_config_version") > 0
    quota = scrape(f"http://127.0.0.1:{port['QUOTA_METRICS']}/metrics")
    assert value(quota, "tiller_quota_admissions_total", outcome="admitted") >= 1
    worker = scrape(f"http://127.0.0.1:{port['WORKER_METRICS']}/metrics")
    assert value(worker, "tiller_engine_attempts_total", deployment="demo-local", outcome="ok") >= 1
    sdk = httpx.get(f"http://127.0.0.1:{port['WORKER_SDK_METRICS']}/metrics", timeout=10).text
    assert "temporal_worker_task_slots_available" in sdk  # the SDK's own (the dashboard reads it)


def test_the_gateway_sums_each_endpoint_over_the_workers_that_report_it(stack: Stack) -> None:
    """Each worker writes its endpoints to Redis every 2 s; the gateway's /metrics adds them
    up per task queue and endpoint (what `tiller status` prints)."""
    gateway = f"http://127.0.0.1:{stack.gateway_port}/metrics"
    at = {"task_queue": "test.demo", "endpoint": f"http://127.0.0.1:{stack.demo_port}/v1"}
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    body = {"model": "demo", "messages": [{"role": "user", "content": "count me"}]}
    before = value(scrape(gateway), "tiller_queue_endpoint_attempts", **at)
    assert httpx.post(f"{stack.base_url}/chat/completions", json=body, headers=headers).is_success
    assert wait_for(
        lambda: value(scrape(gateway), "tiller_queue_endpoint_attempts", **at) > before,
        timeout=15,
        interval=0.5,
    )
    series = scrape(gateway)
    workers = value(series, "tiller_queue_endpoint_workers", state="serving", **at)
    assert workers >= 1 and value(series, "tiller_queue_endpoint_workers", **at) == workers
    assert value(series, "tiller_reporting_workers") >= workers
    # The stack's worker serves the demo engine 64 at a time (models.yaml): so does each.
    port = stack.env["TILLER_UP_WORKER_METRICS_PORT"]
    own = scrape(f"http://127.0.0.1:{port}/metrics")
    assert value(own, "tiller_endpoint_capacity", **at) == 64
    assert value(series, "tiller_queue_endpoint_capacity", **at) == 64 * workers
    assert value(series, "tiller_queue_endpoint_attempt_seconds", **at) > 0
    assert value(series, "tiller_queue_endpoint_failures", **at) == 0


def test_rate_limit_rejections_are_counted_by_limit(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    created = httpx.post(
        f"http://127.0.0.1:{stack.gateway_port}/admin/keys",
        json={"name": "metered", "limits": {"rpm": 1}},
        headers=headers,
    ).json()
    key = {"authorization": f"Bearer {created['key']}"}
    body = {"model": "demo", "messages": [{"role": "user", "content": "again"}]}
    codes = [
        httpx.post(f"{stack.base_url}/chat/completions", json=body, headers=key).status_code
        for _ in range(2)
    ]
    assert codes == [200, 429]
    quota = scrape(f"http://127.0.0.1:{stack.env['TILLER_UP_QUOTA_METRICS_PORT']}/metrics")
    assert (
        value(
            quota, "tiller_quota_admissions_total", outcome="rate_limited", scope="key", limit="rpm"
        )
        >= 1
    )


def test_tiller_status(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    body = {"model": "demo", "messages": [{"role": "user", "content": "status"}]}
    httpx.post(f"{stack.base_url}/chat/completions", json=body, headers=headers)
    time.sleep(0.1)
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiller",
            "status",
            "--url",
            f"http://127.0.0.1:{stack.gateway_port}",
            "--interval",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    print("\n" + shown.stdout)
    assert shown.returncode == 0, shown.stderr
    assert "router up" in shown.stdout and "temporal up" in shown.stdout
    row = next(line for line in shown.stdout.splitlines() if line.startswith("demo "))
    assert "test.demo" in row
    # A model with two deployments: a row per deployment, its own figures on the first only.
    rows = [line.split() for line in shown.stdout.splitlines() if line.startswith("failover ")]
    assert len(rows) == 2 and [len(r) for r in rows] == [11, 6], rows
    # Each endpoint, summed over the workers that report it: the demo engine's 64 slots.
    endpoint = f"http://127.0.0.1:{stack.demo_port}/v1"
    row = next(line for line in shown.stdout.splitlines() if line.startswith("test.demo "))
    queue, url, state, flight, workers, *_ = row.split()
    assert (queue, url, state) == ("test.demo", endpoint, "serving"), row
    assert flight.endswith(f"/{64 * int(workers)}"), row
