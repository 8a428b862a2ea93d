from __future__ import annotations

from typing import Any

import pytest

from tiller.common.errors import InvalidRequest
from tiller.contract.requests import Chat, ToolCall
from tiller.gateway.protocol import ApiRequest, parse_chat

USER = [{"role": "user", "content": "hi"}]


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "demo", "messages": USER} | fields


def chat_of(request: ApiRequest) -> Chat:
    assert isinstance(request.ask, Chat)
    return request.ask


def error_of(data: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat(data)
    return caught.value


def test_a_full_request_maps_onto_sampling_parameters() -> None:
    chat = parse_chat(
        body(
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=5,
            temperature=0.5,
            top_p=1,
            stop="END",
            seed=7,
            n=1,
            user="u1",
        )
    )
    assert chat.stream and chat.include_usage
    assert chat.sampling.max_tokens == 5 and chat.sampling.top_p == 1.0
    assert chat.sampling.stop == ("END",) and chat.sampling.seed == 7


def test_defaults_and_max_completion_tokens() -> None:
    chat = parse_chat(body(max_completion_tokens=9))
    assert not chat.stream and not chat.include_usage
    assert chat.sampling.max_tokens == 9 and chat.sampling.stop == ()


def test_text_content_parts_are_joined() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    chat = parse_chat(body(messages=[{"role": "user", "content": parts}]))
    assert chat_of(chat).messages[0].content == "a\nb"


@pytest.mark.parametrize(
    ("data", "param", "message"),
    [
        ({"model": "demo"}, "messages", "Missing required parameter: 'messages'."),
        (
            body(messages="hi"),
            "messages",
            "Invalid type for 'messages': expected an array, but got a string",
        ),
        (body(messages=[]), "messages", "Invalid 'messages'"),
        (body(max_tokens=0), "max_tokens", "Invalid 'max_tokens'"),
        (body(max_tokens="5"), "max_tokens", "expected an integer, but got a string"),
        (body(temperature=3), "temperature", "Invalid 'temperature'"),
        (body(stream="yes"), "stream", "expected a boolean"),
        (body(model=7), "model", "expected a string, but got an integer"),
        (body(messages=[{"role": "user"}]), "messages[0].content", "Missing required parameter"),
        (
            body(messages=[{"role": "user", "content": 5}]),
            "messages[0].content",
            "expected a string or an array",
        ),
        (
            body(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
            "messages[0].content",
            "content part 0: the image_url part needs an object 'image_url'",
        ),
        (
            body(messages=[{"role": "user", "content": [{"text": "no type"}]}]),
            "messages[0].content",
            "content part 0: expected an object with a 'type'",
        ),
        (
            body(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "file:///etc"}}],
                    }
                ]
            ),
            "messages[0].content",
            "must be an http(s) or data: URL",
        ),
        (
            body(messages=[{"role": "assistant", "content": "x", "refusal": 5}]),
            "messages[0].refusal",
            "expected a string",
        ),
        (
            body(messages=[{"role": "robot", "content": "x"}]),
            "messages[0].role",
            "Invalid 'messages[0].role'",
        ),
        (body(stop=["a", "b", "c", "d", "e"]), "stop", "up to 4 strings"),
        (body(n=9), "n", "Invalid 'n'"),
        (body(max_tokens=2**63), "max_tokens", "Invalid 'max_tokens'"),
        (body(tools=[{"type": "function"}]), "tools[0].function", "Missing required parameter"),
        (body(tools=[]), "tools", "Invalid 'tools'"),
        (body(functions=[{"name": "f"}]), "functions", "'functions' is not supported"),
        (body(response_format={"type": "xml"}), "response_format.type", "Invalid"),
        (body(top_logprobs=21), "top_logprobs", "Invalid 'top_logprobs'"),
        (
            body(messages=[{"role": "tool", "content": "42"}]),
            "messages[0]",
            "a tool message, and only a tool message, has a tool_call_id",
        ),
        (
            body(messages=[{"role": "user", "content": None}]),
            "messages[0]",
            "content is required",
        ),
    ],
)
def test_bad_input_names_the_parameter(data: Any, param: str, message: str) -> None:
    error = error_of(data)
    assert error.param == param
    assert message in error.message
    assert error.http_status == 400 and error.openai_type == "invalid_request_error"


def test_body_must_be_an_object() -> None:
    assert "JSON object" in error_of([]).message


def test_unsupported_parameters_at_their_defaults_are_accepted() -> None:
    chat = chat_of(parse_chat(body(functions=None, audio=None, modalities=[])))
    assert chat.extra == {} and chat.params == {}


def test_answer_shaping_parameters_pass_through_as_written() -> None:
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    chat = parse_chat(
        body(
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "add"}},
            response_format={"type": "json_object"},
            logprobs=True,
            top_logprobs=2,
            n=2,
            seed=7,
        )
    )
    assert chat_of(chat).extra == {
        "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "add"}},
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "top_logprobs": 2,
        "n": 2,
    }
    assert chat.sampling.seed == 7  # a sampling parameter, not a pass-through one
    assert chat_of(parse_chat(body(n=1, logprobs=None, logit_bias={}))).extra == {}


def test_a_tool_round_trip_keeps_the_calls_and_their_ids() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    chat = parse_chat(
        body(
            messages=[
                {"role": "user", "content": "add"},
                {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "3"},
            ]
        )
    )
    assistant, tool = chat_of(chat).messages[1:]
    assert (assistant.content, assistant.tool_calls) == (None, (ToolCall("call_1", "add", "{}"),))
    assert assistant.tool_calls[0].openai() == call  # as engines take it
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "call_1", "3")


def test_background_with_pass_through_parameters_is_refused_by_name() -> None:
    error = error_of(body(background=True, logprobs=True))
    assert error.param == "background" and "'logprobs'" in error.message


def test_what_the_sdks_send_back_is_accepted() -> None:
    """An assistant reply appended back as the SDKs serialize it: empty echo fields dropped,
    an engine's own (reasoning_content) kept for the engine."""
    reply = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "annotations": [],
        "audio": None,
        "function_call": None,
        "reasoning_content": "think",
        "reasoning": None,  # vLLM's, unused
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                # parsed_arguments: the SDK's streaming helper's own, dropped
                "function": {"name": "f", "arguments": "{}", "parsed_arguments": {}},
            }
        ],
    }
    history = [{"role": "user", "content": "go"}, reply]
    history.append({"role": "tool", "tool_call_id": "call_1", "content": "3"})
    assistant = chat_of(parse_chat(body(messages=history))).messages[1]
    assert assistant.extra == {"reasoning_content": "think"}
    assert assistant.tool_calls == (ToolCall("call_1", "f", "{}"),)


def test_content_parts_of_every_kind_are_kept_in_order() -> None:
    image = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"},
    }
    audio = {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}
    video = {"type": "video_url", "video_url": {"url": "https://x/v.mp4"}}  # vLLM's: as sent
    parts = [{"type": "text", "text": "what is this?"}, image, audio, video]
    (message,) = chat_of(parse_chat(body(messages=[{"role": "user", "content": parts}]))).messages
    assert isinstance(message.content, tuple)
    assert [p.openai() for p in message.content] == parts
    assert message.text == "what is this?" and len(message.media) == 3


def test_other_parameters_are_the_engines_and_some_go_nowhere() -> None:
    asked = parse_chat(
        body(
            top_k=1,
            chat_template_kwargs={"enable_thinking": False},
            reasoning_effort="low",
            user="u-1",
            metadata={"team": "x"},
            store=False,
            service_tier="auto",
            modalities=["text"],
        )
    )
    chat = chat_of(asked)
    assert chat.params == {
        "top_k": 1,
        "chat_template_kwargs": {"enable_thinking": False},
        "reasoning_effort": "low",
    }
    assert chat.extra == {"modalities": ["text"]}  # it shapes the answer: the engine's own
