"""A request refused after its admission leaves nothing counted, its place in requests per
minute included (issue 21): refused by a PII policy, by its model's pipeline, or with a 503
because Redis froze while quota admitted it (quota's script then runs when Redis wakes, after the
gateway gave up). Each key here allows one request a minute: a refusal left counted takes it."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
from redis.asyncio import Redis

from tests.own_stack import OwnStack
from tests.support import Stack
from tiller.quota.keys import KeyStore

CARD = "4111 1111 1111 1111"  # Luhn-valid: the `guarded` model blocks cards


async def one_a_minute(redis_url: str) -> dict[str, str]:
    redis = Redis.from_url(redis_url)
    try:
        key = await KeyStore(redis, "tiller:").issue("one-a-minute", rpm=1)
    finally:
        await redis.aclose()
    return {"authorization": f"Bearer {key.api_key}"}


def chat(model: str, text: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 2}


async def test_refusals_after_admission_do_not_count_against_requests_per_minute(
    stack: Stack,
) -> None:
    headers = await one_a_minute(stack.redis_url)
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as http:
        blocked = await http.post("/chat/completions", json=chat("guarded", f"pay {CARD}"))
        assert blocked.status_code == 400 and blocked.json()["error"]["code"] == "pii_detected"
        # A pipeline answers chat only: refused after admission, once its route is known.
        body = {"model": "long-chats", "prompt": "hi", "max_tokens": 2}
        not_chat = await http.post("/completions", json=body)
        assert not_chat.status_code == 400, not_chat.text
        served = await http.post("/chat/completions", json=chat("demo", "hi"))
        assert served.status_code == 200, served.text  # the minute's one request
        over = await http.post("/chat/completions", json=chat("demo", "hi"))
        assert over.status_code == 429, over.text


def test_a_503_while_redis_froze_does_not_count_against_requests_per_minute(
    own_stack: OwnStack,
) -> None:
    headers = asyncio.run(one_a_minute(own_stack.env["TILLER_REDIS_URL"]))
    url = f"{own_stack.base_url}/chat/completions"
    # Quota's connections to Redis are open, as under load: the admission's script is written
    # to Redis at once (a new connection would stall in its handshake and send nothing).
    other = asyncio.run(one_a_minute(own_stack.env["TILLER_REDIS_URL"]))
    for _ in range(3):
        httpx.post(url, json=chat("demo", "hi"), headers=other, timeout=30)
    redis = own_stack.processes["redis"]
    redis.send_signal(signal.SIGSTOP)
    try:
        frozen = httpx.post(url, json=chat("demo", "hi"), headers=headers, timeout=30)
        time.sleep(1)  # quota's admission sits in Redis's socket, to run when it wakes
    finally:
        redis.send_signal(signal.SIGCONT)
    print(f"\nRedis frozen during the admission: {frozen.status_code} {frozen.text}")
    assert frozen.status_code == 503, frozen.text
    started = time.monotonic()
    statuses = []
    while True:  # the release is sent again until quota can apply it
        reply = httpx.post(url, json=chat("demo", "hi"), headers=headers, timeout=30)
        statuses.append(reply.status_code)
        if reply.status_code == 200:
            break
        assert reply.status_code == 429, reply.text
        assert time.monotonic() - started < 20, f"the refused request still counts: {statuses}"
        time.sleep(0.5)
    print(f"admitted {time.monotonic() - started:.1f} s after Redis woke: {statuses}")
    over = httpx.post(url, json=chat("demo", "hi"), headers=headers, timeout=30)
    assert over.status_code == 429, over.text  # and the limit still holds
