from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuthenticateRequest(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    def __init__(self, api_key: _Optional[str] = ...) -> None: ...

class Principal(_message.Message):
    __slots__ = ("key_id", "name", "role", "priority", "team", "models", "pii_policy", "pii_types")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PII_POLICY_FIELD_NUMBER: _ClassVar[int]
    PII_TYPES_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    name: str
    role: str
    priority: int
    team: str
    models: _containers.RepeatedScalarFieldContainer[str]
    pii_policy: str
    pii_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key_id: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[str] = ..., priority: _Optional[int] = ..., team: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., pii_policy: _Optional[str] = ..., pii_types: _Optional[_Iterable[str]] = ...) -> None: ...

class AdmitRequest(_message.Message):
    __slots__ = ("api_key", "request_id", "model", "served_model", "reserve_tokens", "model_limits", "key_id")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERVED_MODEL_FIELD_NUMBER: _ClassVar[int]
    RESERVE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODEL_LIMITS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    request_id: str
    model: str
    served_model: str
    reserve_tokens: int
    model_limits: Limits
    key_id: str
    def __init__(self, api_key: _Optional[str] = ..., request_id: _Optional[str] = ..., model: _Optional[str] = ..., served_model: _Optional[str] = ..., reserve_tokens: _Optional[int] = ..., model_limits: _Optional[_Union[Limits, _Mapping]] = ..., key_id: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("rpm", "tpm", "concurrency", "tokens_per_day", "tokens_per_month")
    RPM_FIELD_NUMBER: _ClassVar[int]
    TPM_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MONTH_FIELD_NUMBER: _ClassVar[int]
    rpm: int
    tpm: int
    concurrency: int
    tokens_per_day: int
    tokens_per_month: int
    def __init__(self, rpm: _Optional[int] = ..., tpm: _Optional[int] = ..., concurrency: _Optional[int] = ..., tokens_per_day: _Optional[int] = ..., tokens_per_month: _Optional[int] = ...) -> None: ...

class RateLimit(_message.Message):
    __slots__ = ("limit", "remaining", "reset_seconds")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    limit: int
    remaining: int
    reset_seconds: float
    def __init__(self, limit: _Optional[int] = ..., remaining: _Optional[int] = ..., reset_seconds: _Optional[float] = ...) -> None: ...

class Admission(_message.Message):
    __slots__ = ("principal", "requests", "tokens")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    principal: Principal
    requests: RateLimit
    tokens: RateLimit
    def __init__(self, principal: _Optional[_Union[Principal, _Mapping]] = ..., requests: _Optional[_Union[RateLimit, _Mapping]] = ..., tokens: _Optional[_Union[RateLimit, _Mapping]] = ...) -> None: ...

class AdmitBatchRequest(_message.Message):
    __slots__ = ("requests", "settle_first")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SETTLE_FIRST_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[AdmitRequest]
    settle_first: _containers.RepeatedCompositeFieldContainer[Settlement]
    def __init__(self, requests: _Optional[_Iterable[_Union[AdmitRequest, _Mapping]]] = ..., settle_first: _Optional[_Iterable[_Union[Settlement, _Mapping]]] = ...) -> None: ...

class AdmitOutcome(_message.Message):
    __slots__ = ("admission", "error")
    ADMISSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    admission: Admission
    error: _status_pb2.Status
    def __init__(self, admission: _Optional[_Union[Admission, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class AdmitBatchResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[AdmitOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[AdmitOutcome, _Mapping]]] = ...) -> None: ...

class Settlement(_message.Message):
    __slots__ = ("key_id", "request_id", "model", "completed", "prompt_tokens", "completion_tokens", "refused")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    request_id: str
    model: str
    completed: bool
    prompt_tokens: int
    completion_tokens: int
    refused: bool
    def __init__(self, key_id: _Optional[str] = ..., request_id: _Optional[str] = ..., model: _Optional[str] = ..., completed: _Optional[bool] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., refused: _Optional[bool] = ...) -> None: ...

class SettleRequest(_message.Message):
    __slots__ = ("settlements",)
    SETTLEMENTS_FIELD_NUMBER: _ClassVar[int]
    settlements: _containers.RepeatedCompositeFieldContainer[Settlement]
    def __init__(self, settlements: _Optional[_Iterable[_Union[Settlement, _Mapping]]] = ...) -> None: ...

class SettleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Lease(_message.Message):
    __slots__ = ("key_id", "request_id")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    request_id: str
    def __init__(self, key_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RenewLeasesRequest(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class RenewLeasesResponse(_message.Message):
    __slots__ = ("ttl_seconds",)
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ttl_seconds: float
    def __init__(self, ttl_seconds: _Optional[float] = ...) -> None: ...

class KeySpec(_message.Message):
    __slots__ = ("name", "role", "owner", "team", "models", "limits", "priority", "expires_at", "pii_policy", "pii_types")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    PII_POLICY_FIELD_NUMBER: _ClassVar[int]
    PII_TYPES_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    owner: str
    team: str
    models: _containers.RepeatedScalarFieldContainer[str]
    limits: Limits
    priority: int
    expires_at: int
    pii_policy: str
    pii_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., owner: _Optional[str] = ..., team: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., priority: _Optional[int] = ..., expires_at: _Optional[int] = ..., pii_policy: _Optional[str] = ..., pii_types: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: KeySpec
    def __init__(self, spec: _Optional[_Union[KeySpec, _Mapping]] = ...) -> None: ...

class KeyInfo(_message.Message):
    __slots__ = ("id", "spec", "created", "revoked", "expired")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: KeySpec
    created: int
    revoked: bool
    expired: bool
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[KeySpec, _Mapping]] = ..., created: _Optional[int] = ..., revoked: _Optional[bool] = ..., expired: _Optional[bool] = ...) -> None: ...

class CreatedKey(_message.Message):
    __slots__ = ("api_key", "key")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    key: KeyInfo
    def __init__(self, api_key: _Optional[str] = ..., key: _Optional[_Union[KeyInfo, _Mapping]] = ...) -> None: ...

class KeyRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class UpdateKeyRequest(_message.Message):
    __slots__ = ("id", "spec", "fields")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: KeySpec
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[KeySpec, _Mapping]] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyInfo, _Mapping]]] = ...) -> None: ...

class Team(_message.Message):
    __slots__ = ("name", "limits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    limits: Limits
    def __init__(self, name: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...

class ListTeamsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTeamsResponse(_message.Message):
    __slots__ = ("teams",)
    TEAMS_FIELD_NUMBER: _ClassVar[int]
    teams: _containers.RepeatedCompositeFieldContainer[Team]
    def __init__(self, teams: _Optional[_Iterable[_Union[Team, _Mapping]]] = ...) -> None: ...

class UsageRequest(_message.Message):
    __slots__ = ("key_id", "from_day", "to_day")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_DAY_FIELD_NUMBER: _ClassVar[int]
    TO_DAY_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    from_day: str
    to_day: str
    def __init__(self, key_id: _Optional[str] = ..., from_day: _Optional[str] = ..., to_day: _Optional[str] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("day", "key_id", "team", "model", "requests", "prompt_tokens", "completion_tokens")
    DAY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    day: str
    key_id: str
    team: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, day: _Optional[str] = ..., key_id: _Optional[str] = ..., team: _Optional[str] = ..., model: _Optional[str] = ..., requests: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class UsageResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ...) -> None: ...

class AuditQuery(_message.Message):
    __slots__ = ("key_id", "team", "since_ms", "until_ms", "limit")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    team: str
    since_ms: int
    until_ms: int
    limit: int
    def __init__(self, key_id: _Optional[str] = ..., team: _Optional[str] = ..., since_ms: _Optional[int] = ..., until_ms: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("id", "at_ms", "action", "key_id", "team", "actor_key_id", "actor_name", "client_address", "forwarded_for", "user_agent", "gateway", "changes", "new_key_id")
    class ChangesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    ACTOR_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_NAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FOR_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    NEW_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    at_ms: int
    action: str
    key_id: str
    team: str
    actor_key_id: str
    actor_name: str
    client_address: str
    forwarded_for: str
    user_agent: str
    gateway: str
    changes: _containers.ScalarMap[str, str]
    new_key_id: str
    def __init__(self, id: _Optional[str] = ..., at_ms: _Optional[int] = ..., action: _Optional[str] = ..., key_id: _Optional[str] = ..., team: _Optional[str] = ..., actor_key_id: _Optional[str] = ..., actor_name: _Optional[str] = ..., client_address: _Optional[str] = ..., forwarded_for: _Optional[str] = ..., user_agent: _Optional[str] = ..., gateway: _Optional[str] = ..., changes: _Optional[_Mapping[str, str]] = ..., new_key_id: _Optional[str] = ...) -> None: ...

class AuditLog(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...
