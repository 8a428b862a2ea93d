"""What each thing Tiller asks of Temporal costs the server: CPU per standalone activity.

    .venv/bin/python bench/temporal_options.py [--rounds 3] [--seconds 6] [--concurrency 16]

One dev server with Tiller's settings (tiller.cli.up), and a worker and client in this process. Each
variant starts standalone activities from C concurrent callers for S seconds, round after round
in a rotating order, and reports the server's CPU per activity (from /proc) and activities/s:
  floor       what bench/floor.py asks: a start-to-close timeout, small arguments, no result
  +timeouts   Tiller's four timeouts and retry policy (contract/runs.py)
  +priority   ... and a priority key (the request's class)
  +payloads   ... and Tiller-sized payloads: a sealed request in, a sealed result out
Anything the activity does besides returning (Tiller's engine call, Redis) is left out: the
figures are the server's share alone, the one that bench/side_by_side.py cannot split.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from side_by_side import cpu_seconds, free_port
from temporalio import activity
from temporalio.client import Client
from temporalio.common import Priority, RetryPolicy
from temporalio.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tiller.cli.up import temporal_command  # noqa: E402

QUEUE = "bench.options"
REQUEST_BYTES = 1600  # a sealed InferenceInput of a short chat request, about
RESULT_BYTES = 420  # a sealed InferenceResult of a 16-token answer, about
TILLER_OPTIONS: dict[str, Any] = {
    "schedule_to_start_timeout": timedelta(seconds=60),
    "start_to_close_timeout": timedelta(seconds=660),
    "heartbeat_timeout": timedelta(seconds=30),
    "schedule_to_close_timeout": timedelta(seconds=2100),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=3,
    ),
}


@activity.defn
async def work(blob: bytes, result_bytes: int) -> bytes | None:
    return os.urandom(result_bytes) if result_bytes else None


def variants() -> dict[str, Callable[[], tuple[list[Any], dict[str, Any]]]]:
    small: list[Any] = [b"x" * 40, 0]
    floor: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=120)}
    return {
        "floor": lambda: (small, floor),
        "+timeouts": lambda: (small, TILLER_OPTIONS),
        "+priority": lambda: (small, TILLER_OPTIONS | {"priority": Priority(priority_key=3)}),
        "+payloads": lambda: (
            [os.urandom(REQUEST_BYTES), RESULT_BYTES],
            TILLER_OPTIONS | {"priority": Priority(priority_key=3)},
        ),
    }


async def measure(
    client: Client,
    server_pid: int,
    make: Callable[[], tuple[list[Any], dict[str, Any]]],
    concurrency: int,
    seconds: float,
) -> tuple[float, float]:
    """(server CPU ms per activity, activities/s)."""
    done = 0
    deadline = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            args, options = make()
            handle = await client.start_activity(
                work, args=args, id=f"o-{uuid.uuid4().hex}", task_queue=QUEUE, **options
            )
            await handle.result()
            done += 1

    before, start = cpu_seconds(server_pid), time.monotonic()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.monotonic() - start
    return (cpu_seconds(server_pid) - before) * 1000 / done, done / elapsed


async def bench(args: argparse.Namespace, port: int, server: subprocess.Popen[bytes]) -> None:
    for _ in range(100):
        try:
            client = await Client.connect(f"127.0.0.1:{port}")
            break
        except RuntimeError:
            await asyncio.sleep(0.3)
    else:
        raise RuntimeError("the dev server did not start")
    async with Worker(client, task_queue=QUEUE, activities=[work], max_concurrent_activities=256):
        table = variants()
        await measure(client, server.pid, table["floor"], args.concurrency, 3.0)  # warm-up
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in table}
        names = list(table)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                figures[name].append(
                    await measure(client, server.pid, table[name], args.concurrency, args.seconds)
                )
        print(
            f"{args.rounds} rounds, {args.concurrency} callers, {args.seconds:g} s each; "
            "median [min-max]"
        )
        print(f"{'variant':<11} {'server CPU ms/activity':>26} {'activities/s':>22}")
        for name, runs in figures.items():
            cpu, rate = [r[0] for r in runs], [r[1] for r in runs]
            print(
                f"{name:<11} {statistics.median(cpu):8.2f} [{min(cpu):5.2f}-{max(cpu):5.2f}]"
                f"        {statistics.median(rate):8.1f} [{min(rate):5.1f}-{max(rate):5.1f}]"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tiller-options-") as tmp:
        port = free_port()
        command = temporal_command(
            str(Path(sys.executable).with_name("temporal")), port, free_port(), Path(tmp) / "t.db"
        )
        server = subprocess.Popen(
            [*command, "--headless"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            asyncio.run(bench(args, port, server))
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(20)


if __name__ == "__main__":
    main()
