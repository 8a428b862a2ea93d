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

from tiller.contract.requests import Chat, Embedding, Sampling, texts_of
from tiller.gateway.protocol import ApiRequest

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # role markers and separators of a chat template


def prompt_tokens(request: ApiRequest) -> int:
    characters = sum(len(t) for t in texts_of(request.ask))
    messages = len(request.ask.messages) if isinstance(request.ask, Chat) else 0
    return math.ceil(characters / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * messages


def reservation(
    request: ApiRequest, sampling: Sampling, prompt: int, default_completion: int
) -> int:
    """Tokens to reserve: the prompt's estimate (`prompt_tokens`) plus every choice's cap."""
    if isinstance(request.ask, Embedding):
        return prompt
    choices = int(request.ask.extra.get("n") or 1)
    return prompt + (sampling.max_tokens or default_completion) * choices
