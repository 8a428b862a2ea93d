"""The OpenAI Agents SDK as its users run it: an Agent with a function tool, the gateway's
AsyncOpenAI client set as the SDK's default, tracing off, the SDK's default model API (the
Responses API), run to its final output; whole and streamed. The demo engine calls the tool with
arguments its schema accepts (the SDK checks them with pydantic) and answers the result."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from agents import (
    Agent,
    ItemHelpers,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from tests.support import Stack

QUESTION = "What is the weather in Seoul?"


ASKED: list[tuple[str, int]] = []  # what the tool was called with


@function_tool
def weather(city: str, days: int) -> str:
    """The weather in a city for the next days.

    Args:
        city: The city's name.
        days: How many days ahead.
    """
    ASKED.append((city, days))
    return f"sunny in {city} for {days} day(s)"


AGENT = Agent(
    name="Forecaster",
    instructions="Answer questions about the weather with the weather tool.",
    model="demo",
    tools=[weather],
)


@pytest.fixture
async def agent_client(stack: Stack) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(
        base_url=stack.base_url, api_key=stack.admin_key, max_retries=0, timeout=20
    )
    set_default_openai_client(client, use_for_tracing=False)
    set_tracing_disabled(True)
    ASKED.clear()
    yield client
    await client.close()


async def test_an_agent_calls_its_tool_and_answers(agent_client: AsyncOpenAI) -> None:
    result = await Runner.run(AGENT, QUESTION)
    kinds = [item.type for item in result.new_items]
    print(f"\nitems: {kinds}\nfinal output: {result.final_output}")
    assert ASKED == [(QUESTION, 1)]  # the demo engine's arguments, validated by the SDK
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    # Two model calls, both to the Responses API (the SDK's default): Tiller's response ids.
    assert [(r.response_id or "")[:5] for r in result.raw_responses] == ["resp_", "resp_"]
    assert result.final_output == f"The tool said: sunny in {QUESTION} for 1 day(s)"


async def test_an_agent_streamed(agent_client: AsyncOpenAI) -> None:
    result = Runner.run_streamed(AGENT, QUESTION)
    events = []
    async for event in result.stream_events():
        if event.type == "run_item_stream_event":
            events.append(event.name)
            if event.item.type == "message_output_item":
                print(f"\nmessage: {ItemHelpers.text_message_output(event.item)}")
    print(f"run item events: {events}\nfinal output: {result.final_output}")
    assert ASKED == [(QUESTION, 1)]
    assert events == ["tool_called", "tool_output", "message_output_created"]
    assert result.final_output == f"The tool said: sunny in {QUESTION} for 1 day(s)"
