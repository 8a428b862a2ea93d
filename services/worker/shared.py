"""The Temporal contract between the gateway (which starts activities) and the workers.

Each request is one standalone Temporal activity (`tiller.generate`) on its deployment's task
queue: the gateway starts it with the options below, Temporal queues, retries and times it out,
a worker runs it. A model with more than one deployment to try (several deployments, or
fallback models) runs as the `tiller.failover` workflow instead, which runs the same activity on
each deployment in turn (failover.py). Plain dataclasses, shared by both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

GENERATE_ACTIVITY = "tiller.generate"
FAILOVER_WORKFLOW = "tiller.failover"
# Every worker polls this queue for failover workflows (they only start activities).
FAILOVER_TASK_QUEUE = "tiller.failover"
# Every worker polls this queue for pipeline workflows (services/pipelines/) and their own
# small activities: resolving a step's model, publishing a fixed answer or a step's error.
PIPELINE_TASK_QUEUE = "tiller.pipelines"
ROUTE_ACTIVITY = "tiller.pipeline.route"
PUBLISH_ACTIVITY = "tiller.pipeline.publish"


def pipeline_workflow(name: str) -> str:
    """The workflow type a pipeline (models.yaml `pipeline.workflow`) is registered under."""
    return f"tiller.pipeline.{name}"


# Attempts are numbered across deployments: fence = target index * this + attempt.
FENCE_STRIDE = 100
# Defaults of a model's `heartbeat_timeout_seconds` and `queue_timeout_seconds` (models.yaml).
HEARTBEAT_TIMEOUT_SECONDS = 10.0
QUEUE_TIMEOUT_SECONDS = 60.0


@dataclass
class Message:
    role: str
    content: str | None  # None only for an assistant message with tool_calls
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # an assistant's calls, OpenAI's shape
    tool_call_id: str | None = None  # a tool message: the call it answers


@dataclass
class Sampling:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


# Sampling parameters, by name (models.yaml defaults, Triton input tensors).
SAMPLING_FIELDS = tuple(f.name for f in fields(Sampling))
# OpenAI chat parameters passed to the engine as the client wrote them (InferenceInput.extra);
# legacy completions take `logprobs`, `logit_bias` and `n` of them.
PASSTHROUGH = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "n",
)


@dataclass
class Target:
    """The engine deployment one attempt runs against."""

    deployment: str
    adapter: str
    endpoint: str
    engine_model: str
    task_queue: str
    model: str = ""  # the model the deployment serves (a fallback model's name)
    resume: bool = False  # the engine can continue a partial answer
    # The adapter's own settings from models.yaml (`options:`); never a secret itself.
    options: dict[str, Any] = field(default_factory=dict)


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
    # A worker that stops heartbeating for this long is presumed dead and its attempt fails.
    heartbeat_timeout_seconds: float = HEARTBEAT_TIMEOUT_SECONDS
    # How long it may wait for a free worker of one deployment before that one counts as failed.
    queue_timeout_seconds: float = QUEUE_TIMEOUT_SECONDS
    # The deployments to try after `target` (failover), and `target`'s place in the plan.
    next_targets: list[Target] = field(default_factory=list)
    target_index: int = 0
    prompt: str | None = None  # a (legacy) completion: continue this text; `messages` is empty
    inputs: list[str] | None = None  # embeddings of these texts; `messages` is empty
    # OpenAI parameters passed to the engine as given (tools, logprobs, n, response_format…).
    extra: dict[str, Any] = field(default_factory=dict)
    # A pipeline model (models.yaml `pipeline:`): its workflow's registered name and options;
    # `target` then only names the pipeline (its steps resolve their own models).
    pipeline: str = ""
    pipeline_options: dict[str, Any] = field(default_factory=dict)
    # Tokens that earlier steps of a pipeline used: the final step adds them to the usage it
    # reports, so the caller is charged for the whole pipeline.
    spent: Usage = field(default_factory=lambda: Usage())

    @property
    def targets(self) -> list[Target]:
        return [self.target, *self.next_targets]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceInput:
        """The inverse of dataclasses.asdict, as the gateway sends it to the activity."""
        return cls(
            request_id=data["request_id"],
            model=data["model"],
            messages=[Message(**_known(Message, m)) for m in data["messages"]],
            sampling=Sampling(**data["sampling"]),
            stream=data["stream"],
            target=Target(**_known(Target, data["target"])),
            events_key=data["events_key"],
            timeout_seconds=data["timeout_seconds"],
            retry=Retry(**data["retry"]),
            # .get: a request started by a gateway of an earlier version lacks these
            heartbeat_timeout_seconds=data.get("heartbeat_timeout_seconds")
            or HEARTBEAT_TIMEOUT_SECONDS,
            queue_timeout_seconds=data.get("queue_timeout_seconds") or QUEUE_TIMEOUT_SECONDS,
            next_targets=[Target(**_known(Target, t)) for t in data.get("next_targets", [])],
            target_index=data.get("target_index", 0),
            prompt=data.get("prompt"),
            inputs=data.get("inputs"),
            extra=data.get("extra") or {},
            pipeline=data.get("pipeline") or "",
            pipeline_options=data.get("pipeline_options") or {},
            spent=Usage(**data["spent"]) if data.get("spent") else Usage(),
        )


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The fields `cls` has: a worker reads a newer gateway's request without failing on a
    field it does not know (rolling upgrades, either order)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


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
        """The inverse of dataclasses.asdict, as published in a `done` event."""
        return cls(
            data["text"],
            data["finish_reason"],
            Usage(**data["usage"]),
            data.get("deployment", ""),
            data.get("model", ""),
            data.get("embeddings"),
            data.get("choices"),
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
    """Options of one deployment's activity: its queueing, attempts and their backoff."""
    retry = request.retry
    return ActivityOptions(
        schedule_to_start_timeout=timedelta(seconds=request.queue_timeout_seconds),
        start_to_close_timeout=timedelta(seconds=request.timeout_seconds),
        heartbeat_timeout=timedelta(seconds=request.heartbeat_timeout_seconds),
        # An upper bound on the deployment's share: queueing plus every attempt and its backoff.
        schedule_to_close_timeout=timedelta(seconds=deployment_bound_seconds(request)),
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=retry.initial_interval_seconds),
            backoff_coefficient=retry.backoff_coefficient,
            maximum_interval=timedelta(seconds=retry.maximum_interval_seconds),
            maximum_attempts=retry.max_attempts,
        ),
    )


def deployment_bound_seconds(request: InferenceInput) -> float:
    retry = request.retry
    per_attempt = request.timeout_seconds + retry.maximum_interval_seconds
    return request.queue_timeout_seconds + retry.max_attempts * per_attempt


def request_bound_seconds(request: InferenceInput) -> float:
    """The longest a request can take before its client gets an answer or an error: every
    deployment it may try, each with its queueing, attempts and backoff."""
    return deployment_bound_seconds(request) * len(request.targets)
