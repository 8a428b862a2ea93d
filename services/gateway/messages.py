"""Chat messages as clients send them, validated, in Tiller's terms (contract `Message`).

Clients send back what they were given: the official SDKs serialize an assistant's reply with
`refusal`, `annotations`, `audio` and `function_call` (null when unused), and engines add their
own fields (vLLM's `reasoning_content`). Such fields are accepted: empty ones are dropped, the
others travel with the message to the engine, which is their judge. What Tiller reads itself
(role, content, name, tool calls) is checked strictly.

Content is a string or an array of parts of any OpenAI type. Text (and refusal) parts are text
like any other: masked, counted, joined for engines that take text only. Images, audio and files
are checked for their shape and passed as sent to engines that take them; an engine that takes
text only refuses them by name (worker/adapters/base.py `text_only`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from tiller.contract import requests as contract
from tiller.contract.requests import TEXT_PARTS, Message, Part

# What the validator below takes, for the OpenAPI document: a string, or content parts.
CONTENT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string"},
        {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"type": "string"}},
            },
        },
        {"type": "null"},
    ]
}
# Fields the SDKs write into an assistant message they send back: nothing to pass on when empty.
SDK_ECHOES = ("refusal", "annotations", "audio", "function_call")


class _Echoed(BaseModel):
    """What the SDKs hand back of a reply: strict in what Tiller reads, and what else they add
    for their own use (the streaming helper's `parsed_arguments`) is left out."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True, allow_inf_nan=False)


class ToolCallFunction(_Echoed):
    name: Annotated[str, Field(min_length=1)]
    arguments: str


class ToolCall(_Echoed):
    """A tool call the assistant made, sent back in a later request's history."""

    id: Annotated[str, Field(min_length=1)]
    type: Literal["function"]
    function: ToolCallFunction


class ChatMessageIn(BaseModel):
    # Fields Tiller does not read are kept (model_extra) and passed on with the message.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[Any, WithJsonSchema(CONTENT_SCHEMA)]
    name: str | None = None
    tool_calls: Annotated[list[ToolCall], Field(min_length=1)] | None = None  # assistant
    tool_call_id: Annotated[str, Field(min_length=1)] | None = None  # tool: the call answered
    # What the SDKs write into an assistant's reply they send back (SDK_ECHOES).
    refusal: str | None = None
    annotations: list[Any] | None = None
    audio: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, value: Any) -> str | tuple[Part, ...] | None:
        """A string, or an array of content parts (text parts alone are joined with newlines);
        null only for an assistant message that made tool calls (checked below)."""
        if value is None or isinstance(value, str):
            return value
        if not (isinstance(value, list) and value):
            raise ValueError("expected a string or an array of content parts")
        parts = tuple(_part(index, part) for index, part in enumerate(value))
        if all(p.type == "text" for p in parts):
            return "\n".join(p.text or "" for p in parts)
        return parts

    @model_validator(mode="before")
    @classmethod
    def _calls_need_no_content(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("tool_calls") and "content" not in data:
            return {**data, "content": None}
        return data

    @model_validator(mode="after")
    def _complete(self) -> ChatMessageIn:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (null only with tool_calls)")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only an assistant message has tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message, and only a tool message, has a tool_call_id")
        return self


def to_message(m: ChatMessageIn) -> Message:
    calls = tuple(
        contract.ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ()
    )
    echoes = {k: getattr(m, k) for k in SDK_ECHOES if getattr(m, k) not in (None, [], {}, "")}
    # A field an SDK or engine left null (vLLM's `reasoning`) says nothing to pass on.
    others = {k: v for k, v in (m.model_extra or {}).items() if v is not None}
    extra = {**others, **echoes}
    return Message(m.role, m.content, m.name, calls, m.tool_call_id, extra)


# The parts whose shape Tiller checks: each holds an object under its type's name, with these
# fields required and of these types; other part types (vLLM's video_url…) pass as sent.
_PART_FIELDS: dict[str, dict[str, type]] = {
    "image_url": {"url": str},
    "input_audio": {"data": str, "format": str},
    "file": {},
}


def _part(index: int, part: Any) -> Part:
    where = f"content part {index}"
    if not isinstance(part, dict) or not isinstance(part.get("type"), str) or not part["type"]:
        raise ValueError(f"{where}: expected an object with a 'type'")
    kind = part["type"]
    body = {k: v for k, v in part.items() if k != "type"}
    if kind in TEXT_PARTS:
        if not isinstance(body.get(kind), str):
            raise ValueError(f"{where}: the {kind} part needs a string '{kind}'")
        return Part(kind, body)
    if kind in _PART_FIELDS:
        value = body.get(kind)
        if not isinstance(value, dict):
            raise ValueError(f"{where}: the {kind} part needs an object '{kind}'")
        for name, type_ in _PART_FIELDS[kind].items():
            if not isinstance(value.get(name), type_) or not value[name]:
                raise ValueError(f"{where}: '{kind}.{name}' must be a non-empty string")
        if kind == "image_url" and not value["url"].startswith(("http://", "https://", "data:")):
            raise ValueError(f"{where}: 'image_url.url' must be an http(s) or data: URL")
        if kind == "file" and not (value.get("file_id") or value.get("file_data")):
            raise ValueError(f"{where}: the file part needs 'file_id' or 'file_data'")
    return Part(kind, body)
