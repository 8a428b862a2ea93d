"""The Temporal contract between the gateway (which starts workflows) and the workers.

Plain dataclasses only: this module is imported by the gateway and inside the workflow sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INFERENCE_WORKFLOW = "tiller.Inference"
GENERATE_ACTIVITY = "tiller.generate"
PUBLISH_FAILURE_ACTIVITY = "tiller.publish_failure"

# A worker that stops heartbeating for this long is presumed dead and its attempt fails.
HEARTBEAT_TIMEOUT_SECONDS = 10.0
# How long a request may wait for a free worker before it is answered with an error.
QUEUE_TIMEOUT_SECONDS = 60.0


@dataclass
class Message:
    role: str
    content: str
    name: str | None = None


@dataclass
class Sampling:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


@dataclass
class Target:
    """The engine deployment one attempt runs against."""

    deployment: str
    adapter: str
    endpoint: str
    engine_model: str
    task_queue: str


@dataclass
class Retry:
    max_attempts: int = 3
    initial_interval_seconds: float = 0.2
    backoff_coefficient: float = 2.0
    maximum_interval_seconds: float = 5.0


@dataclass
class InferenceInput:
    request_id: str
    model: str  # canonical model name, as reported to the client
    messages: list[Message]
    sampling: Sampling
    stream: bool  # publish each delta, not only the final result
    target: Target
    events_key: str  # the Redis stream the answer is published to
    timeout_seconds: float = 120.0  # one attempt against the engine
    retry: Retry = field(default_factory=Retry)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class InferenceResult:
    text: str
    finish_reason: str
    usage: Usage
    deployment: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceResult:
        """The inverse of dataclasses.asdict, as published in a `done` event."""
        return cls(
            data["text"], data["finish_reason"], Usage(**data["usage"]), data.get("deployment", "")
        )


@dataclass
class FailureNotice:
    events_key: str
    error: dict[str, Any]


def execution_timeout_seconds(request: InferenceInput) -> float:
    """An upper bound on the whole workflow: queueing plus every attempt and its backoff."""
    per_attempt = request.timeout_seconds + request.retry.maximum_interval_seconds
    return QUEUE_TIMEOUT_SECONDS + request.retry.max_attempts * per_attempt
