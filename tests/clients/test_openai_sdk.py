"""The official Python SDK as its tutorials use it, against the whole stack and the demo engine
(which calls the tool a message names and answers a tool's result with "The tool said: …"):

- the chat tool loop: the SDK's own reply object appended to the messages, the tool's result
  after it, again until a text answer; whole, and streamed with the SDK's stream helper, which
  assembles the tool-call deltas;
- the Responses API loop: function tools, the function_call_output sent back by
  previous_response_id; streamed with `responses.stream(...)` and `stream=True`, the event
  names printed, and the conversation carried as the SDK's own output items."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import openai
import pytest
from openai.types.chat import ChatCompletionMessage, ChatCompletionToolParam
from openai.types.responses import FunctionToolParam, Response, ResponseInputItemParam
from pydantic import BaseModel

from tests.support import Stack

QUESTION = "What is the weather in Seoul?"
SKY = "sunny, 21 °C"
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city's name"}},
    "required": ["city"],
    "additionalProperties": False,
}
DESCRIPTIONS = {"local_time": "The time in a city.", "weather": "The weather in a city."}
CHAT_TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": name, "description": about, "parameters": CITY}}
    for name, about in DESCRIPTIONS.items()
]
RESPONSES_TOOLS: list[FunctionToolParam] = [
    {"type": "function", "name": name, "description": about, "parameters": CITY, "strict": True}
    for name, about in DESCRIPTIONS.items()
]


def weather(city: str) -> str:
    return SKY


def local_time(city: str) -> str:
    return "12:00"


FUNCTIONS = {"weather": weather, "local_time": local_time}


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    # No retries: a failure shows as it is, not hidden behind the SDK's second try.
    with openai.OpenAI(
        base_url=stack.base_url, api_key=stack.admin_key, max_retries=0, timeout=20
    ) as client:
        yield client


def run(name: str, arguments: str) -> str:
    return FUNCTIONS[name](**json.loads(arguments))


def test_the_chat_tool_loop(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    calls = []
    for _ in range(3):
        reply = client.chat.completions.create(model="demo", messages=messages, tools=CHAT_TOOLS)
        message = reply.choices[0].message
        messages.append(message)  # the SDK's own object, as every tutorial appends it
        if not message.tool_calls:
            break
        for call in message.tool_calls:
            assert call.type == "function"
            calls.append((call.function.name, json.loads(call.function.arguments)))
            result = run(call.function.name, call.function.arguments)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    print(f"\ncalls: {calls}\nanswer: {message.content}")
    assert calls == [("weather", {"city": QUESTION})]
    assert reply.choices[0].finish_reason == "stop"
    assert message.content == f"The tool said: {SKY}"


def test_the_chat_tool_loop_streamed(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the local time in Seoul?"}]
    turns: list[list[str]] = []
    for _ in range(3):
        with client.chat.completions.stream(
            model="demo", messages=messages, tools=CHAT_TOOLS
        ) as stream:
            turns.append(list(dict.fromkeys(event.type for event in stream)))
            final = stream.get_final_completion()
        message: ChatCompletionMessage = final.choices[0].message
        messages.append(message)
        if not message.tool_calls:
            break
        for call in message.tool_calls:
            assert call.type == "function"
            result = run(call.function.name, call.function.arguments)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    for number, kinds in enumerate(turns, 1):
        print(f"\nturn {number} events: {' '.join(kinds)}", end="")
    print(f"\nanswer: {message.content}")
    first_call = messages[1].tool_calls[0]
    assert (first_call.id, first_call.function.name) == ("call_demo_0", "local_time")
    assert json.loads(first_call.function.arguments) == {"city": "What is the local time in Seoul?"}
    assert len(turns) == 2 and message.content == "The tool said: 12:00"
    assert "tool_calls.function.arguments.done" in turns[0]
    assert turns[1] == ["chunk", "content.delta", "content.done"]


class Forecast(BaseModel):
    """The forecast for a city."""

    city: str
    days: int
    unit: Literal["celsius", "fahrenheit"]


def test_a_pydantic_function_tool_parsed_by_the_sdk(client: openai.OpenAI) -> None:
    """Structured Outputs' function calling: a strict tool from a pydantic model, whose
    arguments the SDK validates into that model."""
    completion = client.chat.completions.parse(
        model="demo",
        messages=[{"role": "user", "content": "Forecast for Seoul, please"}],
        tools=[openai.pydantic_function_tool(Forecast)],
    )
    (call,) = completion.choices[0].message.tool_calls or []
    print(f"\nparsed: {call.function.parsed_arguments!r}")
    assert call.function.name == "Forecast"
    assert call.function.parsed_arguments == Forecast(
        city="Forecast for Seoul, please", days=1, unit="celsius"
    )


def function_calls(response: Response) -> list[Any]:
    return [item for item in response.output if item.type == "function_call"]


def test_the_responses_tool_loop(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="demo", instructions="Answer briefly.", input=QUESTION, tools=RESPONSES_TOOLS
    )
    calls = []
    for _ in range(3):
        asked = function_calls(response)
        if not asked:
            break
        outputs: list[ResponseInputItemParam] = []
        for call in asked:
            calls.append((call.name, json.loads(call.arguments)))
            output = run(call.name, call.arguments)
            outputs.append(
                {"type": "function_call_output", "call_id": call.call_id, "output": output}
            )
        response = client.responses.create(
            model="demo", previous_response_id=response.id, input=outputs, tools=RESPONSES_TOOLS
        )
    print(f"\ncalls: {calls}\nanswer: {response.output_text}")
    assert calls == [("weather", {"city": QUESTION})]
    assert response.status == "completed"
    assert response.output_text == f"The tool said: {SKY}"


def test_the_responses_tool_loop_streamed(client: openai.OpenAI) -> None:
    """The function-calling guide's way: the SDK's own output items appended to the input,
    each function_call_output after them, no stored state."""
    items: list[Any] = [{"role": "user", "content": QUESTION}]
    with client.responses.stream(model="demo", input=items, tools=RESPONSES_TOOLS) as stream:
        first = [event.type for event in stream]
        asked = stream.get_final_response()
    print(f"\nfunction call events: {' '.join(dict.fromkeys(first))}")
    assert list(dict.fromkeys(first)) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    (call,) = function_calls(asked)
    assert call.name == "weather" and json.loads(call.arguments) == {"city": QUESTION}
    items += asked.output  # the SDK's own items
    items.append({"type": "function_call_output", "call_id": call.call_id, "output": SKY})
    events = list(
        client.responses.create(model="demo", input=items, tools=RESPONSES_TOOLS, stream=True)
    )
    kinds = [event.type for event in events]
    print(f"text events: {' '.join(dict.fromkeys(kinds))}")
    assert list(dict.fromkeys(kinds)) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    done = events[-1]
    assert done.type == "response.completed"
    print(f"answer: {done.response.output_text}")
    assert done.response.output_text == f"The tool said: {SKY}"
