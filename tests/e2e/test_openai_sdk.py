"""The whole stack, driven by the official openai SDK exactly as a client would."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from temporalio.client import ActivityExecutionStatus

from tests.support import Stack, temporal_client


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.base_url, api_key=stack.admin_key, max_retries=0) as client:
        yield client


@pytest.fixture
async def async_client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=stack.base_url, api_key=stack.admin_key, max_retries=0
    ) as client:
        yield client


HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello Tiller"}]


def test_sync_non_streaming(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="demo", messages=HELLO)
    assert completion.choices[0].message.content == "You said: Hello Tiller"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "demo" and completion.object == "chat.completion"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 4)
    assert completion.usage.total_tokens == 6
    assert completion.id.startswith("chatcmpl-")


def test_sync_streaming_ends_with_a_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="demo",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: Hello Tiller"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 6
    assert len({c.id for c in chunks}) == 1


def test_streaming_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="demo", messages=HELLO, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_async_non_streaming_and_streaming(async_client: openai.AsyncOpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "async hi"},
    ]
    completion = await async_client.chat.completions.create(model="demo", messages=messages)
    assert completion.choices[0].message.content == "You said: async hi"
    stream = await async_client.chat.completions.create(
        model="demo",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts: list[str] = []
    usage = None
    async for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
        usage = chunk.usage or usage
    assert "".join(parts) == "You said: async hi"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (4, 4)


def test_max_tokens_cuts_the_answer(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="demo", messages=HELLO, max_tokens=2)
    assert completion.choices[0].message.content == "You said:"
    assert completion.choices[0].finish_reason == "length"


def test_an_alias_answers_as_its_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="demo-latest", messages=HELLO)
    assert completion.model == "demo"


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"demo", "demo-latest", "broken"} <= ids
    assert client.models.retrieve("demo").owned_by == "tiller-demo-engine"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


async def test_the_request_id_is_the_activity_id(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        response = await http.post(
            "/chat/completions",
            headers={"authorization": f"Bearer {stack.admin_key}"},
            json={"model": "demo", "messages": HELLO},
        )
    request_id = response.headers["x-request-id"]
    assert response.json()["id"] == request_id
    temporal = await temporal_client(stack)
    handle = temporal.get_activity_handle(request_id)
    # The answer is sent as soon as the activity publishes it; the activity closes just after.
    assert (await handle.result())["text"] == response.json()["choices"][0]["message"]["content"]
    description = await handle.describe()
    assert description.activity_type == "tiller.generate"
    assert description.status == ActivityExecutionStatus.COMPLETED
    assert description.task_queue == "test.demo"
