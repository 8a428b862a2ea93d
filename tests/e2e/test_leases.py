"""Concurrency slots come back on every path: a client killed mid-stream (at once: the gateway
sees the connection drop), and a gateway killed mid-request (within the lease TTL: nobody renews
its leases, quota lets them lapse). SIGKILL both times: nothing gets to clean up."""

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

from tests.support import ROOT, Stack, start_replica, wait_for
from tiller.quota.keys import KeyStore

LEASE_TTL_SECONDS = 3.0
LONG = " ".join(f"w{i}" for i in range(3000))  # a 3000-token answer, one token per ms or so

STREAMER = """
import sys, httpx
url, key = sys.argv[1], sys.argv[2]
body = {"model": "demo", "messages": [{"role": "user", "content": sys.argv[3]}], "stream": True}
with httpx.stream("POST", url, json=body, headers={"authorization": "Bearer " + key}, timeout=60) as r:
    for line in r.iter_lines():
        if line.startswith("data: "):
            print("streaming", flush=True)
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


def stream_in_a_process(url: str, key: str, log: Path) -> subprocess.Popen[str]:
    """A client streaming a long answer; returns once its first chunk arrived."""
    with log.open("w") as errors:
        client = subprocess.Popen(
            [sys.executable, "-c", STREAMER, f"{url}/chat/completions", key, LONG],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    assert client.stdout is not None and client.stdout.readline().strip() == "streaming"
    return client


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture(scope="module")
def short_leases(stack: Stack) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A quota with 3 s leases and a gateway of its own on it (the test kills the gateway)."""
    replica = start_replica(
        stack, "short-leases", TILLER_QUOTA_LEASE_TTL_SECONDS=str(LEASE_TTL_SECONDS)
    )
    try:
        yield f"{replica.url}/v1", replica.gateway
    finally:
        replica.stop()


async def test_a_client_killed_mid_stream_gives_its_slot_back_at_once(
    stack: Stack, tmp_path: Path
) -> None:
    key = await one_slot_key(stack)
    client = stream_in_a_process(stack.base_url, key, tmp_path / "client.log")
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


async def test_a_gateway_killed_mid_request_frees_its_slot_within_the_lease_ttl(
    stack: Stack, short_leases: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    url, gateway = short_leases
    key = await one_slot_key(stack)
    client = stream_in_a_process(url, key, tmp_path / "client.log")
    time.sleep(LEASE_TTL_SECONDS)  # longer than a lease: only renewal keeps it
    assert not admitted(stack.base_url, key)  # held, renewed by the gateway serving it
    gateway.send_signal(signal.SIGKILL)
    gateway.wait()
    killed = time.monotonic()
    assert wait_for(lambda: admitted(stack.base_url, key), timeout=2 * LEASE_TTL_SECONDS)
    waited = time.monotonic() - killed
    kill(client)
    print(
        f"\ngateway SIGKILLed mid-request: slot back after {waited:.2f} s (lease TTL "
        f"{LEASE_TTL_SECONDS:.0f} s)"
    )
    assert waited <= LEASE_TTL_SECONDS + 0.5
