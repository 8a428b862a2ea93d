"""The demo engine calls tools as a tool-using model would, deterministically: which tool, with
arguments its schema accepts (checked by pydantic, as SDKs check them), whole and streamed, and a
text answer once the conversation ends with the tool's result."""

from __future__ import annotations

import enum
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import pytest
from pydantic import BaseModel

from tiller.demo_engine.app import create_app
from tiller.demo_engine.settings import DemoSettings
from tiller.demo_engine.tool_calls import Call, call_for


def tool(name: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [tool("get_weather", CITY), tool("send_email", CITY), tool("lookup")]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def called(messages: list[dict[str, Any]], **body: Any) -> str | None:
    call = call_for({"tools": TOOLS, **body}, messages)
    return call.name if call else None


@pytest.mark.parametrize(
    ("said", "name"),
    [
        ("Please SEND EMAIL to Ada", "send_email"),  # case-insensitive, a space for "_"
        ("call send_email then get_weather", "get_weather"),  # the first tool mentioned
        ("use lookup", "lookup"),
        ("what now?", "get_weather"),  # none mentioned: the first tool
    ],
)
def test_auto_calls_the_tool_the_user_names_else_the_first(said: str, name: str) -> None:
    assert called(user(said)) == name
    assert called(user(said), tool_choice="auto") == name


def test_tool_choice_none_forced_and_named() -> None:
    assert called(user("send email"), tool_choice="none") is None
    assert called(user("send email"), tool_choice="required") == "get_weather"
    named = {"type": "function", "function": {"name": "lookup"}}
    assert called(user("send email"), tool_choice=named) == "lookup"
    assert call_for({}, user("send email")) is None  # no tools, no call


def test_after_the_tools_result_auto_answers_text_and_forced_calls_again() -> None:
    first = call_for({"tools": TOOLS}, user("weather?"))
    assert first == Call("call_demo_0", "get_weather", json.dumps({"city": "weather?"}))
    history = [
        *user("weather?"),
        {"role": "assistant", "content": None, "tool_calls": [{"id": first.id}]},
        {"role": "tool", "tool_call_id": first.id, "content": "sunny"},
    ]
    assert called(history) is None
    assert called(history, tool_choice="auto") is None
    again = call_for({"tools": TOOLS, "tool_choice": "required"}, history)
    assert again is not None and again.id == "call_demo_1"  # no id repeats in a conversation
    assert called([*history, *user("and tomorrow?")]) == "get_weather"


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Where(BaseModel):
    city: str
    zip_code: int | None


class Everything(BaseModel):
    text: str
    count: int
    ratio: float
    loud: bool
    tags: list[str]
    where: Where
    color: Color
    mode: Literal["fast", "slow"]
    maybe: str | None
    extra: dict[str, int]


def test_arguments_satisfy_a_pydantic_schema_as_sdks_validate_them() -> None:
    """Every type pydantic writes a schema for ($defs and $ref, anyOf with null, enums, a
    Literal's const or enum, nested objects) gets a value pydantic accepts."""
    function = tool("everything", Everything.model_json_schema())
    call = call_for({"tools": [function]}, user("Hi there"))
    assert call is not None
    parsed = Everything.model_validate_json(call.arguments)
    assert parsed == Everything(
        text="Hi there",
        count=1,
        ratio=1.0,
        loud=True,
        tags=[],
        where=Where(city="Hi there", zip_code=1),  # anyOf: the first not null
        color=Color.RED,
        mode="fast",
        maybe="Hi there",
        extra={},
    )


def test_only_required_properties_unless_none_is_required() -> None:
    optional = {"type": "string"}
    some = {"type": "object", "properties": {"city": {"type": "string"}, "units": optional}}
    assert json.loads(arguments(some)) == {"city": "Paris?", "units": "Paris?"}
    some["required"] = ["city"]
    assert json.loads(arguments(some)) == {"city": "Paris?"}
    listed = {
        "type": "object",
        "properties": {
            "n": {"type": ["integer", "null"]},
            "unit": {"enum": ["c", "f"]},
            "any": {},
        },
    }
    assert json.loads(arguments(listed)) == {"n": 1, "unit": "c", "any": "Paris?"}


@pytest.mark.parametrize("parameters", [None, {}, {"type": "object"}, {"properties": {}}])
def test_parameters_without_properties_get_what_was_said(parameters: Any) -> None:
    assert json.loads(arguments(parameters)) == {"said": "You said: Paris?"}


def arguments(parameters: Any) -> str:
    call = call_for({"tools": [tool("f", parameters)]}, user("Paris?"))
    assert call is not None
    return call.arguments


@pytest.fixture
async def engine() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(DemoSettings(token_delay_ms=0))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo/v1") as client:
        yield client


async def chat(engine: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    reply = await engine.post("/chat/completions", json={"model": "demo", **body})
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


async def stream(engine: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    reply = await engine.post("/chat/completions", json={"model": "demo", "stream": True, **body})
    assert reply.status_code == 200, reply.text
    lines = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


async def test_a_whole_tool_call_then_the_tools_result(engine: httpx.AsyncClient) -> None:
    messages = user("weather in Seoul")
    reply = await chat(engine, messages=messages, tools=TOOLS, n=2)
    assert [c["finish_reason"] for c in reply["choices"]] == ["tool_calls", "tool_calls"]
    message = reply["choices"][1]["message"]
    call = {
        "id": "call_demo_0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "weather in Seoul"}'},
    }
    assert message == {"role": "assistant", "content": None, "tool_calls": [call]}
    assert reply["usage"]["completion_tokens"] == 2 * 4  # the arguments' words, per choice
    messages += [message, {"role": "tool", "tool_call_id": "call_demo_0", "content": "Sunny, 21C"}]
    answered = await chat(engine, messages=messages, tools=TOOLS)
    (choice,) = answered["choices"]
    assert choice["message"] == {"role": "assistant", "content": "The tool said: Sunny, 21C"}
    assert choice["finish_reason"] == "stop"


async def test_a_streamed_tool_call(engine: httpx.AsyncClient) -> None:
    chunks = await stream(engine, messages=user("email Ada"), tools=TOOLS, tool_choice="auto")
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    opening = deltas[1]["tool_calls"][0]
    assert opening == {
        "index": 0,
        "id": "call_demo_0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    pieces = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:-1]]
    assert pieces == ['{"city":', ' "email', ' Ada"}']
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    said = await stream(
        engine,
        messages=[*user("x"), {"role": "tool", "tool_call_id": "c", "content": "done"}],
        tools=TOOLS,
    )
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in said)
    assert text == "The tool said: done" and said[-1]["choices"][0]["finish_reason"] == "stop"


async def test_max_tokens_cuts_a_tool_call_short(engine: httpx.AsyncClient) -> None:
    reply = await chat(engine, messages=user("a b c d"), tools=TOOLS, max_tokens=2)
    (choice,) = reply["choices"]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == '{"city": "a'
