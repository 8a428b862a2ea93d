"""Durable execution end to end: a worker killed mid-answer loses nothing, a failing deployment
fails over to the next and to a fallback model, and with every deployment down the client gets a
clear error in bounded time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus

from tests.support import (
    TEST_SEALER,
    Stack,
    chunks_of,
    start_service,
    stop_service,
    temporal_client,
    text_of,
)
from tiller.contract.answer_stream import read
from tiller.contract.events import Claim, Delta, stream_key


@pytest.fixture
async def durable_workers(stack: Stack) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """Two workers of their own for the `durable` model's queue, so one can be killed."""
    logs = stack.data_dir / "logs"
    # A stopping worker gives running attempts 1 s, then Temporal moves them on.
    queue = {
        "TILLER_WORKER_TASK_QUEUES": "test.durable",
        "TILLER_WORKER_SHUTDOWN_GRACE_SECONDS": "1",
    }
    workers = [
        start_service(stack, "tiller.worker", logs / f"durable-worker-{i}.log", **queue)
        for i in range(2)
    ]
    try:
        await pollers(stack, "test.durable", len(workers))
        yield workers
    finally:
        for worker in workers:
            stop_service(worker)


async def pollers(stack: Stack, queue: str, count: int) -> None:
    client = await temporal_client(stack)
    deadline = time.monotonic() + 60
    while True:
        reply = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace="default",
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        if len({p.identity for p in reply.pollers}) >= count:
            return
        assert time.monotonic() < deadline, f"{count} workers never polled {queue}"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
async def test_a_worker_stopped_mid_answer_loses_nothing(
    stack: Stack, durable_workers: list[subprocess.Popen[bytes]], stop: signal.Signals
) -> None:
    words = " ".join(f"w{i}" for i in range(2500))  # about 2.5 s of streaming at 1 ms a token
    expected = f"You said: {words}"
    body = {"model": "durable", "messages": [{"role": "user", "content": words}], "stream": True}
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    temporal = await temporal_client(stack)
    received: list[str] = []
    killed = None
    async with (
        httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as http,
        http.stream("POST", "/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        async for line in response.aiter_lines():
            chunk = chunks_of(line)
            if chunk is None:
                continue
            assert "error" not in chunk, chunk
            for choice in chunk.get("choices") or []:
                received.append(choice["delta"].get("content") or "")
            if killed is None and len("".join(received)) > 200:
                # Mid-answer: kill the worker serving it (its identity is "pid@host").
                handle = temporal.get_activity_handle(request_id)
                serving = (await handle.describe()).last_worker_identity
                killed = int(str(serving).split("@")[0])
                assert killed in [w.pid for w in durable_workers]
                os.kill(killed, stop)
                sent_before_kill = len("".join(received))
    text = "".join(received)
    print(
        f"\n{stop.name} to worker pid {killed} after {sent_before_kill} of {len(expected)} characters; "
        f"received {len(text)} characters, equal to the full answer: {text == expected}"
    )
    assert killed is not None and sent_before_kill < len(expected)
    assert text == expected  # byte for byte: nothing missing, nothing twice
    description = await temporal.get_activity_handle(request_id).describe()
    assert description.attempt == 2
    # The second attempt claimed the stream and continued it (not "found it finished").
    redis = Redis.from_url(stack.redis_url)
    published = await read(redis, stream_key("tiller:", request_id), "0", 1, sealer=TEST_SEALER)
    await redis.aclose()
    kinds = [type(e) for e in published]
    claim = kinds.index(Claim)
    continued = "".join(e.text for e in published[claim:] if isinstance(e, Delta))
    print(f"the second attempt continued with {len(continued)} characters after its claim")
    assert Delta in kinds[:claim] and continued and expected.endswith(continued)
    survivor = next(w for w in durable_workers if w.pid != killed)
    assert str(description.last_worker_identity).startswith(f"{survivor.pid}@")


async def ask(
    http: httpx.AsyncClient, model: str, content: str, stream: bool = False
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}
    return await http.post("/chat/completions", json=body)


async def steps(temporal: Client, workflow_id: str) -> tuple[list[str], list[int]]:
    """A failover workflow's steps: each activity's task queue, and its last attempt number."""
    history = [e async for e in temporal.get_workflow_handle(workflow_id).fetch_history_events()]
    queues = [
        e.activity_task_scheduled_event_attributes.task_queue.name
        for e in history
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history
        if e.HasField("activity_task_started_event_attributes")
    ]
    return queues, attempts


async def test_failing_deployments_fail_over_to_the_fallback_model(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    temporal = await temporal_client(stack)
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as http:
        plain, streamed = await asyncio.gather(
            ask(http, "failover", "still there?"), ask(http, "failover", "streaming?", True)
        )
    assert plain.status_code == 200, plain.text
    assert plain.json()["choices"][0]["message"]["content"] == "You said: still there?"
    assert streamed.status_code == 200
    assert text_of(streamed.text.splitlines()) == "You said: streaming?"
    # The workflow tried the refused deployment once (an endpoint nothing answers at is ejected
    # at once, and the request goes on without spending its attempts there), the 500s one
    # twice, then the fallback.
    handle = temporal.get_workflow_handle(plain.headers["x-request-id"])
    await handle.result()  # it closes a moment after the answer was published
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    queues, attempts = await steps(temporal, plain.headers["x-request-id"])
    print(f"\nfailover workflow: task queues {queues}, attempts {attempts}")
    assert queues == ["test.refused", "test.failing", "test.demo"]
    assert attempts == [1, 2, 1]


async def test_every_deployment_down_is_a_clear_error_in_bounded_time(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as http:
        started = time.monotonic()
        plain = await ask(http, "all-down", "hello?")
        plain_seconds = time.monotonic() - started
        streamed = await ask(http, "all-down", "hello?", stream=True)
    print(f"\nall deployments down: {plain.status_code} after {plain_seconds:.2f} s: {plain.text}")
    assert plain.status_code == 503, plain.text
    error = plain.json()["error"]
    assert "500" in error["message"] and error["type"]
    # The configured bound: 2 deployments x (5 s queueing + 2 attempts x (5 s + 0.2 s)) = 30.8 s;
    # refused connections and 500s fail fast, so it is far inside that.
    assert plain_seconds < 30.8
    assert streamed.status_code == 503 and streamed.json()["error"]["message"] == error["message"]


async def test_a_stream_broken_where_it_cannot_resume_is_continued_on_the_next_deployment(
    stack: Stack,
) -> None:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    words = " ".join(f"w{i}" for i in range(400))
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as http:
        streamed = await ask(http, "mixed", words, stream=True)
    assert streamed.status_code == 200
    text = text_of(streamed.text.splitlines())
    assert text == f"You said: {words}", text[-200:]
    temporal = await temporal_client(stack)
    queues, _ = await steps(temporal, streamed.headers["x-request-id"])
    print(f"\nbroken mid-stream on test.breaking, continued on: {queues}; text whole")
    assert queues == ["test.breaking", "test.demo"]


async def test_a_request_nobody_picks_up_gets_503_at_the_queue_timeout(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as http:
        started = time.monotonic()
        waited = await ask(http, "unserved", "anyone?")
        seconds = time.monotonic() - started
    print(f"\nno worker: {waited.status_code} after {seconds:.2f} s: {waited.text}")
    assert waited.status_code == 503
    assert "No worker for this model picked up the request in time" in waited.text
    assert seconds < 4  # the model's queue_timeout_seconds is 1; the gateway checks just after
