"""What every HTTP answer of the gateway carries, whatever ended it: an `x-request-id`, and an
OpenAI-shaped JSON error body, even for a fault nobody foresaw.

A request that reaches Temporal is named by its run's id (chatcmpl-…, resp_…, set by its
handler); any other (refused before it began, an admin call, a health check) gets an id minted
here, so a client can quote it and an operator find its log lines.
"""

from __future__ import annotations

import logging
import uuid

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tiller.common import logs
from tiller.gateway.callers import JSONResponse

log = logging.getLogger(__name__)
HEADER = b"x-request-id"


class RequestIds:
    """ASGI middleware: an id for every request, in its log lines and its answer's headers
    (unless its handler named it already)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        minted = f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = minted
        token = logs.REQUEST_ID.set(minted)

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == HEADER for k, _ in headers):
                    message = {**message, "headers": [*headers, (HEADER, minted.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, named)
        finally:
            logs.REQUEST_ID.reset(token)


async def unexpected_error(request: Request, error: Exception) -> Response:
    """The last resort: a fault no handler expected is a 500 in OpenAI's shape. (Starlette logs
    its traceback after this answer, as a JSON line like any other.)"""
    body = {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    return JSONResponse(body, 500)
