"""What every REST handler needs of its caller's request: the key, the body, the priority
header, whether the caller is still there, and the JSON response type."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tiller.common.errors import (
    AuthenticationFailed,
    CallerLeft,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from tiller.common.parsing import whole_number
from tiller.common.paths import key_path
from tiller.common.priorities import HIGHEST_PRIORITY, LOWEST_PRIORITY

PRIORITY_HEADER = "x-tiller-priority"
T = TypeVar("T")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def bearer_key(authorization: str | None) -> str:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
        )
    return key.strip()


def requested_priority(value: str | None) -> int | None:
    """The `x-tiller-priority` header: a caller may put its request behind its key's class."""
    if value is None:
        return None
    priority = whole_number(value)
    if priority is None or not HIGHEST_PRIORITY <= priority <= LOWEST_PRIORITY:
        raise InvalidRequest(
            f"The {PRIORITY_HEADER} header must be a whole number from {HIGHEST_PRIORITY} "
            f"(first) to {LOWEST_PRIORITY} (last).",
            param=PRIORITY_HEADER,
        )
    return priority


async def read_json(request: Request, limit: int) -> Any:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            "The request body must be JSON, sent with 'Content-Type: application/json'.",
            param="Content-Type",
        )
    declared = request.headers.get("content-length")
    length = whole_number(declared) if declared else None
    if length is not None and length > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON."
        ) from None
    if (too_deep := _deeper_than(data, MAX_JSON_DEPTH)) is not None:
        where = key_path(too_deep)
        raise InvalidRequest(
            f"The request nests JSON more than {MAX_JSON_DEPTH} levels deep (at '{where}').",
            param=where,
        )
    return data


# Deeper JSON is no request anyone writes, and what carries it on (the engine's JSON encoder,
# Temporal's payload converter) would fail at a few hundred levels with a server error.
MAX_JSON_DEPTH = 64


def _deeper_than(data: Any, limit: int) -> tuple[str | int, ...] | None:
    """The path of an object or array nested deeper than `limit`, or None."""
    if not isinstance(data, dict | list):
        return None
    todo: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while todo:
        value, path = todo.pop()
        if len(path) >= limit:
            return path
        items = value.items() if isinstance(value, dict) else enumerate(value)
        todo.extend((v, (*path, k)) for k, v in items if isinstance(v, dict | list))
    return None


def caller(request: Request) -> tuple[str, int | None]:
    """The caller's key and the priority class it asks for."""
    api_key = bearer_key(request.headers.get("authorization"))
    return api_key, requested_priority(request.headers.get(PRIORITY_HEADER))


async def unless_gone(request: Request, work: Awaitable[T]) -> T:
    """`work`, unless the caller hangs up first (CallerLeft). An answer can be slow to begin (a
    queue, a pipeline waiting for a reviewer); a caller that leaves meanwhile cancels it then,
    not when the first event comes. (Once streaming, the SSE response notices by itself.)"""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_hung_up(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()  # the caller left, or this handler was cancelled: stop the work
    if task.done():
        return task.result()
    await asyncio.wait({task})
    raise CallerLeft()


async def _hung_up(request: Request) -> None:
    # The body has been read: what the server hands over next is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
