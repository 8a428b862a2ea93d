"""The inference activity as a standalone Temporal activity on the real Temporal dev server,
against the real demo engine, with the answer published to the real Redis; each test on its own
task queue."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from redis.asyncio import Redis
from temporalio.client import ActivityFailureError, Client

from tests.support import Stack, closed_port
from tiller.common import events
from tiller.common.errors import ContextLengthExceeded, EngineUnavailable, TillerError
from tiller.worker.activities import InferenceActivities
from tiller.worker.adapters import KINDS, adapter_class
from tiller.worker.adapters.base import AdapterResources
from tiller.worker.server import build_workers
from tiller.worker.shared import (
    GENERATE_ACTIVITY,
    InferenceInput,
    InferenceResult,
    Message,
    Retry,
    Sampling,
    Target,
    activity_options,
)


@dataclass
class Env:
    client: Client
    redis: Redis
    queue: str
    demo_endpoint: str

    def request(
        self, content: str, *, endpoint: str | None = None, stream: bool = True
    ) -> InferenceInput:
        request_id = f"test-{uuid.uuid4().hex}"
        return InferenceInput(
            request_id=request_id,
            model="demo",
            messages=[Message("user", content)],
            sampling=Sampling(),
            stream=stream,
            target=Target("d1", "openai", endpoint or self.demo_endpoint, "demo", self.queue),
            events_key=events.stream_key("test:", request_id),
            timeout_seconds=10,
            retry=Retry(
                max_attempts=3, initial_interval_seconds=0.05, maximum_interval_seconds=0.1
            ),
        )

    async def run(self, request: InferenceInput) -> InferenceResult:
        result: InferenceResult = await self.client.execute_activity(
            GENERATE_ACTIVITY,
            request,
            id=request.request_id,
            task_queue=self.queue,
            result_type=InferenceResult,
            **activity_options(request).as_kwargs(),
        )
        return result

    async def published(self, request: InferenceInput) -> list[events.Event]:
        return await events.read(self.redis, request.events_key, "0", 1)


@pytest.fixture
async def env(stack: Stack) -> AsyncIterator[Env]:
    client = await Client.connect(stack.temporal_address)
    redis = Redis.from_url(stack.redis_url)
    http = aiohttp.ClientSession()
    adapters = {kind: adapter_class(kind)(AdapterResources(http)) for kind in KINDS}
    activities = InferenceActivities(
        redis, adapters, event_ttl_seconds=60, heartbeat_interval_seconds=1
    )
    queue = f"test-{uuid.uuid4().hex[:8]}"
    (worker,) = build_workers(client, activities, {queue: 4}, grace=1)
    async with worker:
        yield Env(client, redis, queue, f"http://127.0.0.1:{stack.demo_port}/v1")
    await http.close()
    await redis.aclose()


async def attempts(client: Client, activity_id: str) -> int:
    return (await client.get_activity_handle(activity_id).describe()).attempt


async def test_streamed_answer_is_published_as_deltas_then_done(env: Env) -> None:
    request = env.request("stream this please")
    result = await env.run(request)
    assert result.text == "You said: stream this please"
    assert (result.finish_reason, result.usage.prompt_tokens, result.usage.completion_tokens) == (
        "stop", 3, 5,
    )  # fmt: skip
    published = await env.published(request)
    # Five tokens, 1 ms apart: deltas that meet an append in flight share its successor.
    kinds = [e.kind for e in published]
    assert kinds[-1] == events.DONE and set(kinds[:-1]) == {events.DELTA}
    assert 1 <= len(kinds) - 1 <= 5
    assert "".join(e.data["text"] for e in published[:-1]) == result.text
    assert published[-1].data["result"]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5}
    assert await env.redis.ttl(request.events_key) > 0  # the answer does not stay in Redis


async def test_non_streaming_publishes_only_the_result(env: Env) -> None:
    request = env.request("whole answer", stream=False)
    result = await env.run(request)
    published = await env.published(request)
    assert [e.kind for e in published] == [events.DONE]
    assert published[0].data["result"]["text"] == result.text == "You said: whole answer"


async def test_an_engine_that_is_down_is_retried_then_reported(env: Env) -> None:
    request = env.request("anyone?", endpoint=f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(ActivityFailureError) as caught:
        await env.run(request)
    assert type(TillerError.from_failure(caught.value.cause)) is EngineUnavailable
    assert await attempts(env.client, request.request_id) == 3
    (published,) = await env.published(request)
    assert published.kind == events.ERROR
    assert published.data["error"]["reason"] == "EngineUnavailable"


async def test_a_request_that_cannot_succeed_is_not_retried(env: Env) -> None:
    request = env.request("word " * 5000)  # the demo engine's context is 4096 tokens
    with pytest.raises(ActivityFailureError) as caught:
        await env.run(request)
    error = TillerError.from_failure(caught.value.cause)
    assert type(error) is ContextLengthExceeded and "maximum context length" in error.message
    assert await attempts(env.client, request.request_id) == 1
    (published,) = await env.published(request)
    assert published.data["error"]["reason"] == "ContextLengthExceeded"
