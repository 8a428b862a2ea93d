"""Bad input gets an OpenAI-style error in the caller's terms, and nothing hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from tests.support import Stack
from tiller.quota.keys import KeyStore

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as client:
        yield client


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


JSON = {"content-type": "application/json"}


async def test_malformed_json(http: httpx.AsyncClient) -> None:
    response = await http.post("/chat/completions", content=b'{"model": "demo",', headers=JSON)
    error = error_of(response, 400)
    assert error["type"] == "invalid_request_error" and "parse the JSON body" in error["message"]
    assert response.headers["x-request-id"].startswith("req_")  # refused before it began


async def test_a_body_that_is_not_json_is_415(http: httpx.AsyncClient) -> None:
    body = orjson.dumps({"model": "demo", "messages": HELLO})
    for media in ("text/plain", "application/x-www-form-urlencoded", ""):
        response = await http.post(
            "/chat/completions", content=body, headers={"content-type": media}
        )
        error = error_of(response, 415)
        assert error["param"] == "Content-Type" and error["code"] == "unsupported_media_type"
    charset = {"content-type": "application/json; charset=utf-8"}
    assert (await http.post("/chat/completions", content=body, headers=charset)).status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "demo"}, "messages"),
        ({"model": "demo", "messages": "hi"}, "messages"),
        ({"model": "demo", "messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
        ({"model": ["demo"], "messages": HELLO}, "model"),
        ({"model": "demo", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"model": "demo", "messages": HELLO, "max_tokens": -3}, "max_tokens"),
        ({"model": "demo", "messages": HELLO, "max_tokens": "5"}, "max_tokens"),
        ({"model": "demo", "messages": HELLO, "temperature": "hot"}, "temperature"),
    ],
)
async def test_invalid_fields_name_the_param(
    http: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    error = error_of(await http.post("/chat/completions", json=body), 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param


async def test_unknown_model_is_404_model_not_found(http: httpx.AsyncClient) -> None:
    response = await http.post("/chat/completions", json={"model": "gpt-9", "messages": HELLO})
    error = error_of(response, 404)
    assert error["code"] == "model_not_found" and "gpt-9" in error["message"]


@pytest.mark.parametrize("authorization", [None, "Bearer tk-unknown", "Basic abc", "Bearer"])
async def test_missing_or_unknown_key_is_401(stack: Stack, authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        response = await client.post(
            "/chat/completions", json={"model": "demo", "messages": HELLO}, headers=headers
        )
        assert error_of(response, 401)["code"] == "invalid_api_key"
        assert (await client.get("/models", headers=headers)).status_code == 401


async def test_over_the_rpm_limit_is_429_with_retry_after(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    redis = Redis.from_url(stack.redis_url)
    key = await KeyStore(redis, "tiller:").issue("limited", rpm=2)
    await redis.aclose()
    headers = {"authorization": f"Bearer {key.api_key}"}
    body = {"model": "demo", "messages": HELLO}
    first = await http.post("/chat/completions", json=body, headers=headers)
    second = await http.post("/chat/completions", json=body, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert (
        first.headers["x-ratelimit-remaining-requests"],
        second.headers["x-ratelimit-remaining-requests"],
    ) == ("1", "0")
    third = await http.post("/chat/completions", json=body, headers=headers)
    error = error_of(third, 429)
    assert error["code"] == "rate_limit_exceeded" and "requests per minute" in error["message"]
    assert 1 <= int(third.headers["retry-after"]) <= 60


async def test_body_over_the_size_limit_is_413(http: httpx.AsyncClient) -> None:
    big = orjson.dumps(
        {"model": "demo", "messages": [{"role": "user", "content": "x" * 5_000_000}]}
    )
    error = error_of(await http.post("/chat/completions", content=big, headers=JSON), 413)
    assert error["code"] == "request_too_large"


async def test_engine_down_is_a_prompt_5xx_never_a_hang(http: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await http.post("/chat/completions", json={"model": "broken", "messages": HELLO})
    error = error_of(response, 503)
    assert "Cannot reach the model engine" in error["message"]
    assert response.headers["x-request-id"].startswith("chatcmpl-")  # findable in Temporal
    streamed = await http.post(
        "/chat/completions", json={"model": "broken", "messages": HELLO, "stream": True}
    )
    assert error_of(streamed, 503)["type"] == "server_error"
    # Each waited for its engine up to the model's queue timeout (1 s), then failed at once.
    assert "queue timeout" in error["message"]
    assert time.monotonic() - started < 30


async def test_a_prompt_over_the_engine_context_is_400_and_not_retried(
    http: httpx.AsyncClient,
) -> None:
    messages = [{"role": "user", "content": "word " * 5000}]
    error = error_of(
        await http.post("/chat/completions", json={"model": "demo", "messages": messages}), 400
    )
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"


async def test_concurrent_requests_each_get_their_own_answer(http: httpx.AsyncClient) -> None:
    async def ask(i: int) -> str:
        body = {"model": "demo", "messages": [{"role": "user", "content": f"number {i}"}]}
        response = await http.post("/chat/completions", json=body)
        content: str = response.json()["choices"][0]["message"]["content"]
        return content

    answers = await asyncio.gather(*(ask(i) for i in range(20)))
    assert answers == [f"You said: number {i}" for i in range(20)]


async def test_a_request_too_large_for_temporals_history_is_still_answered(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    """Under the body limit, everything runs: a request's input over Temporal's 2 MB payload
    limit travels through Redis, sealed, and its history holds a reference (offload.py)."""
    prompt = "x" * 3_000_000  # one long word: one token for the demo engine
    chat = await http.post(
        "/chat/completions",
        json={"model": "demo", "messages": [{"role": "user", "content": prompt}]},
    )
    assert chat.status_code == 200, chat.text[:300]
    assert chat.json()["choices"][0]["message"]["content"] == f"You said: {prompt}"
    euros = await http.post("/embeddings", json={"model": "demo", "input": "€" * 900_000})
    assert euros.status_code == 200, euros.text[:300]  # 2.7 MB of UTF-8
    redis = Redis.from_url(stack.redis_url)
    kept = [k async for k in redis.scan_iter(match="tiller:payload:*")]
    assert kept  # the large inputs, sealed
    sample = await redis.get(kept[0])
    await redis.aclose()
    assert isinstance(sample, bytes) and b"xxxxxxxx" not in sample
    assert "€".encode() * 8 not in sample


async def test_the_openai_sdk_maps_each_4xx_to_its_error_class(stack: Stack) -> None:
    """What the SDK raises for each refusal, as its users catch it."""
    import openai

    store = KeyStore(Redis.from_url(stack.redis_url), "tiller:")
    viewer = await store.issue("viewer-of-nothing", role="viewer")
    limited = await store.issue("one-per-minute", rpm=1)
    await store.redis.aclose()

    opened: list[openai.AsyncOpenAI] = []

    def client(key: str) -> openai.AsyncOpenAI:
        opened.append(openai.AsyncOpenAI(base_url=stack.base_url, api_key=key, max_retries=0))
        return opened[-1]

    hello: Any = HELLO
    cases: list[tuple[str, type[openai.APIStatusError], Any]] = [
        (
            "400",
            openai.BadRequestError,
            client(stack.admin_key).chat.completions.create(model="demo", messages=[]),
        ),
        (
            "401",
            openai.AuthenticationError,
            client("tk-nobody").chat.completions.create(model="demo", messages=hello),
        ),
        (
            "403",
            openai.PermissionDeniedError,
            client(viewer.api_key).chat.completions.create(model="demo", messages=hello),
        ),
        (
            "404",
            openai.NotFoundError,
            client(stack.admin_key).chat.completions.create(model="nope", messages=hello),
        ),
    ]
    seen = []
    for status, kind, call in cases:
        with pytest.raises(kind) as caught:
            await call
        seen.append(f"{status}: {type(caught.value).__name__}")
        assert caught.value.status_code == int(status)
    first = client(limited.api_key).chat.completions
    await first.create(model="demo", messages=hello)
    with pytest.raises(openai.RateLimitError) as limited_error:
        await first.create(model="demo", messages=hello)
    seen.append(f"429: {type(limited_error.value).__name__}")
    for each in opened:
        await each.close()
    print("\n" + "; ".join(seen))
