"""The demo engine's choices: how its deterministic answer is written out, as a whole or as
stream chunks, for the OpenAI parameters that shape an answer.

- `n`: that many identical choices, indexed.
- `logprobs` (chat): every token gets logprob -0.5 (and `top_logprobs` alternatives of -1.5).
- `tools`: the answer may be one call of a function (tool_calls.py says which and with what
  arguments), finish reason "tool_calls". Its arguments are the answer's tokens: streamed, the
  call opens with its id, name and empty arguments, then each token adds a piece of them;
  `max_tokens` cuts them short (finish reason "length"), as a real engine would.
Anything else (response_format, logit_bias, parallel_tool_calls) is accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tiller.demo_engine.tool_calls import Call


def whole(
    body: dict[str, Any], tokens: list[str], finish: str, legacy: bool, call: Call | None = None
) -> list[dict[str, Any]]:
    """Every choice of a non-streamed answer."""
    text = "".join(tokens)
    one: dict[str, Any] = {"finish_reason": finish, "logprobs": _logprobs(body, tokens, legacy)}
    if legacy:
        one["text"] = text
    elif call:
        message = {"role": "assistant", "content": None, "tool_calls": [_call(call, text)]}
        one["message"] = message
    else:
        one["message"] = {"role": "assistant", "content": text}
    return [{"index": i, **one} for i in range(_n(body))]


def steps(
    body: dict[str, Any], tokens: list[str], legacy: bool, call: Call | None = None
) -> Iterator[list[dict[str, Any]]]:
    """The chunks (one per choice) that stream the answer: one step per token (a tool call's
    opening first)."""
    if call:
        yield from _per_choice(body, lambda: _tool_delta({"index": 0, **_call(call, "")}))
        for token in tokens:
            piece = {"index": 0, "function": {"arguments": token}}
            yield from _per_choice(body, lambda piece=piece: _tool_delta(piece))
        return
    for token in tokens:
        logprobs = _logprobs(body, [token], legacy)
        if legacy:
            part = {"text": token, "logprobs": logprobs, "finish_reason": None}
        else:
            part = {"delta": {"content": token}, "logprobs": logprobs, "finish_reason": None}
        yield from _per_choice(body, lambda part=part: part)


def _per_choice(body: dict[str, Any], make: Any) -> Iterator[list[dict[str, Any]]]:
    for index in range(_n(body)):
        yield [{"index": index, **make()}]


def _n(body: dict[str, Any]) -> int:
    return int(body.get("n") or 1)


def _tool_delta(call: dict[str, Any]) -> dict[str, Any]:
    return {"delta": {"tool_calls": [call]}, "logprobs": None, "finish_reason": None}


def _call(call: Call, arguments: str) -> dict[str, Any]:
    function = {"name": call.name, "arguments": arguments}
    return {"id": call.id, "type": "function", "function": function}


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
