"""Every error Tiller raises, and its one translation to each protocol it crosses.

Each class knows its HTTP status, gRPC code, OpenAI error `type`/`code` and whether trying again
can help. Conversions to OpenAI JSON, to and from a gRPC status, and to and from a Temporal
`ApplicationError` live here and nowhere else. Raise these; never return them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from temporalio.exceptions import ApplicationError, TimeoutType
from temporalio.exceptions import CancelledError as TemporalCancelled
from temporalio.exceptions import TimeoutError as TemporalTimeout

ERROR_DOMAIN = "tiller"
# A gRPC status travels in trailers, which gRPC caps (8 KiB by default): a message quoting a
# caller's input at length would overflow them and the caller would get a transport error.
MAX_STATUS_MESSAGE = 2048


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TillerError(Exception):
    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    openai_type: ClassVar[str] = "server_error"
    openai_code: ClassVar[str | None] = None
    retryable: ClassVar[bool] = False
    # Whether another deployment may succeed where this one failed for good (a retryable error
    # that used up its attempts always may).
    failover: ClassVar[bool] = False
    default_message: ClassVar[str] = "The server had an error while processing your request."

    def __init__(
        self,
        message: str | None = None,
        *,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.param = param
        self.retry_after = retry_after
        # The request it ended, once there was one (its HTTP answer says x-request-id).
        self.request_id: str | None = None
        super().__init__(self.message)

    @property
    def reason(self) -> str:
        """Stable machine name of the error, carried across gRPC and Temporal."""
        return type(self).__name__

    # --- OpenAI JSON ---------------------------------------------------------------------------
    def to_openai(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.openai_type,
                "param": self.param,
                "code": self.openai_code,
            }
        }

    def http_headers(self) -> dict[str, str]:
        headers = {"x-request-id": self.request_id} if self.request_id else {}
        if self.retry_after is not None:
            headers["retry-after"] = str(max(1, round(self.retry_after + 0.499)))
        return headers

    # --- plain data (Redis events, Temporal details) --------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "message": self.message,
            "param": self.param,
            "retry_after": self.retry_after,
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> TillerError:
        cls = _REGISTRY.get(str(data.get("reason")), InternalError)
        return cls(
            data.get("message"), param=data.get("param"), retry_after=data.get("retry_after")
        )

    # --- gRPC --------------------------------------------------------------------------------
    def to_grpc_status(self) -> grpc.Status:
        return rpc_status.to_status(self.to_status())

    def to_status(self) -> status_pb2.Status:
        """The rich google.rpc.Status: ErrorInfo, and RetryInfo + QuotaFailure when limited."""
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN)
        if self.param:
            info.metadata["param"] = self.param
        details = [info]
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(int(self.retry_after * 1000))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
            details.append(self._quota_failure())
        message = _bounded(self.message, MAX_STATUS_MESSAGE)
        status = status_pb2.Status(code=_to_rpc_code(self.grpc_code), message=message)
        for detail in details:
            status.details.add().Pack(detail)
        return status

    def _quota_failure(self) -> error_details_pb2.QuotaFailure:
        violation = error_details_pb2.QuotaFailure.Violation(description=self.message)
        return error_details_pb2.QuotaFailure(violations=[violation])

    @staticmethod
    def from_grpc(error: grpc.aio.AioRpcError) -> TillerError:
        """Rebuild the error a Tiller service raised; transport failures become unavailability."""
        status = rpc_status.from_call(error)
        if status is None:
            status = status_pb2.Status(code=error.code().value[0], message=error.details() or "")
        return TillerError.from_status(status)

    @staticmethod
    def from_status(status: status_pb2.Status) -> TillerError:
        """The inverse of to_status; a status from elsewhere becomes unavailability."""
        reason, param, retry_after = None, None, None
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.domain == ERROR_DOMAIN:
                    reason, param = info.reason, info.metadata.get("param")
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after = retry.retry_delay.ToMilliseconds() / 1000
        if reason in _REGISTRY:
            return _REGISTRY[reason](status.message, param=param, retry_after=retry_after)
        if status.code == code_pb2.DEADLINE_EXCEEDED:
            return UpstreamTimeout("An internal service did not answer in time.")
        return ServiceUnavailable("An internal service is unavailable; try again shortly.")

    # --- Temporal ----------------------------------------------------------------------------
    def to_application_error(
        self, *, non_retryable: bool | None = None, failover: bool | None = None
    ) -> ApplicationError:
        details = self.to_dict()
        details["failover"] = self.failover if failover is None else failover
        return WithheldApplicationError(
            self.message,
            details,
            type=self.reason,
            non_retryable=(not self.retryable) if non_retryable is None else non_retryable,
        )

    @staticmethod
    def may_fail_over(error: ApplicationError) -> bool:
        """Whether the next deployment should get the request after this activity failure."""
        if not error.non_retryable:
            return True  # retryable, and its attempts are used up
        details = error.details[0] if error.details else {}
        return isinstance(details, dict) and bool(details.get("failover"))

    @staticmethod
    def from_failure(error: BaseException | None) -> TillerError:
        """The TillerError behind a Temporal failure chain (activity or workflow)."""
        while error is not None:
            if isinstance(error, TemporalTimeout):
                return _timeout_error(error.type)
            if isinstance(error, TemporalCancelled):
                return Cancelled()
            if isinstance(error, ApplicationError) and error.type in _REGISTRY:
                details = error.details[0] if error.details else {}
                if isinstance(details, dict):
                    return TillerError.from_dict(details)
                return _REGISTRY[error.type](error.message)
            error = error.__cause__
        return InternalError()


class WithheldApplicationError(ApplicationError):
    """An ApplicationError whose text is its type alone: an engine's error may quote the
    prompt, and the Temporal SDK logs a failing activity's error (its traceback, and in one
    path an f-string of it). Temporal still gets the message (`.message`, sealed by the payload
    codec with the failure's other attributes: common/temporal.py), and so does the client."""

    def __str__(self) -> str:
        return f"{self.type} (message withheld)"


def _timeout_error(kind: TimeoutType | None) -> TillerError:
    if kind == TimeoutType.SCHEDULE_TO_START:
        return ServiceUnavailable("No worker for this model picked up the request in time.")
    if kind == TimeoutType.HEARTBEAT:
        return EngineUnavailable("The worker serving this request stopped responding.")
    return UpstreamTimeout("The model engine did not finish the answer in time.")


def _to_rpc_code(code: grpc.StatusCode) -> int:
    return int(code_pb2.Code.Value(code.name))


class InvalidRequest(TillerError):
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    openai_type = "invalid_request_error"
    default_message = "The request is not valid."


class ContextLengthExceeded(InvalidRequest):
    openai_code = "context_length_exceeded"


class PiiDetected(InvalidRequest):
    """A policy blocks the personal data the request carries; the message names its types."""

    openai_code = "pii_detected"


class AuthenticationFailed(TillerError):
    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    openai_type = "invalid_request_error"
    openai_code = "invalid_api_key"
    default_message = "Incorrect API key provided."


class PermissionDenied(TillerError):
    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    openai_type = "invalid_request_error"
    openai_code = "permission_denied"
    default_message = "You are not allowed to do this."


class NotFound(TillerError):
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND
    openai_type = "invalid_request_error"
    openai_code = "not_found"
    default_message = "Not found."


class ModelNotFound(NotFound):
    openai_code = "model_not_found"


class PayloadTooLarge(TillerError):
    http_status = 413
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    openai_type = "invalid_request_error"
    openai_code = "request_too_large"
    default_message = "The request body is too large."


class RateLimited(TillerError):
    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    openai_type = "requests"
    openai_code = "rate_limit_exceeded"
    retryable = True
    default_message = "Rate limit reached."


class InternalError(TillerError):
    retryable = False
    failover = True  # an unexpected failure of one deployment's adapter or engine


class EngineError(TillerError):
    """The engine answered with something we cannot use (misconfiguration, broken response)."""

    http_status = 502
    grpc_code = grpc.StatusCode.INTERNAL
    failover = True  # one deployment misconfigured: another may be fine
    default_message = "The model engine returned an error."


class EngineRefusedCredentials(EngineError):
    """The engine answered, refusing Tiller's key (401, 403): the deployment's configuration,
    reported on each request; not a sign the engine is unhealthy (worker/health.py)."""

    default_message = "The model engine refused Tiller's credentials."


class EngineUnavailable(TillerError):
    """Connection refused, reset, 5xx or overload: another attempt may succeed."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    retryable = True
    default_message = "The model engine is unavailable."


class EngineUnreachable(EngineUnavailable):
    """Nothing answered at the engine's address (connection refused, connect timeout, its name
    gone from DNS): the request never reached it. Where the request has nowhere else to go, the
    worker ejects the endpoint and waits for one to serve instead of spending attempts
    (worker/health.py)."""

    default_message = "Cannot reach the model engine."


class EngineStayedDown(EngineUnavailable):
    """The engine stayed unreachable for the model's whole queue timeout while the request, with
    nowhere else to go, waited for it: another attempt now would only fail the same way."""

    retryable = False


class EngineFailedMidStream(TillerError):
    """The engine failed after part of the answer reached the client, and no deployment that can
    continue it was left to try: starting over would repeat what the client already has."""

    http_status = 502
    grpc_code = grpc.StatusCode.UNAVAILABLE
    openai_code = "engine_failed_mid_stream"
    default_message = "The model engine failed while streaming the answer."


class UnsupportedMediaType(TillerError):
    http_status = 415
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    openai_type = "invalid_request_error"
    openai_code = "unsupported_media_type"
    default_message = "The request body must be JSON."


class CallerLeft(TillerError):
    """The caller hung up before its answer began: nobody reads this, but the request's logs
    and metrics say so (499, as nginx counts a client that closed its request)."""

    http_status = 499
    grpc_code = grpc.StatusCode.CANCELLED
    default_message = "The caller closed the request."


class ServiceUnavailable(TillerError):
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    retryable = True
    default_message = "The service is temporarily unavailable."


class AnswerUnreadable(ServiceUnavailable):
    """The answer's stream or the request's state could not be read just now (Redis or Temporal
    briefly away); the request itself may still be running."""

    default_message = "The answer stream is unavailable."


class HandedOver(ServiceUnavailable):
    """This gateway is stopping and its grace ran out: the request runs on, and any other
    gateway answers for it as a background request (resume its stream by id)."""

    openai_code = "handed_over"
    default_message = "This gateway is stopping; the request goes on."

    @classmethod
    def of(cls, request_id: str) -> HandedOver:
        return cls(
            "This gateway is stopping; your request goes on. Resume its answer with GET "
            f"/v1/chat/completions/{request_id}/stream (header Last-Event-ID: the id of the "
            f"last event you received), or read it with GET /v1/chat/completions/{request_id}."
        )


class UpstreamTimeout(TillerError):
    http_status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    retryable = True
    default_message = "The request timed out."


class NotApproved(PermissionDenied):
    """A pipeline's reviewer rejected the answer (services/pipelines/human_approval.py)."""

    openai_code = "not_approved"
    default_message = "The answer was not approved."


class ApprovalTimedOut(UpstreamTimeout):
    """No reviewer decided within the pipeline's approval timeout."""

    openai_code = "approval_timed_out"
    retryable = False
    default_message = "No reviewer approved the answer in time."


class Cancelled(TillerError):
    http_status = 499
    grpc_code = grpc.StatusCode.CANCELLED
    openai_code = "cancelled"
    default_message = "The request was cancelled."


def _subclasses(cls: type[TillerError]) -> list[type[TillerError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found


_REGISTRY: dict[str, type[TillerError]] = {cls.__name__: cls for cls in _subclasses(TillerError)}
