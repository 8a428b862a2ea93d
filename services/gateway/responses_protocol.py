"""OpenAI's Responses API requests (`POST /v1/responses`), validated with OpenAI's wording and
`param` names, and turned into the chat Tiller runs.

A response is a chat underneath: `instructions` become the system message, the conversation of
`previous_response_id` (kept by Tiller, responses_store.py) comes next, then the input items:
messages, the model's earlier function calls and their outputs. Function tools become chat
tools. Every engine serves it alike, through the same activity, events and resumable streams as
a chat completion; what is Responses-shaped (the response object, its output items and its
stream's events) is made at the edge (responses_shapes.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from tiller.common.errors import InvalidRequest
from tiller.contract.requests import Chat, Message, Part, Sampling, ToolCall
from tiller.gateway.protocol import (
    MAX_TOKENS,
    ApiRequest,
    ModelName,
    invalid,
    passthrough_dict,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class FunctionToolIn(_Strict):
    type: Literal["function"]
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)
    format: dict[str, Any] | None = None


INPUT_SCHEMA = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "minItems": 1, "items": {"type": "object"}},
        {"type": "null"},  # then previous_response_id alone: refused as missing
    ]
}


class ResponsesRequest(BaseModel):
    """The fields Tiller reads are checked strictly; any other is an engine parameter."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)

    model: ModelName
    input: Annotated[Any, WithJsonSchema(INPUT_SCHEMA)] = None
    instructions: str | None = None
    tools: list[Any] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: Annotated[str, Field(min_length=1)] | None = None
    store: bool | None = None
    background: bool | None = None
    stream: bool | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    metadata: dict[str, str] | None = None
    text: TextConfig | None = None
    reasoning: dict[str, Any] | None = None
    # Accepted, not passed on (docs/models.md says why).
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    service_tier: str | None = None
    include: list[str] | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, value: Any) -> str | list[Any]:
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
            return value
        raise ValueError("expected a non-empty string or an array of input items")


@dataclass(frozen=True)
class Envelope:
    """What a response object says of its request (echoed in it, kept with it)."""

    model: str  # as the caller named it, until the route names the canonical one
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    store: bool = True
    background: bool = False
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    text: dict[str, Any] = field(default_factory=lambda: {"format": {"type": "text"}})
    reasoning: dict[str, Any] = field(default_factory=dict)
    user: str | None = None


@dataclass(frozen=True)
class Asked:
    """A validated Responses request: its envelope, the input's messages, and the chat it runs
    as once the earlier conversation (previous_response_id) is put before them."""

    envelope: Envelope
    messages: tuple[Message, ...]  # this request's input, as chat messages
    extra: dict[str, Any]  # tools, tool_choice, response_format…: the engine's own choices
    params: dict[str, Any]  # engine parameters
    stream: bool

    def chat(self, history: tuple[Message, ...]) -> ApiRequest:
        """The chat to run: instructions, then the earlier conversation, then this input."""
        envelope = self.envelope
        system = (Message("system", envelope.instructions),) if envelope.instructions else ()
        return ApiRequest(
            model=envelope.model,
            ask=Chat((*system, *history, *self.messages), self.extra, self.params),
            sampling=Sampling(
                max_tokens=envelope.max_output_tokens,
                temperature=envelope.temperature,
                top_p=envelope.top_p,
            ),
            stream=self.stream,
            background=envelope.background,
        )


def parse_response_request(data: Any) -> Asked:
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        body = ResponsesRequest.model_validate(data)
    except ValidationError as error:
        raise invalid(error) from None
    tools = [_tool(i, t) for i, t in enumerate(body.tools or ())]
    extra: dict[str, Any] = {}
    if tools:
        extra["tools"] = [{"type": "function", "function": _function(t)} for t in tools]
    if body.tool_choice is not None:
        extra["tool_choice"] = _tool_choice(body.tool_choice)
    if body.parallel_tool_calls is not None:
        extra["parallel_tool_calls"] = body.parallel_tool_calls
    text_format = (body.text.format if body.text else None) or {"type": "text"}
    if text_format.get("type") != "text":
        extra["response_format"] = _response_format(text_format)
    params = dict(body.model_extra or {})
    if body.reasoning and body.reasoning.get("effort"):
        params["reasoning_effort"] = body.reasoning["effort"]
    envelope = Envelope(
        model=body.model,
        instructions=body.instructions,
        tools=[t.model_dump(exclude_none=True) for t in tools],
        tool_choice=body.tool_choice if body.tool_choice is not None else "auto",
        parallel_tool_calls=body.parallel_tool_calls is not False,
        previous_response_id=body.previous_response_id,
        store=body.store is not False,
        background=bool(body.background),
        max_output_tokens=body.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        metadata=dict(body.metadata or {}),
        text={"format": text_format},
        reasoning=dict(body.reasoning or {}),
        user=body.user,
    )
    if envelope.background and not envelope.store:
        raise InvalidRequest(
            "A background response must be stored ('store' false with 'background').",
            param="store",
        )
    if body.input is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input")
    messages = input_messages(body.input)
    return Asked(envelope, messages, passthrough_dict(extra), params, bool(body.stream))


def _tool(index: int, tool: Any) -> FunctionToolIn:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind != "function":
        raise InvalidRequest(
            f"Tool type {kind!r} is not supported: Tiller's models call function tools only.",
            param=f"tools[{index}].type",
        )
    try:
        return FunctionToolIn.model_validate(tool)
    except ValidationError as error:
        raise invalid(error, prefix=("tools", index)) from None


def _function(tool: FunctionToolIn) -> dict[str, Any]:
    return tool.model_dump(exclude={"type"}, exclude_none=True)


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if choice.get("type") == "allowed_tools":
        return str(choice.get("mode") or "auto")
    raise InvalidRequest(
        "tool_choice must be none, auto, required or a function: "
        '{"type": "function", "name": ...}.',
        param="tool_choice",
    )


def _response_format(text_format: dict[str, Any]) -> dict[str, Any]:
    kind = text_format.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {k: v for k, v in text_format.items() if k != "type"}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest(
        "text.format.type must be text, json_object or json_schema.", param="text.format.type"
    )


# --- input items ------------------------------------------------------------------------------

ROLES = ("user", "system", "developer", "assistant")


def input_messages(value: str | list[dict[str, Any]]) -> tuple[Message, ...]:
    """The input as chat messages: messages as they are; an assistant's function calls in a
    row become one assistant message with tool calls; each call's output a tool message."""
    if isinstance(value, str):
        return (Message("user", value),)
    messages: list[Message] = []
    calls: list[ToolCall] = []
    for index, item in enumerate(value):
        kind = item.get("type", "message")
        if kind != "function_call" and calls:
            messages.append(Message("assistant", None, tool_calls=tuple(calls)))
            calls = []
        if kind == "message":
            messages.append(_message(index, item))
        elif kind == "function_call":
            calls.append(_call(index, item))
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not (isinstance(call_id, str) and call_id):
                raise _bad(index, "call_id", "a function_call_output needs its 'call_id'")
            messages.append(Message("tool", _output_text(index, output), tool_call_id=call_id))
        elif kind == "reasoning":
            continue  # a model's reasoning from an earlier turn: nothing an engine here reads
        else:
            raise _bad(index, "type", f"input items of type {kind!r} are not supported")
    if calls:
        messages.append(Message("assistant", None, tool_calls=tuple(calls)))
    return tuple(messages)


def _message(index: int, item: dict[str, Any]) -> Message:
    role, content = item.get("role"), item.get("content")
    if role not in ROLES:
        raise _bad(index, "role", f"expected one of {', '.join(ROLES)}")
    if isinstance(content, str):
        return Message(role, content)
    if not (isinstance(content, list) and content):
        raise _bad(index, "content", "expected a string or an array of content parts")
    parts = tuple(_part(index, i, p) for i, p in enumerate(content))
    if all(p.type == "text" for p in parts):
        return Message(role, "\n".join(p.text or "" for p in parts))
    return Message(role, parts)


def _part(index: int, position: int, part: Any) -> Part:
    kind = part.get("type") if isinstance(part, dict) else None
    where = f"content.{position}"
    if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
        return Part("text", {"text": part["text"]})
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return Part("refusal", {"refusal": part["refusal"]})
    if kind == "input_image":
        url = part.get("image_url")
        if not (isinstance(url, str) and url.startswith(("http://", "https://", "data:"))):
            raise _bad(index, f"{where}.image_url", "expected an http(s) or data: URL")
        image = {"url": url} | ({"detail": part["detail"]} if part.get("detail") else {})
        return Part("image_url", {"image_url": image})
    if kind == "input_file":
        file = {k: v for k, v in part.items() if k in ("file_id", "file_data", "filename")}
        if not (file.get("file_id") or file.get("file_data")):
            raise _bad(index, where, "an input_file part needs 'file_id' or 'file_data'")
        return Part("file", {"file": file})
    if kind == "input_audio" and isinstance(part.get("input_audio"), dict):
        return Part("input_audio", {"input_audio": part["input_audio"]})
    raise _bad(index, f"{where}.type", f"content parts of type {kind!r} are not supported")


def _call(index: int, item: dict[str, Any]) -> ToolCall:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    if not (isinstance(call_id, str) and call_id and isinstance(name, str) and name):
        raise _bad(index, "call_id", "a function_call needs its 'call_id' and 'name'")
    if not isinstance(arguments, str):
        raise _bad(index, "arguments", "expected a string of JSON")
    return ToolCall(call_id, name, arguments)


def _output_text(index: int, output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):  # output content parts: their texts
        return "\n".join(
            str(p.get("text", "")) for p in output if isinstance(p, dict) and "text" in p
        )
    raise _bad(index, "output", "expected a string")


def _bad(index: int, name: str, why: str) -> InvalidRequest:
    param = f"input[{index}].{name}"
    return InvalidRequest(f"Invalid '{param}': {why}.", param=param)
