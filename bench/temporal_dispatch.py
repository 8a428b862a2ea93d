"""Temporal dev-server dispatch latency: default settings vs Tiller's (tiller.cli.up).

    .venv/bin/python bench/temporal_dispatch.py [--requests N] [--rounds R] [--concurrency C]
                                                [--seconds S]

Every round runs both configurations (order alternating by round), each on a fresh dev server
(new sqlite file in a temp dir, --headless, free ports) with a fresh worker subprocess. Measured is
the pattern Tiller dispatches with: one standalone activity per request (client.start_activity).
  (a) start -> handle.result(), N sequential requests after warm-up
  (b) start -> the activity's UDP datagram arrives (its out-of-band signal), N sequential
  (c) (a) with C concurrent callers for S seconds: activities/s and latency
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.worker import Worker

WARMUP = 30
TEMPORAL = Path(sys.executable).with_name("temporal")
BASE_FLAGS = ["--headless", "--log-level", "error", "--ip", "127.0.0.1"]
FIGURES = ["(a) p50", "(a) p99", "(b) p50", "(b) p99", "(c) /s", "(c) p50", "(c) p99"]
RATIOS = ["(a) p50", "(b) p50", "(c) p50", "(c) /s"]
_notify: tuple[socket.socket, tuple[str, int]] | None = None  # set in the worker process
_children: list[subprocess.Popen[bytes]] = []


@activity.defn
async def ping(request_id: str) -> str:
    assert _notify is not None
    _notify[0].sendto(request_id.encode(), _notify[1])
    return request_id


async def serve_worker(address: str, task_queue: str, notify: str) -> None:
    global _notify
    host, port = notify.rsplit(":", 1)
    _notify = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM), (host, int(port)))
    client = await Client.connect(address)
    async with Worker(client, task_queue=task_queue, activities=[ping]):
        print("READY", flush=True)
        await asyncio.Event().wait()


class Arrivals(asyncio.DatagramProtocol):
    """Arrival time of each activity's datagram, for the request ids someone waits on."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[float]] = {}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = time.perf_counter()
        future = self.waiting.pop(data.decode(), None)
        if future is not None and not future.done():
            future.set_result(now)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], p: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[p - 1]


def stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def spawn(cmd: list[str], log: Path, stdout: int | None = None) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=stdout or out, stderr=out, start_new_session=True)
    _children.append(proc)
    return proc


def tail(log: Path) -> str:
    return log.read_text()[-2000:]


async def connect(address: str, server: subprocess.Popen[bytes], log: Path) -> Client:
    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"server exited {server.returncode}: {tail(log)}")
        try:
            client = await Client.connect(address)
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace="default")
            )
            return client
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


async def measure(client: Client, queue: str, arrivals: Arrivals, args: Any) -> list[float]:
    async def one(until_activity: bool) -> float:
        """Milliseconds from start_activity to the result, or to the activity's datagram."""
        wid = f"bench-{uuid.uuid4().hex}"
        arrived: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        arrivals.waiting[wid] = arrived
        t0 = time.perf_counter()
        handle = await client.start_activity(
            ping, wid, id=wid, task_queue=queue, start_to_close_timeout=timedelta(seconds=30)
        )
        if until_activity:
            return 1000 * (await asyncio.wait_for(arrived, 30) - t0)
        await handle.result()
        arrivals.waiting.pop(wid, None)
        return 1000 * (time.perf_counter() - t0)

    for _ in range(WARMUP):
        await one(False)
    a = [await one(False) for _ in range(args.requests)]
    b = [await one(True) for _ in range(args.requests)]
    await asyncio.sleep(1.0)  # let (b)'s activities finish before loading the server
    c: list[float] = []
    deadline = time.monotonic() + args.seconds

    async def caller() -> None:
        while time.monotonic() < deadline:
            c.append(await one(False))

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(args.concurrency)))
    rate = len(c) / (time.perf_counter() - t0)
    return [pct(a, 50), pct(a, 99), pct(b, 50), pct(b, 99), rate, pct(c, 50), pct(c, 99)]


async def run_once(flags: list[str], args: Any, tmp: Path) -> list[float]:
    loop = asyncio.get_running_loop()
    transport, arrivals = await loop.create_datagram_endpoint(Arrivals, local_addr=("127.0.0.1", 0))
    port = free_port()
    cmd = [str(TEMPORAL), "server", "start-dev", *BASE_FLAGS, "--port", str(port)]
    for flag in ("--http-port", "--metrics-port"):
        cmd += [flag, str(free_port())]
    cmd += ["--db-filename", str(tmp / "temporal.db"), *flags]
    server = worker = None
    try:
        server = spawn(cmd, tmp / "server.log")
        address = f"127.0.0.1:{port}"
        client = await connect(address, server, tmp / "server.log")
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        notify = "{}:{}".format(*transport.get_extra_info("sockname"))
        worker_cmd = [sys.executable, __file__, "--worker", address, queue, notify]
        worker = spawn(worker_cmd, tmp / "worker.log", stdout=subprocess.PIPE)
        assert worker.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), 60)
        if b"READY" not in line:
            raise RuntimeError(f"worker failed: {tail(tmp / 'worker.log')}")
        return await measure(client, queue, arrivals, args)
    finally:
        transport.close()
        for proc in (worker, server):
            if proc is not None:
                stop(proc)


def main() -> None:
    from tiller.cli.up import TEMPORAL_DYNAMIC_CONFIG, TEMPORAL_SQLITE_PRAGMAS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="sequential requests (a), (b)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of (c)")
    args = parser.parse_args()
    tiller = [f"--dynamic-config-value={k}={v}" for k, v in TEMPORAL_DYNAMIC_CONFIG.items()]
    tiller += [f"--sqlite-pragma={pragma}" for pragma in TEMPORAL_SQLITE_PRAGMAS]
    configs: dict[str, list[str]] = {"default": [], "tiller": tiller}

    now = datetime.now().astimezone()
    print(f"date {now:%Y-%m-%d %H:%M %z}, nproc {len(os.sched_getaffinity(0))}")
    print(f"requests {args.requests} after {WARMUP} warm-up, rounds {args.rounds}, (c) ", end="")
    print(f"{args.concurrency} callers for {args.seconds:g} s")
    print(f"server: {TEMPORAL} server start-dev", *BASE_FLAGS, "--port/--http-port/--metrics-port")
    print("  <free> --db-filename <new tmp dir>/temporal.db, plus per config:")
    for name, flags in configs.items():
        print(f"  {name}: {' '.join(flags) or '(nothing)'}", flush=True)

    results: dict[str, list[list[float]]] = {name: [] for name in configs}
    for rnd in range(1, args.rounds + 1):
        for name in configs if rnd % 2 else reversed(configs):
            with tempfile.TemporaryDirectory(prefix="temporal-dispatch-") as tmp:
                results[name].append(asyncio.run(run_once(configs[name], args, Path(tmp))))
            shown = zip(FIGURES, results[name][-1], strict=True)
            print(f"round {rnd} {name:<8}", *(f"{k} {v:.1f}" for k, v in shown), flush=True)

    print(f"\nmedian [min-max] of {args.rounds} round(s), ms or /s; (c) = (a) x{args.concurrency}")
    print(f"{'figure':<10}" + "".join(f"{name:>26}" for name in results))
    medians: dict[str, dict[str, float]] = {name: {} for name in results}
    for i, label in enumerate(FIGURES):
        row = f"{label:<10}"
        for name, runs in results.items():
            values = [figures[i] for figures in runs]
            medians[name][label] = statistics.median(values)
            row += f"{medians[name][label]:.1f} [{min(values):.1f}-{max(values):.1f}]".rjust(26)
        print(row)
    ratios = (f"{k} {medians['tiller'][k] / medians['default'][k]:.2f}x" for k in RATIOS)
    print("tiller/default:", ", ".join(ratios))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        # Import under its own name: the activity is registered from the imported module.
        from temporal_dispatch import serve_worker

        asyncio.run(serve_worker(*sys.argv[2:5]))
    else:
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as on Ctrl-C
        try:
            main()
        except KeyboardInterrupt:
            sys.exit("interrupted")
        finally:
            for child in _children:
                stop(child)
