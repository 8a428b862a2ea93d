"""The demo engine: a small OpenAI-compatible server that stands in for vLLM (chat completions,
legacy completions and embeddings).

It is not a model. It exists so `tiller up` and the tests have an engine that runs anywhere and
answers deterministically, with a configurable delay per token: text (generation.py), or, given
tools, one tool call as a tool-using model would make (tool_calls.py), so agent loops run end to
end; choices.py writes either out, whole or streamed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tiller.demo_engine import choices, tool_calls
from tiller.demo_engine.generation import answer, embedding, prompt_tokens, text_tokens, tokens_of
from tiller.demo_engine.settings import DemoSettings

log = logging.getLogger(__name__)


class BrokenOnPurpose(Exception):
    """A breaking model's stream stops here: the server drops the connection mid-answer."""


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def _error(message: str, status: int, code: str | None = None) -> Response:
    body = {"error": {"message": message, "type": "BadRequestError", "param": None, "code": code}}
    return _json(body, status)


class InFlight:
    """How many answers the engine is writing now, and the most it has written at once: tests
    read it (GET /stats) to check that a concurrency limit held."""

    def __init__(self) -> None:
        self.now = self.peak = 0

    def __enter__(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def __exit__(self, *_: object) -> None:
        self.now -= 1

    async def around(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        with self:
            async for chunk in chunks:
                yield chunk


def create_app(settings: DemoSettings) -> Starlette:
    in_flight = InFlight()
    flaky: collections.Counter[str] = collections.Counter()  # requests per flaky model
    received: collections.deque[dict[str, Any]] = collections.deque(
        maxlen=settings.record_requests or 1
    )

    def record(path: str, body: Any) -> None:
        if settings.record_requests:
            received.append({"path": path, "body": body})

    async def show_received(request: Request) -> Response:
        """What the engine was sent, oldest first (with TILLER_DEMO_RECORD_REQUESTS set)."""
        return _json({"data": list(received)})

    async def clear_received(request: Request) -> Response:
        received.clear()
        return Response(status_code=204)

    delay = settings.token_delay_ms / 1000
    first_delay = settings.first_token_delay_ms / 1000

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    async def stats(request: Request) -> Response:
        return _json({"in_flight": in_flight.now, "peak": in_flight.peak})

    async def reset_stats(request: Request) -> Response:
        in_flight.peak = in_flight.now
        return _json({"in_flight": in_flight.now, "peak": in_flight.peak})

    async def models(request: Request) -> Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "tiller-demo-engine"}
            for name in settings.served_models
        ]
        return _json({"object": "list", "data": data})

    async def chat(request: Request) -> Response:
        return await generate(request, legacy=False)

    async def completions(request: Request) -> Response:
        return await generate(request, legacy=True)

    async def generate(request: Request, legacy: bool) -> Response:
        """Chat completions, or (legacy) completions of a `prompt`, answered alike."""
        try:
            body = orjson.loads(await request.body())
            if legacy:
                prompt = body["prompt"]
                text = prompt[0] if isinstance(prompt, list) else prompt
                messages = [{"role": "user", "content": text}]
            else:
                messages = body["messages"]
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
            return _error(f"body must be JSON with {'prompt' if legacy else 'messages'!r}", 400)
        record(request.url.path, body)
        if body.get("model") in settings.failing_models:
            return _error("The engine failed (a failing model of the demo engine).", 500)
        if body.get("model") in settings.quoting_models:
            quoted = str(messages[-1].get("content") if messages else "")[:200]
            return _error(f"The engine could not read this input: {quoted!r}", 500)
        if body.get("model") in settings.flaky_models:
            flaky[body["model"]] += 1
            if flaky[body["model"]] % 2:
                return _error("The engine failed once (a flaky model of the demo engine).", 500)
        if body.get("model") not in settings.served_models:
            return _error(
                f"The model `{body.get('model')}` does not exist.", 404, "model_not_found"
            )
        n_prompt = prompt_tokens(messages)
        if n_prompt > settings.max_context_tokens:
            return _error(
                f"This model's maximum context length is {settings.max_context_tokens} tokens. "
                f"However, your messages resulted in {n_prompt} tokens.",
                400,
            )
        call = None if legacy else tool_calls.call_for(body, messages)
        if call:  # the answer is the call's arguments
            tokens, finish = tokens_of(call.arguments, body.get("max_tokens"), "tool_calls")
        else:
            tokens, finish = answer(
                messages, body.get("max_tokens"), bool(body.get("continue_final_message"))
            )
        meta = {
            "id": f"{'cmpl' if legacy else 'chatcmpl'}-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": body["model"],
        }
        usage = {
            "prompt_tokens": n_prompt,
            "completion_tokens": len(tokens),
            "total_tokens": n_prompt + len(tokens),
        }
        usage["completion_tokens"] *= int(body.get("n") or 1)  # every choice is generated
        usage["total_tokens"] = n_prompt + usage["completion_tokens"]
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            steps = choices.steps(body, tokens, legacy, call)
            last = usage if include_usage else None
            chunks = _chunks(body, meta, steps, len(tokens), finish, last, legacy)
            return StreamingResponse(in_flight.around(chunks), media_type="text/event-stream")
        with in_flight:
            await asyncio.sleep(first_delay + delay * len(tokens))
        kind = "text_completion" if legacy else "chat.completion"
        written = choices.whole(body, tokens, finish, legacy, call)
        return _json({**meta, "object": kind, "choices": written, "usage": usage})

    async def _chunks(
        body: dict[str, Any],
        meta: dict[str, Any],
        steps: Iterator[list[dict[str, Any]]],
        tokens: int,
        finish: str,
        usage: dict[str, int] | None,
        legacy: bool,
    ) -> AsyncIterator[bytes]:
        kind = "text_completion" if legacy else "chat.completion.chunk"
        n = int(body.get("n") or 1)

        def chunk(choices_: list[dict[str, Any]]) -> bytes:
            return b"data: " + orjson.dumps({**meta, "object": kind, "choices": choices_}) + b"\n\n"

        if not legacy:  # a chat stream opens with the assistant's role
            opening = {"delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            for index in range(n):
                yield chunk([{"index": index, **opening}])
        await asyncio.sleep(first_delay)
        sent = 0
        breaks_at = tokens // 2 if meta["model"] in settings.breaking_models else -1
        try:
            for index, step in enumerate(steps):
                token = index // n  # the token this step writes (one step per choice)
                if token and index % n == 0 and delay:
                    await asyncio.sleep(delay)
                if token == breaks_at:
                    raise BrokenOnPurpose(f"{meta['model']} breaks off after {token} tokens")
                yield chunk(step)
                sent = token + 1
        finally:
            if sent < tokens:  # the caller closed the stream: tests time cancellation by this
                log.info("stream aborted", extra={"tokens_sent": sent, "tokens": tokens})
        for index in range(n):
            end: dict[str, Any] = {"index": index, "finish_reason": finish, "logprobs": None}
            end["text" if legacy else "delta"] = "" if legacy else {}
            yield chunk([end])
        if usage is not None:
            body = {**meta, "object": kind, "choices": [], "usage": usage}
            yield b"data: " + orjson.dumps(body) + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def embeddings(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
            given = body["input"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _error("body must be JSON with 'input'", 400)
        record(request.url.path, body)
        texts = [given] if isinstance(given, str) else given
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error("'input' must be a string or an array of strings", 400)
        if body.get("model") not in settings.served_models:
            return _error(
                f"The model `{body.get('model')}` does not exist.", 404, "model_not_found"
            )
        counts = [text_tokens(t) for t in texts]
        if max(counts, default=0) > settings.max_context_tokens:
            return _error(
                f"This model's maximum context length is {settings.max_context_tokens} tokens.",
                400,
            )
        data = [
            {"object": "embedding", "index": i, "embedding": embedding(t)}
            for i, t in enumerate(texts)
        ]
        usage = {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}
        return _json({"object": "list", "data": data, "model": body["model"], "usage": usage})

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/stats", stats, methods=["GET"]),
            Route("/stats/reset", reset_stats, methods=["POST"]),
            Route("/received", show_received, methods=["GET"]),
            Route("/received", clear_received, methods=["DELETE"]),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
        ]
    )
