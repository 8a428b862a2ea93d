"""The REST edge in-process: the gateway's ASGI app driven message by message, over the stack's
real quota, router, Temporal, workers and demo engine.

What a socket hides is visible here: the exact SSE framing, the headers of each kind of error,
and a client that leaves at a chosen moment (an `http.disconnect` sent mid-stream or while the
answer has not begun), after which the request must be stopped and settled, not left running.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from temporalio.client import ActivityExecutionStatus, Client

from tests.support import Stack, gateway_settings, temporal_client, wait_for
from tiller.gateway.http_api import create_app
from tiller.gateway.inference import Inference
from tiller.gateway.upstreams import Upstreams


@pytest.fixture
async def app(stack: Stack) -> AsyncIterator[Starlette]:
    settings = gateway_settings(stack)
    inference = Inference(await Upstreams.connect(settings), settings)
    inference.start()
    yield create_app(inference)
    await inference.drain()
    await inference.close()
    await inference.up.close()


class Exchange:
    """One HTTP request to the ASGI app, with the client's side under the test's control."""

    def __init__(self, app: Starlette, path: str, body: dict[str, Any], key: str) -> None:
        self.sent: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.inbox.put_nowait({"type": "http.request", "body": orjson.dumps(body)})
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"authorization", f"Bearer {key}".encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
        }
        self.task = asyncio.ensure_future(app(scope, self.inbox.get, self._send))

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(dict(message))
        self.arrived.set()

    def leave(self) -> None:
        """The client hangs up."""
        self.inbox.put_nowait({"type": "http.disconnect"})

    async def finished(self) -> None:
        await asyncio.wait_for(self.task, 30)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.sent[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    async def body_contains(self, part: bytes) -> None:
        while part not in self.body:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 30)


def chat(content: str, **fields: Any) -> dict[str, Any]:
    return {"model": "demo", "messages": [{"role": "user", "content": content}], **fields}


async def activity_status(temporal: Client, request_id: str) -> ActivityExecutionStatus:
    return (await temporal.get_activity_handle(request_id).describe()).status


def in_flight(model: str) -> float:
    return REGISTRY.get_sample_value("tiller_requests_in_flight", {"model": model}) or 0.0


async def test_a_stream_is_framed_as_openai_sse_with_an_id_per_delta(
    app: Starlette, stack: Stack
) -> None:
    exchange = Exchange(app, "/v1/chat/completions", chat("frame me", stream=True), stack.admin_key)
    await exchange.finished()
    assert exchange.status == 200
    assert exchange.headers["content-type"].startswith("text/event-stream")
    assert exchange.headers["x-request-id"].startswith("chatcmpl-")
    events = [e for e in exchange.body.decode().split("\n\n") if e and not e.startswith(":")]
    assert events[-1] == "data: [DONE]"
    chunks = []
    for event in events[:-1]:
        lines = event.split("\n")
        data = [line for line in lines if line.startswith("data: ")]
        ids = [line for line in lines if line.startswith("id: ")]
        assert len(data) == 1 and len(ids) <= 1, event  # one JSON chunk per event
        chunks.append((ids, orjson.loads(data[0].removeprefix("data: "))))
    first, last = chunks[0][1], chunks[-1][1]
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert last["choices"][0]["finish_reason"] == "stop"
    assert all(ids for ids, _ in chunks)  # every delta, and the end, can be resumed after
    text = "".join(c["choices"][0]["delta"].get("content", "") for _, c in chunks)
    assert text == "You said: frame me"
    assert {c["id"] for _, c in chunks} == {exchange.headers["x-request-id"]}


async def test_errors_are_openai_json_and_name_the_request(app: Starlette, stack: Stack) -> None:
    refused = Exchange(app, "/v1/chat/completions", chat("hi"), "tk-not-a-key")
    await refused.finished()
    assert refused.status == 401
    assert refused.headers["x-request-id"].startswith("req_")  # no run began: the edge's own
    assert orjson.loads(refused.body)["error"]["type"] == "invalid_request_error"
    failed = Exchange(
        app, "/v1/chat/completions", chat("hi", model="broken", stream=True), stack.admin_key
    )
    await failed.finished()
    # The engine is unreachable before the first token: a plain HTTP error, not a stream.
    assert failed.status == 503
    assert failed.headers["content-type"] == "application/json"
    assert failed.headers["x-request-id"].startswith("chatcmpl-")
    error = orjson.loads(failed.body)["error"]
    assert error["type"] == "server_error" and "Cannot reach the model engine" in error["message"]


async def test_a_client_leaving_mid_stream_stops_and_settles_its_request(
    app: Starlette, stack: Stack
) -> None:
    temporal = await temporal_client(stack)
    before = in_flight("demo")
    long = " ".join(f"w{i}" for i in range(3000))  # 3,000 tokens at 1 ms: about 3 s
    exchange = Exchange(app, "/v1/chat/completions", chat(long, stream=True), stack.admin_key)
    await exchange.body_contains(b"w1")  # a few tokens in
    request_id = exchange.headers["x-request-id"]
    assert in_flight("demo") == before + 1
    exchange.leave()
    await exchange.finished()
    assert b"[DONE]" not in exchange.body  # cut where the client left
    assert wait_for(lambda: in_flight("demo") == before, timeout=5)  # its lease is released
    for _ in range(100):
        if await activity_status(temporal, request_id) == ActivityExecutionStatus.CANCELED:
            break
        await asyncio.sleep(0.1)
    assert await activity_status(temporal, request_id) == ActivityExecutionStatus.CANCELED


async def test_a_client_leaving_before_its_answer_begins_cancels_it(
    app: Starlette, stack: Stack
) -> None:
    temporal = await temporal_client(stack)
    long = " ".join(f"w{i}" for i in range(3000))  # answered whole after about 3 s
    exchange = Exchange(app, "/v1/chat/completions", chat(long), stack.admin_key)
    await asyncio.sleep(0.5)
    assert not exchange.sent  # nothing yet: the answer is not whole
    exchange.leave()
    await exchange.finished()
    assert exchange.status == 499
    request_id = exchange.headers["x-request-id"]
    for _ in range(100):
        if await activity_status(temporal, request_id) == ActivityExecutionStatus.CANCELED:
            break
        await asyncio.sleep(0.1)
    assert await activity_status(temporal, request_id) == ActivityExecutionStatus.CANCELED
