"""The Batch API under load and under failure (issue 25): a batch through the official openai
SDK with its progress printed, live requests' latency with and without a batch running (side by
side in one run), and a second batch through SIGKILLs of a worker and a gateway and a restart of
Temporal, checked line by line.

    ./dev shell bench/batch.py [--lines 2000] [--live-clients 4] [--live-seconds 20]
                               [--token-delay-ms 2] [--no-chaos]        (about 4 minutes)

Starts its own stack (bench/chaos_stack.py): Redis, the Temporal dev server, the demo engine,
one router, two quotas, two workers and two gateways sharing one files directory. Live traffic
is non-streaming chat from `--live-clients` closed-loop clients on gateway0, with a key of its
own (priority class 3, the default); the batch's key is another (its lines run in class 5).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx
import openai
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_stack import Cluster

CHAT: Final = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "cancelled", "expired")


def batch_file(lines: int, words: int) -> bytes:
    text = " ".join(f"w{i}" for i in range(words))
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": CHAT,
                "body": {"model": "demo", "messages": [{"role": "user", "content": f"{i} {text}"}]},
            }
        )
        + b"\n"
        for i in range(lines)
    )


async def live_load(url: str, key: str, clients: int, seconds: float) -> list[float]:
    """Closed-loop non-streaming chat from `clients` callers; each answer's latency in ms."""
    latencies: list[float] = []
    body = {"model": "demo", "messages": [{"role": "user", "content": "live question"}]}
    headers = {"authorization": f"Bearer {key}"}
    deadline = time.monotonic() + seconds

    async def one(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            reply = await http.post("/v1/chat/completions", json=body)
            if reply.status_code == 200:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                print(f"  live request failed: {reply.status_code} {reply.text[:200]}")

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        await asyncio.gather(*(one(http) for _ in range(clients)))
    return latencies


def describe(name: str, latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    p = {
        "p50": statistics.median(ordered),
        "p95": ordered[int(len(ordered) * 0.95) - 1],
        "p99": ordered[int(len(ordered) * 0.99) - 1],
        "rps": len(ordered) / seconds,
    }
    print(
        f"  {name:<22} {len(ordered):6d} answers  p50 {p['p50']:7.1f} ms  p95 {p['p95']:7.1f}"
        f" ms  p99 {p['p99']:7.1f} ms  {p['rps']:6.1f} req/s"
    )
    return p


class Progress(threading.Thread):
    """Prints the batch's status and counts every `every` seconds while it runs."""

    def __init__(self, client: openai.OpenAI, batch_id: str, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.client, self.batch_id, self.every = client, batch_id, every
        self.started_at = time.monotonic()
        self.stopped = threading.Event()
        self.last: Any = None

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                batch = self.client.batches.retrieve(self.batch_id)
            except openai.APIError as error:
                print(f"  {self.elapsed():6.1f} s  (retrieve failed: {type(error).__name__})")
            else:
                self.last = batch
                c = batch.request_counts
                print(
                    f"  {self.elapsed():6.1f} s  {batch.status:<11} completed {c.completed:5d}"
                    f"  failed {c.failed:3d}  of {c.total}"
                    if c
                    else f"  {self.elapsed():6.1f} s  {batch.status}"
                )
                if batch.status in TERMINAL:
                    return
            self.stopped.wait(self.every)

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at


def answered(client: openai.OpenAI, batch: Any, lines: int) -> dict[str, int]:
    """The output file checked: one line per custom_id, each the echo of its input; its usage."""
    data = client.files.content(batch.output_file_id).read().splitlines()
    output = [orjson.loads(x) for x in data]
    ids = Counter(o["custom_id"] for o in output)
    missing = lines - len(ids)
    twice = sum(1 for n in ids.values() if n > 1)
    wrong = sum(
        1
        for o in output
        if not o["response"]["body"]["choices"][0]["message"]["content"].startswith(
            f"You said: {o['custom_id'].split('-')[1]} "
        )
    )
    usage = Counter[str]()
    for o in output:
        usage.update(
            {k: o["response"]["body"]["usage"][k] for k in ("prompt_tokens", "completion_tokens")}
        )
    print(
        f"  output file: {len(output)} lines, {len(ids)} custom_ids, {missing} missing, "
        f"{twice} answered twice, {wrong} wrong answers"
    )
    return {"requests": len(output), **usage}


def charged(url: str, key: str, expected: dict[str, int]) -> dict[str, int]:
    headers = {"authorization": f"Bearer {key}"}
    totals: dict[str, int] = {}
    for _ in range(100):
        totals = httpx.get(f"{url}/v1/usage", headers=headers, timeout=10).json()["totals"]
        if totals["requests"] >= expected["requests"]:
            break
        time.sleep(0.2)
    shown = {k: totals[k] for k in expected}
    verdict = "equal" if shown == expected else "DIFFERENT"
    print(f"  usage charged to the key {shown}; sum of the output lines {expected}: {verdict}")
    return shown


def run_batch(client: openai.OpenAI, data: bytes, every: float = 2.0) -> tuple[Any, Progress]:
    upload = client.files.create(file=("batch.jsonl", data), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint=CHAT, completion_window="24h")
    print(f"  created {batch.id} ({batch.status}) from {upload.id}, {upload.bytes} bytes")
    progress = Progress(client, batch.id, every)
    progress.start()
    return batch, progress


def finish(client: openai.OpenAI, batch: Any, progress: Progress, timeout: float) -> Any:
    progress.join(timeout)
    progress.stopped.set()
    done = client.batches.retrieve(batch.id)
    took = (done.completed_at or time.time()) - (done.in_progress_at or done.created_at)
    c = done.request_counts
    assert c is not None
    print(
        f"  {done.status}: {c.completed} completed, {c.failed} failed of {c.total}, "
        f"{took:.0f} s in progress ({c.completed / max(took, 1):.1f} lines/s)"
    )
    return done


def side_by_side(args: argparse.Namespace, cluster: Cluster, live_key: str, batch_key: str) -> bool:
    gateway0, gateway1 = cluster.url("gateway0"), cluster.url("gateway1")
    print(f"\n1. live requests alone ({args.live_clients} clients, {args.live_seconds:.0f} s)")
    asyncio.run(live_load(gateway0, live_key, args.live_clients, 3))  # warm-up
    alone = asyncio.run(live_load(gateway0, live_key, args.live_clients, args.live_seconds))
    print(f"\n2. a {args.lines}-line batch through the openai SDK, live requests alongside")
    client = openai.OpenAI(base_url=f"{gateway1}/v1", api_key=batch_key, max_retries=2)
    batch, progress = run_batch(client, batch_file(args.lines, args.words))
    time.sleep(2)  # validated and running
    during = asyncio.run(live_load(gateway0, live_key, args.live_clients, args.live_seconds))
    running = progress.last.status if progress.last else "?"
    done = finish(client, batch, progress, 900)
    usage = answered(client, done, args.lines)
    shown = charged(gateway1, batch_key, usage)
    print(f"\n3. live latency, side by side (the batch was {running} throughout the second run)")
    a = describe("live alone", alone, args.live_seconds)
    b = describe("live with the batch", during, args.live_seconds)
    print(
        f"  ratio with/alone: p50 {b['p50'] / a['p50']:.2f}  p95 {b['p95'] / a['p95']:.2f}  "
        f"p99 {b['p99'] / a['p99']:.2f}  req/s {b['rps'] / a['rps']:.2f}"
    )
    return done.status == "completed" and usage["requests"] == args.lines and shown == usage


def malformed(cluster: Cluster, key: str) -> bool:
    print("\n5. a malformed input file")
    good = batch_file(3, 2).splitlines()
    lines = [
        good[0],
        b'{"custom_id": "broken", "method": "POST"',
        good[1].replace(b'"line-1"', b'"line-0"'),
        good[2].replace(b"/v1/chat/completions", b"/v1/embeddings"),
        good[2].replace(b'"line-2"', b'"line-3"').replace(b'"demo"', b'"no-such-model"'),
        b'{"custom_id": "no-body", "method": "POST", "url": "/v1/chat/completions"}',
    ]
    client = openai.OpenAI(base_url=f"{cluster.url('gateway1')}/v1", api_key=key)
    batch, progress = run_batch(client, b"\n".join(lines) + b"\n")
    progress.join(60)
    done = client.batches.retrieve(batch.id)
    listed = [(e.line, e.code, e.message) for e in (done.errors.data or [])] if done.errors else []
    print(f"  status {done.status}, output_file_id {done.output_file_id}, errors:")
    for line, code, message in listed:
        print(f"    line {line}: {code}: {message}")
    print(f"  error file {done.error_file_id}:")
    content = client.files.content(done.error_file_id or "").read().decode()
    for row in content.splitlines():
        print(f"    {row}")
    return done.status == "failed" and [x[0] for x in listed] == [2, 3, 4, 5, 6]


def completed_at_least(progress: Progress, lines: int) -> bool:
    counts = progress.last.request_counts if progress.last else None
    return counts is not None and counts.completed >= lines


def cancel(args: argparse.Namespace, cluster: Cluster, key: str) -> bool:
    print(f"\n6. cancel a {args.lines}-line batch mid-way")
    client = openai.OpenAI(base_url=f"{cluster.url('gateway1')}/v1", api_key=key)
    batch, progress = run_batch(client, batch_file(args.lines, args.words), every=0.5)
    while not completed_at_least(progress, args.lines // 10):
        time.sleep(0.05)
    cancelled = client.batches.cancel(batch.id)
    print(f"  {progress.elapsed():6.1f} s  >>> cancel: {cancelled.status}")
    done = finish(client, batch, progress, 120)
    output = [
        orjson.loads(x) for x in client.files.content(done.output_file_id).read().splitlines()
    ]
    ids = Counter(o["custom_id"] for o in output)
    print(
        f"  output file: {len(output)} lines, {len(ids)} custom_ids, "
        f"{sum(1 for n in ids.values() if n > 1)} twice; cancelling_at {done.cancelling_at}, "
        f"cancelled_at {done.cancelled_at}"
    )
    c = done.request_counts
    return done.status == "cancelled" and c is not None and len(ids) == len(output) == c.completed


def chaos(args: argparse.Namespace, cluster: Cluster, batch_key: str) -> bool:
    print(f"\n4. a {args.lines}-line batch through SIGKILLs and a Temporal restart")
    gateway1 = cluster.url("gateway1")
    client = openai.OpenAI(base_url=f"{gateway1}/v1", api_key=batch_key, max_retries=5)
    batch, progress = run_batch(client, batch_file(args.lines, args.words))
    steps: list[tuple[float, str, Callable[[], None]]] = [
        (0.15, "SIGKILL worker0", lambda: cluster.kill("worker0")),
        (0.30, "SIGKILL gateway0", lambda: cluster.kill("gateway0")),
        (0.50, "SIGKILL temporal, start it again", lambda: cluster.kill("temporal")),
    ]
    for share, what, act in steps:
        while True:
            last = progress.last
            c = last.request_counts if last else None
            if c and c.completed + c.failed >= share * args.lines:
                break
            if last and last.status in TERMINAL:
                print(f"  the batch ended before: {what}")
                break
            time.sleep(0.1)
        print(f"  {progress.elapsed():6.1f} s  >>> {what}")
        act()
        if what.startswith("SIGKILL temporal"):
            cluster.start("temporal")
        else:
            time.sleep(2)
            cluster.start(what.split()[-1])
    done = finish(client, batch, progress, 900)
    usage = answered(client, done, args.lines)
    shown = charged(gateway1, batch_key, usage)
    return done.status == "completed" and usage["requests"] == args.lines and shown == usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--words", type=int, default=20, help="words a line's answer echoes")
    parser.add_argument("--live-clients", type=int, default=4)
    parser.add_argument("--live-seconds", type=float, default=20)
    parser.add_argument("--token-delay-ms", type=float, default=2)
    parser.add_argument("--no-chaos", action="store_true")
    parser.add_argument("--only-files", action="store_true", help="only 5 and 6")
    args = parser.parse_args()
    print(f"date {time.strftime('%Y-%m-%d %H:%M %z')}; {args}")
    with tempfile.TemporaryDirectory(prefix="tiller-batch-") as tmp:
        cluster = Cluster(Path(tmp), args.token_delay_ms, lease_ttl_seconds=15)
        cluster.env["TILLER_GATEWAY_FILES_DIR"] = str(Path(tmp) / "files")
        try:
            cluster.up()
            live_key = cluster.admin("POST", "/admin/keys", {"name": "live"})["key"]
            batch_key = cluster.admin("POST", "/admin/keys", {"name": "batch"})["key"]
            chaos_key = cluster.admin("POST", "/admin/keys", {"name": "batch-chaos"})["key"]
            time.sleep(1.5)  # past Redis's once-a-second fsync: the keys survive a SIGKILL
            ok = args.only_files or side_by_side(args, cluster, live_key, batch_key)
            if not args.no_chaos and not args.only_files:
                ok = chaos(args, cluster, chaos_key) and ok
            ok = malformed(cluster, batch_key) and ok
            ok = cancel(args, cluster, chaos_key) and ok
        finally:
            cluster.stop()
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
