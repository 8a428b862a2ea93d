"""The admission path (a gRPC Admit to quota, one Lua script in Redis) beside a trivial Redis
script and beside the whole demo request path, in one run.

    .venv/bin/python bench/admission.py [--seconds 5] [--concurrency 1,16,64]

Starts the same stack as side_by_side.py (`tiller up` in front of the bench engine), then for
each concurrency:
  redis   `redis-benchmark EVAL "return 1" 0` against the stack's Redis: the floor of a script
  admit   quota's Admit over gRPC with a key that has requests- and tokens-per-minute limits
          (the whole check-and-count script runs on every call), concurrency users back to back
  path    the non-streaming 16-token request through the gateway (bench/loadgen.py)
and prints requests per second and p50/p99 latency, then admission's share of the path's p50.
redis-benchmark comes from Debian's redis-tools (`apt-get install redis-tools`).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import loadgen
import side_by_side
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tiller.common.grpc_client import channel  # noqa: E402
from tiller.common.internal_tls import InternalTls  # noqa: E402
from tiller.protos.quota.v1 import quota_pb2, quota_pb2_grpc  # noqa: E402
from tiller.quota.keys import KeySpec, KeyStore, Limits  # noqa: E402

PATH_SCENARIO = loadgen.Scenario("non-stream 16", stream=False, tokens=16)


async def make_key(redis_url: str) -> str:
    """Limits high enough never to refuse, so every Admit runs the whole script."""
    redis = Redis.from_url(redis_url)
    try:
        limits = Limits(rpm=10**9, tpm=10**12, concurrency=0)
        return (await KeyStore(redis, "tiller:").create(KeySpec("bench", limits=limits))).api_key
    finally:
        await redis.aclose()


async def admit_loop(
    address: str, tls: InternalTls, api_key: str, concurrency: int, seconds: float
) -> list[float]:
    """Latencies (s) of Admit calls by `concurrency` users back to back for `seconds`, over
    the internal plane's mutual TLS, as the gateway calls quota."""
    latencies: list[float] = []
    async with channel(address, tls, "quota") as internal:
        stub = quota_pb2_grpc.QuotaStub(internal)
        stop_at = time.perf_counter() + seconds

        async def user() -> None:
            while time.perf_counter() < stop_at:
                request = quota_pb2.AdmitRequest(
                    api_key=api_key,
                    request_id=uuid.uuid4().hex,
                    model="fast",
                    served_model="fast",
                    reserve_tokens=24,
                )
                started = time.perf_counter()
                await stub.Admit(request, timeout=10)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(user() for _ in range(concurrency)))
    return latencies


def redis_benchmark(port: int, concurrency: int) -> tuple[float, float | None]:
    """(requests/s, p50 ms) of a trivial EVAL, from redis-benchmark's quiet output."""
    out = subprocess.run(
        [
            *("redis-benchmark", "-p", str(port), "-n", "50000", "-c", str(concurrency), "-q"),
            *("EVAL", "return 1", "0"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.findall(r"([\d.]+) requests per second", out)[-1])
    p50 = re.findall(r"p50=([\d.]+) msec", out)
    return rate, float(p50[-1]) if p50 else None


def line(name: str, rate: float, p50_ms: float | None, p99_ms: float | None) -> str:
    fifty = f"{p50_ms:8.3f}" if p50_ms is not None else "       -"
    ninety = f"{p99_ms:8.3f}" if p99_ms is not None else "       -"
    return f"  {name:<6} {rate:10.0f} req/s   p50 {fifty} ms   p99 {ninety} ms"


async def run(args: argparse.Namespace, data: Path) -> None:
    procs, ports = side_by_side.start_stack(data)
    redis_url = f"redis://127.0.0.1:{ports['redis']}/0"
    quota = f"127.0.0.1:{ports['quota']}"
    # The certificates tiller up made beside its data directory (TILLER_UP_SECRETS_DIR).
    tls = InternalTls.load(str(data / "tiller-secrets" / "internal-tls"), "gateway")
    gateway = f"http://127.0.0.1:{ports['gateway']}/v1"
    admit_key = await make_key(redis_url)
    path_key = await side_by_side.make_key(redis_url)
    print(side_by_side.describe_machine())
    try:
        for c in args.concurrency:
            print(f"\nconcurrency {c}")
            rate, p50 = redis_benchmark(ports["redis"], c)
            print(line("redis", rate, p50, None))
            await admit_loop(quota, tls, admit_key, c, 1.0)  # warm-up
            latencies = await admit_loop(quota, tls, admit_key, c, args.seconds)
            admit_p50 = loadgen.percentile(latencies, 50) * 1000
            print(
                line(
                    "admit",
                    len(latencies) / args.seconds,
                    admit_p50,
                    loadgen.percentile(latencies, 99) * 1000,
                )
            )
            report = await loadgen.run_closed_loop(
                gateway, PATH_SCENARIO, c, args.seconds, api_key=path_key, model="fast"
            )
            print(line("path", report.requests_per_s, report.latency_p50_ms, report.latency_p99_ms))
            print(f"  admission is {admit_p50 / report.latency_p50_ms:.1%} of the path's p50")
    finally:
        del procs  # the processes are stopped by main (side_by_side keeps them)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,16,64")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if shutil.which("redis-benchmark") is None:
        sys.exit("admission: redis-benchmark is not installed (apt-get install redis-tools)")
    with tempfile.TemporaryDirectory(prefix="tiller-admission-") as data:
        try:
            asyncio.run(run(args, Path(data)))
        finally:
            for child in reversed(side_by_side._children):
                side_by_side.stop(child)


if __name__ == "__main__":
    main()
