"""Many engines behind one model (issue 23): a deployment's `endpoints` are replicas of one
engine. Both replicas serve, each up to its capacity; one SIGKILLed under load costs a bounded
number of failed attempts and no client error, and takes traffic again once it is back; one
drained by editing models.yaml under load finishes what it runs and takes nothing new. A stack
of its own (separate processes), with two demo engines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.own_stack import OwnStack
from tests.support import free_port, spawn, wait_for

MODELS = """\
models:
  demo:
    queue_timeout_seconds: 30
    deployments:
      - name: demo-pair
        adapter: openai
        endpoints:
          - {{url: "http://127.0.0.1:{a}/v1", max_concurrency: 3{drain_a}}}
          - {{url: "http://127.0.0.1:{b}/v1", max_concurrency: 3}}
        task_queue: replicas.demo
        resume: continue
        health: {{probe_interval_seconds: 0.5, check_interval_seconds: 1}}
"""


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[OwnStack]:
    stack = OwnStack(tmp_path)
    stack.ports["demo_b"] = free_port()
    stack.ports["worker_metrics"] = free_port()
    stack.models_file.write_text(models(stack))
    stack.env["TILLER_DEMO_TOKEN_DELAY_MS"] = "5"
    stack.env["TILLER_WORKER_METRICS_PORT"] = str(stack.ports["worker_metrics"])
    stack.env["TILLER_WORKER_RELOAD_SECONDS"] = "0.5"
    stack.env["TILLER_ROUTER_RELOAD_SECONDS"] = "0.5"
    engine_b = stack.commands["demo-engine"]
    try:
        stack.start_all()
        start_b(stack, engine_b)
        yield stack
    finally:
        stack.stop()


def models(stack: OwnStack, drain_a: bool = False) -> str:
    drained = ", drain: true" if drain_a else ""
    return MODELS.format(a=stack.ports["demo"], b=stack.ports["demo_b"], drain_a=drained)


def start_b(stack: OwnStack, command: list[str]) -> None:
    env = stack.env | {"TILLER_DEMO_PORT": str(stack.ports["demo_b"])}
    stack.processes["demo-b"] = spawn(command, env, stack.logs / "demo-b.log")
    url = f"http://127.0.0.1:{stack.ports['demo_b']}/v1/models"
    assert wait_for(lambda: _answers(url), timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def endpoint_metrics(stack: OwnStack) -> dict[str, dict[str, float]]:
    """The worker's per-endpoint figures: metric name -> engine port -> value."""
    text = httpx.get(f"http://127.0.0.1:{stack.ports['worker_metrics']}/metrics").text
    figures: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("tiller_endpoint_") and "endpoint" in s.labels:
                port = s.labels["endpoint"].rsplit(":", 1)[1].split("/")[0]
                figures.setdefault(s.name, {})[port] = s.value
    return figures


def prompt_of(n: int) -> str:
    return " ".join(f"r{n}w{i}" for i in range(40))


async def streamed(client: openai.AsyncOpenAI, n: int) -> str:
    answer = await client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": prompt_of(n)}], stream=True
    )
    return "".join([c.choices[0].delta.content or "" async for c in answer if c.choices])


async def load(client: openai.AsyncOpenAI, clients: int, until: asyncio.Event) -> list[str]:
    """`clients` callers asking one streamed answer after another until `until`; every answer
    must be whole (an error raises)."""
    wrong: list[str] = []

    async def caller(c: int) -> None:
        n = c * 10_000
        while not until.is_set():
            text = await streamed(client, n)
            if text != f"You said: {prompt_of(n)}":
                wrong.append(text)
            n += 1

    await asyncio.gather(*(caller(c) for c in range(clients)))
    return wrong


async def test_both_replicas_serve_one_killed_costs_no_client_error_and_comes_back(
    pair: OwnStack,
) -> None:
    stack, a, b = pair, str(pair.ports["demo"]), str(pair.ports["demo_b"])
    client = openai.AsyncOpenAI(
        base_url=stack.base_url, api_key=stack.admin_key, max_retries=0, timeout=60
    )
    stop = asyncio.Event()
    running = asyncio.create_task(load(client, 8, stop))  # more callers than the 6 slots
    in_flight: dict[str, int] = {a: 0, b: 0}
    for _ in range(30):  # three seconds of samples at saturation
        await asyncio.sleep(0.1)
        now = (await asyncio.to_thread(endpoint_metrics, stack))["tiller_endpoint_in_flight"]
        for port in in_flight:
            in_flight[port] = max(in_flight[port], int(now.get(port, 0)))
    before = await asyncio.to_thread(endpoint_metrics, stack)
    print(f"\nat saturation: most in flight {in_flight} (capacity 3 each)")
    assert in_flight == {a: 3, b: 3}

    await asyncio.to_thread(stack.kill, "demo-engine")  # replica a, under load
    await asyncio.sleep(2)
    after_kill = await asyncio.to_thread(endpoint_metrics, stack)
    failed = after_kill["tiller_endpoint_failures_total"][a] - before[
        "tiller_endpoint_failures_total"
    ].get(a, 0)
    state = after_kill["tiller_endpoint_ejected"][a]
    print(f"replica a killed: {failed:g} failed attempts in all, ejected {state:g}")
    assert state == 1.0
    # What ran there when it died (3), and retries that picked it before it was ejected.
    assert failed <= 2 * 3

    stack.start("demo-engine")
    restarted = time.monotonic()
    attempts_a = after_kill["tiller_endpoint_attempts_total"][a]

    def serving_again() -> bool:
        return endpoint_metrics(stack)["tiller_endpoint_attempts_total"][a] > attempts_a

    assert await asyncio.to_thread(wait_for, serving_again, 15)
    back = time.monotonic() - restarted
    print(f"replica a restarted: took traffic again {back:.2f} s later")
    stop.set()
    wrong = await running  # an error in any answer raises here
    assert wrong == []
    await client.close()


async def test_a_replica_drained_in_models_yaml_finishes_its_work_and_takes_no_more(
    pair: OwnStack,
) -> None:
    stack, a = pair, str(pair.ports["demo"])
    client = openai.AsyncOpenAI(
        base_url=stack.base_url, api_key=stack.admin_key, max_retries=0, timeout=60
    )
    stop = asyncio.Event()
    running = asyncio.create_task(load(client, 6, stop))
    await asyncio.sleep(1.5)
    stack.models_file.write_text(models(stack, drain_a=True))

    def drained() -> bool:
        figures = endpoint_metrics(stack)
        return figures["tiller_endpoint_capacity"][a] == 0 and (
            figures["tiller_endpoint_in_flight"][a] == 0
        )

    assert await asyncio.to_thread(wait_for, drained, 15)
    settled = (await asyncio.to_thread(endpoint_metrics, stack))["tiller_endpoint_attempts_total"]
    await asyncio.sleep(2)
    later = (await asyncio.to_thread(endpoint_metrics, stack))["tiller_endpoint_attempts_total"]
    print(f"\ndrained replica a: attempts {settled[a]:g} then {later[a]:g} two seconds later")
    assert later[a] == settled[a]  # nothing new reached it
    stop.set()
    assert await running == []  # no error, every answer whole
    await client.close()
