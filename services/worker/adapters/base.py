"""The one interface every engine sits behind.

An adapter translates Tiller's request into the engine's protocol and the engine's answer back
into typed deltas, and classifies failures at the boundary by raising a TillerError whose
`retryable` says whether another attempt can help (connection refused, timeout, 5xx, overload)
or not (context too long, invalid parameters). Adapters never retry: Temporal owns every retry.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from tiller.common.errors import InvalidRequest
from tiller.contract.requests import Ask, Chat, Sampling, Target
from tiller.contract.results import Usage


@dataclass(frozen=True, slots=True)
class EngineRequest:
    target: Target
    # What is asked: a Chat (messages), a TextCompletion (a prompt to continue) or an
    # Embedding (texts). Its `extra` holds OpenAI parameters to pass as given (tools,
    # tool_choice, response_format, logprobs, n…): when set, the engine's own choices are
    # returned too (Delta.choices, Completion.choices).
    ask: Ask
    sampling: Sampling
    timeout_seconds: float
    # The answer so far, for the engine to continue (an attempt after a mid-stream failure, on
    # a deployment that can resume); max_tokens already counts what it holds.
    partial: str = ""


@dataclass(frozen=True, slots=True)
class Delta:
    """One piece of a streamed answer. The engine's last piece carries finish_reason and usage."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    # With pass-through parameters: the engine's chunk choices as it wrote them (tool-call
    # deltas, logprobs, several choices); `text` is then choice 0's content.
    choices: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: str
    usage: Usage
    embeddings: list[list[float]] | None = None
    choices: list[dict[str, Any]] | None = None  # the engine's own, with pass-through params


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int


@dataclass(frozen=True)
class AdapterResources:
    """Clients shared by every adapter in a worker process: pooled, created once."""

    http: aiohttp.ClientSession


class EngineAdapter(abc.ABC):
    def __init__(self, resources: AdapterResources) -> None:
        self.resources = resources

    # The pass-through parameters (the ask's `extra`) this adapter's engine takes; the
    # activity refuses a request with any other, naming it.
    passthrough: frozenset[str] = frozenset()

    @abc.abstractmethod
    def stream(self, request: EngineRequest) -> AsyncIterator[Delta]:
        """Deltas as the engine produces them; cancelling the iteration aborts the request."""

    @abc.abstractmethod
    async def predict(self, request: EngineRequest) -> Completion:
        """The whole answer in one call."""

    async def embed(self, request: EngineRequest) -> Embeddings:
        """One vector per text of `request.ask` (an Embedding), in order; engines without
        embeddings refuse."""
        raise InvalidRequest(
            f"The deployment {request.target.deployment!r} does not serve embeddings.",
            param="model",
        )

    @abc.abstractmethod
    async def health(self, target: Target) -> bool:
        """Whether the engine behind `target` answers its health check."""

    async def aclose(self) -> None:  # noqa: B027 (most adapters hold nothing of their own)
        """Close what the adapter holds of its own (connections not in AdapterResources)."""


def text_only(chat: Chat, target: Target) -> Chat:
    """The chat, refused by name if a message carries more than text (an image, audio, a
    file…): for engines whose protocol takes text alone. OpenAI's `messages[i].content[j]`
    names the part."""
    for i, message in enumerate(chat.messages):
        for j, part in enumerate(message.content if isinstance(message.content, tuple) else ()):
            if part.text is None:
                raise InvalidRequest(
                    f"'{part.type}' content parts are not supported by deployment "
                    f"{target.deployment!r} ({target.adapter}): its engine takes text only.",
                    param=f"messages[{i}].content[{j}]",
                )
    return chat
