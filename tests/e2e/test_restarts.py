"""Restarts of Redis and Temporal under in-flight requests: each request completes (or, where it
cannot, fails with a clear error), nothing hangs, and nothing stays charged (the key's one concurrency slot comes
back). These run a stack of their own, so they can kill its parts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import httpx
from redis.asyncio import Redis

from tests.own_stack import OwnStack
from tests.support import chunks_of, text_of
from tiller.quota.keys import KeyStore

WORDS = " ".join(f"w{i}" for i in range(3000))  # about 3 s of streaming at 1 ms a token


def one_at_a_time_key(stack: OwnStack) -> str:
    """A key with one concurrency slot: a request left charged would block the next."""

    async def create() -> str:
        redis = Redis.from_url(stack.env["TILLER_REDIS_URL"])
        key = await KeyStore(redis, "tiller:").issue("one-slot", concurrency=1)
        await redis.aclose()
        return key.api_key

    api_key = asyncio.run(create())
    time.sleep(1.5)  # past Redis's once-a-second append-only fsync: the key survives a SIGKILL
    return api_key


def stream_until_killed(
    stack: OwnStack, key: str, part: str | Callable[[], None]
) -> tuple[list[str], float, float]:
    """Stream an answer, SIGKILL `part` a third of the way in (or run it, in a thread: an
    outage); the lines, and seconds from the kill to the end of the stream."""
    lines: list[str] = []
    killed_at = 0.0
    body = {"model": "demo", "messages": [{"role": "user", "content": WORDS}], "stream": True}
    headers = {"authorization": f"Bearer {key}"}
    received = 0  # characters of text so far, counted as they come: the client keeps pace
    with httpx.stream(
        "POST", f"{stack.base_url}/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            lines.append(line)
            if not killed_at:
                received += len(text_of([line]))
                if received > len(WORDS) // 3:
                    if callable(part):
                        threading.Thread(target=part, daemon=True).start()
                        time.sleep(0.2)
                    else:
                        stack.kill(part)
                    killed_at = time.monotonic()
    return lines, killed_at, time.monotonic() - killed_at


def admitted_again(stack: OwnStack, key: str, timeout: float) -> float:
    """Seconds until a request on `key` succeeds."""
    started = time.monotonic()
    body = {"model": "demo", "messages": [{"role": "user", "content": "again"}]}
    while True:
        try:
            reply = httpx.post(
                f"{stack.base_url}/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {key}"},
                timeout=30,
            )
            if reply.status_code == 200:
                assert reply.json()["choices"][0]["message"]["content"] == "You said: again"
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        assert time.monotonic() - started < timeout, f"not admitted again within {timeout} s"
        time.sleep(0.25)


REDIS_OUTAGE_SECONDS = 6.0


def test_redis_away_mid_answer_every_answer_arrives_whole_once_it_is_back(
    own_stack: OwnStack,
) -> None:
    """Redis SIGKILLed a third of the way into a stream, with a background request running too,
    and started again (with its append-only file) seconds later: the worker holds what it could
    not append, the gateway waits, and both answers arrive whole, nothing twice."""
    key = one_at_a_time_key(own_stack)
    admin = {"authorization": f"Bearer {own_stack.admin_key}"}
    body = {"model": "demo", "messages": [{"role": "user", "content": f"bg {WORDS}"}]}
    submitted = httpx.post(
        f"{own_stack.base_url}/chat/completions",
        json=body | {"background": True},
        headers=admin,
        timeout=30,
    )
    assert submitted.status_code == 202, submitted.text
    background_id = submitted.json()["id"]
    gateway = own_stack.base_url.removesuffix("/v1")
    seen: dict[str, object] = {}

    def outage() -> None:
        own_stack.kill("redis")
        # Readiness says Redis is away; `deps=0` (the balancer's probe in deploy/k8s) does not
        # take the gateway out for a dependency every gateway shares.
        seen["ready"] = httpx.get(f"{gateway}/readyz", timeout=10).status_code
        seen["alone"] = httpx.get(f"{gateway}/readyz?deps=0", timeout=10).status_code
        time.sleep(REDIS_OUTAGE_SECONDS)
        own_stack.start("redis")  # back, with its append-only file

    lines, _, ended_after = stream_until_killed(own_stack, key, outage)
    errors = [c["error"] for line in lines if (c := chunks_of(line)) and "error" in c]
    print(f"\nstream ended {ended_after:.2f} s after Redis died ({REDIS_OUTAGE_SECONDS} s away)")
    assert not errors, errors
    assert text_of(lines) == f"You said: {WORDS}"
    assert "data: [DONE]" in lines[-3:]
    assert (seen["ready"], seen["alone"]) == (503, 200)
    deadline = time.monotonic() + 60
    while True:
        found = httpx.get(
            f"{own_stack.base_url}/chat/completions/{background_id}", headers=admin, timeout=10
        )
        if found.status_code == 200 and found.json()["status"] != "in_progress":
            break
        assert time.monotonic() < deadline, "the background request never finished"
        time.sleep(0.25)
    print(f"background request: {found.json()['status']}")
    assert found.json()["status"] == "completed", found.text
    assert found.json()["choices"][0]["message"]["content"] == f"You said: bg {WORDS}"
    again = admitted_again(own_stack, key, timeout=60)
    print(f"the key's one slot was free again {again:.2f} s after the answer")


def test_temporal_restart_mid_stream_completes_the_answer(own_stack: OwnStack) -> None:
    key = one_at_a_time_key(own_stack)
    lines, _, _ = stream_until_killed(own_stack, key, "temporal")
    # The answer streams from Redis: losing Temporal mid-answer loses nothing.
    assert text_of(lines) == f"You said: {WORDS}"
    # While Temporal is down, a new request fails with a clear error in bounded time.
    started = time.monotonic()
    down = httpx.post(
        f"{own_stack.base_url}/chat/completions",
        json={"model": "demo", "messages": [{"role": "user", "content": "anyone?"}]},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    refused_after = time.monotonic() - started
    print(f"\nwith Temporal down: {down.status_code} after {refused_after:.2f} s: {down.text}")
    assert down.status_code == 503 and "orchestrator" in down.json()["error"]["message"]
    assert refused_after < 20  # the Temporal client's retries (about 10 s), then a clear error
    own_stack.start("temporal")  # back, with its database
    again = admitted_again(own_stack, key, timeout=90)
    print(f"requests succeed again {again:.2f} s after Temporal restarted")


def test_the_only_router_killed_refuses_nothing_the_gateway_served_a_moment_before(
    own_stack: OwnStack,
) -> None:
    headers = {"authorization": f"Bearer {own_stack.admin_key}"}
    body = {"model": "demo", "messages": [{"role": "user", "content": "routed"}]}

    def ask() -> int:
        reply = httpx.post(
            f"{own_stack.base_url}/chat/completions", json=body, headers=headers, timeout=30
        )
        return reply.status_code

    assert ask() == 200  # the gateway has resolved `demo`
    own_stack.kill("router")
    # Past the route cache's 2 s: each request asks the router, which is not there.
    statuses = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        statuses.append(ask())
    unknown = httpx.post(
        f"{own_stack.base_url}/chat/completions",
        json=body | {"model": "never-resolved"},
        headers=headers,
        timeout=30,
    )
    own_stack.start("router")
    print(f"\nrouter down: {len(statuses)} requests, statuses {sorted(set(statuses))}")
    assert set(statuses) == {200}
    assert unknown.status_code == 503  # nothing to fall back on: a model never resolved here
