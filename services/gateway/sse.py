"""Server-sent events as the gateway writes them: OpenAI's framing (LF line ends, a blank line
after each event), with a keep-alive comment while an answer is quiet."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.responses import Response

SSE_PING_SECONDS = 15


def sse_event(data: str, id: str | None = None, event: str | None = None) -> ServerSentEvent:
    """One SSE event, its lines ended with LF as OpenAI's are (clients that split the stream
    on a blank line, as many hand-written ones do, expect "\\n\\n")."""
    return ServerSentEvent(data, id=id, event=event, sep="\n")


def event_source(
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


class _Ping(ServerSentEvent):
    """A keep-alive comment line with no blank line after it. The openai SDK's decoder makes a
    blank line after an `id:` into an event with no data, which it then fails to parse: a
    stream quiet for SSE_PING_SECONDS (a worker failing over) broke its clients."""

    def encode(self) -> bytes:
        return b": ping\n"
