"""ToyLM: a made-up engine with a protocol of its own, for the adapter guide (docs/adapters.md).

    POST /generate  {"prompt": "...", "max_tokens": 3, "stream": false}
        -> {"text": "...", "finish": "stop", "prompt_tokens": 4, "tokens": 3}
    POST /generate  {"prompt": "...", "stream": true}
        -> one JSON object a line: {"token": " WORD"} ..., then {"done": true, "finish": ...,
           "prompt_tokens": n, "tokens": n}
    GET /health     -> 200

It answers with the prompt's words in capitals. A prompt over 50 words is a 400; a prompt with
the word OVERLOADED is a 503, as a busy engine would answer.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

MAX_PROMPT_WORDS = 50


def toy_app() -> web.Application:
    async def generate(request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        words = body["prompt"].split()
        if len(words) > MAX_PROMPT_WORDS:
            return web.json_response({"error": "prompt too long"}, status=400)
        if "OVERLOADED" in words:
            return web.json_response({"error": "overloaded"}, status=503)
        answer = [w.upper() for w in words][: body.get("max_tokens") or len(words)]
        finish = "length" if len(answer) < len(words) else "stop"
        end = {"finish": finish, "prompt_tokens": len(words), "tokens": len(answer)}
        if not body.get("stream"):
            return web.json_response({"text": " ".join(answer), **end})
        response = web.StreamResponse(headers={"content-type": "application/x-ndjson"})
        await response.prepare(request)
        for index, word in enumerate(answer):
            token = word if index == 0 else f" {word}"
            await response.write(orjson.dumps({"token": token}) + b"\n")
        await response.write(orjson.dumps({"done": True, **end}) + b"\n")
        return response

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/generate", generate)
    app.router.add_get("/health", health)
    return app
