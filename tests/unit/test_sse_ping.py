"""The gateway's SSE keep-alive pings, read by the official openai SDK's own event decoder: a
ping is no event. A ping ended by a blank line (sse-starlette's default) made one with no data
once the stream had sent an `id:`, which the SDK failed to parse as JSON: every SDK stream that
lasted past the first ping broke."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from openai._streaming import SSEDecoder
from sse_starlette import ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from tiller.gateway import sse


async def quiet_between_events() -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent(data='{"n": 1}', id="1-0")
    await asyncio.sleep(0.3)  # a few pings' worth of silence
    yield ServerSentEvent(data='{"n": 2}', id="2-0")


async def stream(request: Request) -> Response:
    return sse.event_source(quiet_between_events(), headers={})


def test_pings_between_events_are_no_events_to_the_openai_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "SSE_PING_SECONDS", 0.05)
    with TestClient(Starlette(routes=[Route("/", stream)])) as client:
        body = client.get("/").content
    assert body.count(b": ping") >= 2  # it did ping
    events = list(SSEDecoder().iter_bytes(iter([body])))
    assert [(e.id, e.data) for e in events] == [("1-0", '{"n": 1}'), ("2-0", '{"n": 2}')]
