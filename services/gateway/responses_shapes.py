"""The Responses API's shapes, made from a chat's answer: the response object, its output items
(an assistant message, function calls), and the stream's events, each with its sequence number.

The events of one answer are made from its events one by one, in a fixed way, and item ids come
from the response id and the item's place: reading the same answer again (a client resuming
with `starting_after`) makes the same events with the same numbers and ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

from tiller.common.errors import TillerError
from tiller.contract.events import Choices, Delta, Done, Event, Failed
from tiller.contract.requests import Message, ToolCall
from tiller.contract.results import InferenceResult, Usage
from tiller.gateway.responses_protocol import Envelope

# What a response's `status` may be, and the error codes the Responses API knows.
IN_PROGRESS, COMPLETED, INCOMPLETE, FAILED, CANCELLED = (
    "in_progress",
    "completed",
    "incomplete",
    "failed",
    "cancelled",
)


def item_id(kind: str, response_id: str, index: int) -> str:
    digest = hashlib.sha256(f"{response_id}/{index}".encode()).hexdigest()[:32]
    return f"{kind}_{digest}"


def usage_of(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def error_of(error: TillerError) -> dict[str, Any]:
    code = error.openai_code or ("server_error" if error.http_status >= 500 else "invalid_request")
    return {"code": code, "message": error.message}


def response_object(
    response_id: str,
    created: int,
    envelope: Envelope,
    status: str,
    output: list[dict[str, Any]] | None = None,
    usage: Usage | None = None,
    error: TillerError | None = None,
) -> dict[str, Any]:
    """The response object, as `POST /v1/responses` and `GET /v1/responses/{id}` answer it."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": envelope.background,
        "error": error_of(error) if error is not None else None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == INCOMPLETE else None,
        "instructions": envelope.instructions,
        "max_output_tokens": envelope.max_output_tokens,
        "metadata": envelope.metadata,
        "model": envelope.model,
        "output": output or [],
        "parallel_tool_calls": envelope.parallel_tool_calls,
        "previous_response_id": envelope.previous_response_id,
        "reasoning": {"effort": envelope.reasoning.get("effort"), "summary": None},
        "store": envelope.store,
        "temperature": envelope.temperature,
        "text": envelope.text,
        "tool_choice": envelope.tool_choice,
        "tools": envelope.tools,
        "top_p": envelope.top_p,
        "truncation": "disabled",
        "usage": usage_of(usage) if usage is not None else None,
        "user": envelope.user,
    }


def status_of(result: InferenceResult) -> str:
    return INCOMPLETE if result.finish_reason == "length" else COMPLETED


# --- output items ----------------------------------------------------------------------------


@dataclass
class _Item:
    """One output item being written: the assistant's text, or one function call."""

    index: int
    id: str
    kind: str  # "message" | "function_call"
    text: str = ""
    call_id: str = ""
    name: str = ""

    def body(self, status: str) -> dict[str, Any]:
        if self.kind == "message":
            content = [] if status == IN_PROGRESS else [_text_part(self.text)]
            return {
                "type": "message",
                "id": self.id,
                "status": status,
                "role": "assistant",
                "content": content,
            }
        return {
            "type": "function_call",
            "id": self.id,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": "" if status == IN_PROGRESS else self.text,
            "status": status,
        }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


@dataclass
class ResponseStream:
    """The events of one response's stream, from its answer's events, numbered in order."""

    response_id: str
    created: int
    envelope: Envelope
    sequence: int = 0
    items: list[_Item] = field(default_factory=list)
    _message: _Item | None = None
    _calls: dict[int, _Item] = field(default_factory=dict)  # the engine's tool-call index

    def _event(self, kind: str, **body: Any) -> tuple[str, dict[str, Any]]:
        event = {"type": kind, "sequence_number": self.sequence, **body}
        self.sequence += 1
        return kind, event

    def start(self) -> list[tuple[str, dict[str, Any]]]:
        snapshot = response_object(self.response_id, self.created, self.envelope, IN_PROGRESS)
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def of(self, event: Event) -> list[tuple[str, dict[str, Any]]]:
        if isinstance(event, Delta):
            if event.chunks:
                return [e for chunk in event.chunks for e in self._chunk(chunk)]
            return self._text(event.text)
        if isinstance(event, Done):
            return self._done(event.result)
        if isinstance(event, Failed):
            return self._failed(event.error)
        return []

    def _text(self, text: str) -> list[tuple[str, dict[str, Any]]]:
        if not text:
            return []
        events = []
        if self._message is None:
            self._message = self._open("msg", "message")
            events.append(self._added(self._message))
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=self._message.id,
                    output_index=self._message.index,
                    content_index=0,
                    part=_text_part(""),
                )
            )
        self._message.text += text
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=self._message.id,
                output_index=self._message.index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _chunk(self, choices: Choices) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = []
        for choice in choices:
            if int(choice.get("index", 0)) != 0:
                continue  # a response has one answer
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                events += self._text(delta["content"])
            for call in delta.get("tool_calls") or ():
                events += self._call_delta(call)
        return events

    def _call_delta(self, call: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = []
        position = int(call.get("index", 0))
        item = self._calls.get(position)
        function = call.get("function") or {}
        if item is None:
            item = self._calls[position] = self._open("fc", "function_call")
            item.call_id = str(call.get("id") or item.id)
            item.name = str(function.get("name") or "")
            events.append(self._added(item))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.text += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item.id,
                    output_index=item.index,
                    delta=arguments,
                )
            )
        return events

    def _done(self, result: InferenceResult) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = []
        if not self.items:  # nothing streamed: a whole answer (a background one, say)
            for written in output_of(result, self.response_id):
                events += self._whole(written)
        for item in self.items:
            events += self._close(item)
        status = status_of(result)
        final = response_object(
            self.response_id,
            self.created,
            self.envelope,
            status,
            [item.body(COMPLETED) for item in self.items],
            result.usage,
        )
        kind = "response.completed" if status == COMPLETED else "response.incomplete"
        events.append(self._event(kind, response=final))
        return events

    def _whole(self, written: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        if written["type"] == "message":
            return self._text(written["content"][0]["text"])
        call = {
            "index": len(self._calls),
            "id": written["call_id"],
            "function": {"name": written["name"], "arguments": written["arguments"]},
        }
        return self._call_delta(call)

    def _close(self, item: _Item) -> list[tuple[str, dict[str, Any]]]:
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == "message":
            events = [
                self._event(
                    "response.output_text.done",
                    **where,
                    content_index=0,
                    text=item.text,
                    logprobs=[],
                ),
                self._event(
                    "response.content_part.done",
                    **where,
                    content_index=0,
                    part=_text_part(item.text),
                ),
            ]
        else:
            events = [
                self._event(
                    "response.function_call_arguments.done",
                    **where,
                    name=item.name,
                    arguments=item.text,
                )
            ]
        body = item.body(COMPLETED)
        events.append(self._event("response.output_item.done", output_index=item.index, item=body))
        return events

    def _failed(self, error: TillerError) -> list[tuple[str, dict[str, Any]]]:
        final = response_object(
            self.response_id,
            self.created,
            self.envelope,
            FAILED,
            [item.body(INCOMPLETE) for item in self.items],
            error=error,
        )
        return [self._event("response.failed", response=final)]

    def _open(self, prefix: str, kind: str) -> _Item:
        index = len(self.items)
        item = _Item(index, item_id(prefix, self.response_id, index), kind)
        self.items.append(item)
        return item

    def _added(self, item: _Item) -> tuple[str, dict[str, Any]]:
        return self._event(
            "response.output_item.added", output_index=item.index, item=item.body(IN_PROGRESS)
        )


def output_of(result: InferenceResult, response_id: str) -> list[dict[str, Any]]:
    """A whole answer's output items: its text as an assistant message, its function calls."""
    text, calls = result.text, []
    if result.choices:
        message = next(
            (c.get("message") or {} for c in result.choices if int(c.get("index", 0)) == 0), {}
        )
        text = message.get("content") or ""
        calls = list(message.get("tool_calls") or ())
    items: list[dict[str, Any]] = []
    if text:
        item = _Item(0, item_id("msg", response_id, 0), "message", text)
        items.append(item.body(COMPLETED))
    for call in calls:
        function = call.get("function") or {}
        index = len(items)
        item = _Item(
            index,
            item_id("fc", response_id, index),
            "function_call",
            str(function.get("arguments") or ""),
            str(call.get("id") or ""),
            str(function.get("name") or ""),
        )
        items.append(item.body(COMPLETED))
    return items


def conversation_of(output: list[dict[str, Any]]) -> tuple[Message, ...]:
    """A response's output as the chat messages of the conversation's next turn."""
    text = "".join(
        part.get("text", "")
        for item in output
        if item["type"] == "message"
        for part in item["content"]
    )
    calls = tuple(
        ToolCall(item["call_id"], item["name"], item["arguments"])
        for item in output
        if item["type"] == "function_call"
    )
    if not text and not calls:
        return ()
    return (Message("assistant", text or None, tool_calls=calls),)


def with_model(envelope: Envelope, model: str) -> Envelope:
    return dataclasses.replace(envelope, model=model)
