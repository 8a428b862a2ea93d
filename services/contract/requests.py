"""A request's run, as the gateway starts it and the worker (or a pipeline) runs it.

What is asked of the engine has one type per kind: `Chat` (messages), `TextCompletion` (a legacy
prompt to continue) or `Embedding` (texts to embed). Each carries what only it has; code that
treats them differently matches on the type.

Everything travels through Temporal as plain JSON (dataclasses.asdict) and is read back by
hand (`from_dict`): a fraction of the SDK's typed conversion's cost. `from_dict` also reads what
a gateway of an earlier version started (rolling upgrades, and histories that Temporal replays).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from tiller.contract.results import Usage

# Defaults of a model's `heartbeat_timeout_seconds` and `queue_timeout_seconds` (models.yaml).
HEARTBEAT_TIMEOUT_SECONDS = 10.0
QUEUE_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call an assistant made, sent back in a later request's history."""

    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it

    def openai(self) -> dict[str, Any]:
        """OpenAI's shape, as engines take it."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolCall:
        if "function" in data:  # OpenAI's shape (requests of earlier versions)
            function = data["function"]
            return cls(data["id"], function["name"], function["arguments"])
        return cls(data["id"], data["name"], data["arguments"])


# Content parts whose value is text the engine reads (masked like any text); every other part
# (an image, audio, a file, a video…) is passed to the engine as the client sent it.
TEXT_PARTS = ("text", "refusal")


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a message's content, in OpenAI's shape: its `type` and the rest of it as sent
    (`{"type": "image_url", "image_url": {"url": ...}}` is Part("image_url", {"image_url":
    {"url": ...}}))."""

    type: str
    body: dict[str, Any]

    @property
    def text(self) -> str | None:
        """A text part's text (or a refusal's); None for an image, audio, a file…"""
        value = self.body.get(self.type) if self.type in TEXT_PARTS else None
        return value if isinstance(value, str) else None

    def openai(self) -> dict[str, Any]:
        return {"type": self.type, **self.body}

    def map_texts(self, change: Callable[[str], str]) -> Part:
        text = self.text
        return self if text is None else Part(self.type, {**self.body, self.type: change(text)})


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    # The text, or the parts of a message with more than text (images, audio, files); None
    # only for an assistant message with tool_calls.
    content: str | tuple[Part, ...] | None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant's calls
    tool_call_id: str | None = None  # a tool message: the call it answers
    # What else the client sent in the message (an assistant's `reasoning_content`, `audio`…),
    # as it sent it: an engine that takes OpenAI's messages is the judge of it.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The message's text: its content, or its text parts joined by newlines."""
        if isinstance(self.content, tuple):
            return "\n".join(t for p in self.content if (t := p.text) is not None)
        return self.content or ""

    @property
    def media(self) -> tuple[Part, ...]:
        """The parts that are not text (images, audio, files…)."""
        if not isinstance(self.content, tuple):
            return ()
        return tuple(p for p in self.content if p.text is None)

    def map_texts(self, change: Callable[[str], str]) -> Message:
        """The message with `change` applied to each text an engine reads (content and text
        parts, name, tool call arguments, the texts inside `extra`)."""
        content = self.content
        if isinstance(content, tuple):
            content = tuple(p.map_texts(change) for p in content)
        elif content is not None:
            content = change(content)
        return Message(
            self.role,
            content,
            change(self.name) if self.name else self.name,
            tuple(replace(c, arguments=change(c.arguments)) for c in self.tool_calls),
            self.tool_call_id,
            {k: _map_strings(v, change) for k, v in self.extra.items()},
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        content = data.get("content")
        if isinstance(content, list):
            content = tuple(Part(p["type"], dict(p["body"])) for p in content)
        return cls(
            data["role"],
            content,
            data.get("name"),
            tuple(ToolCall.from_dict(c) for c in data.get("tool_calls") or ()),
            data.get("tool_call_id"),
            dict(data.get("extra") or {}),
        )


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """A JSON value with `change` applied to every string in it."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_map_strings(v, change) for v in value]
    if isinstance(value, dict):
        return {k: _map_strings(v, change) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class Sampling:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sampling:
        known = known_fields(cls, data)
        return cls(**(known | {"stop": tuple(known.get("stop") or ())}))


# Sampling parameters, by name (models.yaml defaults, Triton input tensors).
SAMPLING_FIELDS = tuple(f.name for f in fields(Sampling))
# OpenAI chat parameters that shape the answer, passed to the engine as the client wrote them
# (`extra`); the engine's own choices then come back as it wrote them. Legacy completions take
# `logprobs`, `logit_bias` and `n` of them.
PASSTHROUGH = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "n",
    "audio",
    "modalities",
)
_NOTHING: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Chat:
    """A chat completion: the engine answers the messages."""

    messages: tuple[Message, ...]
    # OpenAI parameters passed to the engine as given (tools, logprobs, n, response_format…);
    # the engine's own choices then come back as it wrote them.
    extra: dict[str, Any] = field(default_factory=dict)
    # Engine parameters Tiller does not read (vLLM's top_k, structured_outputs,
    # chat_template_kwargs…), passed to an engine that takes them as given; the answer is
    # still text.
    params: dict[str, Any] = field(default_factory=dict)
    kind: Literal["chat"] = "chat"

    def map_texts(self, change: Callable[[str], str]) -> Chat:
        return replace(self, messages=tuple(m.map_texts(change) for m in self.messages))


@dataclass(frozen=True, slots=True)
class TextCompletion:
    """A (legacy) completion: the engine continues the prompt."""

    prompt: str
    extra: dict[str, Any] = field(default_factory=dict)  # logprobs, logit_bias, n
    params: dict[str, Any] = field(default_factory=dict)
    kind: Literal["completion"] = "completion"

    def map_texts(self, change: Callable[[str], str]) -> TextCompletion:
        return replace(self, prompt=change(self.prompt))


@dataclass(frozen=True, slots=True)
class Embedding:
    """Embeddings: one vector per text, in order."""

    texts: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)  # dimensions, an engine's own…
    kind: Literal["embedding"] = "embedding"
    extra: ClassVar[Mapping[str, Any]] = _NOTHING  # nothing is passed through

    def map_texts(self, change: Callable[[str], str]) -> Embedding:
        return replace(self, texts=tuple(change(t) for t in self.texts))


Ask = Chat | TextCompletion | Embedding


def ask_from_dict(data: dict[str, Any]) -> Ask:
    kind = data.get("kind")
    extra, params = dict(data.get("extra") or {}), dict(data.get("params") or {})
    if kind == "completion":
        return TextCompletion(data["prompt"], extra, params)
    if kind == "embedding":
        return Embedding(tuple(data["texts"]), params)
    if kind == "chat":
        return Chat(tuple(Message.from_dict(m) for m in data["messages"]), extra, params)
    raise ValueError(f"unknown request kind {kind!r}")


def texts_of(ask: Ask) -> list[str]:
    """Every text of the request an engine reads."""
    found: list[str] = []

    def collect(text: str) -> str:
        found.append(text)
        return text

    ask.map_texts(collect)
    return found


@dataclass(frozen=True)
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        return cls(**known_fields(cls, data))


@dataclass(frozen=True)
class Retry:
    max_attempts: int = 3
    initial_interval_seconds: float = 0.2
    backoff_coefficient: float = 2.0
    maximum_interval_seconds: float = 5.0


@dataclass(frozen=True)
class InferenceInput:
    request_id: str
    model: str  # canonical model name, as reported to the client
    ask: Ask
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
    next_targets: tuple[Target, ...] = ()
    target_index: int = 0
    # A pipeline model (models.yaml `pipeline:`): its workflow's registered name and options;
    # `target` then only names the pipeline (its steps resolve their own models).
    pipeline: str = ""
    pipeline_options: dict[str, Any] = field(default_factory=dict)
    # Tokens that earlier steps of a pipeline used: the final step adds them to the usage it
    # reports, so the caller is charged for the whole pipeline.
    spent: Usage = field(default_factory=Usage)

    @property
    def targets(self) -> list[Target]:
        return [self.target, *self.next_targets]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceInput:
        """The inverse of dataclasses.asdict, as the gateway sends it to the activity."""
        return cls(
            request_id=data["request_id"],
            model=data["model"],
            ask=ask_from_dict(data["ask"]) if "ask" in data else _ask_of_earlier(data),
            sampling=Sampling.from_dict(data["sampling"]),
            stream=data["stream"],
            target=Target.from_dict(data["target"]),
            events_key=data["events_key"],
            timeout_seconds=data["timeout_seconds"],
            retry=Retry(**known_fields(Retry, data["retry"])),
            # .get and `or`: a request started by a gateway of an earlier version lacks these
            heartbeat_timeout_seconds=data.get("heartbeat_timeout_seconds")
            or HEARTBEAT_TIMEOUT_SECONDS,
            queue_timeout_seconds=data.get("queue_timeout_seconds") or QUEUE_TIMEOUT_SECONDS,
            next_targets=tuple(Target.from_dict(t) for t in data.get("next_targets") or ()),
            target_index=data.get("target_index", 0),
            pipeline=data.get("pipeline") or "",
            pipeline_options=data.get("pipeline_options") or {},
            spent=Usage.from_dict(data["spent"]) if data.get("spent") else Usage(),
        )


def _ask_of_earlier(data: dict[str, Any]) -> Ask:
    """A request started before requests were typed: optional `prompt` and `inputs` beside
    `messages` and `extra`."""
    extra = dict(data.get("extra") or {})
    if data.get("inputs") is not None:
        return Embedding(tuple(data["inputs"]))
    if data.get("prompt") is not None:
        return TextCompletion(data["prompt"], extra)
    return Chat(tuple(Message.from_dict(m) for m in data["messages"]), extra)


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The fields `cls` has: a worker reads a newer gateway's request without failing on a
    field it does not know (rolling upgrades, either order)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
