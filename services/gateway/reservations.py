"""How many tokens a request may use, estimated before it runs: what quota reserves against
tokens-per-minute limits and budgets at admission, and reconciles with the engine's count when
the request ends.

The prompt is estimated at one token per four characters (plus a few per message for the chat
template), which is about right for English with today's tokenizers and errs high for code; the
answer at its cap: `max_tokens` (the request's or the model's default) for each of `n` choices,
or `default_completion` when neither sets one. An embeddings request is its inputs alone.
"""

from __future__ import annotations

import math

from tiller.gateway.protocol import ChatRequest
from tiller.worker.shared import Sampling

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # role markers and separators of a chat template


def prompt_tokens(chat: ChatRequest) -> int:
    texts = [m.content or "" for m in chat.messages]
    texts += [
        str(c.get("function", {}).get("arguments", ""))
        for m in chat.messages
        for c in m.tool_calls or []
    ]
    if chat.prompt is not None:
        texts.append(chat.prompt)
    texts += chat.inputs or []
    characters = sum(len(t) for t in texts)
    return math.ceil(characters / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(chat.messages)


def reservation(chat: ChatRequest, sampling: Sampling, prompt: int, default_completion: int) -> int:
    """Tokens to reserve: the prompt's estimate (`prompt_tokens`) plus every choice's cap."""
    if chat.inputs is not None:
        return prompt
    choices = int(chat.extra.get("n") or 1)
    return prompt + (sampling.max_tokens or default_completion) * choices
