"""The demo engine, counted per key: what bench/chaos.py runs as its engine.

    python bench/chaos_engine.py    (its settings: TILLER_DEMO_*, as the demo engine's)

It serves the demo engine's own app (`tiller.demo_engine.app.create_app`) unchanged, behind an
ASGI wrapper that counts chat completions in flight per *tag*: the first word of the request's
last user message. The chaos suite starts each key's prompts with a tag of its own, so the
engine can say how many answers it wrote at once for one key, which Tiller does not tell it.
The wrapper lives here, not in the demo engine, so the suite measures any checkout of Tiller,
including commits from before the suite existed.

    GET /chaos/tags   {"<tag>": {"now": n, "peak": n, "started": n, "finished": n}, ...}

An answer is in flight from its request's arrival until its last byte is sent or its client
leaves; `finished` counts answers written to the end. The counts live in the process: a
restarted engine starts from zero.
"""

from __future__ import annotations

import collections
from typing import Any

import orjson
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tiller.common.lifecycle import run_service
from tiller.common.net import bind
from tiller.demo_engine.app import create_app
from tiller.demo_engine.settings import DemoSettings

COUNTED_PATH = "/v1/chat/completions"


def tag_of(body: bytes) -> str:
    """The first word of the last user message; "" when there is none."""
    try:
        messages = orjson.loads(body).get("messages") or []
        said = [m.get("content") for m in messages if m.get("role") == "user"]
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    text = said[-1] if said and isinstance(said[-1], str) else ""
    return (text.split() or [""])[0]


class PerTag:
    """Counts answers in flight per tag around the app it wraps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"] == "/chaos/tags":
            await self._show(send)
        elif scope["path"] == COUNTED_PATH and scope["method"] == "POST":
            await self._counted(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # the client's disconnect, when it comes

        ended = False

        async def watch(message: Message) -> None:
            nonlocal ended
            if message["type"] == "http.response.body" and not message.get("more_body"):
                ended = True
            await send(message)

        count = self.counts[tag_of(body)]
        count["now"] += 1
        count["started"] += 1
        count["peak"] = max(count["peak"], count["now"])
        try:
            await self.app(scope, replay, watch)
        finally:
            count["now"] -= 1
            count["finished"] += ended

    async def _show(self, send: Send) -> None:
        shown: dict[str, Any] = {tag: dict(count) for tag, count in self.counts.items()}
        body = orjson.dumps(shown)
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def serve(settings: DemoSettings) -> None:
    config = uvicorn.Config(
        PerTag(create_app(settings)),
        log_level=settings.log_level,
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    await uvicorn.Server(config).serve(sockets=[bind(settings.host, settings.port)])


if __name__ == "__main__":
    run_service("demo-engine", DemoSettings.from_env, serve)
