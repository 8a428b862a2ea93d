"""The demo engine's choices: how its deterministic answer is written out, as a whole or as
stream chunks, for the OpenAI parameters that shape an answer.

- `n`: that many identical choices, indexed.
- `logprobs` (chat): every token gets logprob -0.5 (and `top_logprobs` alternatives of -1.5).
- `tools` with `tool_choice` naming a function (or "required": the first tool): the answer
  becomes one call of that function, its arguments `{"said": <the answer text>}`, finish
  reason "tool_calls".
Anything else (response_format, logit_bias, parallel_tool_calls) is accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

TOOL_CALL_ID = "call_demo_0"


def tool_called(body: dict[str, Any]) -> str | None:
    """The function the request makes the model call, if any."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        return str((choice.get("function") or {}).get("name") or "") or None
    if choice == "required" and tools:
        return str(tools[0]["function"]["name"])
    return None


def whole(
    body: dict[str, Any], tokens: list[str], finish: str, legacy: bool
) -> list[dict[str, Any]]:
    """Every choice of a non-streamed answer."""
    text = "".join(tokens)
    function = None if legacy else tool_called(body)
    one: dict[str, Any] = {"finish_reason": finish, "logprobs": _logprobs(body, tokens, legacy)}
    if legacy:
        one["text"] = text
    elif function:
        call = _call(function, orjson.dumps({"said": text}).decode(), opening=True)
        one |= {"message": {"role": "assistant", "content": None, "tool_calls": [call]}}
        one["finish_reason"] = "tool_calls"
    else:
        one["message"] = {"role": "assistant", "content": text}
    return [{"index": i, **one} for i in range(_n(body))]


def steps(body: dict[str, Any], tokens: list[str], legacy: bool) -> Iterator[list[dict[str, Any]]]:
    """Per token, the chunks (one per choice) that stream it."""
    function = None if legacy else tool_called(body)
    if function:  # the arguments, streamed as JSON text: an opening, the words, a closing
        yield from _per_choice(body, lambda: _tool_delta(function, '{"said": "', opening=True))
        for token in tokens:
            piece = orjson.dumps(token).decode()[1:-1]
            yield from _per_choice(body, lambda piece=piece: _tool_delta(function, piece))
        yield from _per_choice(body, lambda: _tool_delta(function, '"}'))
        return
    for token in tokens:
        logprobs = _logprobs(body, [token], legacy)
        if legacy:
            part = {"text": token, "logprobs": logprobs, "finish_reason": None}
        else:
            part = {"delta": {"content": token}, "logprobs": logprobs, "finish_reason": None}
        yield from _per_choice(body, lambda part=part: part)


def finish_reason(body: dict[str, Any], finish: str, legacy: bool) -> str:
    return "tool_calls" if not legacy and tool_called(body) else finish


def _per_choice(body: dict[str, Any], make: Any) -> Iterator[list[dict[str, Any]]]:
    for index in range(_n(body)):
        yield [{"index": index, **make()}]


def _n(body: dict[str, Any]) -> int:
    return int(body.get("n") or 1)


def _tool_delta(function: str, arguments: str, opening: bool = False) -> dict[str, Any]:
    call = _call(function, arguments, opening)
    call["index"] = 0
    return {"delta": {"tool_calls": [call]}, "logprobs": None, "finish_reason": None}


def _call(function: str, arguments: str, opening: bool) -> dict[str, Any]:
    if not opening:  # later pieces of a streamed call carry only more arguments
        return {"function": {"arguments": arguments}}
    return {
        "id": TOOL_CALL_ID,
        "type": "function",
        "function": {"name": function, "arguments": arguments},
    }


def _logprobs(body: dict[str, Any], tokens: list[str], legacy: bool) -> dict[str, Any] | None:
    if legacy or not body.get("logprobs"):
        return None
    top = int(body.get("top_logprobs") or 0)
    return {
        "content": [
            {
                "token": t,
                "logprob": -0.5,
                "bytes": list(t.encode()),
                "top_logprobs": [
                    {"token": f"{t}~{k}", "logprob": -1.5, "bytes": None} for k in range(top)
                ],
            }
            for t in tokens
        ]
    }
