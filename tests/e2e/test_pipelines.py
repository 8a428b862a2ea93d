"""Pipeline models (services/pipelines/) through the whole stack: the openai SDK, SSE and gRPC
in front, the steps on the demo engine behind, the steps' history read back from Temporal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from redis.asyncio import Redis
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from tests.support import Stack, temporal_client, text_of
from tiller.cli.processes import find_binary
from tiller.common.grpc_client import channel
from tiller.demo_engine.generation import text_tokens
from tiller.protos.inference.v1 import inference_pb2, inference_pb2_grpc
from tiller.quota.keys import KeySpec, KeyStore


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.base_url, api_key=stack.admin_key, max_retries=0) as client:
        yield client


def said(text: str) -> str:
    """The demo engine's answer to a last user message `text`."""
    return f"You said: {text}"


def ask(question: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": question}]


def stream(client: openai.OpenAI, model: str, question: str) -> tuple[str, str, int, int]:
    """The streamed answer, its request id, and its usage (prompt, completion)."""
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=ask(question),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    pieces = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert usage is not None and len(pieces) >= 2  # streamed, not one block
    return text, raw.headers["x-request-id"], usage.prompt_tokens, usage.completion_tokens


async def step_history(stack: Stack, request_id: str) -> list[tuple[str, int, str]]:
    """The workflow's activities as its history has them: (activity id, attempt that
    finished, the last failure's message before it)."""
    client = await temporal_client(stack)
    handle = client.get_workflow_handle(request_id)
    # The client has the answer a moment before the workflow closes (the final step publishes
    # it, then reports), and an activity's started event is written when it closes.
    await handle.result()
    history = await handle.fetch_history()
    scheduled: dict[int, str] = {}
    steps = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_id
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            failure = started.last_failure
            message = failure.message  # "Encoded failure": sealed, opened with the keys
            if failure.HasField("encoded_attributes"):
                message = str(await client.data_converter.decode_failure(failure))
            steps.append((scheduled[started.scheduled_event_id], started.attempt, message))
    return steps


async def test_draft_then_refine_streams_the_rewrite_and_shows_each_step(
    stack: Stack, client: openai.OpenAI
) -> None:
    question = "Why is the sky blue?"
    text, request_id, _, completion = await asyncio.to_thread(stream, client, "careful", question)
    draft = said(question)
    critique = said(f"Question:\n{question}\n\nDraft answer:\n{draft}")
    rewrite = said(f"Question:\n{question}\n\nDraft answer:\n{draft}\n\nCritique:\n{critique}")
    assert text == rewrite  # only the final step reached the client, whole
    # The caller is charged for every step, not just the one it saw.
    assert completion == sum(text_tokens(t) for t in (draft, critique, rewrite))
    steps = await step_history(stack, request_id)
    assert [s[0] for s in steps] == [
        "route@demo",
        "draft@demo-local",
        "route@reviewer",
        "critique@reviewer-local",
        "rewrite@reviewer-local",
    ]
    print(f"\n{request_id}: {[s[0] for s in steps]}\n{text}")


async def test_a_step_whose_engine_fails_once_is_retried_and_the_answer_is_whole(
    stack: Stack, client: openai.OpenAI
) -> None:
    question = "Is a retried step seen by the client?"
    text, request_id, _, _ = await asyncio.to_thread(stream, client, "careful-flaky", question)
    draft = said(question)
    critique = said(f"Question:\n{question}\n\nDraft answer:\n{draft}")
    assert text == said(f"Question:\n{question}\n\nDraft answer:\n{draft}\n\nCritique:\n{critique}")
    steps = dict((s[0], s[1:]) for s in await step_history(stack, request_id))
    attempt, failure = steps["draft@flaky-local"]
    assert attempt == 2 and "failed once" in failure  # the engine's 500, then the retry
    assert steps["rewrite@reviewer-local"][0] == 1
    print(f"\n{request_id}: draft finished on attempt {attempt} after: {failure}")


async def test_classify_then_generate_answers_with_the_labelled_route(
    stack: Stack, client: openai.OpenAI
) -> None:
    # The demo engine stands in for the classifier: it echoes, so the label is in the question.
    for question, label, model in [
        ("Show me python code for a loop", "code", "reviewer-local"),
        ("Good morning", "general", "demo-local"),
    ]:
        text, request_id, _, _ = await asyncio.to_thread(stream, client, "helpdesk", question)
        assert text == said(question)
        ids = [s[0] for s in await step_history(stack, request_id)]
        assert ids[:2] == ["route@demo", "classify@demo-local"]
        assert ids[-1] == f"answer-{label}@{model}"
    received = httpx.get(f"http://127.0.0.1:{stack.demo_port}/received").json()["data"]
    code = next(
        r["body"]["messages"]
        for r in reversed(received)
        if r["body"]["messages"][-1]["content"] == "Show me python code for a loop"
        and r["body"]["messages"][0]["role"] == "system"
    )
    assert code[0]["content"] == "You are a senior engineer. Answer with code."


async def test_fan_out_asks_every_model_and_merges_their_answers(
    stack: Stack, client: openai.OpenAI
) -> None:
    question = "Name a prime number"
    text, request_id, _, _ = await asyncio.to_thread(stream, client, "panel", question)
    one = two = said(question)
    assert text == said(f"Question:\n{question}\n\nAnswer 1:\n{one}\n\nAnswer 2:\n{two}")
    ids = {s[0] for s in await step_history(stack, request_id)}
    assert {"ask-1@demo-local", "ask-2@reviewer-local", "merge@demo-local"} <= ids


async def test_summarize_then_answer_gives_the_answer_model_the_summary_and_last_message(
    stack: Stack, client: openai.OpenAI
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    reply = await asyncio.to_thread(
        client.chat.completions.with_raw_response.create, model="long-chats", messages=messages
    )
    assert reply.parse().choices[0].message.content == said("What is my name?")
    ids = [s[0] for s in await step_history(stack, reply.headers["x-request-id"])]
    assert ids == ["route@demo", "summarize@demo-local", "route@reviewer", "answer@reviewer-local"]
    received = httpx.get(f"http://127.0.0.1:{stack.demo_port}/received").json()["data"]
    answered = next(
        r["body"]["messages"]
        for r in reversed(received)
        if r["body"]["messages"][-1]["content"] == "What is my name?"
    )
    summary = said("Summarize:\nuser: My name is Ada.\nassistant: Hello Ada.")
    assert answered[0] == {
        "role": "system",
        "content": f"The conversation so far, summarized: {summary}",
    }


def test_a_step_that_fails_for_good_fails_the_request_with_its_error(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="panel-down", messages=ask("anyone?"), timeout=30)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["x-request-id"].startswith("chatcmpl-")


async def test_fan_out_over_one_model_twice_answers(stack: Stack, client: openai.OpenAI) -> None:
    text, request_id, _, _ = await asyncio.to_thread(stream, client, "panel-twice", "Twice?")
    assert text.startswith(said("Question:\nTwice?"))
    ids = [s[0] for s in await step_history(stack, request_id)]
    assert ids.count("route@demo") == 1 and {"ask-1@demo-local", "ask-2@demo-local"} <= set(ids)


def test_steps_failing_together_fail_the_request_at_once_with_their_error(
    client: openai.OpenAI,
) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="panel-all-down", messages=ask("nobody?"), timeout=60)
    took = time.monotonic() - started
    assert caught.value.status_code == 503, caught.value.message  # the steps' error...
    assert took < 30, took  # ...promptly, not the pipeline's 60 s timeout


async def test_a_pipeline_answers_over_grpc_too(stack: Stack) -> None:
    request = inference_pb2.GenerateRequest(
        model="panel", messages=[inference_pb2.ChatMessage(role="user", content="Hi")]
    )
    async with channel(f"127.0.0.1:{stack.grpc_port}") as ch:
        stub = inference_pb2_grpc.InferenceStub(ch)
        auth = (("authorization", f"Bearer {stack.admin_key}"),)
        chunks = [c async for c in stub.GenerateStream(request, metadata=auth, timeout=60)]
    text = "".join(c.delta for c in chunks)
    assert text == said(f"Question:\nHi\n\nAnswer 1:\n{said('Hi')}\n\nAnswer 2:\n{said('Hi')}")


def test_a_pipeline_answers_chat_only(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="is a pipeline: it answers chat"):
        client.completions.create(model="careful", prompt="Hello")
    with pytest.raises(openai.BadRequestError, match="is a pipeline: it answers chat") as caught:
        client.embeddings.create(model="careful", input="Hello")
    assert caught.value.param == "model"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="careful", messages=ask("Hi"), logprobs=True)
    assert caught.value.param == "logprobs"
    assert caught.value.message.endswith(
        "'logprobs' is not supported by the pipeline model `careful`."
    )


def temporal_cli(stack: Stack, *args: str) -> str:
    """The Temporal CLI against the stack, with the gateway as its codec (the admin key)."""
    argv = [
        find_binary("", "temporal", ""),
        *args,
        "--address",
        stack.temporal_address,
        "--codec-endpoint",
        f"http://127.0.0.1:{stack.gateway_port}/admin/codec",
        "--codec-auth",
        f"Bearer {stack.admin_key}",
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout


def start_stream(
    http: httpx.AsyncClient, stack: Stack, model: str, question: str
) -> asyncio.Task[tuple[int, list[str]]]:
    """A streaming request left open in a task (its response begins with its first event)."""

    async def read() -> tuple[int, list[str]]:
        body = {"model": model, "messages": ask(question), "stream": True}
        headers = {"authorization": f"Bearer {stack.admin_key}"}
        async with http.stream("POST", "/chat/completions", json=body, headers=headers) as reply:
            return reply.status_code, [line async for line in reply.aiter_lines() if line]

    return asyncio.create_task(read())


async def awaiting_approval(stack: Stack) -> str:
    """The request id of the one request waiting for a reviewer, as a reviewer finds it."""
    query = "WorkflowType='tiller.pipeline.human-approval' AND ExecutionStatus='Running'"
    for _ in range(100):
        listed = temporal_cli(stack, "workflow", "list", "--query", query, "--output", "json")
        found = [w["execution"]["workflowId"] for w in json.loads(listed or "[]")]
        if found:
            assert len(found) == 1, found
            return str(found[0])
        await asyncio.sleep(0.2)
    raise AssertionError("no request awaits approval")


async def draft_of(stack: Stack, request_id: str) -> str:
    """The draft awaiting approval, from the workflow's `draft` query (None until drafted)."""
    handle = (await temporal_client(stack)).get_workflow_handle(request_id)
    for _ in range(100):
        found = await handle.query("draft")
        if found:
            return str(found)
        await asyncio.sleep(0.2)
    raise AssertionError("no draft")


async def test_human_approval_holds_the_answer_until_a_reviewer_signals(stack: Stack) -> None:
    question = "May I send this?"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=90) as http:
        reading = start_stream(http, stack, "approved", question)
        request_id = await awaiting_approval(stack)
        assert await draft_of(stack, request_id) == said(question)
        await asyncio.sleep(1)
        assert not reading.done()  # the client waits: nothing is sent before the approval
        edited = "Yes, with an edit from the reviewer."
        decision = json.dumps({"approved": True, "text": edited})
        temporal_cli(
            stack, "workflow", "signal", "--workflow-id", request_id, "--name", "approve",
            "--input", decision,
        )  # fmt: skip
        status, lines = await asyncio.wait_for(reading, 30)
    assert status == 200 and text_of(lines) == edited and lines[-1] == "data: [DONE]"


async def test_a_rejected_or_unapproved_answer_is_an_error_for_the_client(
    stack: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=90) as http:
        reading = start_stream(http, stack, "approved", "Delete it all?")
        request_id = await awaiting_approval(stack)
        await draft_of(stack, request_id)
        client = await temporal_client(stack)
        handle = client.get_workflow_handle(request_id)
        await handle.signal("approve", {"approved": False, "reason": "too risky"})
        status, lines = await asyncio.wait_for(reading, 30)
        # Nothing was streamed before the decision: the refusal is a plain HTTP error.
        error = json.loads("".join(lines))["error"]
        assert status == 403 and error["code"] == "not_approved"
        assert error["message"] == "The reviewer rejected the answer: too risky."

        reply = await http.post(
            "/chat/completions",
            json={"model": "approved-quickly", "messages": ask("Anyone there?")},
            headers={"authorization": f"Bearer {stack.admin_key}"},
        )
    assert reply.status_code == 504, reply.text
    assert reply.json()["error"]["code"] == "approval_timed_out"


async def test_a_pipeline_runs_in_the_background_and_is_fetched_by_id(stack: Stack) -> None:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as http:
        submitted = await http.post(
            "/chat/completions",
            json={"model": "panel", "messages": ask("Later?"), "background": True},
        )
        assert submitted.status_code == 202, submitted.text
        url = f"/chat/completions/{submitted.json()['id']}"
        for _ in range(150):
            found = (await http.get(url)).json()
            if found["status"] != "in_progress":
                break
            await asyncio.sleep(0.2)
    assert found["status"] == "completed", found
    one = said("Later?")
    expected = said(f"Question:\nLater?\n\nAnswer 1:\n{one}\n\nAnswer 2:\n{one}")
    assert found["choices"][0]["message"]["content"] == expected


async def test_a_client_that_leaves_cancels_the_pipeline(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=90) as http:
        reading = start_stream(http, stack, "approved", "Never mind")
        request_id = await awaiting_approval(stack)
        await draft_of(stack, request_id)
        reading.cancel()  # the client hangs up while the pipeline waits for a reviewer
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    handle = (await temporal_client(stack)).get_workflow_handle(request_id)
    for _ in range(100):
        status = (await handle.describe()).status
        if status != WorkflowExecutionStatus.RUNNING:
            break
        await asyncio.sleep(0.1)
    assert status == WorkflowExecutionStatus.CANCELED


async def test_a_bug_in_pipeline_code_fails_the_run_at_once(stack: Stack) -> None:
    """An exception in workflow code (here: an input the pipeline cannot read) fails the run
    instead of Temporal retrying its workflow task until the pipeline's timeout."""
    client = await temporal_client(stack)
    started = time.monotonic()
    with pytest.raises(WorkflowFailureError) as caught:
        await client.execute_workflow(
            "tiller.pipeline.draft-then-refine",
            {"request_id": "not-a-request"},
            id=f"broken-{uuid.uuid4().hex}",
            task_queue="tiller.pipelines",
            execution_timeout=timedelta(seconds=60),
        )
    assert "KeyError" in str(caught.value.cause)
    assert time.monotonic() - started < 10


async def test_keys_and_pii_apply_to_a_pipeline_as_to_any_model(stack: Stack) -> None:
    redis = Redis.from_url(stack.redis_url)
    store = KeyStore(redis, "tiller:")
    allowed = await store.create(KeySpec("pipeline-only", models=("careful",)))
    other = await store.create(KeySpec("demo-only", models=("demo",)))
    await redis.aclose()
    question = "Write to ada@example.com please"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:

        async def ask_as(key: str) -> httpx.Response:
            return await http.post(
                "/chat/completions",
                json={"model": "careful", "messages": ask(question)},
                headers={"authorization": f"Bearer {key}"},
            )

        refused = await ask_as(other.api_key)
        answered = await ask_as(allowed.api_key)
        received = (await http.get(f"http://127.0.0.1:{stack.demo_port}/received")).json()
    assert refused.status_code == 403 and refused.json()["error"]["param"] == "model"
    # A key for the pipeline may use it, whatever models its steps call.
    assert answered.status_code == 200, answered.text
    text = answered.json()["choices"][0]["message"]["content"]
    assert "<EMAIL_1>" in text and "ada@example.com" not in text
    # No step's engine saw the address.
    sent = json.dumps([r["body"] for r in received["data"]])
    assert "<EMAIL_1>" in sent and "ada@example.com" not in sent


async def test_a_pipeline_that_fails_after_its_steps_ran_charges_what_they_spent(
    stack: Stack,
) -> None:
    redis = Redis.from_url(stack.redis_url)
    key = await KeyStore(redis, "tiller:").create(KeySpec("unapproved", models=("approved-*",)))
    await redis.aclose()
    headers = {"authorization": f"Bearer {key.api_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, headers=headers) as http:
        reply = await http.post(
            "/chat/completions",
            json={"model": "approved-quickly", "messages": ask("Nobody will approve")},
        )
        assert reply.status_code == 504, reply.text  # no reviewer in time: no answer...

        async def charged() -> dict[str, int]:
            totals: dict[str, int] = (await http.get("/usage")).json()["totals"]
            return totals

        deadline = time.monotonic() + 10
        while (totals := await charged())["completion_tokens"] == 0:
            assert time.monotonic() < deadline, totals
            await asyncio.sleep(0.1)
    # ...but the draft was written, and its tokens are charged: "You said: Nobody will approve".
    assert totals["completion_tokens"] == 5 and totals["prompt_tokens"] > 0, totals


def test_a_pipeline_past_its_timeout_says_so(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="stalled", messages=ask("Still there?"), timeout=60)
    assert caught.value.status_code == 504
    assert caught.value.message.endswith(
        "The request did not finish within its model's timeout_seconds."
    ), caught.value.message
