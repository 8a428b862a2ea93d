"""Many engines behind one model (issue 23): balancing, weights, a killed replica, a drain.

    ./dev shell bench/balancing.py [--only NAME]... [--seconds 20] [--requests 1000]
                                                                    (about 3 minutes in all)

NAME is saturation, weights, kill or drain (repeat --only, or give several comma-separated).
Each experiment runs its own stack of separate processes (tests/own_stack.py: Redis, Temporal,
router, quota, one worker, one gateway) with several demo engines (the stand-in engine in
services/demo_engine, each its own process and port, its speed set by
TILLER_DEMO_TOKEN_DELAY_MS) listed as `endpoints` of one deployment, and reads each endpoint's
figures from the worker's /metrics (tiller_endpoint_*). Every process it starts is SIGKILLed
by the kernel if the run dies (tests/support.py spawn).

- saturation: two replicas of unequal speed (10 and 30 ms a token), 4 slots each, three times
  as many callers as slots (half streaming, half whole answers, 32 tokens each) for --seconds.
  The throughput the callers got against the sum of what each replica can do: its capacity
  over its mean attempt time (the worker's tiller_endpoint_attempt_seconds, same run), and its
  capacity over its own time per answer asked directly (4 callers on each engine, before the
  run). Each replica's in-flight count, sampled every 100 ms, against its capacity.
- weights: the same two replicas weighted 95 and 5, one caller then two (low load), --requests
  answers each: each replica's share of the attempts (tiller_endpoint_attempts_total).
- kill: three replicas, twelve streaming callers; one replica SIGKILLed, started again on its
  port 4 s later. The deployment has `resume: continue`, which the demo engine supports (vLLM's
  continue_final_message): a stream cut by the kill is continued on another replica from what
  the client already has. Failed attempts per replica, ejections and Temporal retries
  (tiller_engine_retries_total); client errors; how long after its restart the replica took
  attempts again, against the probe interval (health.probe_interval_seconds: 2 s).
- drain: two replicas, eight streaming callers; models.yaml edited to drain one, then to remove
  it. Its in-flight count falling to 0, its attempts counter after that, client errors per
  phase.

Every answer is checked against the demo engine's deterministic one ("You said: " and the
prompt). It measures the checkout it runs from (it imports `tests` from the working directory).
It prints figures and exits 0 whatever it finds: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

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
        health: {{probe_interval_seconds: {probe:g}, check_interval_seconds: 10}}
"""
DEPLOYMENT = "demo-pool"
PROBE_SECONDS = 2.0
WORDS = 30  # "You said: " and 30 words: 32 tokens

Figures = dict[str, dict[str, float]]


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
        # Every engine's name by its URL, kept when one is removed from the file.
        self.names = {e.url: e.name for e in engines}
        self.stack.ports["worker_metrics"] = free_port()
        self.stack.env |= {
            "TILLER_DEMO_TOKEN_DELAY_MS": f"{engines[0].delay_ms:g}",
            "TILLER_WORKER_METRICS_PORT": str(self.stack.ports["worker_metrics"]),
            "TILLER_WORKER_RELOAD_SECONDS": "0.5",
            "TILLER_ROUTER_RELOAD_SECONDS": "0.5",
        }
        self.write()

    def write(self) -> None:
        """models.yaml with the engines as they are now (written whole, then renamed over the
        old file, so the router never reads half of it)."""
        lines = "\n".join(e.line() for e in self.engines)
        staged = self.stack.models_file.with_suffix(".new")
        staged.write_text(MODELS.format(endpoints=lines, probe=PROBE_SECONDS))
        staged.replace(self.stack.models_file)

    def start(self) -> None:
        self.stack.start_all()
        for engine in self.engines[1:]:
            self.start_engine(engine)
        # The gateway is ready before the worker may be: wait until it lists every endpoint.
        assert wait_for(self._listed, timeout=60), "the worker did not list the endpoints"

    def _listed(self) -> bool:
        try:
            listed = self.figures().get("tiller_endpoint_capacity", {})
        except httpx.HTTPError:
            return False
        return all(e.name in listed for e in self.engines)

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

    def figures(self) -> Figures:
        """metric -> engine name -> value, from the worker's /metrics; the deployment's own
        metrics (tiller_engine_*) under the name "deployment"."""
        port = self.stack.ports["worker_metrics"]
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        answer.raise_for_status()
        out: Figures = {}
        for family in text_string_to_metric_families(answer.text):
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    continue
                if s.name.startswith("tiller_endpoint_"):
                    name = self.names.get(s.labels.get("endpoint", ""))
                    if name is not None:
                        out.setdefault(s.name, {})[name] = s.value
                elif s.name.startswith("tiller_engine_") and s.labels.get("deployment") == (
                    DEPLOYMENT
                ):
                    kind = s.labels.get("outcome") or s.labels.get("reason") or "deployment"
                    out.setdefault(s.name, {})[kind] = s.value
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


def prompt_of(c: int, n: int, words: int) -> str:
    return " ".join(f"c{c}n{n}w{i}" for i in range(words))


@dataclass
class Load:
    """Callers asking one answer after another; every answer checked."""

    words: int = WORDS
    answers: int = 0
    enough: int = 0  # stop after this many answers (0: when told)
    wrong: int = 0
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def caller(self, client: openai.AsyncOpenAI, c: int, stream: bool) -> None:
        n = 0
        while not self.stop.is_set():
            prompt = prompt_of(c, n, self.words)
            messages: list[openai.types.chat.ChatCompletionMessageParam] = [
                {"role": "user", "content": prompt}
            ]
            try:
                if stream:
                    answer = await client.chat.completions.create(
                        model="demo", messages=messages, stream=True
                    )
                    text = "".join(
                        [ch.choices[0].delta.content or "" async for ch in answer if ch.choices]
                    )
                else:
                    whole = await client.chat.completions.create(model="demo", messages=messages)
                    text = whole.choices[0].message.content or ""
                self.answers += 1
                self.wrong += text != f"You said: {prompt}"
                if self.enough and self.answers >= self.enough:
                    self.stop.set()
            except openai.APIError as error:
                self.errors.append(error.message)
            except Exception as error:  # a cut connection the client library let through
                self.errors.append(f"{type(error).__name__}: {error}")
            n += 1

    def run(
        self, client: openai.AsyncOpenAI, callers: int, stream: Callable[[int], bool]
    ) -> asyncio.Task[None]:
        async def everyone() -> None:
            await asyncio.gather(*(self.caller(client, c, stream(c)) for c in range(callers)))

        return asyncio.create_task(everyone())

    def mark(self) -> tuple[int, int, int]:
        return self.answers, len(self.errors), self.wrong

    def total(self) -> str:
        return f"{self.answers} answers, {len(self.errors)} client errors, {self.wrong} wrong"

    def commonest(self) -> str:
        if not self.errors:
            return ""
        return "; errors: " + "; ".join(f"{n}x {e}" for e, n in Counter(self.errors).most_common(3))


def delta(after: Figures, before: Figures, metric: str, name: str) -> float:
    return after.get(metric, {}).get(name, 0.0) - before.get(metric, {}).get(name, 0.0)


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


async def direct(engines: list[Engine], seconds: float) -> dict[str, float]:
    """What each engine can do, Tiller aside: `capacity` callers of its own ask it directly
    (half streaming, as the run's callers), all engines at once; its capacity over the mean
    time of an answer (answers per second at that concurrency, with no gap between them)."""
    times: dict[str, list[float]] = {e.name: [] for e in engines}
    measuring = asyncio.Event()
    stop = asyncio.Event()

    async def caller(http: httpx.AsyncClient, engine: Engine, c: int) -> None:
        n = 0
        while not stop.is_set():
            body = {
                "model": "demo",
                "messages": [{"role": "user", "content": prompt_of(c, n, WORDS)}],
                "stream": c % 2 == 0,
            }
            began = time.monotonic()
            async with http.stream("POST", f"{engine.url}/chat/completions", json=body) as r:
                async for _ in r.aiter_bytes():
                    pass
            if measuring.is_set() and not stop.is_set():
                times[engine.name].append(time.monotonic() - began)
            n += 1

    async with httpx.AsyncClient(timeout=30) as http:
        callers = [
            asyncio.create_task(caller(http, e, c)) for e in engines for c in range(e.capacity)
        ]
        await asyncio.sleep(1)  # warm up
        measuring.set()
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*callers)
    return {e.name: e.capacity / statistics.mean(times[e.name]) for e in engines}


async def saturation(data: Path, seconds: float) -> None:
    engines = [Engine("fast", 0, 10), Engine("slow", free_port(), 30)]
    pool = Pool(data, engines)
    try:
        await asyncio.to_thread(pool.start)
        alone = await direct(engines, 5)
        client = pool.client()
        load = Load()
        slots = sum(e.capacity for e in engines)
        callers = 3 * slots
        running = load.run(client, callers, stream=lambda c: c % 2 == 0)
        await asyncio.sleep(3)  # warm up: every slot busy
        before, mark, started = await asyncio.to_thread(pool.figures), load.mark(), time.monotonic()
        in_flight = await sample_in_flight(pool, seconds)
        after, took = await asyncio.to_thread(pool.figures), time.monotonic() - started
        throughput = (load.answers - mark[0]) / took
        load.stop.set()
        await running
        print(
            f"saturation: {callers} callers ({callers // 2} streaming, {callers - callers // 2} "
            f"whole answers) on {slots} slots, {WORDS + 2} tokens an answer, measured {took:.1f} s"
        )
        head = (
            "  replica  ms/token  slots  attempts  mean attempt s  can do req/s  direct req/s"
            "  in flight mean  max  at capacity"
        )
        print(head)
        ideal = busy = 0.0
        for e in engines:
            count = delta(after, before, "tiller_endpoint_attempt_seconds_count", e.name)
            total = delta(after, before, "tiller_endpoint_attempt_seconds_sum", e.name)
            mean = total / count if count else math.nan
            can = e.capacity / mean
            ideal += can
            flights = in_flight[e.name]
            busy += statistics.mean(flights) / mean
            full = sum(f >= e.capacity for f in flights) / len(flights)
            print(
                f"  {e.name:7}  {e.delay_ms:8g}  {e.capacity:5}  {count:8g}  {mean:14.3f}  "
                f"{can:12.2f}  {alone[e.name]:12.2f}  {statistics.mean(flights):14.2f}  "
                f"{max(flights):3g}  {full:11.0%}"
            )
        both = sum(alone.values())
        print(f"  {'sum':7}  {'':8}  {slots:5}  {'':8}  {'':14}  {ideal:12.2f}  {both:12.2f}")
        print(
            f"  throughput through Tiller {throughput:.2f} req/s: {throughput / ideal:.1%} of the "
            f"replicas' sum by attempt time ({ideal:.2f}), {throughput / both:.1%} of their sum "
            f"asked directly ({both:.2f})"
        )
        print(
            f"  in flight sampled {len(in_flight[engines[0].name])} times, every 100 ms; the "
            f"mean in flight over the mean attempt time, summed (Little's law): {busy:.2f} "
            "req/s, so what is missing is slots idle between one attempt and the next"
        )
        print(f"  {load.total()} (warm-up and wind-down included){load.commonest()}")
        await client.close()
    finally:
        await asyncio.to_thread(pool.stop)


async def weights(data: Path, requests: int) -> None:
    engines = [
        Engine("heavy", 0, 10, weight=95),
        Engine("canary", free_port(), 30, weight=5),
    ]
    pool = Pool(data, engines)
    try:
        await asyncio.to_thread(pool.start)
        client = pool.client()
        print(
            f"weights: heavy (10 ms a token) weight 95, canary (30 ms a token) weight 5, 4 slots "
            f"each; {requests} whole answers a row, 3 tokens each"
        )
        print("  callers  heavy  canary  canary share  expected")
        errors: list[str] = []
        for callers in (1, 2):
            before = await asyncio.to_thread(pool.figures)
            load = Load(words=1, enough=requests)
            running = load.run(client, callers, stream=lambda c: False)
            await load.stop.wait()  # set by the answer that makes `requests`
            await running
            after = await asyncio.to_thread(pool.figures)
            counts = {
                e.name: delta(after, before, "tiller_endpoint_attempts_total", e.name)
                for e in engines
            }
            share = counts["canary"] / sum(counts.values())
            sd = math.sqrt(0.05 * 0.95 / requests)
            if callers == 1:
                expected = f"5.0 % (+-{2 * sd:.1%} at 2 sd)"
            else:
                # The other caller's attempt holds a slot on one of them, and the draw is
                # weight times free share: 5*3/4 / (95 + 5*3/4) to 5 / (95*3/4 + 5).
                expected = f"3.8 % to 6.6 % (by where the other attempt is), +-{2 * sd:.1%}"
            print(
                f"  {callers:7}  {counts['heavy']:5g}  {counts['canary']:6g}  "
                f"{share:12.1%}  {expected}"
            )
            errors += [f"{load.total()} with {callers} caller(s)"]
            errors += [load.commonest()] if load.errors else []
        for line in errors:
            print(f"  {line}")
        await client.close()
    finally:
        await asyncio.to_thread(pool.stop)


async def kill(data: Path, seconds: float) -> None:
    engines = [Engine(name, 0 if i == 0 else free_port(), 10) for i, name in enumerate("abc")]
    pool = Pool(data, engines)
    victim = engines[1]
    down_for = 4.0
    try:
        await asyncio.to_thread(pool.start)
        client = pool.client()
        load = Load()
        running = load.run(client, 12, stream=lambda c: True)
        await asyncio.sleep(3)
        before = await asyncio.to_thread(pool.figures)
        await asyncio.to_thread(pool.kill_engine, victim)
        killed = time.monotonic()

        def state() -> float:
            return pool.figures()["tiller_endpoint_ejected"][victim.name]

        await asyncio.to_thread(wait_for, lambda: state() == 1.0, down_for, 0.02)
        ejected_after = time.monotonic() - killed
        await asyncio.sleep(max(0.0, down_for - ejected_after))
        down = await asyncio.to_thread(pool.figures)
        await asyncio.to_thread(pool.start_engine, victim)
        restarted = time.monotonic()  # the engine answers GET /models again
        moving = down["tiller_endpoint_attempts_total"][victim.name]
        half_open = took_one = serving = math.nan
        while time.monotonic() - restarted < 30 and math.isnan(serving):
            now = await asyncio.to_thread(pool.figures)
            at = time.monotonic() - restarted
            mode = now["tiller_endpoint_ejected"][victim.name]
            if mode < 1.0 and math.isnan(half_open):
                half_open = at
            busy = now["tiller_endpoint_in_flight"][victim.name] > 0
            if (busy or now["tiller_endpoint_attempts_total"][victim.name] > moving) and math.isnan(
                took_one
            ):
                took_one = at
            if mode == 0.0 and not math.isnan(took_one):
                serving = at
            await asyncio.sleep(0.02)
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - killed)))
        load.stop.set()
        await running
        after = await asyncio.to_thread(pool.figures)
        print(
            "kill: 3 replicas a b c (10 ms a token, 4 slots each), 12 streaming callers, "
            "resume: continue"
        )
        print(
            f"  b SIGKILLed with {before['tiller_endpoint_in_flight'][victim.name]:g} of its 4 "
            f"slots busy (read just before); ejected {ejected_after:.2f} s later; started again "
            f"{down_for:g} s after the kill"
        )
        print("  replica  failed attempts  ejections  attempts")
        for e in engines:
            print(
                f"  {e.name:7}  "
                f"{delta(after, before, 'tiller_endpoint_failures_total', e.name):15g}  "
                f"{delta(after, before, 'tiller_endpoint_ejections_total', e.name):9g}  "
                f"{delta(after, before, 'tiller_endpoint_attempts_total', e.name):8g}"
            )
        failed = sum(
            delta(after, before, "tiller_endpoint_failures_total", e.name) for e in engines
        )
        retries = delta(after, before, "tiller_engine_retries_total", "deployment")
        errors = {
            k: after["tiller_engine_errors_total"][k]
            - before.get("tiller_engine_errors_total", {}).get(k, 0.0)
            for k in after.get("tiller_engine_errors_total", {})
        }
        print(
            f"  failed attempts in all {failed:g}; Temporal retries {retries:g} "
            f"(tiller_engine_retries_total); attempts Temporal saw fail: "
            f"{', '.join(f'{v:g} {k}' for k, v in errors.items() if v) or 'none'}"
        )
        print(
            "  (an attempt that finds its endpoint unreachable goes to another one within the "
            "same Temporal attempt; one cut mid-answer fails, and Temporal's retry continues it)"
        )
        print(
            f"  after its restart (from when it answered again): half-open after "
            f"{half_open:.2f} s, its first attempt after {took_one:.2f} s, serving after "
            f"{serving:.2f} s; probe interval {PROBE_SECONDS:g} s"
        )
        print(f"  {load.total()}{load.commonest()}")
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
        start = load.mark()
        running = load.run(client, 8, stream=lambda c: True)
        await asyncio.sleep(3)
        at_edit, drained_mark = await asyncio.to_thread(pool.figures), load.mark()
        a.drain = True
        pool.write()
        edited = time.monotonic()
        trace: list[tuple[float, Figures]] = []
        while True:
            now = await asyncio.to_thread(pool.figures)
            trace.append((time.monotonic() - edited, now))
            if (
                now["tiller_endpoint_capacity"]["a"] == 0
                and now["tiller_endpoint_in_flight"]["a"] == 0
            ):
                break
            await asyncio.sleep(0.05)
        empty, settled = time.monotonic() - edited, now
        await asyncio.sleep(3)
        later = await asyncio.to_thread(pool.figures)
        removed_mark = load.mark()
        engines.remove(a)
        pool.write()  # then removed from the file
        removed = time.monotonic()
        gone = await asyncio.to_thread(
            wait_for, lambda: "a" not in pool.figures()["tiller_endpoint_in_flight"], 10, 0.05
        )
        gone_after = time.monotonic() - removed
        await asyncio.sleep(3)
        final, final_mark = await asyncio.to_thread(pool.figures), load.mark()
        load.stop.set()
        await running
        print("drain: 2 replicas a b (10 ms a token, 4 slots each), 8 streaming callers")
        print("  s after the edit  a capacity  a in flight  a attempts  b in flight  b attempts")
        # A few samples while the edit is on its way, then every one from when a had no slot.
        closed = next(
            i for i, (_, f) in enumerate(trace) if f["tiller_endpoint_capacity"]["a"] == 0
        )
        shown = trace[: max(0, closed - 1) : max(1, closed // 5)] + trace[max(0, closed - 1) :]
        rows = [(0.0, at_edit), *shown, (empty + 3, later)]
        for i, (t, f) in enumerate(rows):
            label = "at the edit" if i == 0 else f"{t:.2f}"
            print(
                f"  {label:>16}  {f['tiller_endpoint_capacity']['a']:10g}  "
                f"{f['tiller_endpoint_in_flight']['a']:11g}  "
                f"{f['tiller_endpoint_attempts_total']['a']:10g}  "
                f"{f['tiller_endpoint_in_flight']['b']:11g}  "
                f"{f['tiller_endpoint_attempts_total']['b']:10g}"
            )
        seen_at, seen = trace[closed]
        since_seen = delta(settled, seen, "tiller_endpoint_attempts_total", "a")
        print(
            f"  the worker had a drained {seen_at:.2f} s after the edit (capacity 0) with "
            f"{seen['tiller_endpoint_in_flight']['a']:g} in flight; {since_seen:g} attempts ended "
            f"there after that: "
            + (
                "no new one started"
                if since_seen == seen["tiller_endpoint_in_flight"]["a"]
                else "SOME STARTED AFTER THE DRAIN"
            )
        )
        moved = delta(later, settled, "tiller_endpoint_attempts_total", "a")
        print(
            f"  a empty {empty:.2f} s after the edit; its attempts then "
            f"{settled['tiller_endpoint_attempts_total']['a']:g}, 3 s later "
            f"{later['tiller_endpoint_attempts_total']['a']:g} (+{moved:g}); "
            f"b +{delta(later, settled, 'tiller_endpoint_attempts_total', 'b'):g}"
        )
        print(
            f"  a removed from the file: gone from the worker's endpoints "
            f"{f'after {gone_after:.2f} s' if gone else 'NOT within 10 s'}; it lists "
            f"{sorted(final['tiller_endpoint_in_flight'])}; b's attempts in the 3 s after "
            f"+{delta(final, later, 'tiller_endpoint_attempts_total', 'b'):g}"
        )
        print("  phase                                   answers  client errors  wrong")
        print(f"  before the edit (3 s)                   {_span(start, drained_mark)}")
        print(f"  draining, until 3 s after a was empty   {_span(drained_mark, removed_mark)}")
        print(f"  a removed, until 3 s after it was gone  {_span(removed_mark, final_mark)}")
        print(f"  in all                                  {_span(start, final_mark)}")
        if load.errors:
            print(f"  {load.commonest()[2:]}")
        await client.close()
    finally:
        await asyncio.to_thread(pool.stop)


def _span(begin: tuple[int, int, int], end: tuple[int, int, int]) -> str:
    return f"{end[0] - begin[0]:7}  {end[1] - begin[1]:13}  {end[2] - begin[2]:5}"


EXPERIMENTS = ("saturation", "weights", "kill", "drain")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--only", action="append", help=f"{', '.join(EXPERIMENTS)} (repeat, or comma-separated)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="saturation and kill runs")
    parser.add_argument("--requests", type=int, default=1000, help="for weights, per row")
    args = parser.parse_args()
    chosen = [n for o in args.only or [",".join(EXPERIMENTS)] for n in o.split(",") if n]
    unknown = sorted(set(chosen) - set(EXPERIMENTS))
    if unknown:
        parser.error(f"no experiment {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    runs: dict[str, Callable[[Path], Awaitable[None]]] = {
        "saturation": lambda d: saturation(d, args.seconds),
        "weights": lambda d: weights(d, args.requests),
        "kill": lambda d: kill(d, args.seconds),
        "drain": drain,
    }
    began = time.monotonic()
    for name in chosen:
        started = time.monotonic()
        data = Path(tempfile.mkdtemp(prefix=f"tiller-balancing-{name}-"))
        try:
            await runs[name](data)
        except BaseException:
            print(f"{name} failed; its processes' logs are in {data / 'logs'}", flush=True)
            raise
        shutil.rmtree(data, ignore_errors=True)
        print(f"  ({name}: {time.monotonic() - started:.0f} s)\n", flush=True)
    print(f"balancing took {time.monotonic() - began:.0f} s")


def _exit(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)  # the stacks stop in their `finally`


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit)
    asyncio.run(main())
