"""The inference activity as a standalone Temporal activity on the real Temporal dev server,
against the real demo engine, with the answer published to the real Redis; each test on its own
task queue."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from redis.asyncio import Redis
from temporalio.client import ActivityFailureError, Client
from temporalio.exceptions import ApplicationError

from tests.support import TEST_SEALER, Stack, closed_port, temporal_client
from tiller.common.errors import (
    Cancelled,
    ContextLengthExceeded,
    EngineFailedMidStream,
    EngineStayedDown,
    EngineUnreachable,
    TillerError,
)
from tiller.contract.answer_stream import EventWriter, Superseded, read
from tiller.contract.events import Claim, Delta, Done, Event, Failed, stream_key
from tiller.contract.names import GENERATE_ACTIVITY
from tiller.contract.requests import Chat, InferenceInput, Message, Retry, Sampling, Target
from tiller.contract.results import InferenceResult, Usage
from tiller.contract.runs import activity_options
from tiller.protos.router.v1 import router_pb2
from tiller.worker.activities import InferenceActivities
from tiller.worker.adapters import Adapters
from tiller.worker.adapters.base import AdapterResources
from tiller.worker.replicas import QueueReplicas
from tiller.worker.server import activity_worker


@dataclass
class Env:
    client: Client
    redis: Redis
    queue: str
    demo_endpoint: str

    def request(
        self,
        content: str,
        *,
        endpoint: str | None = None,
        stream: bool = True,
        resume: bool = False,
        target_index: int = 0,
        max_tokens: int | None = None,
    ) -> InferenceInput:
        request_id = f"test-{uuid.uuid4().hex}"
        return InferenceInput(
            request_id=request_id,
            model="demo",
            ask=Chat((Message("user", content),)),
            sampling=Sampling(max_tokens=max_tokens),
            stream=stream,
            target=Target(
                "d1", "openai", endpoint or self.demo_endpoint, "demo", self.queue, "demo", resume
            ),
            target_index=target_index,
            events_key=stream_key("test:", request_id),
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

    async def published(self, request: InferenceInput, claims: bool = False) -> list[Event]:
        """The request's stream; without the claims later attempts made unless asked."""
        published = await read(self.redis, request.events_key, "0", 1, sealer=TEST_SEALER)
        return [e for e in published if claims or not isinstance(e, Claim)]


@pytest.fixture
async def env(stack: Stack) -> AsyncIterator[Env]:
    client = await temporal_client(stack)
    redis = Redis.from_url(stack.redis_url)
    http = aiohttp.ClientSession()
    adapters = Adapters(AdapterResources(http))
    activities = InferenceActivities(
        redis, adapters, event_ttl_seconds=60, heartbeat_interval_seconds=1, sealer=TEST_SEALER
    )
    queue = f"test-{uuid.uuid4().hex[:8]}"
    demo = f"http://127.0.0.1:{stack.demo_port}/v1"
    replicas = QueueReplicas(queue)
    # The queue's bound; the requests here name a deployment it does not list (`d1`), so each
    # goes to its own target's endpoint, as an activity run on its own does.
    listed = router_pb2.Deployment(
        name="listed", adapter="openai", endpoint=demo, task_queue=queue, max_concurrency=4
    )
    replicas.update([("demo", listed)])
    activities.queues[queue] = replicas
    async with activity_worker(client, activities, replicas, grace=1):  # activities only
        yield Env(client, redis, queue, demo)
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
    *deltas, done = published
    assert isinstance(done, Done) and all(isinstance(e, Delta) for e in deltas)
    assert 1 <= len(deltas) <= 5
    assert "".join(e.text for e in deltas if isinstance(e, Delta)) == result.text
    assert done.result.usage == Usage(3, 5)
    assert await env.redis.ttl(request.events_key) > 0  # the answer does not stay in Redis


async def test_non_streaming_publishes_only_the_result(env: Env) -> None:
    request = env.request("whole answer", stream=False)
    result = await env.run(request)
    published = await env.published(request)
    [done] = published
    assert isinstance(done, Done)
    assert done.result.text == result.text == "You said: whole answer"


async def test_an_unreachable_engine_with_somewhere_else_to_go_is_left_at_once(
    env: Env,
) -> None:
    down = env.request("anyone?", endpoint=f"http://127.0.0.1:{closed_port()}/v1")
    request = dataclasses.replace(down, next_targets=(env.request("").target,))
    with pytest.raises(ActivityFailureError) as caught:
        await env.run(request)
    error = TillerError.from_failure(caught.value.cause)
    assert type(error) is EngineUnreachable  # the next deployment's turn
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError) and cause.non_retryable  # no attempt burnt
    assert await attempts(env.client, request.request_id) == 1
    assert await env.published(request) == []  # the client hears from the next deployment


async def test_an_unreachable_engine_with_nowhere_else_to_go_is_waited_for_then_reported(
    env: Env,
) -> None:
    down = env.request("anyone?", endpoint=f"http://127.0.0.1:{closed_port()}/v1")
    request = dataclasses.replace(down, queue_timeout_seconds=1.5)
    started = time.monotonic()
    with pytest.raises(ActivityFailureError) as caught:
        await env.run(request)
    waited = time.monotonic() - started
    error = TillerError.from_failure(caught.value.cause)
    assert type(error) is EngineStayedDown and "queue timeout (1.5 s)" in error.message
    assert 1.4 < waited < 5  # it waited its queue timeout, then ended: no attempts burnt
    assert await attempts(env.client, request.request_id) == 1
    (published,) = await env.published(request)
    assert isinstance(published, Failed)
    assert published.error.reason == "EngineStayedDown"


async def test_a_request_waiting_for_its_engine_can_be_cancelled(env: Env) -> None:
    down = env.request("anyone?", endpoint=f"http://127.0.0.1:{closed_port()}/v1")
    request = dataclasses.replace(down, queue_timeout_seconds=60)
    handle = await env.client.start_activity(
        GENERATE_ACTIVITY,
        request,
        id=request.request_id,
        task_queue=env.queue,
        result_type=InferenceResult,
        **activity_options(request).as_kwargs(),
    )
    await asyncio.sleep(1.5)  # waiting for the engine, heartbeating
    started = time.monotonic()
    await handle.cancel()
    with pytest.raises(ActivityFailureError) as caught:
        await handle.result()
    print(
        f"\ncancelled while waiting for its engine: ended {time.monotonic() - started:.2f} s later"
    )
    assert type(TillerError.from_failure(caught.value.cause)) is Cancelled
    assert time.monotonic() - started < 5  # the next heartbeat (1 s) carries the cancel


async def test_a_request_that_cannot_succeed_is_not_retried(env: Env) -> None:
    request = env.request("word " * 5000)  # the demo engine's context is 4096 tokens
    with pytest.raises(ActivityFailureError) as caught:
        await env.run(request)
    error = TillerError.from_failure(caught.value.cause)
    assert type(error) is ContextLengthExceeded and "maximum context length" in error.message
    assert await attempts(env.client, request.request_id) == 1
    (published,) = await env.published(request)
    assert isinstance(published, Failed)
    assert published.error.reason == "ContextLengthExceeded"


async def earlier_attempt(env: Env, request: InferenceInput, *pieces: str) -> EventWriter:
    """What a first attempt streamed before its worker died."""
    first = EventWriter(env.redis, request.events_key, 60, fence=1, sealer=TEST_SEALER)
    for piece in pieces:
        await first.delta(piece)
    return first


async def test_a_later_attempt_continues_the_delivered_text_without_repeating_it(
    env: Env,
) -> None:
    request = env.request("please keep going", resume=True, target_index=1)
    first = await earlier_attempt(env, request, "You", " said:", " ple")
    result = await env.run(request)
    assert result.text == "You said: please keep going"
    published = await env.published(request, claims=True)
    text = "".join(e.text for e in published if isinstance(e, Delta))
    assert text == result.text  # what the client reads: whole, nothing twice
    assert [type(e) for e in published].count(Claim) == 1
    # The engine answered 3 more tokens after the 3 delivered; usage counts all 6 as answer.
    assert result.usage.completion_tokens == 6
    with pytest.raises(Superseded):  # the first attempt, had it survived, is fenced off
        await first.delta(" please")


async def test_max_tokens_counts_what_was_delivered(env: Env) -> None:
    request = env.request("one two three four", resume=True, target_index=1, max_tokens=4)
    await earlier_attempt(env, request, "You", " said:")
    result = await env.run(request)
    assert (result.text, result.finish_reason) == ("You said: one two", "length")


async def test_a_deployment_that_cannot_resume_fails_cleanly_mid_stream(env: Env) -> None:
    request = env.request("no resuming here", resume=False, target_index=1)
    await earlier_attempt(env, request, "You", " said:")
    with pytest.raises(ActivityFailureError) as caught:
        await env.run(request)
    assert type(TillerError.from_failure(caught.value.cause)) is EngineFailedMidStream
    assert await attempts(env.client, request.request_id) == 1  # not retried: it cannot help
    published = await env.published(request)
    assert isinstance(published[-1], Failed)
    assert published[-1].error.reason == "EngineFailedMidStream"


async def test_a_finished_answer_is_returned_not_generated_again(env: Env) -> None:
    request = env.request("done already", resume=True, target_index=1)
    first = await earlier_attempt(env, request, "You said: done already")
    finished = InferenceResult("You said: done already", "stop", Usage(2, 4), "d1", "demo")
    await first.done(finished)
    result = await env.run(request)
    assert result == finished
