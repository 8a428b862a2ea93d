"""What every HTTP answer of the gateway carries, whatever ended it: an `x-request-id`, and an
OpenAI-shaped JSON error body, even for a fault nobody foresaw.

A request that reaches Temporal is named by its run's id (chatcmpl-…, resp_…, set by its
handler); any other (refused before it began, an admin call, a health check) gets an id minted
here, so a client can quote it and an operator find its log lines.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

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
    minted = request.scope.get("state", {}).get("request_id")  # RequestIds ran inside this
    return JSONResponse(body, 500, headers={"x-request-id": minted} if minted else None)


class CorkedTransport:
    """A connection's transport that writes what one turn of the event loop sent in one
    system call: uvicorn writes a response's head and its body (and each SSE event) apart, and
    on this path every write to a socket is a large share of a request's CPU."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():  # the client left: nowhere to send it
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class JsonErrorsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, answering bytes it cannot parse as a request (a header with a
    control character, say) in OpenAI's JSON with an x-request-id, as every other answer,
    rather than with a line of plain text; its writes are corked (CorkedTransport)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CorkedTransport(transport)  # type: ignore[assignment]

    def send_400_response(self, msg: str) -> None:
        minted = f"req_{uuid.uuid4().hex}"
        body = orjson.dumps(
            {
                "error": {
                    "message": f"The request is not valid HTTP: {msg}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            }
        )
        head = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: application/json\r\n",
                b"x-request-id: " + minted.encode() + b"\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        log.info("unparseable request refused", extra={"request_id": minted})
        self.transport.write(b"".join(head))
        self.transport.close()
