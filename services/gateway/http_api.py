"""The OpenAI-compatible REST API: thin handlers over `Inference`, OpenAI-shaped errors."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
from redis.exceptions import RedisError
from sse_starlette import ServerSentEvent
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiller.common.errors import (
    AnswerUnreadable,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
    TillerError,
)
from tiller.common.model_access import model_allowed
from tiller.contract import answer_stream
from tiller.contract.events import Delta, Done, Event, Failed
from tiller.gateway import (
    admin_api,
    codec_api,
    endpoint_totals,
    files_api,
    metrics,
    openapi,
    responses_api,
    shapes,
)
from tiller.gateway.background import QUEUED, Record
from tiller.gateway.batches import api as batch_api
from tiller.gateway.callers import JSONResponse, bearer_key, caller, read_json, unless_gone
from tiller.gateway.calls import Call, Stage
from tiller.gateway.edge import RequestIds, unexpected_error
from tiller.gateway.file_store import FileStore
from tiller.gateway.inference import Inference
from tiller.gateway.protocol import ApiRequest, parse_chat, parse_completion, parse_embeddings
from tiller.gateway.sse import event_source, sse_event

log = logging.getLogger(__name__)
T = TypeVar("T")
LAST_EVENT_ID = re.compile(r"^(0|\d{1,20}-\d{1,20})$")
MAX_STREAM_ID_PART = 2**64 - 1  # Redis refuses larger stream id parts


def _inference(request: Request) -> Inference:
    inference: Inference = request.app.state.inference
    return inference


async def chat_completions(request: Request) -> Response:
    return await _generate(request, parse_chat, legacy=False)


async def completions(request: Request) -> Response:
    """POST /v1/completions: a (legacy) completion of one prompt, through the same path."""
    return await _generate(request, parse_completion, legacy=True)


async def embeddings(request: Request) -> Response:
    """POST /v1/embeddings: vectors for one text or a batch, through the same path."""
    inference = _inference(request)
    api_key, priority = caller(request)
    asked, encoding = parse_embeddings(await read_json(request, inference.settings.max_body_bytes))
    call = await inference.begin(api_key, asked, priority, metrics.CURRENT.get(), resumable=False)
    with call.owned():
        result = await call.result()
        call.complete(result.usage)
    body = shapes.embeddings(call.model, result, encoding)
    return JSONResponse(body, headers=call.headers())


async def _generate(request: Request, parse: Callable[[Any], ApiRequest], legacy: bool) -> Response:
    inference = _inference(request)
    api_key, priority = caller(request)
    asked = parse(await read_json(request, inference.settings.max_body_bytes))
    record = metrics.CURRENT.get()
    if record is not None:
        record.stream = asked.stream
    # Recorded while it runs, so that it outlives this gateway; a stream's client may resume it.
    resumable = None if asked.background else asked.stream
    call = await inference.begin(api_key, asked, priority, record, resumable=resumable)
    if asked.background:
        return await _in_background(inference, call, asked)
    with call.owned():
        if not asked.stream:
            result = await unless_gone(request, call.result())
            call.complete(result.usage)
            shape = shapes.text_completion if legacy else shapes.completion
            body = shape(call.request_id, call.model, call.accepted.created, result)
            return JSONResponse(body, headers=call.headers())
        # Wait for the first event so an error before any token is a plain HTTP error.
        stream = call.answer()
        first = await unless_gone(request, anext(stream))
        if isinstance(first, Failed):
            raise first.exception()
        call.hand_to(Stage.STREAMING)

    async def ended() -> None:
        # After the response, however it ended: a client gone before the stream began never
        # ran _sse, which would have given the request up. A no-op otherwise.
        call.abandon()

    events_ = _sse(call, _with_first(first, stream), legacy=legacy)
    return event_source(events_, call.headers(), BackgroundTask(ended))


async def _in_background(inference: Inference, call: Call, asked: ApiRequest) -> Response:
    """Record it and answer at once (202), or stream it; either way the client may leave."""
    with call.owned():
        try:
            record = await inference.background.submit(call)  # its watcher owns it now
        except RedisError:
            raise ServiceUnavailable("Background requests cannot be recorded right now.") from None
    headers = call.headers() | {"location": f"/v1/chat/completions/{call.request_id}"}
    if not asked.stream:
        return JSONResponse(shapes.background(record), status_code=202, headers=headers)
    return event_source(_sse(call, call.answer()), headers)


async def _sse(
    call: Call,
    answer: AsyncIterator[Event],
    from_start: bool = True,
    legacy: bool = False,
) -> AsyncIterator[ServerSentEvent]:
    """SSE events of one answer. A failure after the first byte becomes an error event.

    The response settles the request if it owns it (STREAMING; not a background request,
    whose watcher settles it and which runs on when the client leaves). `from_start`: the
    first chunk carries the role. `legacy`: chunks of a (legacy) completion
    (`text_completion`), not of a chat."""
    meta = (call.request_id, call.model, call.accepted.created)
    include_usage = call.accepted.include_usage
    role: dict[str, str] = {"role": "assistant"} if from_start else {}

    def piece(text: str, finish_reason: str | None = None) -> str:
        nonlocal role
        if legacy:
            body = shapes.text_chunk(*meta, text, finish_reason, include_usage)
        else:
            delta = {**role, "content": text} if text or finish_reason is None else role
            body = shapes.chunk(*meta, delta, finish_reason, with_usage_field=include_usage)
            role = {}
        return orjson.dumps(body).decode()

    def own_chunk(choices: list[dict[str, Any]]) -> str:
        body = shapes.engine_chunk(*meta, choices, legacy, with_usage_field=include_usage)
        return orjson.dumps(body).decode()

    streamed = not from_start  # whether the client has any of the text yet
    sent: list[str] = []  # the text sent in this response, in pieces
    sent_length = 0
    engines_own = False  # the engine's chunks went out as it wrote them, finish reason too
    try:
        with call.owned():  # the client leaving (GeneratorExit) gives it up
            async for event in answer:
                if isinstance(event, Delta) and event.chunks:
                    # Pass-through parameters: the engine's choices (tool calls, logprobs,
                    # several choices), one chunk each; the event id on the last, for
                    # Last-Event-ID.
                    streamed = engines_own = True
                    *firsts, last = event.chunks
                    for choices in firsts:
                        yield sse_event(own_chunk(choices))
                    yield sse_event(own_chunk(last), id=event.id)
                elif isinstance(event, Delta):
                    streamed = True
                    sent.append(event.text)
                    sent_length += len(event.text)
                    yield sse_event(piece(event.text), id=event.id)
                elif isinstance(event, Done):
                    result = event.result
                    if not streamed and result.text:
                        # An answer that was not streamed (a background request asked without
                        # `stream` on an engine that cannot resume): its text in one chunk.
                        yield sse_event(piece(result.text))
                    elif (
                        from_start
                        and len(result.text) > sent_length > 0
                        and result.text.startswith(whole := "".join(sent))
                    ):
                        # Read from Temporal (Redis was away as it ended): the rest of it.
                        yield sse_event(piece(result.text[len(whole) :]))
                    call.complete(result.usage)  # before the last yields: the client may leave
                    if not engines_own:
                        yield sse_event(piece("", result.finish_reason), id=event.id)
                    if include_usage:
                        usage = shapes.usage_chunk(*meta, result.usage, legacy)
                        yield sse_event(orjson.dumps(usage).decode())
                    yield sse_event("[DONE]")
                elif isinstance(event, Failed):
                    raise event.exception()
    except TillerError as error:
        yield sse_event(orjson.dumps(error.to_openai()).decode())
        yield sse_event("[DONE]")


async def _with_first(first: Event, rest: AsyncGenerator[Event, None]) -> AsyncIterator[Event]:
    try:
        yield first
        if not first.terminal:
            async for event in rest:
                yield event
    finally:
        await rest.aclose()  # now, not at garbage collection: it holds a subscription


async def _owned_record(request: Request) -> Record:
    """The request in the path, if the caller's key made it (or is an admin's): a background
    one, or one that runs tied to its connection (kept only while it runs)."""
    inference = _inference(request)
    principal = await inference.authenticate(bearer_key(request.headers.get("authorization")))
    request_id = request.path_params["request_id"]
    try:
        record = await inference.background.get(request_id)
    except RedisError:
        raise ServiceUnavailable("Background requests cannot be read right now.") from None
    if record is None or (record.key_id != principal.key_id and principal.role != "admin"):
        raise NotFound(
            f"No request `{request_id}` to read: it does not exist, has expired, or was made "
            'with another key. Requests sent with "background": true are kept after they end; '
            "others only while they run.",
            param="id",
        )
    return record


async def retrieve_completion(request: Request) -> Response:
    """`GET /v1/chat/completions/{id}`: a background request's status, then its result."""
    return JSONResponse(shapes.background(await _owned_record(request)))


async def cancel_completion(request: Request) -> Response:
    """`POST /v1/chat/completions/{id}/cancel`: stop a background request still running."""
    record = await _owned_record(request)
    if record.status == QUEUED:
        await _inference(request).background.cancel(record)
    return JSONResponse(shapes.background(record))


async def stream_completion(request: Request) -> Response:
    """`GET /v1/chat/completions/{id}/stream`: a request's answer as SSE, from the start or,
    with `Last-Event-ID`, from just after the event a client saw last: a background request's,
    or a stream's whose gateway died."""
    inference = _inference(request)
    record = await _owned_record(request)
    after = request.headers.get("last-event-id") or "0"
    if not LAST_EVENT_ID.match(after) or max(answer_stream.order(after)) > MAX_STREAM_ID_PART:
        raise InvalidRequest(
            "Last-Event-ID must be an event id from this stream, such as 1732612345678-0.",
            param="Last-Event-ID",
        )
    if record.status != QUEUED and not await inference.up.redis.exists(record.events_key):
        raise NotFound(
            f"The stream of `{record.request_id}` has expired; GET /v1/chat/completions/"
            f"{record.request_id} has its result.",
            param="id",
        )
    if after != "0":
        try:
            last = await answer_stream.newest(
                inference.up.redis, record.events_key, sealer=inference.up.sealer
            )
        except RedisError:
            raise AnswerUnreadable() from None
        if last is not None and last.terminal and not answer_stream.newer(last.id, after):
            # The client saw the end already: nothing more (a browser's EventSource reconnects
            # after the last event on its own).
            return event_source(_just_done(), {"x-request-id": record.request_id})
    await inference.background.resumed(record)
    call = inference.attach(record)
    answer = call.answer(after)
    return event_source(
        _sse(call, answer, from_start=after == "0", legacy=record.legacy),
        {"x-request-id": record.request_id},
    )


async def _just_done() -> AsyncIterator[ServerSentEvent]:
    yield sse_event("[DONE]")


async def list_models(request: Request) -> Response:
    inference = _inference(request)
    principal = await inference.authenticate(bearer_key(request.headers.get("authorization")))
    listing = await inference.list_models()
    data = [
        shapes.model_object(name, m.created, m.owned_by)
        for m in listing.models
        for name in (m.id, *m.aliases)
        if model_allowed(principal.models, m.id, name)  # as admission checks it
    ]
    return JSONResponse({"object": "list", "data": data})


async def retrieve_model(request: Request) -> Response:
    inference = _inference(request)
    principal = await inference.authenticate(bearer_key(request.headers.get("authorization")))
    name = request.path_params["model"]
    listing = await inference.list_models()
    for m in listing.models:
        if name == m.id or name in m.aliases:
            if not model_allowed(principal.models, m.id, name):
                raise PermissionDenied(
                    f"This key may not use the model `{name}`: it is not among the key's "
                    "allowed models.",
                    param="model",
                )
            return JSONResponse(shapes.model_object(name, m.created, m.owned_by))
    raise NotFound(f"The model `{name}` does not exist.", param="model")


async def openapi_json(request: Request) -> Response:
    """The REST API's contract (openapi.py): readable without a key, as any API's docs are."""
    return JSONResponse(openapi.document())


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics_page(request: Request) -> Response:
    """Prometheus metrics, with the workers' endpoint reports read first (endpoint_totals)."""
    inference = _inference(request)
    await endpoint_totals.TOTALS.refresh(inference.up.redis, inference.settings.key_prefix)
    return await metrics.metrics(request)


async def readyz(request: Request) -> Response:
    """Ready for traffic: not draining and (unless `?deps=0`) every dependency answers.

    `deps=0` is for balancers of many gateways (Kubernetes): a dependency all gateways share
    (Redis, Temporal) going away must not take every gateway out of the balancer, where callers
    would see connections refused instead of this gateway's clear 503 errors."""
    inference = _inference(request)
    if inference.draining:  # stopping: balancers should send new requests elsewhere
        return JSONResponse({"ready": False, "draining": True, "checks": {}}, status_code=503)
    if request.query_params.get("deps") in ("0", "false"):
        return JSONResponse({"ready": True, "checks": {}})
    checks = await inference.up.readiness(limit=1.0)
    ready = all(checks.values())
    if not ready:
        log.warning("not ready", extra={"failing": sorted(k for k, ok in checks.items() if not ok)})
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


async def _tiller_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, TillerError)
    return JSONResponse(error.to_openai(), error.http_status, headers=error.http_headers())


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    body = {
        "error": {
            "message": error.detail,
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    return JSONResponse(body, error.status_code, headers=error.headers)


def create_app(inference: Inference) -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/chat/completions/{request_id}", retrieve_completion, methods=["GET"]),
            Route("/v1/chat/completions/{request_id}/stream", stream_completion, methods=["GET"]),
            Route("/v1/chat/completions/{request_id}/cancel", cancel_completion, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
            *responses_api.ROUTES,
            *files_api.ROUTES,
            *batch_api.ROUTES,
            *admin_api.ROUTES,
            *codec_api.ROUTES,
        ],
        exception_handlers={
            TillerError: _tiller_error,
            HTTPException: _http_error,
            Exception: unexpected_error,
        },
        # Outermost first: every answer gets its request id, the inference ones are counted.
        middleware=[Middleware(RequestIds), Middleware(metrics.RecordRequests)],
    )
    app.state.inference = inference
    app.state.files = FileStore(Path(inference.settings.files_dir), inference.up.sealer)
    return app
