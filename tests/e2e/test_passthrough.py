"""Parameters that shape the answer pass through to the engine, and its choices come back as it
wrote them: tool calls (streamed as deltas the openai SDK assembles), several choices (`n`),
logprobs, response_format. Against the demo engine, which answers each in OpenAI's shape
(services/demo_engine/choices.py); the vLLM tier runs the same against real vLLM."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support import Stack

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "echo",
            "description": "Repeat what the user said.",
            "parameters": {"type": "object", "properties": {"said": {"type": "string"}}},
        },
    }
]
FORCED = {"type": "function", "function": {"name": "echo"}}


def create(client: openai.OpenAI, **asked: Any) -> Any:
    """The SDK's create, untyped: its overloads do not follow parameters built as data."""
    return client.chat.completions.create(**asked)


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.base_url, api_key=stack.admin_key, max_retries=0) as client:
        yield client


def test_a_tool_call(client: openai.OpenAI) -> None:
    completion = create(
        client,
        model="demo",
        messages=[{"role": "user", "content": "Hello Tiller"}],
        tools=TOOLS,
        tool_choice=FORCED,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "echo"
    assert json.loads(call.function.arguments) == {"said": "Hello Tiller"}  # the schema's string
    assert completion.id.startswith("chatcmpl-") and completion.model == "demo"


def test_a_streamed_tool_call_assembles_in_the_sdk(client: openai.OpenAI) -> None:
    chat: Any = client.chat.completions
    with chat.stream(
        model="demo",
        messages=[{"role": "user", "content": "Hello Tiller"}],
        tools=TOOLS,
        tool_choice=FORCED,
        stream_options={"include_usage": True},
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.id == "call_demo_0" and call.function.name == "echo"
    assert json.loads(call.function.arguments) == {"said": "Hello Tiller"}
    assert final.usage is not None and final.usage.completion_tokens == 3  # the arguments' words


def test_the_tool_result_goes_back_to_the_engine(client: openai.OpenAI) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "echo", "arguments": "{}"}}
    completion = create(
        client,
        model="demo",
        messages=[
            {"role": "user", "content": "Hello Tiller"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "echoed"},
        ],
        tools=TOOLS,
    )
    # The demo engine answers the tool's result; the history was accepted as OpenAI's.
    assert completion.choices[0].message.content == "The tool said: echoed"


@pytest.mark.parametrize("stream", [False, True])
def test_several_choices_with_logprobs(client: openai.OpenAI, stream: bool) -> None:
    asked = {
        "model": "demo",
        "messages": [{"role": "user", "content": "one two"}],
        "n": 2,
        "logprobs": True,
        "top_logprobs": 1,
        "response_format": {"type": "json_object"},
    }
    if not stream:
        completion = create(client, **asked)
        assert [c.index for c in completion.choices] == [0, 1]
        assert {c.message.content for c in completion.choices} == {"You said: one two"}
        content = completion.choices[1].logprobs.content
        assert [t.token for t in content] == ["You", " said:", " one", " two"]
        assert content[0].top_logprobs[0].token == "You~0"
        assert completion.usage is not None and completion.usage.completion_tokens == 8
        return
    texts = {0: "", 1: ""}
    tokens: dict[int, list[str]] = {0: [], 1: []}
    finish = {}
    for chunk in create(client, stream=True, **asked):
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.logprobs and c.logprobs.content:
                tokens[c.index] += [t.token for t in c.logprobs.content]
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert texts == {0: "You said: one two", 1: "You said: one two"}
    assert tokens[0] == tokens[1] == ["You", " said:", " one", " two"]
    assert finish == {0: "stop", 1: "stop"}


def test_an_image_part_reaches_the_engine_as_sent_and_its_text_part_is_masked(
    client: openai.OpenAI, stack: Stack
) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    text = {"type": "text", "text": "Mail ada@example.com about this"}
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.demo_port}", timeout=10) as engine:
        engine.delete("/received").raise_for_status()
        reply = create(client, model="demo", messages=[{"role": "user", "content": [text, image]}])
        (sent,) = [r["body"] for r in engine.get("/received").json()["data"]]
    print(f"\nthe engine was sent: {json.dumps(sent['messages'][0]['content'])}")
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "Mail <EMAIL_1> about this"},  # masked, as any text
        image,  # as the client sent it
    ]
    assert reply.choices[0].message.content == "You said: Mail <EMAIL_1> about this"


def test_the_sdks_reply_object_goes_back_into_the_next_turn(client: openai.OpenAI) -> None:
    """The issue's snippet: the SDK's own message object (refusal, annotations… and all)
    appended to the history, whole and streamed."""
    messages: list[Any] = [{"role": "user", "content": "Hello Tiller"}]
    reply = create(client, model="demo", messages=messages, tools=TOOLS)
    messages.append(reply.choices[0].message)
    again = create(client, model="demo", messages=messages, tools=TOOLS)
    assert again.choices[0].message is not None
    with client.chat.completions.stream(model="demo", messages=messages, tools=TOOLS) as stream:  # type: ignore[arg-type]
        for _ in stream:
            pass
        messages.append(stream.get_final_completion().choices[0].message)
    last = create(client, model="demo", messages=messages, tools=TOOLS)
    assert last.choices[0].message is not None
