"""OpenAI's Responses API through the official SDK on the whole stack: whole and streamed
answers, a conversation continued by previous_response_id, a function-tool round trip,
background responses retrieved, streamed again from a sequence number and cancelled; each one a
Temporal run under its id, whose history Temporal holds sealed."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import FunctionToolParam
from temporalio.api.workflowservice.v1 import DescribeActivityExecutionRequest
from temporalio.client import Client

from tests.support import Stack

WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": True,
}


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.base_url, api_key=stack.admin_key, max_retries=0) as client:
        yield client


def test_a_response_whole(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="demo", input="Hello Tiller", instructions="Be brief.", metadata={"run": "1"}
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == "demo"
    assert response.output_text == "You said: Hello Tiller"
    assert response.instructions == "Be brief." and response.metadata == {"run": "1"}
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (4, 4)
    assert response.output[0].type == "message"
    again = client.responses.retrieve(response.id)
    assert again.output_text == response.output_text and again.status == "completed"


def test_a_response_streamed_with_the_responses_event_sequence(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="demo", input="stream me", stream=True))
    kinds = [e.type for e in events]
    print("\nevents:", " ".join(dict.fromkeys(kinds)))
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "You said: stream me"
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == deltas and final.usage is not None
    with client.responses.stream(model="demo", input="helper too") as stream:
        for _ in stream:
            pass
        assert stream.get_final_response().output_text == "You said: helper too"


def test_a_conversation_continues_from_the_previous_response(client: openai.OpenAI) -> None:
    first = client.responses.create(model="demo", input="my name is Ada")
    second = client.responses.create(
        model="demo", input="what is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    assert second.output_text == "You said: what is my name?"
    assert second.usage is not None and first.usage is not None
    # The second turn's prompt holds the first turn, its answer, and the new input (4 words).
    first_turn = first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens == first_turn + 4
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="demo", input="x", previous_response_id="resp_nothing")


def test_a_function_tool_round_trip(client: openai.OpenAI) -> None:
    asked = client.responses.create(
        model="demo",
        input="What is the weather in Seoul?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    (call,) = [item for item in asked.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id
    json.loads(call.arguments)  # the model's arguments, as JSON
    answered = client.responses.create(
        model="demo",
        previous_response_id=asked.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assert answered.status == "completed" and answered.output_text


def test_background_retrieve_stream_again_and_cancel(client: openai.OpenAI, stack: Stack) -> None:
    queued = client.responses.create(model="demo", input="in the background", background=True)
    assert queued.background and queued.status in ("queued", "in_progress")
    for _ in range(100):
        done = client.responses.retrieve(queued.id)
        if done.status != "in_progress":
            break
        time.sleep(0.1)
    assert done.status == "completed" and done.output_text == "You said: in the background"
    replay = list(client.responses.retrieve(queued.id, stream=True))
    assert replay[-1].type == "response.completed"
    after = replay[3].sequence_number
    resumed = list(client.responses.retrieve(queued.id, stream=True, starting_after=after))
    assert [e.sequence_number for e in resumed] == [e.sequence_number for e in replay[4:]]
    long = " ".join(f"w{i}" for i in range(3000))  # about 3 s at the demo engine's 1 ms a token
    running = client.responses.create(model="demo", input=long, background=True)
    cancelled = client.responses.cancel(running.id)
    assert cancelled.status == "cancelled"


def test_errors_are_the_sdks_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="demo", input="x", tools=[{"type": "web_search"}])
    assert bad.value.body is not None and "tools[0].type" in str(bad.value.body)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nothing")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="demo", input=[])


async def test_a_response_is_a_temporal_run_under_its_id_and_sealed(
    client: openai.OpenAI, stack: Stack
) -> None:
    marker = secrets.token_hex(8)
    response = client.responses.create(model="demo", input=f"secret {marker}")
    assert marker in response.output_text
    raw = await Client.connect(stack.temporal_address)  # no key: what Temporal holds
    description = await raw.workflow_service.describe_activity_execution(
        DescribeActivityExecutionRequest(
            namespace="default", activity_id=response.id, include_input=True, include_outcome=True
        )
    )
    stored = description.SerializeToString()
    assert description.info.activity_id == response.id
    assert marker.encode() not in stored and b"binary/encrypted" in stored


def _texts(events: list[Any]) -> str:
    return "".join(getattr(e, "delta", "") for e in events)
