from __future__ import annotations

import pytest
from temporalio.exceptions import ActivityError, RetryState, TimeoutError, TimeoutType

from tiller.common.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    EngineUnavailable,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    RateLimited,
    ServiceUnavailable,
    TillerError,
)


def test_openai_shape_carries_type_code_and_param() -> None:
    error = InvalidRequest("Missing required parameter: 'messages'.", param="messages")
    assert error.http_status == 400
    assert error.to_openai() == {
        "error": {
            "message": "Missing required parameter: 'messages'.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": None,
        }
    }
    assert ModelNotFound("x").to_openai()["error"]["code"] == "model_not_found"
    assert AuthenticationFailed().http_status == 401


def test_retry_after_header_rounds_up_to_whole_seconds() -> None:
    assert RateLimited(retry_after=0.2).http_headers() == {"retry-after": "1"}
    assert RateLimited(retry_after=12.3).http_headers() == {"retry-after": "13"}
    assert InvalidRequest().http_headers() == {}


@pytest.mark.parametrize(
    "error",
    [ContextLengthExceeded("too long", param="messages"), RateLimited("slow", retry_after=3.5)],
)
def test_dict_round_trip_keeps_class_and_fields(error: TillerError) -> None:
    back = TillerError.from_dict(error.to_dict())
    assert type(back) is type(error)
    assert (back.message, back.param, back.retry_after) == (
        error.message,
        error.param,
        error.retry_after,
    )


def test_unknown_reason_becomes_internal_error() -> None:
    assert type(TillerError.from_dict({"reason": "Nope", "message": "m"})) is InternalError


def test_temporal_application_error_round_trip_and_retryability() -> None:
    retryable = EngineUnavailable("engine down").to_application_error()
    assert not retryable.non_retryable and retryable.type == "EngineUnavailable"
    final = ContextLengthExceeded("too long").to_application_error()
    assert final.non_retryable
    activity_failure = ActivityError(
        "activity failed",
        scheduled_event_id=1,
        started_event_id=2,
        identity="w",
        activity_type="tiller.generate",
        activity_id="1",
        retry_state=RetryState.MAXIMUM_ATTEMPTS_REACHED,
    )
    activity_failure.__cause__ = final
    back = TillerError.from_failure(activity_failure)
    assert type(back) is ContextLengthExceeded and back.message == "too long"


def test_temporal_timeouts_become_clear_errors() -> None:
    queued = TimeoutError("t", type=TimeoutType.SCHEDULE_TO_START, last_heartbeat_details=[])
    assert type(TillerError.from_failure(queued)) is ServiceUnavailable
    silent = TimeoutError("t", type=TimeoutType.HEARTBEAT, last_heartbeat_details=[])
    assert "stopped responding" in TillerError.from_failure(silent).message


def test_grpc_status_carries_reason_param_and_retry_delay() -> None:
    status = RateLimited("limit 2", retry_after=1.5).to_grpc_status()
    assert status.code.name == "RESOURCE_EXHAUSTED"
    keys = [key for key, _ in status.trailing_metadata]
    assert "grpc-status-details-bin" in keys
