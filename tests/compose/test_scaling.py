"""Scaled with `docker-compose up -d --scale worker=3 --scale gateway=2`: requests spread over
the replicas (their own metrics say so); a worker killed mid-answer (`docker kill`) costs the
stream nothing, and a gateway stopped under open streams (SIGTERM, as compose stops it) tells
their clients where to resume, and they resume on the other gateway."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.compose.stack import (
    GATEWAY_METRICS,
    HTTP,
    WORKER_METRICS,
    Container,
    Project,
    compose,
    docker,
    running,
    up,
)
from tests.e2e.test_metrics import value
from tests.support import chunks_of, resume_handed_over, text_of

SCALE = ("--scale", "worker=3", "--scale", "gateway=2")


@pytest.fixture
def scaled(project: Project) -> Iterator[Project]:
    up(*SCALE)
    assert (len(running("worker")), len(running("gateway"))) == (3, 2)
    yield project
    up(*SCALE)  # what a test killed or stopped comes back


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def ask(content: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": content}]


def served(container: Container) -> float:
    """Requests a gateway answered, or attempts a worker ran on the demo engine, so far."""
    if container.service == "gateway":
        return value(container.metrics(GATEWAY_METRICS), "tiller_requests_total")
    return value(container.metrics(WORKER_METRICS), "tiller_engine_attempts_total", outcome="ok")


def test_requests_spread_over_the_replicas(scaled: Project) -> None:
    replicas = running("gateway") + running("worker")
    before = {c.name: served(c) for c in replicas}
    with scaled.openai(HTTP) as client, ThreadPoolExecutor(12) as pool:

        def one(n: int) -> str:
            stream = client.chat.completions.create(
                model="demo", messages=ask(words(40)), stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        # Rounds of 12 at once, until every replica has had some (a round is almost always
        # enough: nginx alternates the gateways, Temporal hands tasks to every worker's polls).
        for _ in range(5):
            assert set(pool.map(one, range(12))) == {f"You said: {words(40)}"}
            spread = {c.name: served(c) - before[c.name] for c in replicas}
            if all(spread.values()):
                break
    print("\n$ docker-compose up -d --scale worker=3 --scale gateway=2; docker-compose ps")
    print(compose("ps"))
    print("requests answered by each gateway, attempts run by each worker:")
    for name, count in spread.items():
        print(f"  {name:24} {count:4.0f}")
    assert all(spread.values()), spread


def test_a_worker_killed_mid_answer_costs_the_stream_nothing(scaled: Project) -> None:
    content = words(1000)  # about 15 s at the demo engine's 15 ms a token
    before = {w.name: served(w) for w in running("worker")}
    with scaled.openai(HTTP) as client:
        stream = client.chat.completions.create(model="demo", messages=ask(content), stream=True)
        pieces: list[str] = []
        killed = None
        for chunk in stream:
            pieces.extend(c.delta.content or "" for c in chunk.choices)
            if killed is None and len(pieces) == 50:
                (killed,) = [w for w in running("worker") if _in_flight(w)]
                docker("kill", killed.name)  # SIGKILL: no grace, no goodbye
    assert killed is not None
    text = "".join(pieces)
    assert text == f"You said: {content}"  # whole, in order, nothing twice
    went_on = {w.name: served(w) - before.get(w.name, 0) for w in running("worker")}
    print(f"\nkilled {killed.name} after 50 chunks; the stream still ended whole:")
    print(f"  {len(pieces)} chunks, {len(text)} characters, exactly the text sent back")
    print(f"  attempts finished since, by worker: {went_on}")


def _in_flight(worker: Container) -> bool:
    series = worker.metrics(WORKER_METRICS)
    return value(series, "tiller_engine_in_flight", deployment="demo-local") > 0


LONG = words(3500)  # about 53 s: past the gateway's drain (5 s) and grace (30 s) in compose.yaml


def test_a_gateway_stopped_under_open_streams_hands_them_over(scaled: Project) -> None:
    headers = scaled.headers()
    streams: list[list[str]] = [[] for _ in range(4)]
    started = threading.Barrier(len(streams) + 1, timeout=60)

    def read(lines: list[str]) -> None:
        body = {"model": "demo", "messages": ask(LONG), "stream": True}
        with httpx.stream(
            "POST", f"{HTTP}/v1/chat/completions", json=body, headers=headers, timeout=120
        ) as response:
            first = True
            for line in response.iter_lines():
                lines.append(line)
                if first:
                    first = False
                    started.wait()

    # Four streams: nginx alternates them over the two gateways, so each gateway has some.
    readers = [threading.Thread(target=read, args=(lines,)) for lines in streams]
    for reader in readers:
        reader.start()
    started.wait()
    stopped = running("gateway")[-1]
    # What `docker-compose stop` does to each replica (it would stop both): SIGTERM, then
    # compose.yaml's stop_grace_period before a SIGKILL.
    docker("stop", "--time", "40", stopped.name, timeout=60)
    for reader in readers:
        reader.join(120)

    handed_over = 0
    for lines in streams:
        assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]"
        told = _error(lines)
        if told is None:
            assert text_of(lines) == f"You said: {LONG}"  # on the gateway that stayed
            continue
        assert told["code"] == "handed_over", told
        handed_over += 1
        rest = resume_handed_over(f"{HTTP}/v1", told["message"], lines, headers)
        assert text_of(lines) + text_of(rest) == f"You said: {LONG}"
        print(f"\n{stopped.name} stopped; its client was told: {told['message']}")
        print(f"  resumed through nginx after {len(text_of(lines))} characters, ended whole")
    assert handed_over >= 1


def _error(lines: list[str]) -> dict[str, Any] | None:
    """The error a stream ended with (its last chunk), if it did."""
    last = chunks_of([line for line in lines if line.startswith("data: {")][-1])
    assert last is not None
    error: dict[str, Any] | None = last.get("error")
    return error
