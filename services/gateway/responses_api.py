"""OpenAI's Responses API over REST: `POST /v1/responses` (whole, streamed, in the background),
`GET /v1/responses/{id}` (with `stream=true` and `starting_after`: the stream again, resumed),
`POST /v1/responses/{id}/cancel` and `DELETE /v1/responses/{id}`.

A response runs as a chat on the same durable path (responses_protocol.py): admitted, masked,
started in Temporal under its id (`resp_…`), answered through Redis, settled once. Its object and
stream events are made at the edge (responses_shapes.py), and it is kept, sealed, for
`GET` and `previous_response_id` (responses_store.py) unless `store` is false.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import orjson
from redis.exceptions import RedisError
from sse_starlette import ServerSentEvent
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiller.common.errors import (
    Cancelled,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    TillerError,
)
from tiller.common.parsing import whole_number
from tiller.contract.events import Done, Event, Failed
from tiller.contract.keys import key_id_of
from tiller.contract.requests import Message
from tiller.contract.results import InferenceResult
from tiller.gateway import metrics
from tiller.gateway.background import CANCELLED, QUEUED, Record
from tiller.gateway.callers import JSONResponse, bearer_key, caller, read_json, unless_gone
from tiller.gateway.calls import Call, Stage
from tiller.gateway.inference import Inference
from tiller.gateway.responses_protocol import Asked, parse_response_request
from tiller.gateway.responses_shapes import (
    IN_PROGRESS,
    ResponseStream,
    response_object,
    with_model,
)
from tiller.gateway.responses_store import RESPONSE_ID_PREFIX, Stored
from tiller.gateway.sse import event_source, sse_event

CANCEL_WAIT_SECONDS = 5.0


def _inference(request: Request) -> Inference:
    inference: Inference = request.app.state.inference
    return inference


async def create_response(request: Request) -> Response:
    inference = _inference(request)
    api_key, priority = caller(request)
    asked = parse_response_request(await read_json(request, inference.settings.max_body_bytes))
    history = await _history(inference, api_key, asked)
    record = metrics.CURRENT.get()
    if record is not None:
        record.stream = asked.stream
    call = await inference.begin(
        api_key, asked.chat(history), priority, record, id_prefix=RESPONSE_ID_PREFIX
    )
    envelope = with_model(asked.envelope, call.model)
    stored = Stored(
        call.request_id,
        call.accepted.key_id,
        call.accepted.created,
        envelope,
        (*history, *asked.messages),
    )
    with call.owned():
        if call.restorer is not None and envelope.previous_response_id:
            raise InvalidRequest(
                "'previous_response_id' is not supported when personal data is masked and "
                "restored (a mask+restore PII policy): the conversation kept is masked.",
                param="previous_response_id",
            )
        if envelope.store:
            await _put(inference, stored)
        if envelope.background:
            return await _in_background(inference, call, stored, asked.stream)
        if not asked.stream:
            return await _whole(request, inference, call, stored)
        answer = call.answer(merge=False)
        first = await unless_gone(request, anext(answer))
        if isinstance(first, Failed):
            raise first.exception()
        call.hand_to(Stage.STREAMING)

    async def ended() -> None:
        call.abandon()  # a client gone before the stream began; a no-op otherwise

    events = _stream(inference, call, stored, _with_first(first, answer))
    return event_source(events, call.headers(), BackgroundTask(ended))


async def _history(inference: Inference, api_key: str, asked: Asked) -> tuple[Message, ...]:
    """The conversation that `previous_response_id` continues (the caller's key's own)."""
    previous = asked.envelope.previous_response_id
    if previous is None:
        return ()
    try:
        stored = await inference.responses.get(previous)
    except RedisError:
        raise ServiceUnavailable("Stored responses cannot be read right now.") from None
    if stored is None or stored.key_id != key_id_of(api_key):
        raise NotFound(
            f"Previous response with id '{previous}' not found: it does not exist, has "
            "expired, was not stored, or was made with another key.",
            param="previous_response_id",
        )
    if stored.status == IN_PROGRESS:
        stored = await _caught_up(inference, stored)
    if stored.status == IN_PROGRESS:
        raise InvalidRequest(
            f"Previous response '{previous}' has not finished yet.", param="previous_response_id"
        )
    return stored.conversation()


async def _whole(request: Request, inference: Inference, call: Call, stored: Stored) -> Response:
    try:
        result = await unless_gone(request, call.result())
    except TillerError as error:
        await _ended(inference, stored, error)
        raise
    call.complete(result.usage)
    stored.ended(result)
    if stored.envelope.store:
        await _put(inference, stored)
    return JSONResponse(stored.object(), headers=call.headers())


async def _in_background(
    inference: Inference, call: Call, stored: Stored, stream: bool
) -> Response:
    try:
        await inference.background.submit(call)  # its watcher owns it now
    except RedisError:
        raise ServiceUnavailable("Background responses cannot be recorded right now.") from None
    if not stream:
        queued = response_object(stored.response_id, stored.created, stored.envelope, "queued")
        return JSONResponse(queued, headers=call.headers())
    return event_source(_stream(inference, call, stored, call.answer(merge=False)), call.headers())


async def _stream(
    inference: Inference,
    call: Call,
    stored: Stored,
    answer: AsyncIterator[Event],
    starting_after: int = -1,
) -> AsyncIterator[ServerSentEvent]:
    """The response's events. The stream settles the request and records how it ended if it
    owns it (STREAMING); a background response's watcher does both for its own."""
    owns = call.stage is Stage.STREAMING
    writer = ResponseStream(stored.response_id, stored.created, stored.envelope)
    with call.owned():  # the client leaving gives it up, if it is the stream's
        for kind, body in writer.start():
            if body["sequence_number"] > starting_after:
                yield _sent(kind, body)
        async for event in answer:
            for kind, body in writer.of(event):
                if body["sequence_number"] > starting_after:
                    yield _sent(kind, body)
            if isinstance(event, Done):
                call.complete(event.result.usage)
            if isinstance(event, Done | Failed):
                if owns:
                    await _ended(inference, stored, _outcome(event))
                return  # a failure: `owned` settles it with what was sent


def _outcome(event: Done | Failed) -> InferenceResult | TillerError:
    return event.result if isinstance(event, Done) else event.error


async def _with_first(first: Event, rest: AsyncGenerator[Event, None]) -> AsyncIterator[Event]:
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        await rest.aclose()  # now, not at garbage collection: it holds a subscription


def _sent(kind: str, body: dict[str, object]) -> ServerSentEvent:
    return sse_event(orjson.dumps(body).decode(), event=kind)


async def _ended(
    inference: Inference, stored: Stored, outcome: InferenceResult | TillerError
) -> None:
    """Record how a stored response ended (a background one's watcher does it for its own)."""
    if stored.envelope.store and not stored.envelope.background:
        stored.ended(outcome)
        await _put(inference, stored)


async def _put(inference: Inference, stored: Stored) -> None:
    try:
        await inference.responses.put(stored)
    except RedisError:
        raise ServiceUnavailable("Responses cannot be stored right now.") from None


# --- a stored response ------------------------------------------------------------------------


async def _owned(request: Request) -> Stored:
    """The stored response in the path, if the caller's key made it (or is an admin's)."""
    inference = _inference(request)
    principal = await inference.authenticate(bearer_key(request.headers.get("authorization")))
    response_id = request.path_params["response_id"]
    try:
        stored = await inference.responses.get(response_id)
    except RedisError:
        raise ServiceUnavailable("Stored responses cannot be read right now.") from None
    if stored is None or (stored.key_id != principal.key_id and principal.role != "admin"):
        raise NotFound(
            f"Response with id '{response_id}' not found: it does not exist, has expired, was "
            "not stored, or was made with another key.",
            param="response_id",
        )
    return stored


async def _background(inference: Inference, stored: Stored) -> Record | None:
    if not stored.envelope.background:
        return None
    try:
        return await inference.background.get(stored.response_id)
    except RedisError:
        raise ServiceUnavailable("Background responses cannot be read right now.") from None


async def _caught_up(inference: Inference, stored: Stored) -> Stored:
    """A stored response still in progress, with what its background record knows since."""
    record = await _background(inference, stored)
    if record is not None and record.status != QUEUED:
        stored.ended(record.result if record.result is not None else _failure(record))
    return stored


def _failure(record: Record) -> TillerError:
    if record.status == CANCELLED:
        return Cancelled("The response was cancelled.")
    return record.error or ServiceUnavailable("The response failed.")


async def retrieve_response(request: Request) -> Response:
    """`GET /v1/responses/{id}`: the response object; with `stream=true`, a background
    response's events from the start or after `starting_after`."""
    inference = _inference(request)
    stored = await _caught_up(inference, await _owned(request))
    headers = {"x-request-id": stored.response_id}
    if request.query_params.get("stream") not in ("true", "1"):
        return JSONResponse(stored.object(), headers=headers)
    given = request.query_params.get("starting_after")
    after = -1 if given is None else whole_number(given)
    if after is None:
        raise InvalidRequest("starting_after must be a sequence number.", param="starting_after")
    record = await _background(inference, stored)
    if record is None:
        raise InvalidRequest(
            "Only a background response can be streamed again ('background': true).",
            param="stream",
        )
    if record.status != QUEUED and not await inference.up.redis.exists(record.events_key):
        raise NotFound(
            f"The stream of '{stored.response_id}' has expired; GET /v1/responses/"
            f"{stored.response_id} has its result.",
            param="response_id",
        )
    call = inference.attach(record)
    events = _stream(inference, call, stored, call.answer(merge=False), after)
    return event_source(events, headers)


async def cancel_response(request: Request) -> Response:
    """`POST /v1/responses/{id}/cancel`: stop a background response still running."""
    inference = _inference(request)
    stored = await _owned(request)
    record = await _background(inference, stored)
    if record is None:
        raise InvalidRequest(
            "Only a background response can be cancelled ('background': true).",
            param="response_id",
        )
    if record.status == QUEUED:
        await inference.background.cancel(record)
        for _ in range(int(CANCEL_WAIT_SECONDS / 0.1)):  # its watcher records the end
            stored = await _caught_up(inference, stored)
            if stored.status != IN_PROGRESS:
                break
            await asyncio.sleep(0.1)
    stored = await _caught_up(inference, stored)
    return JSONResponse(stored.object(), headers={"x-request-id": stored.response_id})


async def delete_response(request: Request) -> Response:
    inference = _inference(request)
    stored = await _owned(request)
    await inference.responses.delete(stored.response_id)
    return JSONResponse(
        {"id": stored.response_id, "object": "response.deleted", "deleted": True},
        headers={"x-request-id": stored.response_id},
    )


ROUTES = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/cancel", cancel_response, methods=["POST"]),
]
