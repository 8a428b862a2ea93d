"""deploy/grafana/tiller.json: valid JSON, and every Tiller metric its queries read is one the
services register (so a renamed metric cannot leave a dashboard panel silently empty)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry

import tiller.gateway.endpoint_totals
import tiller.gateway.metrics
import tiller.quota.metrics
import tiller.router.metrics
import tiller.worker.metrics  # noqa: F401  (registers their metrics)
from tiller.worker.metrics import EndpointCollector

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "tiller.json"


def registered() -> set[str]:
    # A worker registers its endpoints' collector when it starts serving (watch_endpoints).
    endpoints = CollectorRegistry()
    endpoints.register(EndpointCollector(list))
    names = set()
    for family in [*REGISTRY.collect(), *endpoints.collect()]:
        names |= {sample.name for sample in family.samples} | {family.name}
        if family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"}
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def test_every_metric_the_dashboard_reads_exists() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\btiller_[a-z_]+", expr)}
    assert used and not used - registered(), sorted(used - registered())
    # the list: requests, latency, TTFT, tokens, backlog, limits, engines, PII, SDK;
    # and each engine endpoint's in flight, capacity, ejection, latency, failures
    for needed in (
        "tiller_requests_total",
        "tiller_time_to_first_token_seconds_bucket",
        "tiller_tokens_total",
        "tiller_queue_backlog",
        "tiller_quota_admissions_total",
        "tiller_engine_errors_total",
        "tiller_failovers_total",
        "tiller_pii_detections_total",
        "tiller_endpoint_in_flight",
        "tiller_endpoint_capacity",
        "tiller_endpoint_ejected",
        "tiller_endpoint_attempt_seconds_bucket",
        "tiller_endpoint_failures_total",
        "tiller_endpoint_ejections_total",
    ):
        assert needed in used, needed
    assert any("temporal_" in expr for expr in exprs)
