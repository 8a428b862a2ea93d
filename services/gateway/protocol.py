"""OpenAI's chat-completions, (legacy) completions and embeddings requests, validated with
OpenAI's error wording and `param` names.

Three kinds of parameter:
- those Tiller reads (model, messages, sampling, stream…) are checked strictly;
- those that shape the answer (tools, tool_choice, response_format, logprobs, n, audio…) are
  checked for their JSON type and passed to the engine as they came (`extra`); the engine's
  choices come back as it wrote them;
- any other is an engine parameter (vLLM's top_k, min_p, structured_outputs,
  chat_template_kwargs; reasoning_effort…): passed to the engine as given (`params`), which is
  its judge, unless the model's `engine_parameters: refuse` says otherwise (models.yaml).
`user`, `metadata`, `store` and `service_tier` are accepted and go no further (docs/models.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from tiller.common.errors import InvalidRequest
from tiller.common.paths import key_path
from tiller.contract.requests import (
    PASSTHROUGH,
    Ask,
    Chat,
    Embedding,
    Sampling,
    TextCompletion,
)
from tiller.gateway.messages import ChatMessageIn, to_message

# A model's name or alias (models.yaml's are shorter): longer is no model, and echoing it in an
# error would not fit a gRPC status.
MAX_MODEL_NAME = 256
ModelName = Annotated[str, Field(min_length=1, max_length=MAX_MODEL_NAME)]

# What the validators of open fields take, for the OpenAPI document (openapi.py).
_STRING = {"type": "string"}
STOP_SCHEMA = {
    "anyOf": [_STRING, {"type": "array", "maxItems": 4, "items": _STRING}, {"type": "null"}]
}
PROMPT_SCHEMA = {
    "anyOf": [_STRING, {"type": "array", "minItems": 1, "maxItems": 1, "items": _STRING}]
}
TEXTS_SCHEMA = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "array",
            "minItems": 1,
            "maxItems": 2048,
            "items": {"type": "string", "minLength": 1},
        },
    ]
}

# Known OpenAI parameters this gateway refuses: deprecated (tools and tool_choice replace them),
# and no engine Tiller serves takes them.
UNSUPPORTED = ("functions", "function_call")

# Parameters passed through to the engine as given (after a type check), answered in the
# engine's own words: tool calls, log probabilities, several choices, structured output.
CHAT_PASSTHROUGH = PASSTHROUGH
COMPLETION_PASSTHROUGH = ("logprobs", "logit_bias", "n")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class FunctionTool(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionTool


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class _Open(BaseModel):
    """A request: its own fields strictly checked, any other kept as an engine parameter."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)

    def engine_params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ChatCompletionRequest(_Open):
    model: ModelName
    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None
    stop: Annotated[Any, WithJsonSchema(STOP_SCHEMA)] = None
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    tools: Annotated[list[Tool], Field(min_length=1, max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    audio: dict[str, Any] | None = None
    modalities: list[str] | None = None
    # Tiller's: run on even if the client leaves; fetch or stream it later by id.
    background: bool | None = False

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: Any) -> list[str]:
        return stop_list(value)


# No engine writes more than this in one answer; quota counts tokens in 64-bit integers.
MAX_TOKENS = 2**31 - 1
# Choices per request (`n`): each is a whole answer the engine writes and the client is billed.
MAX_CHOICES = 8


def stop_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value):
        return value
    raise ValueError("expected a string or an array of up to 4 strings")


class CompletionRequest(_Open):
    """POST /v1/completions: one prompt, continued by the model."""

    model: ModelName
    prompt: Annotated[Any, WithJsonSchema(PROMPT_SCHEMA)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None
    best_of: Annotated[int, Field(ge=1, le=1)] | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    echo: Literal[False] | None = None
    stop: Annotated[Any, WithJsonSchema(STOP_SCHEMA)] = None
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: Any) -> list[str]:
        return stop_list(value)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            return value[0]
        raise ValueError("expected a string or an array of one string (batches are not supported)")


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """A validated request of any endpoint, in the terms the rest of Tiller uses: what is
    asked of the engine (a Chat, a TextCompletion or an Embedding) and how it is answered."""

    model: str
    ask: Ask
    sampling: Sampling = field(default_factory=Sampling)
    stream: bool = False
    include_usage: bool = False
    background: bool = False


EncodingFormat = Literal["float", "base64"]  # embeddings: float lists or base64 float32 bytes


def parse_chat(data: Any) -> ApiRequest:
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for name in UNSUPPORTED:
        if data.get(name) not in (None, False, [], {}):
            raise InvalidRequest(f"'{name}' is not supported by this gateway yet.", param=name)
    data = {k: v for k, v in data.items() if k not in UNSUPPORTED}
    try:
        body = ChatCompletionRequest.model_validate(data)
    except ValidationError as error:
        raise invalid(error) from None
    extra = _passthrough(data, CHAT_PASSTHROUGH)
    if body.background and extra:
        raise InvalidRequest(
            f"'{next(iter(extra))}' is not supported with 'background' yet.", param="background"
        )
    return ApiRequest(
        model=body.model,
        ask=Chat(tuple(to_message(m) for m in body.messages), extra, body.engine_params()),
        sampling=_sampling(body, body.max_completion_tokens or body.max_tokens),
        stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        background=bool(body.background),
    )


def _passthrough(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The validated request's pass-through parameters as the client wrote them."""
    return passthrough_dict({k: data[k] for k in names if k in data})


def passthrough_dict(given: dict[str, Any]) -> dict[str, Any]:
    """Pass-through parameters that say something: nulls, empty objects and `n: 1` say nothing
    the engine would not assume."""
    return {k: v for k, v in given.items() if v not in (None, {}, []) and (k, v) != ("n", 1)}


class EmbeddingsRequest(_Open):
    """POST /v1/embeddings: one text or a batch of texts."""

    model: ModelName
    input: Annotated[Any, WithJsonSchema(TEXTS_SCHEMA)]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1)] | None = None  # an engine parameter: passed on
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _texts(cls, value: Any) -> list[str]:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not 1 <= len(texts) <= MAX_EMBEDDING_INPUTS:
            raise ValueError(
                f"expected a string or an array of 1 to {MAX_EMBEDDING_INPUTS} strings"
            )
        if not all(isinstance(t, str) and t for t in texts):
            raise ValueError("expected non-empty strings (token arrays are not supported)")
        if sum(len(t) for t in texts) > MAX_EMBEDDING_CHARACTERS:
            raise ValueError(
                f"at most {MAX_EMBEDDING_CHARACTERS:,} characters in one request; split the batch"
            )
        return list(texts)


MAX_EMBEDDING_INPUTS = 2048
# The texts travel in the request's Temporal payload, which the server caps (2 MB by default).
MAX_EMBEDDING_CHARACTERS = 1_000_000


def parse_embeddings(data: Any) -> tuple[ApiRequest, EncodingFormat]:
    """The request, and how its vectors are to be encoded."""
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        body = EmbeddingsRequest.model_validate(data)
    except ValidationError as error:
        raise invalid(error) from None
    params = body.engine_params()
    if body.dimensions is not None:
        params["dimensions"] = body.dimensions
    return ApiRequest(body.model, Embedding(tuple(body.input), params)), (
        body.encoding_format or "float"
    )


def _sampling(body: ChatCompletionRequest | CompletionRequest, max_tokens: int | None) -> Sampling:
    return Sampling(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=tuple(body.stop or ()),
        seed=body.seed,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
    )


COMPLETION_UNSUPPORTED = ("suffix",)


def parse_completion(data: Any) -> ApiRequest:
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for name in COMPLETION_UNSUPPORTED:
        if data.get(name) not in (None, False, [], {}, ""):
            raise InvalidRequest(f"'{name}' is not supported by this gateway yet.", param=name)
    data = {k: v for k, v in data.items() if k not in COMPLETION_UNSUPPORTED}
    try:
        body = CompletionRequest.model_validate(data)
    except ValidationError as error:
        raise invalid(error) from None
    return ApiRequest(
        model=body.model,
        ask=TextCompletion(
            body.prompt, _passthrough(data, COMPLETION_PASSTHROUGH), body.engine_params()
        ),
        sampling=_sampling(body, body.max_tokens),
        stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
    )


_TYPE_NAMES = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "a boolean",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "literal_error": "one of the allowed values",
}
_JSON_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def invalid(error: ValidationError, prefix: tuple[str | int, ...] = ()) -> InvalidRequest:
    """OpenAI reports the first problem, naming the parameter (`prefix`: where the validated
    object sits in the request)."""
    issue = error.errors()[0]
    param = key_path((*prefix, *issue["loc"]))
    kind = issue["type"]
    if kind == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    if kind == "extra_forbidden":
        return InvalidRequest(f"Unrecognized request argument supplied: {param}", param=param)
    if kind in _TYPE_NAMES and kind != "literal_error":
        got = _JSON_NAMES.get(type(issue.get("input")), "another type")
        return InvalidRequest(
            f"Invalid type for '{param}': expected {_TYPE_NAMES[kind]}, but got {got} instead.",
            param=param,
        )
    message = issue["msg"].removeprefix("Value error, ")
    return InvalidRequest(f"Invalid '{param}': {message}.", param=param)
