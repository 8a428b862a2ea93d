from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResolveRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "initial_interval_seconds", "backoff_coefficient", "maximum_interval_seconds")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    initial_interval_seconds: float
    backoff_coefficient: float
    maximum_interval_seconds: float
    def __init__(self, max_attempts: _Optional[int] = ..., initial_interval_seconds: _Optional[float] = ..., backoff_coefficient: _Optional[float] = ..., maximum_interval_seconds: _Optional[float] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("name", "adapter", "endpoint", "engine_model", "task_queue", "max_concurrency", "model", "resume", "options_json", "endpoints", "health")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    adapter: str
    endpoint: str
    engine_model: str
    task_queue: str
    max_concurrency: int
    model: str
    resume: bool
    options_json: str
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    health: HealthPolicy
    def __init__(self, name: _Optional[str] = ..., adapter: _Optional[str] = ..., endpoint: _Optional[str] = ..., engine_model: _Optional[str] = ..., task_queue: _Optional[str] = ..., max_concurrency: _Optional[int] = ..., model: _Optional[str] = ..., resume: _Optional[bool] = ..., options_json: _Optional[str] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., health: _Optional[_Union[HealthPolicy, _Mapping]] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("url", "max_concurrency", "weight", "drain")
    URL_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    url: str
    max_concurrency: int
    weight: float
    drain: bool
    def __init__(self, url: _Optional[str] = ..., max_concurrency: _Optional[int] = ..., weight: _Optional[float] = ..., drain: _Optional[bool] = ...) -> None: ...

class HealthPolicy(_message.Message):
    __slots__ = ("check_interval_seconds", "eject_after_failures", "eject_error_rate", "probe_interval_seconds")
    CHECK_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EJECT_AFTER_FAILURES_FIELD_NUMBER: _ClassVar[int]
    EJECT_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    PROBE_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    check_interval_seconds: float
    eject_after_failures: int
    eject_error_rate: float
    probe_interval_seconds: float
    def __init__(self, check_interval_seconds: _Optional[float] = ..., eject_after_failures: _Optional[int] = ..., eject_error_rate: _Optional[float] = ..., probe_interval_seconds: _Optional[float] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("model", "requested", "deployments", "timeout_seconds", "retry", "config_version", "fallbacks", "heartbeat_timeout_seconds", "queue_timeout_seconds", "defaults", "system_prompt", "limits", "pii", "pipeline", "engine_parameters")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    PII_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    model: str
    requested: str
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    timeout_seconds: float
    retry: RetryPolicy
    config_version: int
    fallbacks: _containers.RepeatedCompositeFieldContainer[Deployment]
    heartbeat_timeout_seconds: float
    queue_timeout_seconds: float
    defaults: SamplingDefaults
    system_prompt: str
    limits: ModelLimits
    pii: PiiSettings
    pipeline: Pipeline
    engine_parameters: str
    def __init__(self, model: _Optional[str] = ..., requested: _Optional[str] = ..., deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ..., timeout_seconds: _Optional[float] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., config_version: _Optional[int] = ..., fallbacks: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ..., heartbeat_timeout_seconds: _Optional[float] = ..., queue_timeout_seconds: _Optional[float] = ..., defaults: _Optional[_Union[SamplingDefaults, _Mapping]] = ..., system_prompt: _Optional[str] = ..., limits: _Optional[_Union[ModelLimits, _Mapping]] = ..., pii: _Optional[_Union[PiiSettings, _Mapping]] = ..., pipeline: _Optional[_Union[Pipeline, _Mapping]] = ..., engine_parameters: _Optional[str] = ...) -> None: ...

class Pipeline(_message.Message):
    __slots__ = ("workflow", "options_json")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    workflow: str
    options_json: str
    def __init__(self, workflow: _Optional[str] = ..., options_json: _Optional[str] = ...) -> None: ...

class PiiSettings(_message.Message):
    __slots__ = ("policies", "min_score", "recognizers_json")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    RECOGNIZERS_JSON_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[PiiPolicy]
    min_score: float
    recognizers_json: str
    def __init__(self, policies: _Optional[_Iterable[_Union[PiiPolicy, _Mapping]]] = ..., min_score: _Optional[float] = ..., recognizers_json: _Optional[str] = ...) -> None: ...

class PiiPolicy(_message.Message):
    __slots__ = ("mode", "types")
    MODE_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    mode: str
    types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, mode: _Optional[str] = ..., types: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelLimits(_message.Message):
    __slots__ = ("rpm", "tpm", "concurrency")
    RPM_FIELD_NUMBER: _ClassVar[int]
    TPM_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    rpm: int
    tpm: int
    concurrency: int
    def __init__(self, rpm: _Optional[int] = ..., tpm: _Optional[int] = ..., concurrency: _Optional[int] = ...) -> None: ...

class SamplingDefaults(_message.Message):
    __slots__ = ("max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_PENALTY_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    presence_penalty: float
    frequency_penalty: float
    def __init__(self, max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., stop: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., presence_penalty: _Optional[float] = ..., frequency_penalty: _Optional[float] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("id", "aliases", "owned_by", "created", "deployments")
    ID_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    OWNED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    owned_by: str
    created: int
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    def __init__(self, id: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., owned_by: _Optional[str] = ..., created: _Optional[int] = ..., deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "config_version", "pii_types")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    PII_TYPES_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    config_version: int
    pii_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., config_version: _Optional[int] = ..., pii_types: _Optional[_Iterable[str]] = ...) -> None: ...
