"""`tiller status`: the stack at a glance, from one gateway's /readyz and /metrics.

    tiller status [--url URL] [--interval SECONDS]

Prints whether the gateway's dependencies answer (router, quota, Redis, Temporal), then per
model and task queue: workers polling, backlog and its oldest wait (Temporal's), requests in
flight on this gateway, and, from two samples `--interval` apart, requests per second, the
share that failed (5xx, and 4xx apart) and tokens per second. The rates and in-flight counts are
this gateway's; backlog and workers are Temporal's, the same from any gateway.

Then per task queue and engine endpoint, summed over the workers that reported it to Redis in
the last few seconds (gateway/endpoint_totals.py): its state (serving, half-open, ejected,
draining; "ejected 1/3" when one of three workers has it ejected), attempts in flight over
capacity, the worker count, and since those workers started: attempts, failures, ejections and
the attempts' mean duration.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Sample:
    at: float
    values: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        return self.values.get(name, [])

    def total(self, name: str, **match: str) -> float:
        return sum(
            v
            for labels, v in self.series(name)
            if all(labels.get(k) == x for k, x in match.items())
        )


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser("status", help="the stack at a glance: services, backlog, rates")
    status.add_argument("--url", default=None, help="the gateway (default $TILLER_URL)")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between samples")


def sample(http: httpx.Client) -> Sample:
    text = http.get("/metrics").raise_for_status().text
    taken = Sample(time.monotonic())
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            taken.values.setdefault(s.name, []).append((dict(s.labels), s.value))
    return taken


def run(args: argparse.Namespace, default_url: str) -> int:
    url = args.url or default_url
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            ready = http.get("/readyz").json()
            first = sample(http)
            time.sleep(max(0.0, args.interval))
            second = sample(http)
    except (httpx.HTTPError, ValueError) as error:
        print(f"tiller status: cannot read the gateway at {url}: {error}", file=sys.stderr)
        return 1
    print(report(url, ready, first, second))
    return 0 if ready.get("ready") else 1


def report(url: str, ready: dict[str, object], first: Sample, second: Sample) -> str:
    checks = ready.get("checks") or {}
    assert isinstance(checks, dict)
    parts = ["gateway up", *(f"{name} {'up' if ok else 'DOWN'}" for name, ok in checks.items())]
    lines = [f"Tiller at {url}", "services:  " + " · ".join(parts)]
    seconds = max(second.at - first.at, 1e-9)
    rows = sorted(
        (labels["model"], labels["deployment"], labels["task_queue"])
        for labels, _ in second.series("tiller_queue_info")
    )

    def gauge(name: str, queue: str) -> float:
        return second.total(name, task_queue=queue)

    def rate(name: str, **match: str) -> float:
        return (second.total(name, **match) - first.total(name, **match)) / seconds

    header = (
        f"{'model':<16} {'deployment':<18} {'task queue':<18} {'workers':>7} {'backlog':>7} "
        f"{'oldest':>7} {'in flight':>9} {'req/s':>6} {'5xx':>6} {'4xx':>6} {'tok/s':>7}"
    )
    lines += ["", header]
    shown: set[str] = set()
    for model, deployment, queue in rows:
        queue_part = (
            f"{model:<16} {deployment:<18} {queue:<18} "
            f"{int(gauge('tiller_queue_pollers', queue)):>7} "
            f"{int(gauge('tiller_queue_backlog', queue)):>7} "
            f"{gauge('tiller_queue_backlog_age_seconds', queue):>6.1f}s "
        )
        if model in shown:  # the model's own figures are on its first row only
            lines.append(queue_part.rstrip())
            continue
        shown.add(model)
        total = rate("tiller_requests_total", model=model)
        failed = sum(
            rate("tiller_requests_total", model=model, status=str(code))
            for code in _statuses(second, model)
            if code >= 500
        )
        refused = sum(
            rate("tiller_requests_total", model=model, status=str(code))
            for code in _statuses(second, model)
            if 400 <= code < 500
        )
        tokens = rate("tiller_tokens_total", model=model)
        lines.append(
            queue_part + f"{int(second.total('tiller_requests_in_flight', model=model)):>9} "
            f"{total:>6.1f} {_share(failed, total):>6} {_share(refused, total):>6} "
            f"{tokens:>7.0f}"
        )
    if not rows:
        lines.append("(no task queues yet: the gateway polls Temporal every few seconds)")
    lines += ["", *endpoint_lines(second)]
    return "\n".join(lines)


def endpoint_lines(sample: Sample) -> list[str]:
    """The endpoints table: per task queue and endpoint, its figures over all its workers."""
    states: dict[tuple[str, str], dict[str, int]] = {}
    for labels, n in sample.series("tiller_queue_endpoint_workers"):
        at = (labels["task_queue"], labels["endpoint"])
        states.setdefault(at, {})[labels["state"]] = int(n)
    if not states:
        return ["(no endpoint reports: no worker has written one to Redis in the last 10 s)"]
    width = max(len("endpoint"), *(len(e) for _, e in states))
    lines = [
        f"{'task queue':<18} {'endpoint':<{width}} {'state':<14} {'in flight':>9} "
        f"{'workers':>7} {'attempts':>8} {'failures':>8} {'ejections':>9} {'mean':>7}"
    ]
    for (queue, endpoint), by_state in sorted(states.items()):
        count = {
            name: sample.total(f"tiller_queue_endpoint_{name}", task_queue=queue, endpoint=endpoint)
            for name in ("in_flight", "capacity", "attempts", "failures", "ejections")
        }
        seconds = sample.total(
            "tiller_queue_endpoint_attempt_seconds", task_queue=queue, endpoint=endpoint
        )
        attempts = int(count["attempts"])
        flight = f"{int(count['in_flight'])}/{int(count['capacity'])}"
        lines.append(
            f"{queue:<18} {endpoint:<{width}} {state_shown(by_state):<14} {flight:>9} "
            f"{sum(by_state.values()):>7} {attempts:>8} {int(count['failures']):>8} "
            f"{int(count['ejections']):>9} "
            f"{_duration(seconds / attempts) if attempts else '-':>7}"
        )
    for labels, n in sample.series("tiller_queue_waiting_for_endpoint"):
        if n > 0:
            lines.append(f"{labels['task_queue']}: {int(n)} attempts wait for an endpoint")
    return lines


def state_shown(workers: dict[str, int]) -> str:
    """The endpoint's state over its workers: the worst any of them has, and how many have it
    when not all do ("ejected 1/3")."""
    total = sum(workers.values())
    for state in ("draining", "ejected", "half-open"):
        n = workers.get(state, 0)
        if n:
            return state if n == total else f"{state} {n}/{total}"
    return "serving"


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _statuses(sample: Sample, model: str) -> set[int]:
    return {
        int(labels["status"])
        for labels, _ in sample.series("tiller_requests_total")
        if labels.get("model") == model and labels.get("status", "").isdigit()
    }


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole > 0 else "-"
