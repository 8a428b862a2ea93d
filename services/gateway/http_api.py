"""The OpenAI-compatible REST API: thin handlers over `Inference`, OpenAI-shaped errors."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiller.common import events
from tiller.common.errors import (
    AnswerUnreadable,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
    TillerError,
)
from tiller.common.model_access import model_allowed
from tiller.gateway import admin_api, codec_api, metrics, shapes
from tiller.gateway.background import QUEUED, Record
from tiller.gateway.callers import (
    PRIORITY_HEADER,
    JSONResponse,
    bearer_key,
    read_json,
    requested_priority,
)
from tiller.gateway.inference import Call, Inference, result_of
from tiller.gateway.protocol import (
    ChatRequest,
    parse_chat,
    parse_completion,
    parse_embeddings,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
SSE_PING_SECONDS = 15
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
    api_key = bearer_key(request.headers.get("authorization"))
    priority = requested_priority(request.headers.get(PRIORITY_HEADER))
    asked = parse_embeddings(await read_json(request, inference.settings.max_body_bytes))
    call = await inference.begin(api_key, asked, priority)
    try:
        result = await call.result()
    except TillerError as error:
        call.abandon()
        return _error_response(error, {"x-request-id": call.request_id})
    except BaseException:
        call.abandon()
        raise
    call.complete(result.usage)
    body = shapes.embeddings(call.model, result, asked.encoding_format)
    return JSONResponse(body, headers=call.headers())


async def _generate(
    request: Request, parse: Callable[[Any], ChatRequest], legacy: bool
) -> Response:
    inference = _inference(request)
    api_key = bearer_key(request.headers.get("authorization"))
    priority = requested_priority(request.headers.get(PRIORITY_HEADER))
    chat = parse(await read_json(request, inference.settings.max_body_bytes))
    call = await inference.begin(api_key, chat, priority)
    call.include_usage = chat.include_usage
    if chat.background:
        return await _in_background(inference, call, chat)
    try:
        if not chat.stream:
            result = await _unless_gone(request, call.result())
            call.complete(result.usage)
            shape = shapes.text_completion if legacy else shapes.completion
            body = shape(call.request_id, call.model, call.created, result)
            return JSONResponse(body, headers=call.headers())
        # Wait for the first event so an error before any token is a plain HTTP error.
        stream = call.answer()
        first = await _unless_gone(request, anext(stream))
        if first.kind == events.ERROR:
            raise TillerError.from_dict(first.data["error"])
    except TillerError as error:
        call.abandon()
        return _error_response(error, {"x-request-id": call.request_id})
    except ClientGone:
        call.abandon()  # stops the engine (or the pipeline) at once
        return Response(status_code=499)
    except BaseException:
        call.abandon()
        raise
    answer = _with_first(first, stream)
    events_ = _sse(call, chat.include_usage, answer, legacy=legacy)

    async def ended() -> None:
        # After the response, however it ended: a client gone before the stream began never
        # ran _sse's own `finally`, and its lease would be renewed for good. A no-op otherwise.
        call.abandon()

    return _event_source(events_, call.headers(), BackgroundTask(ended))


class ClientGone(Exception):
    """The caller hung up before its answer began."""


async def _unless_gone(request: Request, work: Awaitable[T]) -> T:
    """`work`, unless the caller hangs up first (ClientGone). An answer can be slow to begin (a
    queue, a pipeline waiting for a reviewer); a caller that leaves meanwhile cancels it then,
    not when the first event comes. (Once streaming, the SSE response notices by itself.)"""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_hung_up(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        gone.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait({task})
    raise ClientGone()


async def _hung_up(request: Request) -> None:
    # The body has been read: what the server hands over next is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _Ping(ServerSentEvent):
    """A keep-alive comment line with no blank line after it. The openai SDK's decoder makes a
    blank line after an `id:` into an event with no data, which it then fails to parse: a
    stream quiet for SSE_PING_SECONDS (a worker failing over) broke its clients."""

    def encode(self) -> bytes:
        return b": ping\n"


def _event_source(
    events_: AsyncIterator[ServerSentEvent],
    headers: dict[str, str],
    background: BackgroundTask | None = None,
) -> Response:
    return EventSourceResponse(
        events_,
        headers=headers,
        ping=SSE_PING_SECONDS,
        ping_message_factory=_Ping,
        sep="\n",
        background=background,
    )


async def _in_background(inference: Inference, call: Call, chat: ChatRequest) -> Response:
    """Record it and answer at once (202), or stream it; either way the client may leave."""
    try:
        record = await inference.background.submit(call)
    except RedisError:
        call.abandon()
        raise ServiceUnavailable("Background requests cannot be recorded right now.") from None
    except BaseException:
        call.abandon()
        raise
    headers = call.headers() | {"location": f"/v1/chat/completions/{call.request_id}"}
    if not chat.stream:
        return JSONResponse(shapes.background(record), status_code=202, headers=headers)
    return _event_source(_sse(call, chat.include_usage, call.answer(), settle=False), headers)


async def _sse(
    call: Call,
    include_usage: bool,
    answer: AsyncIterator[events.Event],
    settle: bool = True,
    from_start: bool = True,
    legacy: bool = False,
) -> AsyncIterator[ServerSentEvent]:
    """SSE events of one answer. A failure after the first byte becomes an error event.

    `settle`: this stream owns the request (not a background one, whose watcher settles it and
    which runs on when the client leaves). `from_start`: the first chunk carries the role.
    `legacy`: chunks of a (legacy) completion (`text_completion`), not of a chat."""
    meta = (call.request_id, call.model, call.created)
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
    engines_own = False  # the engine's chunks went out as it wrote them, finish reason too
    try:
        async for event in answer:
            if event.kind == events.DELTA and "c" in event.data:
                # Pass-through parameters: the engine's choices (tool calls, logprobs, several
                # choices), one chunk each; the event id on the last, for Last-Event-ID.
                streamed = engines_own = True
                *firsts, last = event.data["c"]
                for choices in firsts:
                    yield ServerSentEvent(own_chunk(choices))
                yield ServerSentEvent(own_chunk(last), id=event.id)
            elif event.kind == events.DELTA:
                streamed = True
                yield ServerSentEvent(piece(event.data["text"]), id=event.id)
            elif event.kind == events.DONE:
                result = result_of(event)
                if not streamed and result.text:
                    # An answer that was not streamed (a background request asked without
                    # `stream` on an engine that cannot resume): its text in one chunk first.
                    yield ServerSentEvent(piece(result.text))
                if settle:  # before the last yields: the client may leave at once
                    call.complete(result.usage)
                if not engines_own:
                    yield ServerSentEvent(piece("", result.finish_reason), id=event.id)
                if include_usage:
                    usage = shapes.usage_chunk(*meta, result.usage, legacy)
                    yield ServerSentEvent(orjson.dumps(usage).decode())
                yield ServerSentEvent("[DONE]")
            else:
                raise TillerError.from_dict(event.data["error"])
    except TillerError as error:
        if settle:
            call.abandon()
        yield ServerSentEvent(orjson.dumps(error.to_openai()).decode())
        yield ServerSentEvent("[DONE]")
    finally:
        if settle:
            call.abandon()  # a no-op once completed; otherwise the client went away


async def _with_first(
    first: events.Event, rest: AsyncGenerator[events.Event, None]
) -> AsyncIterator[events.Event]:
    try:
        yield first
        if not first.terminal:
            async for event in rest:
                yield event
    finally:
        await rest.aclose()  # now, not at garbage collection: it holds a subscription


async def _owned_record(request: Request) -> Record:
    """The background request in the path, if the caller's key made it (or is an admin's)."""
    inference = _inference(request)
    principal = await inference.authenticate(bearer_key(request.headers.get("authorization")))
    request_id = request.path_params["request_id"]
    try:
        record = await inference.background.get(request_id)
    except RedisError:
        raise ServiceUnavailable("Background requests cannot be read right now.") from None
    if record is None or (record.key_id != principal.key_id and principal.role != "admin"):
        raise NotFound(
            f"No background request `{request_id}`: it does not exist, has expired, or was "
            'made with another key. Only requests sent with "background": true are kept.',
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
    """`GET /v1/chat/completions/{id}/stream`: a background request's answer as SSE, from the
    start or, with `Last-Event-ID`, from just after the event a client saw last."""
    inference = _inference(request)
    record = await _owned_record(request)
    after = request.headers.get("last-event-id") or "0"
    if not LAST_EVENT_ID.match(after) or max(events.order(after)) > MAX_STREAM_ID_PART:
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
            last = await events.newest(inference.up.redis, record.events_key)
        except RedisError:
            raise AnswerUnreadable() from None
        if last is not None and last.terminal and not events.newer(last.id, after):
            # The client saw the end already: nothing more (a browser's EventSource reconnects
            # after the last event on its own).
            return _event_source(_just_done(), {"x-request-id": record.request_id})
    call = inference.attach(record)
    answer = call.answer(after)
    return _event_source(
        _sse(call, record.include_usage, answer, settle=False, from_start=after == "0"),
        {"x-request-id": record.request_id},
    )


async def _just_done() -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent("[DONE]")


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


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


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


def _error_response(error: TillerError, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        error.to_openai(), error.http_status, headers=error.http_headers() | (headers or {})
    )


async def _tiller_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, TillerError)
    return _error_response(error)


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
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics.metrics, methods=["GET"]),
            *admin_api.ROUTES,
            *codec_api.ROUTES,
        ],
        exception_handlers={TillerError: _tiller_error, HTTPException: _http_error},
        middleware=[Middleware(metrics.RecordRequests)],
    )
    app.state.inference = inference
    return app
