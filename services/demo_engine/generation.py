"""What the demo engine answers: deterministic, so tests can assert the exact text.

The answer is "You said: " and the last user message. Tokens are whitespace-separated words
(each keeping its leading space), for the prompt and the answer alike; `max_tokens` cuts the
answer short with finish_reason "length", as a real engine would.
"""

from __future__ import annotations

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


def answer(messages: list[dict[str, Any]], max_tokens: int | None) -> tuple[list[str], str]:
    """The answer's tokens and its finish reason."""
    last_user = next(
        (text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    text = f"You said: {last_user}" if last_user.strip() else "Hello from the Tiller demo engine."
    tokens = _TOKEN.findall(text)
    if max_tokens is not None and len(tokens) > max_tokens:
        return tokens[:max_tokens], "length"
    return tokens, "stop"
