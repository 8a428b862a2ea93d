"""What a run returns: its text, why it stopped, the tokens it used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))


@dataclass
class InferenceResult:
    text: str
    finish_reason: str
    usage: Usage
    deployment: str = ""
    model: str = ""  # the model that answered: a fallback's name if one did
    embeddings: list[list[float]] | None = None  # an embeddings request's vectors, in order
    # The engine's own choices, as it wrote them, for a request with pass-through parameters
    # (tool calls, logprobs, several choices); None when `text` is the whole answer.
    choices: list[dict[str, Any]] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceResult:
        """The inverse of dataclasses.asdict: an activity's result, or a `done` event's."""
        return cls(
            data["text"],
            data["finish_reason"],
            Usage.from_dict(data["usage"]),
            data.get("deployment", ""),
            data.get("model", ""),
            data.get("embeddings"),
            data.get("choices"),
        )
