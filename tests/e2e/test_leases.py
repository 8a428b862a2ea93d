"""Concurrency slots come back on every path, and only when the work is over: a client killed
mid-stream (at once: the gateway sees the connection drop and stops the request), and a gateway
killed mid-request (another gateway takes the request up and holds its slot until it ends,
however short quota's lease TTL). SIGKILL both times: nothing gets to clean up."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.support import (
    ROOT,
    Stack,
    free_port,
    start_replica,
    start_service,
    stop_service,
    wait_for,
)
from tiller.quota.keys import KeyStore

LEASE_TTL_SECONDS = 3.0
LONG = " ".join(f"w{i}" for i in range(4000))  # a 4000-token answer, one token per ms or so

STREAMER = """
import sys, httpx
url, key = sys.argv[1], sys.argv[2]
body = {"model": "demo", "messages": [{"role": "user", "content": sys.argv[3]}], "stream": True}
with httpx.stream("POST", url, json=body, headers={"authorization": "Bearer " + key}, timeout=60) as r:
    for line in r.iter_lines():
        if line.startswith("data: "):
            print("streaming", line.split('"id":"')[1].split('"')[0], flush=True)
"""


async def one_slot_key(stack: Stack) -> str:
    redis = Redis.from_url(stack.redis_url)
    try:
        return (await KeyStore(redis, "tiller:").issue("one-slot", concurrency=1)).api_key
    finally:
        await redis.aclose()


def admitted(url: str, key: str) -> bool:
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    reply = httpx.post(
        f"{url}/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    )
    assert reply.status_code in (200, 429), reply.text
    return reply.status_code == 200


def stream_in_a_process(url: str, key: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    """A client streaming a long answer; returns once its first chunk arrived, with the
    request's id."""
    with log.open("w") as errors:
        client = subprocess.Popen(
            [sys.executable, "-c", STREAMER, f"{url}/chat/completions", key, LONG],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    assert client.stdout is not None
    said, request_id = client.stdout.readline().split()
    assert said == "streaming"
    return client, request_id


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture(scope="module")
def short_leases(stack: Stack) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A quota with 3 s leases, a gateway of its own on it (the test kills it), and another
    that takes up what a silent gateway leaves within a second (it is not killed)."""
    replica = start_replica(
        stack, "short-leases", TILLER_QUOTA_LEASE_TTL_SECONDS=str(LEASE_TTL_SECONDS)
    )
    adopter = start_service(
        stack,
        "tiller.gateway",
        stack.data_dir / "logs" / "gateway-adopter.log",
        TILLER_QUOTA_ADDRESS=replica.quota_address,
        TILLER_GATEWAY_PORT=str(free_port()),
        TILLER_GATEWAY_GRPC_PORT=str(free_port()),
        TILLER_GATEWAY_BACKGROUND_LEASE_SECONDS="1",
    )
    try:
        yield f"{replica.url}/v1", replica.gateway
    finally:
        stop_service(adopter)
        replica.stop()


async def test_a_client_killed_mid_stream_gives_its_slot_back_at_once(
    stack: Stack, tmp_path: Path
) -> None:
    key = await one_slot_key(stack)
    client, _ = stream_in_a_process(stack.base_url, key, tmp_path / "client.log")
    assert not admitted(stack.base_url, key)  # the slot is taken
    kill(client)
    killed = time.monotonic()
    assert wait_for(lambda: admitted(stack.base_url, key), timeout=5, interval=0.05)
    back = time.monotonic() - killed

    def charged() -> int:
        usage = httpx.get(f"{stack.base_url}/usage", headers={"authorization": f"Bearer {key}"})
        return int(usage.json()["totals"]["completion_tokens"])

    # What it was sent before it left is charged (the one-token request after it adds 1).
    assert wait_for(lambda: charged() > 1, timeout=5)
    print(
        f"\nclient SIGKILLed mid-stream: slot back after {back:.2f} s; "
        f"charged {charged() - 1} tokens it was sent"
    )


async def test_a_gateway_killed_mid_request_leaves_its_slot_held_until_the_work_ends(
    stack: Stack, short_leases: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    url, gateway = short_leases
    key = await one_slot_key(stack)
    client, request_id = stream_in_a_process(url, key, tmp_path / "client.log")
    time.sleep(LEASE_TTL_SECONDS)  # longer than a lease: only renewal keeps it
    assert not admitted(stack.base_url, key)  # held, renewed by the gateway serving it
    gateway.send_signal(signal.SIGKILL)
    gateway.wait()
    killed = time.monotonic()
    kill(client)
    redis = Redis.from_url(stack.redis_url)
    record = f"tiller:background:{request_id}"
    try:
        # While the request runs, its slot stays taken, past the lease TTL of the dead
        # gateway's last renewal: the adopter renews it.
        while await redis.hget(record, "status") in (None, b"in_progress"):
            if admitted(stack.base_url, key):
                # Only because it has just ended: its adopter settles it (freeing the slot),
                # then records how it ended, a moment later.
                freed = time.monotonic()
                while await redis.hget(record, "status") in (None, b"in_progress"):
                    assert time.monotonic() - freed < 1, "admitted while the request still runs"
                    time.sleep(0.02)
                break
            assert time.monotonic() - killed < 60, "the request never ended"
            time.sleep(0.2)
        ended = time.monotonic() - killed
        status = await redis.hget(record, "status")
    finally:
        await redis.aclose()
    # Its stream was not resumed: cancelled after the grace, or done before it; either way
    # settled, and the slot is free at once.
    assert wait_for(lambda: admitted(stack.base_url, key), timeout=2)
    print(
        f"\ngateway SIGKILLed mid-request: taken up, slot held {ended:.2f} s after the kill "
        f"(lease TTL {LEASE_TTL_SECONDS:.0f} s), until it ended {status!r}"
    )
