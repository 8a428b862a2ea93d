"""Many engines behind one model (issue 23): balancing, weights, a killed replica, a drain.

    ./dev shell bench/balancing.py [--only saturation,weights,kill,drain] [--seconds 20]

Each experiment runs its own stack of separate processes (tests/own_stack.py: Redis, Temporal,
router, quota, one worker, one gateway) with several demo engines (the stand-in engine in
services/demo_engine, each its own process and port) listed as `endpoints` of one deployment,
and reads each endpoint's figures from the worker's /metrics (tiller_endpoint_*):

- saturation: two replicas of unequal speed (10 and 30 ms a token), 4 slots each, three times
  as many callers as slots. Throughput against the sum of what each replica can do (its
  capacity over its mean attempt time, measured in the same run), and each replica's in-flight
  count sampled every 100 ms against its capacity.
- weights: the same two replicas weighted 95 and 5, two callers (low load): each one's share.
- kill: three replicas, twelve callers streaming; one replica SIGKILLed, started again 4 s
  later. Failed attempts in all, client errors, and how long the replica took to get traffic
  again against the probe interval (2 s).
- drain: two replicas under load; models.yaml edited to drain one, then to remove it. Its
  in-flight count falling to 0, its attempts after that, client errors.

Every answer is checked against the demo engine's deterministic one ("You said: " and the
prompt). It measures the checkout it runs from (it imports `tests` from the working directory).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.getcwd())

from tests.own_stack import OwnStack
from tests.support import free_port, spawn, wait_for

MODELS = """\
models:
  demo:
    queue_timeout_seconds: 60
    deployments:
      - name: demo-pool
        adapter: openai
        endpoints:
{endpoints}
        task_queue: balancing.demo
        resume: continue
        health: {{probe_interval_seconds: 2, check_interval_seconds: 10}}
"""
WORDS = 30  # "You said: " and 30 words: 32 tokens


@dataclass
class Engine:
    name: str
    port: int
    delay_ms: float
    capacity: int = 4
    weight: float = 1.0
    drain: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def line(self) -> str:
        drained = ", drain: true" if self.drain else ""
        return (
            f'          - {{url: "{self.url}", max_concurrency: {self.capacity}, '
            f"weight: {self.weight:g}{drained}}}"
        )


class Pool:
    """A stack whose one model's deployment lists `engines` as its endpoints."""

    def __init__(self, data: Path, engines: list[Engine]) -> None:
        self.stack = OwnStack(data)
        self.engines = engines
        engines[0].port = self.stack.ports["demo"]  # the stack's own demo engine is the first
        self.stack.ports["worker_metrics"] = free_port()
        self.stack.env |= {
            "TILLER_DEMO_TOKEN_DELAY_MS": f"{engines[0].delay_ms:g}",
            "TILLER_WORKER_METRICS_PORT": str(self.stack.ports["worker_metrics"]),
            "TILLER_WORKER_RELOAD_SECONDS": "0.5",
            "TILLER_ROUTER_RELOAD_SECONDS": "0.5",
        }
        self.write()

    def write(self) -> None:
        lines = "\n".join(e.line() for e in self.engines)
        self.stack.models_file.write_text(MODELS.format(endpoints=lines))

    def start(self) -> None:
        self.stack.start_all()
        for engine in self.engines[1:]:
            self.start_engine(engine)

    def start_engine(self, engine: Engine) -> None:
        if engine is self.engines[0]:
            self.stack.start("demo-engine")
        else:
            env = self.stack.env | {
                "TILLER_DEMO_PORT": str(engine.port),
                "TILLER_DEMO_TOKEN_DELAY_MS": f"{engine.delay_ms:g}",
            }
            log = self.stack.logs / f"{engine.name}.log"
            self.stack.processes[engine.name] = spawn(self.stack.commands["demo-engine"], env, log)
        assert wait_for(lambda: _answers(f"{engine.url}/models"), timeout=30), engine.name

    def kill_engine(self, engine: Engine) -> None:
        self.stack.kill("demo-engine" if engine is self.engines[0] else engine.name)

    def figures(self) -> dict[str, dict[str, float]]:
        """metric -> engine name -> value, from the worker's /metrics."""
        port = self.stack.ports["worker_metrics"]
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        answer.raise_for_status()
        text = answer.text
        names = {e.url: e.name for e in self.engines}
        out: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                name = names.get(s.labels.get("endpoint", ""))
                if s.name.endswith("_bucket"):
                    continue
                if name is not None and s.name.startswith("tiller_endpoint_"):
                    out.setdefault(s.name, {})[name] = s.value
        return out

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.stack.base_url, api_key=self.stack.admin_key, max_retries=0, timeout=120
        )

    def stop(self) -> None:
        self.stack.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Load:
    """Callers asking one answer after another; every answer checked."""

    answers: int = 0
    enough: int = 0  # stop after this many answers (0: when told)
    wrong: int = 0
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def caller(self, client: openai.AsyncOpenAI, c: int, stream: bool) -> None:
        n = 0
        while not self.stop.is_set():
            prompt = " ".join(f"c{c}n{n}w{i}" for i in range(WORDS))
            try:
                if stream:
                    answer = await client.chat.completions.create(
                        model="demo", messages=[{"role": "user", "content": prompt}], stream=True
                    )
                    text = "".join(
                        [ch.choices[0].delta.content or "" async for ch in answer if ch.choices]
                    )
                else:
                    whole = await client.chat.completions.create(
                        model="demo", messages=[{"role": "user", "content": prompt}]
                    )
                    text = whole.choices[0].message.content or ""
                self.answers += 1
                self.wrong += text != f"You said: {prompt}"
                if self.enough and self.answers >= self.enough:
                    self.stop.set()
            except openai.APIError as error:
                self.errors.append(error.message)
            n += 1

    def run(self, client: openai.AsyncOpenAI, callers: int, stream: bool) -> asyncio.Task[None]:
        async def everyone() -> None:
            await asyncio.gather(*(self.caller(client, c, stream) for c in range(callers)))

        return asyncio.create_task(everyone())


def delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


async def sample_in_flight(
    pool: Pool, seconds: float, every: float = 0.1
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {e.name: [] for e in pool.engines}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = (await asyncio.to_thread(pool.figures)).get("tiller_endpoint_in_flight", {})
        for name in samples:
            samples[name].append(now.get(name, 0.0))
        await asyncio.sleep(every)
    return samples


async def saturation(data: Path, seconds: float) -> None:
    engines = [Engine("fast", 0, 10), Engine("slow", free_port(), 30)]
    pool = Pool(data, engines)
    try:
        await asyncio.to_thread(pool.start)
        client = pool.client()
        load = Load()
        callers = 3 * sum(e.capacity for e in engines)
        running = load.run(client, callers, stream=True)
        await asyncio.sleep(3)  # warm up: every slot busy
        before, answered, started = (
            await asyncio.to_thread(pool.figures),
            load.answers,
            time.monotonic(),
        )
        in_flight = await sample_in_flight(pool, seconds)
        after, took = await asyncio.to_thread(pool.figures), time.monotonic() - started
        throughput = (load.answers - answered) / took
        load.stop.set()
        await running
        print(f"saturation: {callers} streaming callers, {WORDS + 2} tokens each, {took:.1f} s")
        print("  replica  ms/token  capacity  attempts  mean s  can do req/s  in flight mean/max")
        ideal = 0.0
        for e in engines:
            count = delta(
                after.get("tiller_endpoint_attempt_seconds_count", {}),
                before.get("tiller_endpoint_attempt_seconds_count", {}),
                e.name,
            )
            total = delta(
                after.get("tiller_endpoint_attempt_seconds_sum", {}),
                before.get("tiller_endpoint_attempt_seconds_sum", {}),
                e.name,
            )
            mean = total / count if count else float("nan")
            can = e.capacity / mean
            ideal += can
            flights = in_flight[e.name]
            print(
                f"  {e.name:7}  {e.delay_ms:8g}  {e.capacity:8}  {count:8g}  {mean:6.3f}  "
                f"{can:12.2f}  {statistics.mean(flights):5.2f} / {max(flights):g}"
            )
        print(
            f"  throughput {throughput:.2f} req/s against the replicas' sum {ideal:.2f} req/s: "
            f"{throughput / ideal:.1%}; client errors {len(load.errors)}, wrong answers "
            f"{load.wrong}"
        )
        await client.close()
    finally:
        await asyncio.to_thread(pool.stop)


async def weights(data: Path, requests: int) -> None:
    engines = [Engine("heavy", 0, 1, weight=95), Engine("canary", free_port(), 1, weight=5)]
    pool = Pool(data, engines)
    try:
        await asyncio.to_thread(pool.start)
        client = pool.client()
        before = (await asyncio.to_thread(pool.figures)).get("tiller_endpoint_attempts_total", {})
        load = Load()
        load.enough = requests
        running = load.run(client, 2, stream=False)
        await load.stop.wait()  # set by the answer that makes `requests`
        await running
        after = (await asyncio.to_thread(pool.figures))["tiller_endpoint_attempts_total"]
        counts = {e.name: delta(after, before, e.name) for e in engines}
        total = sum(counts.values())
        print(f"weights: 2 callers (low load), {load.answers} answers, weights 95 / 5")
        for e in engines:
            print(
                f"  {e.name:7} weight {e.weight:3g}: {counts[e.name]:5g} attempts, "
                f"{counts[e.name] / total:.1%} (expected {e.weight / 100:.0%})"
            )
        print(f"  client errors {len(load.errors)}, wrong answers {load.wrong}")
        await client.close()
    finally:
        await asyncio.to_thread(pool.stop)


async def kill(data: Path, seconds: float) -> None:
    engines = [Engine(name, 0 if i == 0 else free_port(), 10) for i, name in enumerate("abc")]
    pool = Pool(data, engines)
    victim = engines[1]
    try:
        await asyncio.to_thread(pool.start)
        client = pool.client()
        load = Load()
        running = load.run(client, 12, stream=True)
        await asyncio.sleep(3)
        before = await asyncio.to_thread(pool.figures)
        await asyncio.to_thread(pool.kill_engine, victim)
        killed = time.monotonic()
        await asyncio.sleep(4)
        down = await asyncio.to_thread(pool.figures)
        await asyncio.to_thread(pool.start_engine, victim)
        restarted = time.monotonic()
        moving = down["tiller_endpoint_attempts_total"][victim.name]

        def back() -> bool:
            return pool.figures()["tiller_endpoint_attempts_total"][victim.name] > moving

        came_back = await asyncio.to_thread(wait_for, back, 30, 0.05)
        back_after = time.monotonic() - restarted
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - killed)))
        load.stop.set()
        await running
        after = await asyncio.to_thread(pool.figures)
        failures = delta(
            after["tiller_endpoint_failures_total"],
            before["tiller_endpoint_failures_total"],
            victim.name,
        )
        others = sum(
            delta(
                after["tiller_endpoint_failures_total"],
                before["tiller_endpoint_failures_total"],
                e.name,
            )
            for e in engines
            if e is not victim
        )
        ejections = delta(
            after["tiller_endpoint_ejections_total"],
            before["tiller_endpoint_ejections_total"],
            victim.name,
        )
        running_there = before["tiller_endpoint_in_flight"][victim.name]
        print("kill: 3 replicas (10 ms a token, 4 slots each), 12 streaming callers")
        print(
            f"  replica {victim.name} SIGKILLed with {running_there:g} attempts on it; failed "
            f"attempts in all: {failures:g} on it, {others:g} elsewhere; ejections {ejections:g}"
        )
        print(
            f"  restarted after 4 s: took traffic again {back_after:.2f} s later"
            f" (probe interval 2 s){'' if came_back else ' - NOT within 30 s'}"
        )
        errors = f"; errors: {sorted(set(load.errors))[:3]}" if load.errors else ""
        print(
            f"  {load.answers} answers, client errors {len(load.errors)}, "
            f"wrong answers {load.wrong}{errors}"
        )
        await client.close()
    finally:
        await asyncio.to_thread(pool.stop)


async def drain(data: Path) -> None:
    engines = [Engine("a", 0, 10), Engine("b", free_port(), 10)]
    pool = Pool(data, engines)
    a = engines[0]
    try:
        await asyncio.to_thread(pool.start)
        client = pool.client()
        load = Load()
        running = load.run(client, 8, stream=True)
        await asyncio.sleep(3)
        at_edit = await asyncio.to_thread(pool.figures)
        a.drain = True
        pool.write()
        edited = time.monotonic()
        trace: list[str] = []
        while True:
            now = await asyncio.to_thread(pool.figures)
            flying = now["tiller_endpoint_in_flight"].get("a", 0)
            trace.append(f"{time.monotonic() - edited:.1f}s:{flying:g}")
            if now["tiller_endpoint_capacity"].get("a") == 0 and flying == 0:
                break
            await asyncio.sleep(0.1)
        settled = now["tiller_endpoint_attempts_total"]["a"]
        await asyncio.sleep(3)
        later = await asyncio.to_thread(pool.figures)
        engines.remove(a)
        pool.write()  # then removed from the file
        await asyncio.sleep(3)
        load.stop.set()
        await running
        final = await asyncio.to_thread(pool.figures)
        listed = sorted(final["tiller_endpoint_in_flight"])
        then = later["tiller_endpoint_attempts_total"]["a"]
        print("drain: 2 replicas (10 ms a token, 4 slots each), 8 streaming callers")
        print(f"  a in flight when it was drained: {at_edit['tiller_endpoint_in_flight']['a']:g}")
        print(f"  a in flight after the edit (seconds:count): {' '.join(trace[::3] + trace[-1:])}")
        print(f"  a's attempts once drained {settled:g}, 3 s later {then:g}")
        print(f"  after removing a from the file, the worker lists: {listed}")
        print(
            f"  {load.answers} answers, client errors {len(load.errors)}, "
            f"wrong answers {load.wrong}"
        )
        await client.close()
    finally:
        await asyncio.to_thread(pool.stop)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="saturation,weights,kill,drain")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--requests", type=int, default=400, help="for weights")
    args = parser.parse_args()
    runs: dict[str, Callable[[Path], Awaitable[None]]] = {
        "saturation": lambda d: saturation(d, args.seconds),
        "weights": lambda d: weights(d, args.requests),
        "kill": lambda d: kill(d, args.seconds),
        "drain": drain,
    }
    for name in args.only.split(","):
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"tiller-balancing-{name}-") as data:
            await runs[name](Path(data))
        print(f"  ({name}: {time.monotonic() - started:.0f} s)\n", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
