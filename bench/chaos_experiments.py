"""The chaos suite's experiments (bench/chaos.py says what each does). Each takes the suite
and its row, runs once with keys of its own and fills the row; the main thread alone kills and
starts processes (bench/chaos_stack.py), clients run in threads."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import chaos_clients as c
from chaos_stack import Cluster, EngineWatch


@dataclass
class Row:
    experiment: str
    run: int
    outcomes: list[c.Outcome] = field(default_factory=list)
    keys: list[c.Key] = field(default_factory=list)
    peak: str = "-"
    notes: list[str] = field(default_factory=list)
    usage: str = "-"

    def count(self, test: Callable[[c.Outcome], bool]) -> int:
        return sum(1 for o in self.outcomes if test(o))


class Suite:
    """What every experiment uses: the stack, the engine's counts, fresh keys."""

    def __init__(self, cluster: Cluster, watch: EngineWatch) -> None:
        self.cluster = cluster
        self.watch = watch
        self.serial = 0
        self.rows: list[Row] = []

    def key(self, row: Row, limits: dict[str, int] | None = None) -> c.Key:
        self.serial += 1
        tag = f"k{self.serial}{row.experiment[:3]}{row.run}"
        created = self.cluster.admin("POST", "/admin/keys", {"name": tag, "limits": limits or {}})
        key = c.Key(tag, created["key"], created["id"], (limits or {}).get("concurrency", 0))
        row.keys.append(key)
        return key

    def words_lasting(self, seconds: float) -> int:
        """A prompt length whose answer streams for about `seconds` (the demo engine allows
        4096 tokens)."""
        return min(4000, int(seconds * 1000 / self.cluster.token_delay_ms))

    def urls(self) -> tuple[str, str]:
        return self.cluster.url("gateway0"), self.cluster.url("gateway1")

    def peak(self, row: Row, key: c.Key) -> None:
        row.peak = f"{self.watch.peak(key.tag)}/{key.limit or '-'}"

    def settle_engine(self, tags: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(self.watch.now(t) for t in tags) and time.monotonic() < deadline:
            time.sleep(0.5)


def check_reference(suite: Suite) -> None:
    """The demo engine's answer, fetched once: the suite's expected texts follow its rule."""
    row = Row("reference", 0)
    key = suite.key(row)
    said = c.prompt(key, 5)
    outcome = c.Outcome(key, c.expected(said))
    c.ask(suite.urls()[0], outcome, body(said))
    if not outcome.whole:
        raise SystemExit(f"the demo engine answered {outcome.text!r}, not {outcome.expected!r}")
    row.outcomes.append(outcome)
    suite.rows.append(row)


def body(said: str, model: str = "demo", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": said}], **extra}


def threads(targets: list[Callable[[], None]]) -> list[threading.Thread]:
    started = [threading.Thread(target=t, daemon=True) for t in targets]
    for thread in started:
        thread.start()
    return started


def join(started: list[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def gateway(suite: Suite, row: Row) -> None:
    """Ten streams on gateway0, SIGKILLed mid-answer; each client resumes on gateway1."""
    key = suite.key(row)
    said = c.prompt(key, 200)  # 200 tokens, 6 s at 30 ms
    first, other = suite.urls()
    row.outcomes = [c.Outcome(key, c.expected(said)) for _ in range(10)]
    started = threads(
        [partial(c.stream_or_resume, first, other, o, body(said), None) for o in row.outcomes]
    )
    wait_for(lambda: all(o.tokens >= 10 for o in row.outcomes), 30)
    suite.cluster.kill("gateway0")
    join(started, 90)
    suite.settle_engine([key.tag], 20)
    suite.peak(row, key)
    row.notes.append(f"engine wrote {suite.watch.finished(key.tag)}/10 answers to the end")


def concurrency(suite: Suite, row: Row) -> None:
    """A concurrency-5 key; 10 clients loop on gateway0, then (it is SIGKILLed) on gateway1."""
    key = suite.key(row, {"concurrency": 5})
    said = c.prompt(key, suite.words_lasting(1.6 * suite.cluster.lease_ttl_seconds))
    urls = list(suite.urls())
    stop = threading.Event()
    lock = threading.Lock()
    refused: Counter[int | str] = Counter()

    def client() -> None:
        while not stop.is_set():
            outcome = c.Outcome(key, c.expected(said))
            c.stream_or_resume(urls[0], urls[1], outcome, body(said), None)
            if not outcome.accepted:  # refused (429 while the key is full), or no gateway
                with lock:
                    refused[outcome.status or "no answer"] += 1
                time.sleep(0.3)
                continue
            with lock:
                row.outcomes.append(outcome)

    started = threads([client] * 10)
    wait_for(lambda: suite.watch.now(key.tag) >= 5, 20)
    time.sleep(2)
    before = suite.watch.peak(key.tag)
    urls[0] = urls[1]  # from now on, every client goes to gateway1
    suite.cluster.kill("gateway0")
    time.sleep(2 * suite.cluster.lease_ttl_seconds)
    stop.set()  # no new requests; those under way are read to the end (usage stays comparable)
    join(started, 60)
    suite.peak(row, key)
    row.notes.append(f"peak {before} before the kill")
    row.notes.append(f"{sum(refused.values())} refused ({dict(refused)})")


def redis(suite: Suite, row: Row) -> None:
    """10 background requests and 10 streams; Redis SIGKILLed for 10 s, then restarted."""
    key = suite.key(row)
    said = c.prompt(key, 300)  # 9 s
    urls = suite.urls()
    waiting = [c.Outcome(key, c.expected(said)) for _ in range(10)]
    live = [c.Outcome(key, c.expected(said)) for _ in range(10)]
    row.outcomes = waiting + live
    started = threads([partial(c.background, urls, o, body(said), 150) for o in waiting])
    started += threads(
        [
            partial(c.stream_or_resume, urls[i % 2], urls[1 - i % 2], o, body(said), None)
            for i, o in enumerate(live)
        ]
    )
    wait_for(lambda: all(o.tokens >= 5 for o in live) and all(o.request_id for o in waiting), 30)
    suite.cluster.kill("redis")
    time.sleep(10)
    suite.cluster.start("redis")
    join(started, 160)
    suite.peak(row, key)
    accepted = sum(o.accepted for o in row.outcomes)
    answered = sum(o.whole for o in row.outcomes)
    row.notes.append(f"{answered}/{accepted} accepted answered")
    row.notes.append(f"background {sum(o.whole for o in waiting)}/10 whole")


def engine(suite: Suite, row: Row) -> None:
    """20 streams; the engine SIGKILLed for 20 s mid-answer, then started again."""
    key = suite.key(row)
    said = c.prompt(key, 200)
    urls = suite.urls()
    row.outcomes = [c.Outcome(key, c.expected(said)) for _ in range(20)]
    started = threads(
        [
            partial(c.stream_or_resume, urls[i % 2], urls[1 - i % 2], o, body(said), None)
            for i, o in enumerate(row.outcomes)
        ]
    )
    wait_for(lambda: all(o.tokens >= 5 for o in row.outcomes), 30)
    suite.watch.refresh()  # its counts die with it
    suite.cluster.kill("engine")
    time.sleep(20)
    suite.cluster.start("engine")
    join(started, 120)
    suite.peak(row, key)


def router(suite: Suite, row: Row) -> None:
    """8 clients loop over both gateways; the only router SIGKILLed for 5 s, then restarted."""
    key = suite.key(row)
    said = c.prompt(key, 10)
    urls = suite.urls()
    stop = threading.Event()
    lock = threading.Lock()

    def client(turn: int) -> None:
        while not stop.is_set():
            outcome = c.Outcome(key, c.expected(said))
            c.stream_or_resume(urls[turn % 2], urls[1 - turn % 2], outcome, body(said), None)
            turn += 1
            with lock:
                row.outcomes.append(outcome)
            if not outcome.accepted:
                time.sleep(0.05)

    started = threads([partial(client, i) for i in range(8)])
    time.sleep(3)
    suite.cluster.kill("router")
    time.sleep(5)
    suite.cluster.start("router")
    time.sleep(5)
    stop.set()
    join(started, 30)
    suite.peak(row, key)
    row.notes.append(f"{row.count(lambda o: o.status == 503)} got 503")


def hangup(suite: Suite, row: Row) -> None:
    """A concurrency-1 key; clients that leave 5-80 ms after asking without reading a token,
    again and again."""
    key = suite.key(row, {"concurrency": 1})
    said = c.prompt(key, 200)
    urls = suite.urls()
    ends: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + 10

    def client(turn: int) -> None:
        while time.monotonic() < deadline:
            outcome = c.Outcome(key, c.expected(said))
            end = c.hang_up_early(urls[turn % 2], outcome, body(said), random.uniform(0.005, 0.08))
            turn += 1
            with lock:
                ends[end] += 1
                row.outcomes.append(outcome)
            time.sleep(0.05)

    join(threads([partial(client, i) for i in range(3)]), 30)
    suite.settle_engine([key.tag], 15)
    suite.peak(row, key)
    row.notes.append(", ".join(f"{n} {end}" for end, n in ends.most_common()))


def reservations(suite: Suite, row: Row) -> None:
    """Prompts the estimate undercounts, against token limits: admitted or refused?"""
    url = suite.urls()[0]
    small = suite.key(row, {"tpm": 30})
    words = " ".join(["a"] * 40)
    forty = c.Outcome(small, c.expected(words, 1))
    c.ask(url, forty, body(words, max_tokens=1))
    prompted = suite.key(row, {"tpm": 100})
    hi = c.Outcome(prompted, c.expected("hi", 3))
    c.ask(url, hi, body("hi", "prompted", max_tokens=3))
    daily = suite.key(row, {"tokens_per_day": 100})
    thirty = " ".join(["a"] * 30)
    budget: list[c.Outcome] = []
    while len(budget) < 10 and not any(o.status >= 400 for o in budget):
        budget.append(c.Outcome(daily, c.expected(thirty, 5)))
        c.ask(url, budget[-1], body(thirty, max_tokens=5))
    time.sleep(2)
    row.outcomes = [forty, hi, *budget]
    ledger = suite.cluster.admin("GET", "/admin/usage")
    total: Counter[str] = Counter()
    for entry in ledger["data"]:
        total[entry["key_id"]] += entry["prompt_tokens"] + entry["completion_tokens"]

    def verdict(outcomes: list[c.Outcome]) -> str:
        return f"{sum(o.accepted for o in outcomes)} admitted/{len(outcomes)}"

    row.notes.append(f"tpm30 40x'a': {verdict([forty])}, {total[small.id]} tok recorded")
    row.notes.append(f"tpm100 sys200+'hi': {verdict([hi])}, {total[prompted.id]} tok")
    row.notes.append(f"day100: {verdict(budget)}, {total[daily.id]} tok")
    for outcome in row.outcomes:  # a refusal here is the point, not an error
        outcome.errors = [e for e in outcome.errors if not e.startswith(("HTTP 429", "HTTP 400"))]


ALL: dict[str, Callable[[Suite, Row], None]] = {
    "gateway": gateway,
    "concurrency": concurrency,
    "redis": redis,
    "engine": engine,
    "router": router,
    "hangup": hangup,
    "reservations": reservations,
}
