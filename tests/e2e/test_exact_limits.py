"""Limits hold exactly across replicas: two quota services and two gateways on one Redis (the
stack's pair and one more of each), under hundreds of concurrent requests.

- 300 concurrent requests against a 50-requests-per-minute key: exactly 50 admitted.
- Streaming requests against a tokens-per-minute key: what was admitted used no more than the
  limit, and each used no more than it reserved.
- A concurrency limit of 4 under a steady overload: the demo engine never had more than 4 of
  that key's answers in flight (it records its peak).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.support import Stack, chunks_of, start_replica
from tiller.gateway.reservations import MESSAGE_TOKENS
from tiller.gateway.settings import GatewaySettings
from tiller.quota.keys import KeySpec, KeyStore, Limits

TEMPLATE_TOKENS = GatewaySettings().template_tokens


@dataclass
class Replicas:
    gateways: list[str]  # base URLs: the stack's, and one wired to the second quota


@pytest.fixture(scope="module")
def replicas(stack: Stack) -> Iterator[Replicas]:
    second = start_replica(stack, "2")
    try:
        yield Replicas([f"http://127.0.0.1:{stack.gateway_port}", second.url])
    finally:
        second.stop()


async def new_key(stack: Stack, name: str, **limits: int) -> str:
    redis = Redis.from_url(stack.redis_url)
    try:
        return (
            await KeyStore(redis, "tiller:").create(KeySpec(name, limits=Limits(**limits)))
        ).api_key
    finally:
        await redis.aclose()


@pytest.fixture
async def clients(replicas: Replicas) -> AsyncIterator[list[httpx.AsyncClient]]:
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    made = [
        httpx.AsyncClient(base_url=f"{url}/v1", timeout=60, limits=limits)
        for url in replicas.gateways
    ]
    yield made
    for client in made:
        await client.aclose()


async def test_exactly_the_rpm_limit_is_admitted_across_replicas(
    stack: Stack, clients: list[httpx.AsyncClient]
) -> None:
    key = await new_key(stack, "rpm-50", rpm=50)
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    sent = itertools.cycle(clients)
    replies = await asyncio.gather(
        *(next(sent).post("/chat/completions", json=body, headers=headers) for _ in range(300))
    )
    statuses = Counter(r.status_code for r in replies)
    per_gateway = Counter(str(r.request.url.port) for r in replies if r.status_code == 200)
    print(
        f"\n300 concurrent requests, rpm 50, two gateways and two quotas: {dict(statuses)}, "
        f"admitted per gateway {dict(per_gateway)}"
    )
    assert statuses == {200: 50, 429: 250}


async def test_streamed_tokens_stay_within_the_tokens_limit(
    stack: Stack, clients: list[httpx.AsyncClient]
) -> None:
    tpm, max_tokens = 600, 20
    key = await new_key(stack, "tpm-600", tpm=tpm)
    headers = {"authorization": f"Bearer {key}"}
    content = "one two three four five six seven eight"
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    # The prompt's bound (gateway/reservations.py): its bytes, its role and a message's
    # markers, the template allowance; then max_tokens.
    reserved = len(content) + len("user") + MESSAGE_TOKENS + TEMPLATE_TOKENS + max_tokens

    async def one(client: httpx.AsyncClient) -> int | None:
        """Tokens the request used, or None if it was refused."""
        async with client.stream("POST", "/chat/completions", json=body, headers=headers) as r:
            if r.status_code == 429:
                return None
            assert r.status_code == 200
            used = None
            async for line in r.aiter_lines():
                chunk = chunks_of(line)
                if chunk and chunk.get("usage"):
                    used = int(chunk["usage"]["total_tokens"])
            return used

    sent = itertools.cycle(clients)
    outcomes = await asyncio.gather(*(one(next(sent)) for _ in range(150)))
    used = [u for u in outcomes if u is not None]
    print(
        f"\n150 concurrent streams, tpm {tpm}, {reserved} tokens reserved each: "
        f"{len(used)} admitted, {sum(used)} tokens used (reconciled), "
        f"{len(outcomes) - len(used)} refused"
    )
    assert used and len(used) < len(outcomes)
    assert all(u <= reserved for u in used)  # each within what it reserved
    assert sum(used) <= tpm  # every admitted request fits in the minute's limit


async def test_a_concurrency_limit_is_never_exceeded(
    stack: Stack, clients: list[httpx.AsyncClient]
) -> None:
    key = await new_key(stack, "four-at-once", concurrency=4)
    headers = {"authorization": f"Bearer {key}"}
    words = " ".join(f"w{i}" for i in range(200))  # a 200-token answer: each takes a while
    body = {"model": "demo", "messages": [{"role": "user", "content": words}], "stream": True}
    engine = f"http://127.0.0.1:{stack.demo_port}"
    async with httpx.AsyncClient(timeout=10) as demo:
        await demo.post(f"{engine}/stats/reset")
        refused = 0

        async def until_served(client: httpx.AsyncClient) -> None:
            nonlocal refused
            while True:
                async with client.stream(
                    "POST", "/chat/completions", json=body, headers=headers
                ) as r:
                    if r.status_code == 429:
                        refused += 1
                        await asyncio.sleep(0.02)
                        continue
                    assert r.status_code == 200
                    async for _ in r.aiter_lines():
                        pass
                    return

        sent = itertools.cycle(clients)
        await asyncio.gather(*(until_served(next(sent)) for _ in range(24)))
        stats: dict[str, Any] = (await demo.get(f"{engine}/stats")).json()
    print(
        f"\n24 streams, concurrency 4, retrying on 429: engine peak in flight "
        f"{stats['peak']}, {refused} refusals"
    )
    assert stats["peak"] == 4  # reached, never exceeded


async def test_a_revoked_key_is_refused_by_the_other_gateway_at_once(
    stack: Stack, clients: list[httpx.AsyncClient]
) -> None:
    first, second = clients
    admin = {"authorization": f"Bearer {stack.admin_key}"}
    root = str(first.base_url).removesuffix("/").removesuffix("/v1")
    created = (
        await first.post(f"{root}/admin/keys", json={"name": "short-lived"}, headers=admin)
    ).json()
    headers = {"authorization": f"Bearer {created['key']}"}
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    assert (await second.post("/chat/completions", json=body, headers=headers)).status_code == 200
    revoked = await first.post(f"{root}/admin/keys/{created['id']}/revoke", headers=admin)
    assert revoked.status_code == 200
    started = time.monotonic()
    refused = await second.post("/chat/completions", json=body, headers=headers)
    elapsed = time.monotonic() - started
    print(f"\nrevoked through one gateway, refused by the other {elapsed * 1000:.0f} ms later")
    assert refused.status_code == 401 and elapsed < 1.0
