"""Requests wait for a busy engine in Temporal's task queue, in priority order: a key's class,
or a later one the caller asks for with `x-tiller-priority`."""

from __future__ import annotations

import asyncio

import httpx
from redis.asyncio import Redis

from tests.support import Stack
from tiller.quota.keys import KeyStore

LONG = [{"role": "user", "content": "word " * 3000}]  # about 3 s at 1 ms a token


async def test_high_priority_requests_overtake_queued_low_priority_ones(stack: Stack) -> None:
    redis = Redis.from_url(stack.redis_url)
    store = KeyStore(redis, "tiller:")
    high = await store.issue("interactive", priority=1)
    low = await store.issue("batch")  # the default class, 3; its requests ask for 5
    await redis.aclose()
    finished: list[str] = []

    async def ask(http: httpx.AsyncClient, name: str, key: str, **headers: str) -> None:
        body = {"model": "single", "messages": [{"role": "user", "content": name}]}
        response = await http.post(
            "/chat/completions", json=body, headers={"authorization": f"Bearer {key}", **headers}
        )
        assert response.status_code == 200, response.text
        finished.append(name)

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
        blocker = asyncio.create_task(
            http.post(
                "/chat/completions",
                json={"model": "single", "messages": LONG},
                headers={"authorization": f"Bearer {low.api_key}"},
            )
        )
        await asyncio.sleep(0.5)  # the one slot is busy for about 3 s
        lows = [
            asyncio.create_task(ask(http, f"low{i}", low.api_key, **{"x-tiller-priority": "5"}))
            for i in range(20)
        ]
        await asyncio.sleep(0.5)  # all twenty wait in the task queue
        highs = [asyncio.create_task(ask(http, f"high{i}", high.api_key)) for i in range(5)]
        assert (await blocker).status_code == 200
        await asyncio.gather(*lows, *highs)

    print(f"\nfinish order: {finished}")
    assert sorted(finished[:5]) == [f"high{i}" for i in range(5)], finished


async def test_a_priority_header_out_of_range_is_refused_by_name(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        response = await http.post(
            "/chat/completions",
            json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {stack.admin_key}", "x-tiller-priority": "9"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "x-tiller-priority" and "1 (first) to 5 (last)" in error["message"]
