"""Token reservations cannot be undercut (issue 21): the three cases an outside run measured, each
of which the old estimate (a token per four characters, the model's system prompt left out)
admitted past its limit. The demo engine counts a word as a token, so a prompt of one-letter
words holds twice the tokens the old estimate gave it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.support import Stack
from tiller.quota.keys import KeySpec, KeyStore, Limits


def words(count: int) -> str:
    return " ".join(chr(ord("a") + i % 26) for i in range(count))


@pytest.fixture
async def http(stack: Stack) -> Any:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        yield client


async def new_key(stack: Stack, **limits: int) -> dict[str, str]:
    redis = Redis.from_url(stack.redis_url)
    try:
        key = await KeyStore(redis, "tiller:").create(KeySpec("resv", limits=Limits(**limits)))
    finally:
        await redis.aclose()
    return {"authorization": f"Bearer {key.api_key}"}


async def test_forty_one_letter_words_do_not_fit_thirty_tokens_a_minute(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    headers = await new_key(stack, tpm=30)
    body = {"model": "demo", "messages": [{"role": "user", "content": words(40)}], "max_tokens": 1}
    reply = await http.post("/chat/completions", json=body, headers=headers)
    print(f"\ntpm 30, forty one-letter words, max_tokens 1: {reply.status_code} {reply.text}")
    # It would use 41 tokens: refused outright, as it could never fit.
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "max_tokens"


async def test_the_models_system_prompt_is_reserved(stack: Stack, http: httpx.AsyncClient) -> None:
    headers = await new_key(stack, tpm=100)
    body = {"model": "briefed", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    reply = await http.post("/chat/completions", json=body, headers=headers)
    print(f"\ntpm 100, a 200-word system prompt and 'hi': {reply.status_code} {reply.text}")
    assert reply.status_code == 400, reply.text  # 201 prompt tokens: it can never fit
    # The same model under a limit it fits: admitted, and its usage is the engine's count.
    roomy = await new_key(stack, tpm=5000)
    reply = await http.post("/chat/completions", json=body, headers=roomy)
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["prompt_tokens"] == 201


async def test_a_daily_budget_is_not_overrun_by_a_burst(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    headers = await new_key(stack, tokens_per_day=100)
    body = {"model": "demo", "messages": [{"role": "user", "content": words(20)}], "max_tokens": 1}
    replies = await asyncio.gather(
        *(http.post("/chat/completions", json=body, headers=headers) for _ in range(10))
    )
    used = [r.json()["usage"]["total_tokens"] for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code != 200]
    print(f"\n10 at once on a 100-token daily budget: {len(used)} admitted, {sum(used)} used")
    assert used and all(r.status_code == 429 for r in refused)
    assert all(u == 21 for u in used)  # twenty words and one token of answer
    assert sum(used) <= 100
