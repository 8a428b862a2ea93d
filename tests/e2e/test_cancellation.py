"""A client that goes away mid-stream cancels its activity, stops the engine within a second and
gives its concurrency slot back."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from redis.asyncio import Redis
from temporalio.client import ActivityExecutionStatus

from tests.support import Stack, temporal_client
from tiller.quota.keys import KeyStore

LONG = [{"role": "user", "content": "word " * 3000}]  # about 3 s of streaming at 1 ms a token


async def test_disconnect_cancels_the_activity_and_releases_the_lease(stack: Stack) -> None:
    redis = Redis.from_url(stack.redis_url)
    key = await KeyStore(redis, "tiller:").issue("one-at-a-time", concurrency=1)
    await redis.aclose()
    headers = {"authorization": f"Bearer {key.api_key}"}
    body = {"model": "demo", "messages": LONG, "stream": True}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as http:
        async with http.stream("POST", "/chat/completions", json=body) as response:
            assert response.status_code == 200
            request_id = response.headers["x-request-id"]
            # Hold the line iterator: once collected, httpx would close the stream (a disconnect).
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith("data:"):
                    break
            busy = await http.post("/chat/completions", json={**body, "stream": False})
            assert busy.status_code == 429  # the lease is held while the answer streams
            del lines  # referenced until here on purpose
        # Leaving the block closed the connection after the first chunk.
        left = time.time()
        deadline = time.monotonic() + 15
        while True:
            short = {"model": "demo", "messages": [{"role": "user", "content": "again"}]}
            again = await http.post("/chat/completions", json=short)
            if again.status_code == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert again.status_code == 200, again.text

    handle = (await temporal_client(stack)).get_activity_handle(request_id)
    deadline = time.monotonic() + 20
    while (status := (await handle.describe()).status) == ActivityExecutionStatus.RUNNING:
        assert time.monotonic() < deadline, "the activity was not cancelled"
        await asyncio.sleep(0.2)
    assert status == ActivityExecutionStatus.CANCELED
    # The engine stopped long before Temporal's cancellation could reach the worker (up to a
    # heartbeat, 2 s): the gateway's cancel signal reached the worker at once.
    aborted = await engine_abort_after(stack, left)
    print(
        f"\nthe engine stopped {aborted - left:.3f} s after the client left; activity {status.name}"
    )
    assert aborted - left < 1.0, f"the engine stopped {aborted - left:.2f} s after the client"


async def engine_abort_after(stack: Stack, since: float) -> float:
    """When the demo engine logged an aborted stream, after `since` (epoch seconds)."""
    log = stack.data_dir / "logs" / "demo-engine.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if not line.startswith("{"):
                continue  # uvicorn's own lines are plain text
            entry = json.loads(line)
            if entry.get("msg") == "stream aborted" and entry["ts"] >= since - 0.05:
                return float(entry["ts"])
        await asyncio.sleep(0.1)
    raise AssertionError("the demo engine never saw the stream aborted")
