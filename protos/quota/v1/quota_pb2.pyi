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
    __slots__ = ("key_id", "name", "role", "priority")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    name: str
    role: str
    priority: int
    def __init__(self, key_id: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[str] = ..., priority: _Optional[int] = ...) -> None: ...

class AdmitRequest(_message.Message):
    __slots__ = ("api_key", "request_id", "model")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    request_id: str
    model: str
    def __init__(self, api_key: _Optional[str] = ..., request_id: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("principal", "requests")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    principal: Principal
    requests: RateLimit
    def __init__(self, principal: _Optional[_Union[Principal, _Mapping]] = ..., requests: _Optional[_Union[RateLimit, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("key_id", "request_id", "model", "completed", "prompt_tokens", "completion_tokens")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    request_id: str
    model: str
    completed: bool
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, key_id: _Optional[str] = ..., request_id: _Optional[str] = ..., model: _Optional[str] = ..., completed: _Optional[bool] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

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
