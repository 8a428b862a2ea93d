"""models.yaml, step one: the strict file model and its validation.

Unknown keys are rejected, and every error names the file, the line and the key path, e.g.
`models.yaml:14: models.demo.deployments[0].adapter: unknown adapter 'vlm' (known: openai, …)`.
`table.py` compiles the validated file into the routing table the service answers from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tiller.common.paths import key_path
from tiller.common.pii.findings import BUILT_IN_TYPES, DEFAULT_MIN_SCORE
from tiller.common.pii.recognizers import RecognizerSpec
from tiller.contract.engines import KINDS, check_endpoint, check_options
from tiller.contract.requests import HEARTBEAT_TIMEOUT_SECONDS, QUEUE_TIMEOUT_SECONDS
from tiller.pipelines import PIPELINES, options_model
from tiller.pipelines.base import PipelineOptions

NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"
QUEUE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class ConfigError(ValueError):
    """models.yaml cannot be used; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryFile(_Strict):
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    initial_interval_seconds: Annotated[float, Field(gt=0, le=60)] = 0.2
    backoff_coefficient: Annotated[float, Field(ge=1, le=10)] = 2.0
    maximum_interval_seconds: Annotated[float, Field(gt=0, le=600)] = 5.0


class EndpointFile(_Strict):
    """One replica of a deployment's engine (models.yaml `endpoints:`)."""

    url: str  # a base URL (vllm, openai, tgi) or host:port (triton), as `endpoint`
    # Attempts one worker sends it at once (unset: the deployment's max_concurrency).
    max_concurrency: Annotated[int, Field(ge=1, le=100_000)] | None = None
    # Its share of the requests while every replica has free slots (a canary: 5 beside 95).
    weight: Annotated[float, Field(gt=0, le=1_000_000)] = 1.0
    # Takes no new request; the ones it runs finish (then remove it from the file).
    drain: bool = False


class HealthFile(_Strict):
    """When a deployment's endpoint is ejected (takes no traffic) and when it comes back."""

    # Every serving endpoint's health check, this often (0: only probes of ejected ones).
    check_interval_seconds: Annotated[float, Field(ge=0, le=3600)] = 10.0
    # Consecutive failed attempts that eject an endpoint.
    eject_after_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    # Or this share of its last 20 attempts failed (counted once 10 have ended).
    eject_error_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    # An ejected endpoint's health check runs at 0.25 s, then doubling up to this; the first
    # that passes lets it back, one request at a time until one succeeds.
    probe_interval_seconds: Annotated[float, Field(gt=0, le=600)] = 2.0


class DeploymentFile(_Strict):
    name: Annotated[str, Field(pattern=NAME)] | None = None
    adapter: str
    # The engine's address; or `endpoints`, the replicas of one engine (never both).
    endpoint: str | None = None
    endpoints: list[EndpointFile] = []
    engine_model: str | None = None
    task_queue: Annotated[str, Field(pattern=QUEUE)] | None = None
    max_concurrency: Annotated[int, Field(ge=1, le=100_000)] = 64
    health: HealthFile = HealthFile()
    # Whether the engine can continue a partial answer (vLLM's `continue_final_message`):
    # `continue` or `none`; unset means `continue` for vllm and `none` for other adapters.
    resume: Literal["continue", "none"] | None = None
    # The adapter's own settings (docs/models.md): Triton's tensor names, a hosted API's key.
    options: Annotated[dict[str, Any], Field(validate_default=True)] = {}

    @field_validator("adapter")
    @classmethod
    def _known_adapter(cls, value: str) -> str:
        if value not in KINDS:
            raise ValueError(f"unknown adapter {value!r} (known: {', '.join(sorted(KINDS))})")
        return value

    # Both need a valid adapter (declared above them): without one there is nothing to check.
    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None, info: ValidationInfo) -> str | None:
        adapter = info.data.get("adapter")
        return check_endpoint(adapter, value) if adapter and value is not None else value

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: list[EndpointFile], info: ValidationInfo) -> list[EndpointFile]:
        adapter = info.data.get("adapter")
        urls = []
        for index, e in enumerate(value):
            try:
                urls.append(check_endpoint(adapter, e.url) if adapter else e.url)
            except ValueError as error:
                raise ValueError(f"endpoints[{index}].url: {error}") from None
        for index, url in enumerate(urls):
            if url in urls[:index]:
                raise ValueError(f"endpoints[{index}]: {url!r} is listed twice")
        return [e.model_copy(update={"url": url}) for e, url in zip(value, urls, strict=True)]

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        adapter = info.data.get("adapter")
        if adapter:
            check_options(adapter, value)
        return value

    @model_validator(mode="after")
    def _one_address(self) -> DeploymentFile:
        if self.endpoint is None and not self.endpoints:
            raise ValueError("a deployment needs 'endpoint' or 'endpoints' (at least one)")
        if self.endpoint is not None and self.endpoints:
            raise ValueError("a deployment has 'endpoint' or 'endpoints', not both")
        return self

    def replicas(self) -> list[EndpointFile]:
        """Its endpoints, each with its capacity: `endpoint` is one, at max_concurrency."""
        if self.endpoint is not None:
            return [EndpointFile(url=self.endpoint, max_concurrency=self.max_concurrency)]
        return [
            e.model_copy(update={"max_concurrency": e.max_concurrency or self.max_concurrency})
            for e in self.endpoints
        ]


class DefaultsFile(_Strict):
    """Sampling parameters a request gets when it does not set them itself."""

    max_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stop: Annotated[list[str], Field(max_length=4)] = []
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None


class LimitsFile(_Strict):
    """The model's own limits, shared by every key that uses it (0 = none)."""

    rpm: Annotated[int, Field(ge=0)] = 0
    tpm: Annotated[int, Field(ge=0)] = 0
    concurrency: Annotated[int, Field(ge=0)] = 0


class PiiPolicyFile(_Strict):
    """`mask`, or `{mode: block, types: [CARD, KR_RRN]}` (no types: every type)."""

    mode: Literal["off", "mask", "mask+restore", "block"]
    types: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _just_a_mode(cls, value: Any) -> Any:
        if value is False:  # YAML 1.1 reads a bare `off` as false
            value = "off"
        if isinstance(value, dict) and value.get("mode") is False:
            value = {**value, "mode": "off"}
        return {"mode": value} if isinstance(value, str) else value


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


# A policy, or several (`[mask, {mode: block, types: [CARD]}]`: per type the strictest applies).
PiiPolicies = Annotated[list[PiiPolicyFile], Field(min_length=1), BeforeValidator(_as_list)]


class PiiFile(_Strict):
    """The file's top-level `pii`: the policy of models that set none, and how to detect."""

    policy: PiiPolicies = [PiiPolicyFile(mode="mask")]
    min_score: Annotated[float, Field(ge=0, le=1)] = DEFAULT_MIN_SCORE
    recognizers: list[RecognizerSpec] = []


class PipelineFile(_Strict):
    """A model answered by a Temporal workflow in services/pipelines/ instead of one engine."""

    workflow: str
    # The pipeline's own settings, checked by its `Options` model (the models it calls, …).
    options: dict[str, Any] = {}

    @field_validator("workflow")
    @classmethod
    def _known_pipeline(cls, value: str) -> str:
        if value not in PIPELINES:
            raise ValueError(f"unknown pipeline {value!r} (known: {', '.join(sorted(PIPELINES))})")
        return value

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        workflow = info.data.get("workflow")
        if not workflow:
            return value
        try:
            options_model(workflow).model_validate(value)
        except ValidationError as error:
            first = error.errors()[0]
            message = first["msg"].removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                message = "unknown field"
            elif first["type"] == "missing":
                message = "required field is missing"
            where = key_path(first["loc"])
            raise ValueError(f"{where}: {message}" if where else message) from None
        return value

    def settings(self) -> PipelineOptions:
        """The options as the pipeline's own model reads them (valid: checked above)."""
        return options_model(self.workflow).model_validate(self.options)


class ModelFile(_Strict):
    aliases: list[Annotated[str, Field(pattern=NAME)]] = []
    owned_by: str = "tiller"
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 120.0
    # A worker that sends no heartbeat for this long is presumed dead; its attempt is retried.
    heartbeat_timeout_seconds: Annotated[float, Field(ge=1, le=600)] = HEARTBEAT_TIMEOUT_SECONDS
    # How long a request may wait in a deployment's queue for a free worker before that
    # deployment counts as failed (the next is tried; with none left the client gets a 503).
    queue_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = QUEUE_TIMEOUT_SECONDS
    retry: RetryFile = RetryFile()
    # The engines that serve it, or (instead) the pipeline that answers it.
    deployments: list[DeploymentFile] = []
    pipeline: PipelineFile | None = None
    # Models (names or aliases) tried in order once every deployment of this one has failed.
    fallbacks: list[Annotated[str, Field(pattern=NAME)]] = []
    defaults: DefaultsFile = DefaultsFile()
    # The system message of a request that has none of its own.
    system_prompt: Annotated[str, Field(min_length=1, max_length=32_768)] | None = None
    limits: LimitsFile = LimitsFile()
    # What the gateway does with personal data in requests to this model (unset: `pii.policy`).
    pii: PiiPolicies | None = None
    # Request parameters Tiller does not read (vLLM's top_k, structured_outputs…): "forward"
    # them to the engine as given, or "refuse" them by name. Unset: forward where every engine
    # of the model (its fallbacks' too) takes them (vllm, openai), refuse otherwise.
    engine_parameters: Literal["forward", "refuse"] | None = None

    @model_validator(mode="after")
    def _engines_or_pipeline(self) -> ModelFile:
        if self.pipeline is None and not self.deployments:
            raise ValueError("a model needs 'deployments' (at least one) or a 'pipeline'")
        if self.pipeline is not None and self.deployments:
            raise ValueError("a model has 'deployments' or a 'pipeline', not both")
        if self.pipeline is not None and self.fallbacks:
            raise ValueError("a pipeline model has no 'fallbacks' (its steps' models may)")
        return self


class ModelsFile(_Strict):
    models: Annotated[dict[Annotated[str, Field(pattern=NAME)], ModelFile], Field(min_length=1)]
    pii: PiiFile = PiiFile()


def load(path: Path) -> ModelsFile:
    """Read and validate models.yaml, or raise ConfigError naming the line and field."""
    return parse(decode(read(path), path), str(path))


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


def decode(source: bytes, path: Path) -> str:
    try:
        return source.decode()
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None


def parse(text: str, source: str = "models.yaml") -> ModelsFile:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a top-level 'models' key")
    try:
        parsed = ModelsFile.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, node, source)) from None
    _check_names(parsed, node, source)
    _check_pipelines(parsed, node, source)
    _check_pii_types(parsed, node, source)
    return parsed


def _describe(error: ValidationError, root: yaml.Node | None, source: str) -> str:
    lines = []
    for issue in error.errors():
        loc = tuple(issue["loc"])
        message = issue["msg"].removeprefix("Value error, ")
        if issue["type"] == "extra_forbidden":
            message = "unknown field"
        elif issue["type"] == "missing":
            message = "required field is missing"
        lines.append(f"{source}:{_line(root, loc)}: {key_path(loc)}: {message}")
    return "\n".join(lines)


def _check_names(parsed: ModelsFile, root: yaml.Node | None, source: str) -> None:
    owner: dict[str, str] = {name: name for name in parsed.models}
    for name, model in parsed.models.items():
        for index, alias in enumerate(model.aliases):
            if alias in owner:
                alias_loc = ("models", name, "aliases", index)
                raise ConfigError(
                    f"{source}:{_line(root, alias_loc)}: {key_path(alias_loc)}: "
                    f"{alias!r} already names model {owner[alias]!r}"
                )
            owner[alias] = name
        seen: set[str] = set()
        for index, deployment in enumerate(model.deployments):
            deployment_name = deployment.name or f"{name}-{index}"
            if deployment_name in seen:
                loc = ("models", name, "deployments", index, "name")
                raise ConfigError(
                    f"{source}:{_line(root, loc)}: {key_path(loc)}: "
                    f"duplicate deployment name {deployment_name!r}"
                )
            seen.add(deployment_name)
    for name, model in parsed.models.items():
        targets: set[str] = set()
        for index, fallback in enumerate(model.fallbacks):
            where: tuple[str, str, str, int] = ("models", name, "fallbacks", index)
            target = owner.get(fallback)
            problem = None
            if target is None:
                problem = f"{fallback!r} is not a model in this file"
            elif target == name:
                problem = f"{fallback!r} is this model itself"
            elif target in targets:
                problem = f"{fallback!r} is listed twice"
            if problem:
                raise ConfigError(f"{source}:{_line(root, where)}: {key_path(where)}: {problem}")
            targets.add(str(target))


def _check_pipelines(parsed: ModelsFile, root: yaml.Node | None, source: str) -> None:
    """A pipeline calls engine models of this file, by name or alias; nothing calls a pipeline
    in its place (a fallback has no deployments to try)."""
    owner = {alias: name for name, model in parsed.models.items() for alias in model.aliases}
    owner.update((name, name) for name in parsed.models)
    for name, model in parsed.models.items():
        for index, fallback in enumerate(model.fallbacks):
            if parsed.models[owner[fallback]].pipeline is not None:
                loc: tuple[str | int, ...] = ("models", name, "fallbacks", index)
                raise ConfigError(
                    f"{source}:{_line(root, loc)}: {key_path(loc)}: {fallback!r} is a pipeline; "
                    "a fallback must be a model with deployments"
                )
        if model.pipeline is None:
            continue
        settings = model.pipeline.settings()
        waits = settings.waits()
        if waits is not None and model.timeout_seconds <= waits[1]:
            option, seconds = waits
            loc = ("models", name, "pipeline", "options", option)
            raise ConfigError(
                f"{source}:{_line(root, loc)}: {key_path(loc)}: waits {seconds:g} s, but the "
                f"model's timeout_seconds ({model.timeout_seconds:g}) ends the run first; make "
                "timeout_seconds longer than the wait and its steps"
            )
        for where, step in settings.named_models().items():
            loc = ("models", name, "pipeline", "options", *where)
            target = owner.get(step)
            problem = None
            if target is None:
                problem = f"{step!r} is not a model in this file"
            elif parsed.models[target].pipeline is not None:
                problem = f"{step!r} is a pipeline; a step calls a model with deployments"
            if problem:
                raise ConfigError(f"{source}:{_line(root, loc)}: {key_path(loc)}: {problem}")


def _check_pii_types(parsed: ModelsFile, root: yaml.Node | None, source: str) -> None:
    """Policies name built-in types or the file's own recognizers' types."""
    known = (*BUILT_IN_TYPES, *(r.type for r in parsed.pii.recognizers))
    policies: list[tuple[tuple[str | int, ...], PiiPolicyFile]] = [
        *_each_policy(("pii", "policy"), parsed.pii.policy),
        *(
            placed
            for name, model in parsed.models.items()
            for placed in _each_policy(("models", name, "pii"), model.pii)
        ),
    ]
    for where, policy in policies:
        for index, type_ in enumerate(policy.types):
            if type_ not in known:
                loc = (*where, "types", index)
                raise ConfigError(
                    f"{source}:{_line(root, loc)}: {key_path(loc)}: unknown PII type "
                    f"{type_!r} (known: {', '.join(known)})"
                )


def _each_policy(
    where: tuple[str | int, ...], policies: list[PiiPolicyFile] | None
) -> list[tuple[tuple[str | int, ...], PiiPolicyFile]]:
    return [((*where, index), p) for index, p in enumerate(policies or [])]


def _line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """1-based line of the node at `loc`, or of its nearest existing parent."""
    node = root
    line = (root.start_mark.line + 1) if root else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == str(part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
