"""Background requests: answered later by id, resumable by Last-Event-ID, and surviving the
gateway that took them (another gateway settles them)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from redis.asyncio import Redis

from tests.e2e.test_metrics import scrape, value
from tests.support import (
    Stack,
    chunks_of,
    free_port,
    start_service,
    stop_service,
    text_of,
    wait_for,
)
from tiller.quota.keys import KeyStore

WORDS = " ".join(f"w{i}" for i in range(2000))  # about 2 s of streaming at 1 ms a token
EXPECTED = f"You said: {WORDS}"


def body(content: str = WORDS, **extra: object) -> dict[str, object]:
    return {"model": "demo", "messages": [{"role": "user", "content": content}], **extra}


async def new_key(stack: Stack, name: str, concurrency: int = 0) -> str:
    redis = Redis.from_url(stack.redis_url)
    key = await KeyStore(redis, "tiller:").issue(name, concurrency=concurrency)
    await redis.aclose()
    return key.api_key


async def poll_until_done(http: httpx.AsyncClient, request_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while True:
        response = await http.get(f"/chat/completions/{request_id}")
        assert response.status_code == 200, response.text
        found: dict[str, object] = response.json()
        if found["status"] != "in_progress":
            return found
        assert time.monotonic() < deadline, "the background request never finished"
        await asyncio.sleep(0.2)


async def test_a_background_request_is_fetched_by_id(stack: Stack) -> None:
    key = await new_key(stack, "bg-owner")
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as http:
        submitted = await http.post("/chat/completions", json=body("later", background=True))
        assert submitted.status_code == 202, submitted.text
        queued = submitted.json()
        assert queued["status"] == "in_progress" and queued["object"] == "chat.completion"
        assert submitted.headers["location"] == f"/v1/chat/completions/{queued['id']}"
        done = await poll_until_done(http, queued["id"])
        # Someone else's key cannot see it.
        other = {"authorization": f"Bearer {await new_key(stack, 'bg-stranger')}"}
        url = f"/chat/completions/{queued['id']}"
        strangers = [
            await http.get(url, headers=other),
            await http.get(f"{url}/stream", headers=other),
            await http.post(f"{url}/cancel", headers=other),
        ]
        still = await http.get(url)
    assert done["status"] == "completed"
    assert done["choices"][0]["message"]["content"] == "You said: later"  # type: ignore[index]
    assert done["usage"]["completion_tokens"] == 3  # type: ignore[index]
    for stranger in strangers:
        assert stranger.status_code == 404 and stranger.json()["error"]["param"] == "id"
    assert still.json()["status"] == "completed"  # the stranger's cancel changed nothing


async def test_a_stream_resumes_after_the_last_event_id(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    first: list[str] = []
    last_id = ""
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as http:
        async with http.stream(
            "POST", "/chat/completions", json=body(background=True, stream=True)
        ) as response:
            assert response.status_code == 200
            request_id = response.headers["x-request-id"]
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    last_id = line[4:]
                first.append(line)
                if len(text_of(first)) > 300 and line == "":
                    break  # the connection drops mid-answer, after a whole event
        # The answer goes on without the client (a background request is not cancelled) ...
        async with http.stream(
            "GET", f"/chat/completions/{request_id}/stream", headers={"last-event-id": last_id}
        ) as resumed:
            assert resumed.status_code == 200
            rest = [line async for line in resumed.aiter_lines()]
        # Reconnecting after the last event (as a browser's EventSource does) just ends.
        done_id = [line[4:] for line in rest if line.startswith("id: ")][-1]
        started = time.monotonic()
        after_end = await http.get(
            f"/chat/completions/{request_id}/stream", headers={"last-event-id": done_id}
        )
        after_end_seconds = time.monotonic() - started
    assert [line for line in after_end.text.splitlines() if line] == ["data: [DONE]"]
    assert after_end_seconds < 2
    print(
        f"\nfirst connection: {len(text_of(first))} characters up to event {last_id}; "
        f"resumed: {len(text_of(rest))} more; whole: {text_of(first) + text_of(rest) == EXPECTED}"
    )
    assert 300 < len(text_of(first)) < len(EXPECTED)
    assert text_of(first) + text_of(rest) == EXPECTED  # whole, and nothing twice
    assert rest[-1] == "data: [DONE]" or rest[-2] == "data: [DONE]"
    assert not any((c := chunks_of(line)) and "error" in c for line in rest)


async def test_a_stream_id_from_elsewhere_is_refused(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as http:
        submitted = await http.post("/chat/completions", json=body("hi", background=True))
        request_id = submitted.json()["id"]
        bad = await http.get(
            f"/chat/completions/{request_id}/stream", headers={"last-event-id": "yesterday"}
        )
        # Digits, but past what Redis takes (2^64 - 1): refused here, not by the shared reader.
        huge = await http.get(
            f"/chat/completions/{request_id}/stream",
            headers={"last-event-id": "99999999999999999999-0"},
        )
        missing = await http.get("/chat/completions/chatcmpl-nothing-here/stream")
    for refused in (bad, huge):
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "Last-Event-ID"
    assert missing.status_code == 404


async def test_a_background_request_can_be_cancelled(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as http:
        submitted = await http.post("/chat/completions", json=body(background=True, stream=False))
        request_id = submitted.json()["id"]
        await asyncio.sleep(0.3)
        cancelled = await http.post(f"/chat/completions/{request_id}/cancel")
        assert cancelled.status_code == 200
        done = await poll_until_done(http, request_id)
    assert done["status"] == "cancelled", done
    assert done["error"]["code"] == "cancelled"  # type: ignore[index]


async def test_a_failed_background_request_counts_one_error_however_many_read_it(
    stack: Stack,
) -> None:
    metrics_url = f"http://127.0.0.1:{stack.gateway_port}/metrics"
    errors, in_flight = "tiller_answer_errors_total", "tiller_requests_in_flight"
    before = scrape(metrics_url)
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    too_long = " ".join(["word"] * 5000)  # past the demo engine's context: its 400, not retried
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as http:
        submitted = await http.post("/chat/completions", json=body(too_long, background=True))
        request_id = submitted.json()["id"]

        async def read() -> list[str]:
            async with http.stream("GET", f"/chat/completions/{request_id}/stream") as response:
                return [line async for line in response.aiter_lines()]

        # Two clients read it besides the gateway's own watcher.
        for lines in await asyncio.gather(read(), read()):
            assert any((c := chunks_of(line)) and "error" in c for line in lines), lines
        assert (await poll_until_done(http, request_id))["status"] == "failed"
    after = scrape(metrics_url)
    assert value(after, errors, model="demo") - value(before, errors, model="demo") == 1
    assert value(after, in_flight, model="demo") == 0


@dataclass
class Gateway:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture
async def own_gateway(stack: Stack) -> AsyncIterator[list[Gateway]]:
    """Gateways this test starts and kills, beside the stack's; the list holds each run."""
    runs: list[Gateway] = []
    yield runs
    for run in runs:
        stop_service(run.process)


def start_gateway(stack: Stack, port: int, grpc_port: int, runs: list[Gateway]) -> Gateway:
    process = start_service(
        stack,
        "tiller.gateway",
        stack.data_dir / "logs" / f"gateway-own-{len(runs)}.log",
        TILLER_GATEWAY_PORT=str(port),
        TILLER_GATEWAY_GRPC_PORT=str(grpc_port),
        TILLER_GATEWAY_BACKGROUND_LEASE_SECONDS="1",
    )
    gateway = Gateway(port, process)
    runs.append(gateway)

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_for(ready, timeout=60), "the gateway did not start"
    return gateway


async def test_a_background_request_outlives_its_gateway(
    stack: Stack, own_gateway: list[Gateway]
) -> None:
    port, grpc_port = free_port(), free_port()
    gateway = start_gateway(stack, port, grpc_port, own_gateway)
    key = await new_key(stack, "bg-one-at-a-time", concurrency=1)
    headers = {"authorization": f"Bearer {key}"}
    words = " ".join(f"w{i}" for i in range(3500))  # about 4 s: it runs on past the restart
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=30) as http:
        submitted = await http.post("/chat/completions", json=body(words, background=True))
        assert submitted.status_code == 202, submitted.text
        request_id = submitted.json()["id"]
    os.kill(gateway.process.pid, signal.SIGKILL)  # the gateway dies while the answer runs
    gateway.process.wait()
    restarted = start_gateway(stack, port, grpc_port, own_gateway)
    async with httpx.AsyncClient(base_url=restarted.base_url, headers=headers, timeout=30) as http:
        done = await poll_until_done(http, request_id)
        content = done["choices"][0]["message"]["content"]  # type: ignore[index]
        print(f"\nafter the restart: {done['status']}, {len(content)} characters")
        assert done["status"] == "completed"
        assert content == f"You said: {words}"
        # The restarted gateway settled it: the key's one concurrency slot is free again
        # (otherwise it would stay taken until the lease expired, a minute after the gateway
        # that renewed it died).
        again = await http.post("/chat/completions", json=body("again"))
    assert again.status_code == 200, again.text


async def test_two_clients_stream_one_background_request_live(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as http:
        submitted = await http.post("/chat/completions", json=body(background=True))
        url = f"/chat/completions/{submitted.json()['id']}/stream"

        async def read() -> tuple[float, str]:
            lines: list[str] = []
            first = 0.0
            async with http.stream("GET", url) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if not first and text_of([line]):
                        first = time.monotonic()
                    lines.append(line)
            return first, text_of(lines)

        started = time.monotonic()
        (first_a, text_a), (first_b, text_b) = await asyncio.gather(read(), read())
        ended = time.monotonic()
    assert text_a == EXPECTED, text_a[:80]
    assert text_b == EXPECTED, text_b[:80]
    # Both were live: their first words came long before the answer's end (about 2 s).
    assert max(first_a, first_b) - started < (ended - started) / 2


async def test_an_answer_that_was_not_streamed_streams_in_one_chunk(stack: Stack) -> None:
    # `failover` cannot continue partial answers (its fallback never does), so its background
    # answers are not streamed to Redis, and a failed attempt simply starts over.
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as http:
        submitted = await http.post(
            "/chat/completions",
            json={
                "model": "failover",
                "messages": [{"role": "user", "content": "in one go"}],
                "background": True,
            },
        )
        request_id = submitted.json()["id"]
        done = await poll_until_done(http, request_id)
        streamed = await http.get(f"/chat/completions/{request_id}/stream")
    assert done["status"] == "completed"
    chunks = [c for line in streamed.text.splitlines() if (c := chunks_of(line))]
    assert text_of(streamed.text.splitlines()) == "You said: in one go"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, "stop"]
