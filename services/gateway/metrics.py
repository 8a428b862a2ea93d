"""The gateway's Prometheus metrics, served at GET /metrics.

Each inference request gets a RequestRecord (a context variable) when it arrives: the REST
middleware or the gRPC decorator below make it, `Inference.begin` fills in the model, key id
and team as it learns them, `Call` notes the first token, and the record is counted once the
answer has ended, with its status.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tiller.common import tracing
from tiller.common.errors import TillerError
from tiller.common.grpc_server import Behavior, MethodWrapper

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter(
    "tiller_requests",
    "Inference requests answered, by front door (rest, grpc), model, key id, team and status "
    "(the HTTP status; for gRPC its HTTP equivalent; 499: the caller left).",
    ["api", "model", "key", "team", "status"],
)
REQUEST_SECONDS = Histogram(
    "tiller_request_seconds",
    "From a request's arrival to the end of its answer.",
    ["api", "model", "stream"],
    buckets=_LATENCY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "tiller_time_to_first_token_seconds",
    "From a streamed request's arrival to its first token leaving the gateway.",
    ["model"],
    buckets=_LATENCY,
)
TOKENS = Counter(
    "tiller_tokens",
    "Tokens of answered requests, by model and kind (prompt: in, completion: out).",
    ["model", "kind"],
)
IN_FLIGHT = Gauge(
    "tiller_requests_in_flight", "Admitted requests this gateway is answering now.", ["model"]
)
ANSWER_ERRORS = Counter(
    "tiller_answer_errors",
    "Answers that ended in an error from the engine side (after retries and fallbacks), by "
    "model and error.",
    ["model", "reason"],
)
BACKLOG = Gauge(
    "tiller_queue_backlog",
    "Tasks waiting in a Temporal task queue for a free worker (approximate, from Temporal).",
    ["task_queue"],
)
BACKLOG_AGE = Gauge(
    "tiller_queue_backlog_age_seconds",
    "How long the oldest task waiting in a Temporal task queue has waited.",
    ["task_queue"],
)
POLLERS = Gauge(
    "tiller_queue_pollers",
    "Workers polling a Temporal task queue (seen by Temporal in the last minute).",
    ["task_queue"],
)
QUEUE_INFO = Gauge(
    "tiller_queue_info",
    "1 for each deployment's task queue, naming its model and deployment (for joins).",
    ["task_queue", "model", "deployment"],
)
PII_DETECTIONS = Counter(
    "tiller_pii_detections",
    "Personal data found in requests, by type and the mode that applied to it.",
    ["type", "mode"],
)
PII_BLOCKED = Counter(
    "tiller_pii_blocked_requests",
    "Requests refused because a policy blocks the personal data they carry.",
)
PII_SECONDS = Histogram(
    "tiller_pii_scan_seconds",
    "Time spent finding and masking personal data in one request.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@dataclass
class RequestRecord:
    api: str
    started: float = field(default_factory=time.perf_counter)
    model: str = ""
    key: str = ""
    team: str = ""
    stream: bool = False
    first_token: bool = False

    def routed(self, model: str) -> None:
        self.model = model

    def admitted(self, key_id: str, team: str) -> None:
        self.key, self.team = key_id, team

    def token(self) -> None:
        """A token went out: the first one of a stream is its time to first token."""
        if not self.first_token:
            self.first_token = True
            if self.stream:
                TIME_TO_FIRST_TOKEN.labels(self.model).observe(time.perf_counter() - self.started)

    def finish(self, status: int) -> None:
        REQUESTS.labels(self.api, self.model, self.key, self.team, str(status)).inc()
        REQUEST_SECONDS.labels(self.api, self.model, str(self.stream).lower()).observe(
            time.perf_counter() - self.started
        )


CURRENT: ContextVar[RequestRecord | None] = ContextVar("tiller_request", default=None)
TRACER = tracing.tracer("tiller.gateway")
INFERENCE_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")


class RecordRequests:
    """ASGI middleware: a record for each inference POST, counted when its body has been sent
    (for a stream, at its end)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in INFERENCE_PATHS
        ):
            await self.app(scope, receive, send)
            return
        record = RequestRecord("rest")
        token = CURRENT.set(record)
        status = 0
        finished = False
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        span = TRACER.start_span(
            f"POST {scope['path']}", context=tracing.extract(headers), kind=SpanKind.SERVER
        )
        attached = otel_context.attach(trace.set_span_in_context(span))

        async def recording_send(message: Message) -> None:
            nonlocal status, finished
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)
            ended = message["type"] == "http.response.body" and not message.get("more_body")
            if ended and not finished:
                finished = True
                record.finish(status)

        try:
            await self.app(scope, receive, recording_send)
        except asyncio.CancelledError:
            if not finished:
                finished = True
                record.finish(status or 499)  # the caller left
            raise
        except Exception:
            if not finished:
                finished = True
                record.finish(500)
            raise
        finally:
            if not finished:
                record.finish(status or 499)
            span.set_attribute("http.response.status_code", status or 499)
            span.end()
            otel_context.detach(attached)
            CURRENT.reset(token)


class RecordInference(MethodWrapper):
    """Each call of an Inference method that runs a request, counted like a REST request:
    one interceptor for all of them (inside error translation: it sees the TillerError)."""

    def wants(self, method: str) -> bool:
        service, _, name = method.rpartition("/")
        return service == "/tiller.inference.v1.Inference" and name in RECORDED_RPCS

    def unary(self, behavior: Behavior) -> Behavior:
        return _recorded_unary(behavior)

    def stream(self, behavior: Behavior) -> Behavior:
        return _recorded_stream(behavior)


# The Inference methods that run a request (ListModels does not).
RECORDED_RPCS = frozenset({"Generate", "GenerateStream", "Complete", "CompleteStream", "Embed"})


def _status_of(error: BaseException | None) -> int:
    if error is None:
        return 200
    if isinstance(error, TillerError):
        return error.http_status
    return 499 if isinstance(error, (GeneratorExit, asyncio.CancelledError)) else 500


def _recorded_unary(behavior: Behavior) -> Behavior:
    async def recorded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        record = RequestRecord("grpc")
        CURRENT.set(record)  # each RPC runs in a task of its own: no reset needed
        failure: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as error:
            failure = error
            raise
        finally:
            record.finish(_status_of(failure))

    return recorded


def _recorded_stream(behavior: Behavior) -> Behavior:
    async def recorded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        record = RequestRecord("grpc", stream=True)
        CURRENT.set(record)
        failure: BaseException | None = None
        try:
            async for item in behavior(request, context):
                yield item
        except BaseException as error:
            failure = error
            raise
        finally:
            record.finish(_status_of(failure))

    return recorded
