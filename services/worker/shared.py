"""The Temporal contract between the gateway (which starts activities) and the workers.

Each request is one standalone Temporal activity (`tiller.generate`) on its deployment's task
queue: the gateway starts it with the options below, Temporal queues, retries and times it out,
a worker runs it. Plain dataclasses, shared by both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

GENERATE_ACTIVITY = "tiller.generate"

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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceInput:
        """The inverse of dataclasses.asdict, as the gateway sends it to the activity."""
        return cls(
            request_id=data["request_id"],
            model=data["model"],
            messages=[Message(**m) for m in data["messages"]],
            sampling=Sampling(**data["sampling"]),
            stream=data["stream"],
            target=Target(**data["target"]),
            events_key=data["events_key"],
            timeout_seconds=data["timeout_seconds"],
            retry=Retry(**data["retry"]),
        )


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


@dataclass(frozen=True)
class ActivityOptions:
    """How Temporal runs one request's activity: queueing, attempts, heartbeats, retries."""

    schedule_to_start_timeout: timedelta
    start_to_close_timeout: timedelta
    heartbeat_timeout: timedelta
    schedule_to_close_timeout: timedelta
    retry_policy: RetryPolicy

    def as_kwargs(self) -> dict[str, Any]:
        """As keyword arguments of Client.start_activity / execute_activity."""
        return {
            "schedule_to_start_timeout": self.schedule_to_start_timeout,
            "start_to_close_timeout": self.start_to_close_timeout,
            "heartbeat_timeout": self.heartbeat_timeout,
            "schedule_to_close_timeout": self.schedule_to_close_timeout,
            "retry_policy": self.retry_policy,
        }


def activity_options(request: InferenceInput) -> ActivityOptions:
    retry = request.retry
    per_attempt = request.timeout_seconds + retry.maximum_interval_seconds
    return ActivityOptions(
        schedule_to_start_timeout=timedelta(seconds=QUEUE_TIMEOUT_SECONDS),
        start_to_close_timeout=timedelta(seconds=request.timeout_seconds),
        heartbeat_timeout=timedelta(seconds=HEARTBEAT_TIMEOUT_SECONDS),
        # An upper bound on the whole request: queueing plus every attempt and its backoff.
        schedule_to_close_timeout=timedelta(
            seconds=QUEUE_TIMEOUT_SECONDS + retry.max_attempts * per_attempt
        ),
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=retry.initial_interval_seconds),
            backoff_coefficient=retry.backoff_coefficient,
            maximum_interval=timedelta(seconds=retry.maximum_interval_seconds),
            maximum_attempts=retry.max_attempts,
        ),
    )
