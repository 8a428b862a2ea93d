"""What the demo engine answers: deterministic, so tests can assert the exact text.

The answer is "You said: " and the last user message, or, when the conversation ends with a
tool's result (a "tool" message), "The tool said: " and that result, so an agent's tool loop
ends there. Tokens are whitespace-separated words (each keeping its leading space), for the
prompt and the answer alike; `max_tokens` cuts the answer short with finish_reason "length", as
a real engine would. With vLLM's
`continue_final_message`, a final assistant message is an answer begun earlier: the engine
continues it with the rest of the same deterministic answer (nothing, if it is not a prefix).
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

_TOKEN = re.compile(r"\s*\S+")


def text_of(content: Any) -> str:
    """A message's text, whether content is a string or an array of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(_TOKEN.findall(text_of(m.get("content")))) for m in messages)


def answer(
    messages: list[dict[str, Any]], max_tokens: int | None, continue_final: bool = False
) -> tuple[list[str], str]:
    """The answer's tokens and its finish reason."""
    begun = ""
    if continue_final and messages and messages[-1].get("role") == "assistant":
        begun = text_of(messages[-1].get("content"))
        messages = messages[:-1]
    text = answer_text(messages)
    if begun:
        text = text[len(begun) :] if text.startswith(begun) else ""
    return _cut(_continuation(text) if begun else _TOKEN.findall(text), max_tokens, "stop")


def answer_text(messages: list[dict[str, Any]]) -> str:
    """The whole text answer to a conversation (before `max_tokens` or a continuation)."""
    if messages and messages[-1].get("role") == "tool":
        return f"The tool said: {text_of(messages[-1].get('content'))}"
    last_user = last_user_text(messages)
    return f"You said: {last_user}" if last_user.strip() else "Hello from the Tiller demo engine."


def last_user_text(messages: list[dict[str, Any]]) -> str:
    return next(
        (text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )


def tokens_of(text: str, max_tokens: int | None, finish: str = "stop") -> tuple[list[str], str]:
    """A text's tokens, cut at `max_tokens` (finish reason "length"), else `finish`."""
    return _cut(_TOKEN.findall(text), max_tokens, finish)


def _cut(tokens: list[str], max_tokens: int | None, finish: str) -> tuple[list[str], str]:
    if max_tokens is not None and len(tokens) > max_tokens:
        return tokens[:max_tokens], "length"
    return tokens, finish


def _continuation(rest: str) -> list[str]:
    """Tokens of the rest of an answer that may begin mid-word (the first keeps that part)."""
    head = re.match(r"\S*", rest)
    first = head.group(0) if head else ""
    return ([first] if first else []) + _TOKEN.findall(rest[len(first) :])


EMBEDDING_DIMENSIONS = 8


def embedding(text: str) -> list[float]:
    """A deterministic unit vector for a text (from its SHA-256): not meaningful, but equal texts
    get equal vectors and different texts different ones, which is what tests need."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(b - 127.5) / 127.5 for b in digest[:EMBEDDING_DIMENSIONS]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def text_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))
