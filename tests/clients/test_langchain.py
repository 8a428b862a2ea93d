"""LangChain's ChatOpenAI pointed at Tiller, as its users write it: invoke, stream, and
bind_tools with a tool round trip (the AIMessage's tool call run by the tool, its ToolMessage
sent back), whole and streamed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.support import Stack

QUESTION = "What is the weather in Seoul?"


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.fixture
def llm(stack: Stack) -> Iterator[ChatOpenAI]:
    yield ChatOpenAI(
        model="demo",
        base_url=stack.base_url,
        api_key=SecretStr(stack.admin_key),
        max_retries=0,
        timeout=20,
    )


def test_invoke_and_stream(llm: ChatOpenAI) -> None:
    answer = llm.invoke("Hello LangChain")
    print(f"\ninvoke: {answer.content!r}")
    assert isinstance(answer, AIMessage) and answer.content == "You said: Hello LangChain"
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] == 4
    chunks = list(llm.stream("Stream it please"))
    print(f"stream: {[c.content for c in chunks]}")
    # How the text is cut into chunks is the stream's timing (the gateway may send words that
    # arrived together in one event); what they add up to is not.
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(str(c.content) for c in chunks) == "You said: Stream it please"


def test_a_tool_round_trip(llm: ChatOpenAI) -> None:
    with_tools = llm.bind_tools([weather])
    messages: list[BaseMessage] = [HumanMessage(QUESTION)]
    asked = with_tools.invoke(messages)
    assert isinstance(asked, AIMessage)
    print(f"\ntool calls: {asked.tool_calls}")
    assert [(c["name"], c["args"], c["id"]) for c in asked.tool_calls] == [
        ("weather", {"city": QUESTION}, "call_demo_0")
    ]
    messages.append(asked)
    for call in asked.tool_calls:
        messages.append(weather.invoke(call))  # a ToolMessage, as LangChain's docs do it
    answer = with_tools.invoke(messages)
    print(f"answer: {answer.content!r}")
    assert answer.content == f"The tool said: sunny in {QUESTION}"
    assert not answer.tool_calls


def test_a_streamed_tool_call_assembles(llm: ChatOpenAI) -> None:
    with_tools = llm.bind_tools([weather])
    gathered: AIMessageChunk | None = None
    pieces = 0
    for chunk in with_tools.stream(QUESTION):
        assert isinstance(chunk, AIMessageChunk)
        pieces += bool(chunk.tool_call_chunks)
        gathered = chunk if gathered is None else gathered + chunk
    assert gathered is not None
    print(f"\nstreamed tool calls: {gathered.tool_calls} from {pieces} chunks")
    assert [(c["name"], c["args"]) for c in gathered.tool_calls] == [
        ("weather", {"city": QUESTION})
    ]
    assert pieces >= 1  # assembled from streamed tool-call chunks
