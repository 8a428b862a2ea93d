"""What every REST handler needs of its caller's request: the key, the body, the priority
header, and the JSON response type."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tiller.common.errors import AuthenticationFailed, InvalidRequest, PayloadTooLarge
from tiller.common.priorities import HIGHEST_PRIORITY, LOWEST_PRIORITY

PRIORITY_HEADER = "x-tiller-priority"


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
    if not value.strip().isdigit() or not HIGHEST_PRIORITY <= int(value) <= LOWEST_PRIORITY:
        raise InvalidRequest(
            f"The {PRIORITY_HEADER} header must be a whole number from {HIGHEST_PRIORITY} "
            f"(first) to {LOWEST_PRIORITY} (last).",
            param=PRIORITY_HEADER,
        )
    return int(value)


async def read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON."
        ) from None
