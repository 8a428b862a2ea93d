"""Which Temporal dispatch pattern a request should use, measured side by side on one server.

    .venv/bin/python bench/dispatch_design.py [--requests N] [--seconds S]

One Temporal dev server with Tiller's dynamic config (services/cli/up.py), run twice: without and
with `system.enableActivityEagerExecution`. On each, three patterns, each with a fresh worker
subprocess on its own task queue:
  workflow-sandboxed    a workflow whose run() executes one activity (Tiller's first design)
  workflow-unsandboxed  the same, without the workflow sandbox
  standalone            one standalone activity (client.start_activity), no workflow
Figures: start -> the activity ran (it sends a UDP datagram), N sequential requests: p50/p99;
CPU per request of the worker, the server and this client (from /proc); and 16 concurrent
callers for S seconds: requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import temporal_dispatch as td
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

PATTERNS = ("workflow-sandboxed", "workflow-unsandboxed", "standalone")
_notify: tuple[socket.socket, tuple[str, int]] | None = None  # set in the worker process


@activity.defn
async def ping(request_id: str) -> str:
    assert _notify is not None
    _notify[0].sendto(request_id.encode(), _notify[1])
    return request_id


@workflow.defn
class OneActivity:
    @workflow.run
    async def run(self, request_id: str) -> str:
        timeout = timedelta(seconds=30)
        return await workflow.execute_activity(ping, request_id, start_to_close_timeout=timeout)


async def serve_worker(address: str, task_queue: str, notify: str, pattern: str) -> None:
    global _notify
    host, port = notify.rsplit(":", 1)
    _notify = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM), (host, int(port)))
    client = await Client.connect(address)
    runner: WorkflowRunner = UnsandboxedWorkflowRunner()
    if pattern == "workflow-sandboxed":
        restrictions = SandboxRestrictions.default.with_passthrough_modules(__name__)
        runner = SandboxedWorkflowRunner(restrictions=restrictions)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[] if pattern == "standalone" else [OneActivity],
        activities=[ping],
        workflow_runner=runner,
        max_concurrent_activities=256,
    ):
        print("READY", flush=True)
        await asyncio.Event().wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def concurrent_rate(
    one: Callable[[], Awaitable[float]], callers: int, seconds: float
) -> float:
    """Requests per second with `callers` back-to-back callers for `seconds`."""
    done: list[float] = []
    deadline = time.monotonic() + seconds

    async def caller() -> None:
        while time.monotonic() < deadline:
            done.append(await one())

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return len(done) / (time.perf_counter() - t0)


async def measure_server(flags: list[str], args: argparse.Namespace, tmp: Path) -> None:
    loop = asyncio.get_running_loop()
    transport, arrivals = await loop.create_datagram_endpoint(
        td.Arrivals, local_addr=("127.0.0.1", 0)
    )
    port = td.free_port()
    cmd = [str(td.TEMPORAL), "server", "start-dev", *td.BASE_FLAGS, "--port", str(port)]
    for flag in ("--http-port", "--metrics-port"):
        cmd += [flag, str(td.free_port())]
    cmd += ["--db-filename", str(tmp / "temporal.db"), *flags]
    server = td.spawn(cmd, tmp / "server.log")
    address = f"127.0.0.1:{port}"
    notify = "{}:{}".format(*transport.get_extra_info("sockname"))
    try:
        client = await td.connect(address, server, tmp / "server.log")
        for pattern in PATTERNS:
            queue = f"design-{uuid.uuid4().hex[:8]}"
            worker_cmd = [sys.executable, __file__, "--worker", address, queue, notify, pattern]
            worker = td.spawn(worker_cmd, tmp / "worker.log", stdout=subprocess.PIPE)
            assert worker.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), 60)
            if b"READY" not in line:
                raise RuntimeError(f"worker failed: {td.tail(tmp / 'worker.log')}")

            async def one(pattern: str = pattern, queue: str = queue) -> float:
                rid = f"design-{uuid.uuid4().hex}"
                arrived: asyncio.Future[float] = loop.create_future()
                arrivals.waiting[rid] = arrived
                t0 = time.perf_counter()
                if pattern == "standalone":
                    timeout = timedelta(seconds=30)
                    await client.start_activity(
                        ping, rid, id=rid, task_queue=queue, start_to_close_timeout=timeout
                    )
                else:
                    await client.start_workflow(OneActivity.run, rid, id=rid, task_queue=queue)
                return 1000 * (await asyncio.wait_for(arrived, 30) - t0)

            for _ in range(td.WARMUP):
                await one()
            await asyncio.sleep(0.5)
            pids = {"worker": worker.pid, "server": server.pid, "client": os.getpid()}
            before = {k: cpu_seconds(p) for k, p in pids.items()}
            latencies = [await one() for _ in range(args.requests)]
            await asyncio.sleep(0.5)  # the workflow pattern still closes its workflow
            cpu = {k: 1000 * (cpu_seconds(p) - before[k]) / args.requests for k, p in pids.items()}
            rate = await concurrent_rate(one, 16, args.seconds)
            print(
                f"  {pattern:<21} p50 {td.pct(latencies, 50):5.1f} p99 "
                f"{td.pct(latencies, 99):5.1f} ms | CPU ms/request: worker {cpu['worker']:5.2f} "
                f"server {cpu['server']:5.2f} client {cpu['client']:4.2f} | "
                f"16 callers {rate:5.1f}/s",
                flush=True,
            )
            td.stop(worker)
    finally:
        transport.close()
        td.stop(server)


def main() -> None:
    from tiller.cli.up import TEMPORAL_DYNAMIC_CONFIG, TEMPORAL_SQLITE_PRAGMAS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="sequential requests")
    parser.add_argument("--seconds", type=float, default=8.0, help="16 concurrent callers")
    args = parser.parse_args()
    tiller = [f"--dynamic-config-value={k}={v}" for k, v in TEMPORAL_DYNAMIC_CONFIG.items()]
    tiller += [f"--sqlite-pragma={pragma}" for pragma in TEMPORAL_SQLITE_PRAGMAS]
    eager = [*tiller, "--dynamic-config-value=system.enableActivityEagerExecution=true"]
    print(f"{args.requests} sequential requests after {td.WARMUP} warm-up; nproc", os.cpu_count())
    for label, flags in (("Tiller's dev-server config", tiller), ("... + eager activities", eager)):
        print(label, flush=True)
        with tempfile.TemporaryDirectory(prefix="dispatch-design-") as tmp:
            asyncio.run(measure_server(flags, args, Path(tmp)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        # Import under its own name, so the workflow sandbox can pass this module through.
        from dispatch_design import serve_worker

        asyncio.run(serve_worker(*sys.argv[2:6]))
    else:
        try:
            main()
        finally:
            for child in td._children:
                td.stop(child)
